"""`nlphub up` stacks as the fault tests run them (`Stack`: the process, its children, its log),
and the Celery `task-sent` events they send, captured from the broker (`SentEvents`)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tests.procs import NLPHUB, alive, descendants, kill_alive
from workers.embedded import free_port


class SentEvents:
    """Celery `task-sent` events, captured from the broker in a thread."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._receiver: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from workers.app import app

        with app.connection_for_read() as conn:
            self._receiver = app.events.Receiver(conn, handlers={"task-sent": self._on_sent})
            self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_sent(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(30), "the event receiver did not start"

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(15)

    def pings(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Heartbeats sent at or after `since` (time.time())."""
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("name") == "nlphub.ping" and float(e["timestamp"]) >= since
            ]


class Stack:
    """One `nlphub up` process (and its children), with its own home, log and Flower port."""

    def __init__(self, name: str, base: Path, env: dict[str, str]) -> None:
        self.name = name
        self.home = base / name
        self.home.mkdir()
        self.log = base / f"{name}.log"
        self.flower_port = free_port()
        self.env = {
            **env,
            "NLPHUB_HOME": str(self.home),
            "NLPHUB_FLOWER_PORT": str(self.flower_port),
            "NLPHUB_FLOWER_PASSWORD": f"pw-{uuid.uuid4().hex}",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.family: set[int] = set()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [NLPHUB, "up", "--verbose"],  # every process' log in this one, as they read it
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def processes(self) -> set[int]:
        """Its descendants now (also remembered, to check that none outlives the stack)."""
        now = set(descendants(self.pid))
        self.family |= now
        return now

    def beat_pid(self) -> int | None:
        for pid in self.processes():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"beat" in argv and b"celery" in argv:
                return pid
        return None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL `nlphub up` alone: its children must follow (they get SIGTERM)."""
        self.processes()
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM: the clean stop (Ctrl-C). Returns the exit code."""
        self.processes()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)

    def leftovers(self) -> list[int]:
        return sorted(p for p in self.family if alive(p))

    def cleanup(self) -> None:
        """Whatever happened: no process of this stack survives the test."""
        if self.proc is not None and self.proc.poll() is None:
            self.processes()
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        kill_alive(self.leftovers())  # only processes this stack started

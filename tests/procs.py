"""Process helpers for tests that run real processes: children, descendants, liveness, the
command lines of the CLI and of Celery workers, log tails, and a benchmark script run on its own
embedded servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NLPHUB = str(Path(sys.executable).with_name("nlphub"))
"""The `nlphub` CLI of this virtual environment."""


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found.append(child)
        found.extend(descendants(child))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_alive(pids: Iterable[int]) -> None:
    """SIGKILL those of `pids` that still run (only pass processes the test started)."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a process' log, for a failure message."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def celery_cmd(*args: str) -> list[str]:
    """`celery -A workers.app <args>` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "workers.app", *args]


def prefork_worker_cmd(
    name: str,
    *,
    queues: str = "default",
    concurrency: int = 1,
    loglevel: str = "INFO",
    extra: Iterable[str] = (),
) -> list[str]:
    """`celery worker -P prefork` on `queues`, named `<name>-<random>@<host>`."""
    return celery_cmd(
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-P",
        "prefork",
        "-n",
        f"{name}-{uuid.uuid4().hex[:6]}@%h",
        "-l",
        loglevel,
        *extra,
    )


def own_servers_env(tmp: Path) -> dict[str, str]:
    """This process' environment for a script that starts its own embedded servers under `tmp`
    (its TMPDIR: a short path, as Postgres' socket lives there): no database or Redis URL and
    no NLPHUB_ setting of the test session."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("NLPHUB_")
    }
    env["TMPDIR"] = str(tmp)
    return env


def run_benchmark(script: str, *args: str, leftovers: str, timeout: float = 240) -> tuple[int, str]:
    """Run `benchmarks/<script>` with `args` on its own embedded servers, in a temp folder of
    its own (a short path: Postgres' socket lives there); check that it removed the folders
    matching `leftovers` it made there. Its exit status and output (stdout and stderr).

    A script still running after `timeout` seconds gets SIGTERM (it stops its workers and
    servers), then whatever it started is killed, and the test fails."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-t-"))
    try:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / script), *args],
            cwd=ROOT,
            env=own_servers_env(tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            left = descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=60)
            finally:
                kill_alive(left + descendants(proc.pid))
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            output = out.decode(errors="replace")[-4000:]
            pytest.fail(f"{script} did not finish in {timeout} s:\n{output}")
        output = out.decode(errors="replace")
        # the script removed its temp folder
        assert list(tmp.glob(leftovers)) == [], f"exit status {proc.returncode}\n{output[-4000:]}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return proc.returncode, output

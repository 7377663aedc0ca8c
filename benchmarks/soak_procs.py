"""The soak's processes: Celery workers and beat started in their own process groups, stopped
group by group, and their peak RSS sampled from /proc on a thread."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._common import ROOT, peak_rss_kib_of
from tests.procs import descendants  # the same /proc walk

log = logging.getLogger("soak")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    is_worker: bool


@dataclass
class Sampler:
    """Peak RSS per process role, from /proc, on a thread."""

    procs: list[Proc]
    interval: float
    peaks: dict[str, int] = field(default_factory=dict)
    pool_pids: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    def _note(self, role: str, pid: int) -> None:
        value = peak_rss_kib_of(pid)
        if value is not None and value > self.peaks.get(role, 0):
            self.peaks[role] = value

    def sample(self) -> None:
        self._note("driver (+ mirror server)", os.getpid())
        for proc in self.procs:
            self._note(f"{proc.name} main", proc.popen.pid)
            for pid in descendants(proc.popen.pid):
                if proc.is_worker:
                    self.pool_pids[proc.name].add(pid)
                    self._note(f"{proc.name} pool child (largest)", pid)
                else:
                    self._note(f"{proc.name} child", pid)

    def run(self, stop: threading.Event) -> None:
        self.sample()
        while not stop.wait(self.interval):
            self.sample()


def start_process(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{name}.log"
    with path.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, path, is_worker=name.startswith("worker"))


def stop_processes(procs: list[Proc], timeout: float = 30.0) -> None:
    """SIGTERM each process group (warm shutdown), then SIGKILL what is left."""
    for proc in procs:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", proc.name, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)  # also any orphaned pool child
        proc.popen.wait()

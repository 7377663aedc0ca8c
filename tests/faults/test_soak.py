"""`benchmarks/soak.py --quick` end to end: real workers killed under a mixed load, nothing lost
or duplicated. About 40 s (embedded servers, four Celery processes, 30 s of load)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.procs import alive, descendants, own_servers_env

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def _figure(output: str, name: str) -> int:
    match = re.search(rf"^  {name}\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{output}"
    return int(match.group(1))


def test_quick_soak_loses_and_duplicates_nothing() -> None:
    # Its own embedded servers and temp folder (short path: Postgres' socket lives there).
    tmp = Path(tempfile.mkdtemp(prefix="soak-t-"))
    env = own_servers_env(tmp)
    try:
        output = _run(env)
        assert list(tmp.glob("nlphub-soak-*")) == []  # the script removed its temp folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    submitted = _figure(output, "submitted")
    assert submitted >= 10, output
    assert _figure(output, "lost") == 0, output
    assert _figure(output, "duplicated") == 0, output
    assert _figure(output, "failed") == 0, output
    assert _figure(output, "completed") == submitted, output
    assert _figure(output, "kills") >= 2, output
    assert "p95" in output and "peak RSS" in output


def _run(env: dict[str, str]) -> str:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--quick"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        left = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)  # the script stops its workers and servers
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            for pid in left + descendants(proc.pid):
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        pytest.fail(f"the soak did not finish in 180 s:\n{out.decode(errors='replace')[-4000:]}")
    output = out.decode(errors="replace")
    assert proc.returncode == 0, output[-4000:]
    return output

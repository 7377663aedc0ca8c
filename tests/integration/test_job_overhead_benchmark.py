"""`benchmarks/job_overhead.py` at a small size, on the test install: both sides run on their
own embedded Postgres and Redis and a real worker, every nlphub job is waited for until its
row says `succeeded`, and the figures issue 3 reports are printed. About 15 s."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.procs import own_servers_env

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_runs_both_sides_and_prints_the_ratio() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-j-"))
    try:
        script = str(ROOT / "benchmarks" / "job_overhead.py")
        done = subprocess.run(
            [sys.executable, script, "-n", "25", "--repeat", "2"],
            cwd=ROOT,
            env=own_servers_env(tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=240,
            check=False,
        )
        assert list(tmp.glob("nlphub-bench-*")) == []  # the script removed its temp folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output
    assert re.search(r"bare celery no-op :\s+[\d.]+ tasks/s\s+\(25 in", output), output
    assert re.search(r"nlphub audited job:\s+[\d.]+ jobs/s\s+\(25 in", output), output
    assert len(re.findall(r"round \d: bare .* ratio [\d.]+", output)) == 2, output
    ratio = re.search(r"ratio nlphub/bare : ([\d.]+) best to best, ([\d.]+) median", output)
    assert ratio and float(ratio.group(1)) > 0, output
    assert re.search(r"postgres\s*:\s*[\d.]+ /\s*[\d.]+", output), output

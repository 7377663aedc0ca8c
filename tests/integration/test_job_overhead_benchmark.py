"""`benchmarks/job_overhead.py` at a small size, on the test install: both sides run on their
own embedded Postgres and Redis and a real worker, every nlphub job is waited for until its
row says `succeeded`, and the figures issue 3 reports are printed. About 15 s."""

from __future__ import annotations

import re

import pytest

from tests.procs import run_benchmark

pytestmark = [pytest.mark.integration]


def test_the_benchmark_runs_both_sides_and_prints_the_ratio() -> None:
    rc, output = run_benchmark(
        "job_overhead.py", "-n", "25", "--repeat", "2", leftovers="nlphub-bench-*"
    )
    assert rc == 0, output
    assert re.search(r"bare celery no-op :\s+[\d.]+ tasks/s\s+\(25 in", output), output
    assert re.search(r"nlphub audited job:\s+[\d.]+ jobs/s\s+\(25 in", output), output
    assert len(re.findall(r"round \d: bare .* ratio [\d.]+", output)) == 2, output
    ratio = re.search(r"ratio nlphub/bare : ([\d.]+) best to best, ([\d.]+) median", output)
    assert ratio and float(ratio.group(1)) > 0, output
    assert re.search(r"postgres\s*:\s*[\d.]+ /\s*[\d.]+", output), output

"""`benchmarks/metrics_scrape.py` at a small size: it fills its own embedded Postgres, serves
the metrics with the real server, prints the scrape time against its baselines, and finds no
metrics statement reading the job or audit tables whole. About 20 s."""

from __future__ import annotations

import re

import pytest

from tests.procs import run_benchmark

pytestmark = [pytest.mark.integration]


def test_the_benchmark_prints_the_scrape_time_and_its_ratios() -> None:
    rc, output = run_benchmark(
        "metrics_scrape.py",
        "--jobs",
        "2000",
        "--active",
        "100",
        "--scrapes",
        "20",
        leftovers="nlphub-bench-*",
    )
    assert rc == 0, output
    assert "filled            : 2000 jobs (100 waiting or running)" in output, output
    for side in ("scrape", "select 1", "count\\(\\*\\)"):
        assert re.search(rf"{side}\s*: median\s+[\d.]+ ms, p95\s+[\d.]+ ms \(20 rounds\)", output)
    assert re.search(r"ratio scrape/select 1: [\d.]+", output), output
    assert re.search(r"ratio scrape/count\(\*\): [\d.]+", output), output
    assert re.search(r"target\s+: scrape p95 [\d.]+ ms < 50 ms", output), output
    assert re.search(r"plan jobs\s+: .*Index Scan.*\(ix_job_state_created\)", output), output
    assert "PROBLEM" not in output

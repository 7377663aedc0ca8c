"""`benchmarks/soak.py --quick` end to end: real workers killed under a mixed load, nothing lost
or duplicated. About 40 s (embedded servers, four Celery processes, 30 s of load)."""

from __future__ import annotations

import re

import pytest

from tests.procs import run_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.integration]


def _figure(output: str, name: str) -> int:
    match = re.search(rf"^  {name}\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{output}"
    return int(match.group(1))


def test_quick_soak_loses_and_duplicates_nothing() -> None:
    # Its own embedded servers and temp folder (short path: Postgres' socket lives there);
    # the script removes its temp folder (run_benchmark checks).
    returncode, output = run_benchmark("soak.py", "--quick", leftovers="nlphub-soak-*", timeout=180)
    assert returncode == 0, output[-4000:]
    submitted = _figure(output, "submitted")
    assert submitted >= 10, output
    assert _figure(output, "lost") == 0, output
    assert _figure(output, "duplicated") == 0, output
    assert _figure(output, "failed") == 0, output
    assert _figure(output, "completed") == submitted, output
    assert _figure(output, "kills") >= 2, output
    assert "p95" in output and "peak RSS" in output

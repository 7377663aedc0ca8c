"""`benchmarks/embeddings.py pgvector` at a small size, on the test install: the part runs
(embedded Postgres, the service's COPY rows, HNSW index and `similar`) with only nlphub's own
dependencies, and a part that crashes makes the script exit 1. About 10 s."""

from __future__ import annotations

import re

import pytest

from tests.procs import run_benchmark

pytestmark = [pytest.mark.integration]


def _run(*args: str) -> tuple[int, str]:
    return run_benchmark("embeddings.py", *args, leftovers="nlphub-bench-emb-*")


def test_the_pgvector_part_runs_on_the_installed_dependencies() -> None:
    rc, output = _run("pgvector", "--n-pg", "3000", "--queries", "10", "--ef-sweep", "40")
    assert rc == 0, output
    assert "FAILED" not in output, output
    assert "plan uses the HNSW index: yes" in output, output
    p95 = re.search(r"similar\(\) p95 ms, 3000 vectors\s+([\d.]+)", output)
    recall = re.search(r"similar\(\) recall@10, ef_search \d+\s+([\d.]+)", output)
    assert p95 and recall, output
    assert float(p95.group(1)) > 0
    assert float(recall.group(1)) >= 0.95  # 3,000 vectors: the HNSW search is about exact
    assert re.search(r"held-out queries, ef_search=\s*40: .* recall@10 [\d.]+", output), output


def test_a_part_that_crashes_makes_the_script_exit_1() -> None:
    # 5 vectors cannot give the --pg-warm + 10 distinct query records the part samples
    rc, output = _run("pgvector", "--n-pg", "5", "--queries", "10")
    assert rc == 1, output
    assert "pgvector: FAILED: ValueError" in output, output
    assert re.search(r"pgvector\s+failed\s+ValueError", output), output

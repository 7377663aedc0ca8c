"""`benchmarks/embeddings.py pgvector` at a small size, on the test install: the part runs
(embedded Postgres, the service's COPY rows, HNSW index and `similar`) with only nlphub's own
dependencies, and a part that crashes makes the script exit 1. About 10 s."""

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


def _run(*args: str) -> tuple[int, str]:
    # Its own embedded Postgres and temp folder (short path: Postgres' socket lives there).
    tmp = Path(tempfile.mkdtemp(prefix="bench-t-"))
    env = own_servers_env(tmp)
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "embeddings.py"), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=240,
            check=False,
        )
        assert list(tmp.glob("nlphub-bench-emb-*")) == []  # the script removed its temp folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done.returncode, done.stdout.decode(errors="replace")


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

"""Metrics scrape time on a filled database, against baselines of the same run.

    python benchmarks/metrics_scrape.py [--jobs 100000] [--active 2000] [--scrapes 200]

Starts an embedded Postgres in a temp folder, migrates it, fills `--jobs` jobs over every task:
the newest `--active` waiting or running (half `queued`, half of those never published, a
quarter `started`, a quarter `retrying`), the others finished (4 % failed), with their totals
in `counter` as the job statements keep them; as many audit events, 300 resources, update
notices and redeploys; then VACUUM ANALYZE (what autovacuum does). It serves the metrics with
the real server (`workers.metrics`' prometheus-client HTTP server and collector) on 127.0.0.1
and measures, in interleaved rounds:

- scrape: GET /metrics (pool checkout, the metrics statements, the disk, the text format);
- select 1: a pool checkout and `SELECT 1` (one round trip: the floor of any scrape);
- count(*): a pool checkout and `SELECT count(*) FROM job` (what a naive scrape would pay).

Prints each one's median and p95, the ratios, whether the scrape's p95 is under the 50 ms
target, and each metrics statement's plan nodes. Exits 1 when a statement's plan reads `job`
or `audit_event` whole (a Seq Scan), or when a scrape failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import NO_REDIS, embedded_servers, migrate, use_servers  # noqa: E402

TARGET_MS = 50.0
#: Tables that grow with every job: no metrics statement may read them whole.
GROWING = ("job", "audit_event")

FILL_JOBS = """
    INSERT INTO job (id, task, queue, payload, state, progress, attempts, result, requested_by,
                     worker, created_at, updated_at, published_at, started_at, finished_at)
    SELECT gen_random_uuid(), t.task, 'default',
           jsonb_build_object('requested_by', 'bench', 'name', 'glove_100d', 'n', i),
           s.state, 1, 1,
           CASE WHEN s.state = 'succeeded'
                THEN jsonb_build_object('pong', 'default@bench', 'records', i) END,
           'bench', 'default@bench', c.at, c.at + interval '2 seconds',
           CASE WHEN s.state <> 'queued' OR i % 2 = 0 THEN c.at END,
           CASE WHEN s.state <> 'queued' THEN c.at + interval '1 second' END,
           CASE WHEN s.state IN ('succeeded', 'failed') THEN c.at + interval '2 seconds' END
    FROM generate_series(1, :n) AS i
    CROSS JOIN LATERAL (SELECT (CAST(:tasks AS text[]))[1 + i % :ntasks] AS task) AS t
    CROSS JOIN LATERAL (SELECT now() - (:n - i) * interval '20 seconds' AS at) AS c
    CROSS JOIN LATERAL (
        SELECT CASE WHEN i > :n - :active
                    THEN (ARRAY['queued', 'queued', 'started', 'retrying'])[1 + i % 4]
                    WHEN i % 25 = 0 THEN 'failed' ELSE 'succeeded' END AS state
    ) AS s
"""

FILL_TOTALS = """
    INSERT INTO counter (name, label, value, updated_at)
    SELECT 'job.' || state, task, count(*), now() FROM job
    WHERE state IN ('succeeded', 'failed', 'revoked') GROUP BY state, task
    UNION ALL SELECT 'download.bytes', '', 123456789, now()
    UNION ALL SELECT 'embedding.records', 'bow', 50000, now()
"""

FILL_EVENTS = """
    INSERT INTO audit_event (actor, action, target, details, prev_hash, hash)
    SELECT 'bench', 'job.succeeded', 'nlphub.ping', jsonb_build_object('n', i), '', ''
    FROM generate_series(1, :n) AS i
"""

FILL_RESOURCES = """
    INSERT INTO resource (id, name, language, version, kind, edition, source, state, size_bytes,
                          bytes_on_disk, labels, dependencies, created_at, updated_at)
    SELECT gen_random_uuid(), 'res_' || i, 'en', '5.4.' || i,
           (ARRAY['model', 'embeddings', 'pipeline'])[1 + i % 3],
           (ARRAY['Open Source', 'Healthcare NLP'])[1 + i % 2], 'hub',
           (ARRAY['installed', 'installed', 'installed', 'missing_dependencies', 'failed',
                  'invalid', 'queued', 'downloading', 'deleted'])[1 + i % 9],
           1000000 * i, CASE WHEN i % 9 < 4 OR i % 9 = 5 THEN 2000000 * i END,
           '[]', '[]', now(), now()
    FROM generate_series(1, 300) AS i
"""

FILL_REST = [
    """
    INSERT INTO update_notice (id, resource_id, name, language, current_version, new_version,
                               edition, archive_url, state, found_at)
    SELECT gen_random_uuid(), gen_random_uuid(), 'res_' || i, 'en', '5.4.0', '5.5.0',
           'Open Source', 'http://hub/x.zip', (ARRAY['pending', 'applied'])[1 + i % 2], now()
    FROM generate_series(1, 40) AS i
    """,
    """
    INSERT INTO redeploy (id, server_id, state, reasons, attempts, last_error, requested_at,
                          last_change_at)
    SELECT gen_random_uuid(), gen_random_uuid(), (ARRAY['pending', 'done'])[1 + i % 2], '[]', 1,
           CASE WHEN i % 4 = 0 THEN 'HTTP 503' END, now(), now()
    FROM generate_series(1, 20) AS i
    """,
    """
    INSERT INTO audit_verification (at, actor, ok, events, anchors)
    SELECT now() - i * interval '1 day', 'beat', true, 1000, 0 FROM generate_series(1, 30) AS i
    """,
]


def _fill(jobs: int, active: int) -> None:
    from sqlalchemy import text

    from schemas.db import autocommit_engine, get_engine
    from schemas.payloads import TASKS

    started = time.perf_counter()
    with get_engine().begin() as conn:
        conn.execute(
            text(FILL_JOBS),
            {"n": jobs, "active": active, "tasks": sorted(TASKS), "ntasks": len(TASKS)},
        )
        conn.execute(text(FILL_TOTALS))
        conn.execute(text(FILL_EVENTS), {"n": jobs})
        conn.execute(text(FILL_RESOURCES))
        for statement in FILL_REST:
            conn.execute(text(statement))
    with autocommit_engine().connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    print(
        f"filled            : {jobs} jobs ({min(active, jobs)} waiting or running), {jobs} audit "
        f"events, 300 resources in "
        f"{time.perf_counter() - started:.1f}s (then VACUUM ANALYZE)"
    )


def _nodes(plan: dict[str, Any]) -> list[str]:
    """Each plan node as 'Node Type on relation (index)'."""
    label = plan["Node Type"]
    if "Relation Name" in plan:
        label += f" on {plan['Relation Name']}"
    if "Index Name" in plan:
        label += f" ({plan['Index Name']})"
    return [label] + [n for child in plan.get("Plans", []) for n in _nodes(child)]


def _check_plans() -> list[str]:
    """Print each metrics statement's scans; the problems (whole reads of growing tables)."""
    from sqlalchemy import text

    from nlphub.metrics.queries import STATEMENTS
    from schemas.db import get_engine

    problems = []
    with get_engine().connect() as conn:
        for name, (sql, params) in STATEMENTS.items():
            plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), params).scalar_one()
            plan = json.loads(plan) if isinstance(plan, str) else plan
            scans = [n for n in _nodes(plan[0]["Plan"]) if "Scan" in n]
            print(f"plan {name:12s} : {', '.join(scans)}")
            problems += [
                f"{name}: {scan}" for scan in scans for t in GROWING if scan == f"Seq Scan on {t}"
            ]
    return problems


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def _measure(url: str, scrapes: int) -> dict[str, list[float]]:
    from sqlalchemy import text

    from schemas.db import get_engine

    def scrape() -> None:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        if b"nlphub_database_up 1.0" not in body:
            raise SystemExit(f"a scrape did not read the database:\n{body.decode()[:2000]}")

    def select_one() -> None:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()

    def count_jobs() -> None:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT count(*) FROM job")).scalar_one()

    sides = {"scrape": scrape, "select 1": select_one, "count(*)": count_jobs}
    for _ in range(10):  # warm-up: connections, plans, caches
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(scrapes):
        for name, fn in sides.items():
            times[name].append(_timed(fn))
    return times


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def _report(times: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(
            f"{name:18s}: median {medians[name]:7.2f} ms, p95 {_p95(values):7.2f} ms "
            f"({len(values)} rounds)"
        )
    print(
        f"ratio scrape/select 1: {medians['scrape'] / medians['select 1']:.1f} (median to median)"
    )
    print(
        f"ratio scrape/count(*): {medians['scrape'] / medians['count(*)']:.2f} (median to median)"
    )
    p95 = _p95(times["scrape"])
    verdict = "met" if p95 < TARGET_MS else "NOT met"
    print(f"target            : scrape p95 {p95:.2f} ms < {TARGET_MS:.0f} ms: {verdict}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs to fill (100000)")
    parser.add_argument(
        "--active", type=int, default=2000, help="of them waiting or running (2000)"
    )
    parser.add_argument("--scrapes", type=int, default=200, help="measured rounds (200)")
    return parser


def main() -> int:
    args = _parser().parse_args()
    base = Path(tempfile.mkdtemp(prefix="nlphub-bench-metrics-"))
    try:
        with embedded_servers(base, redis=False) as (db_url, _):
            use_servers(db_url, NO_REDIS, base / "home")
            migrate(db_url)
            _fill(args.jobs, args.active)
            problems = _check_plans()
            from prometheus_client import start_http_server

            from nlphub.metrics.collector import registry
            from schemas.db import get_engine
            from schemas.settings import get_settings

            server, thread = start_http_server(
                0, addr="127.0.0.1", registry=registry(get_settings(), get_engine().connect)
            )
            try:
                times = _measure(f"http://127.0.0.1:{server.server_port}/metrics", args.scrapes)
            finally:
                server.shutdown()
                server.server_close()
                thread.join(timeout=10)
            _report(times)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for problem in problems:
        print(f"PROBLEM: a metrics statement reads a growing table whole: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

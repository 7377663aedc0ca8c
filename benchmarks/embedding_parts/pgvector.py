"""``pgvector``: N x 64 clustered vectors stored and indexed as the service does; p95 latency and
recall@10 of `similar`, then a sweep of ef_search with held-out query vectors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.embedding_parts.common import (
    Bench,
    MiB,
    make_vectors,
    new_embedding,
    pct,
    say,
    unit_rows,
)

DIMS, K = 64, 10
NAME = "bench-pgvector"


def part_pgvector(bench: Bench) -> None:
    args = bench.args
    n, n_queries = args.n_pg, args.queries
    db_url = bench.postgres()
    say(f"pgvector: {n} x {DIMS} {args.pg_data} vectors, top-{K}, {n_queries} queries")
    start = time.perf_counter()
    data = make_vectors(n + n_queries, DIMS, args.seed + 3, args.pg_data)
    vectors, held_out = data[:n], data[n:]
    emb_id = _load(bench, db_url, vectors, start)
    unit = unit_rows(vectors)
    first = _similar(bench, unit)
    _print_plan(db_url, emb_id, first)
    _sweep(bench, db_url, emb_id, unit, held_out)


def _exact(unit: np.ndarray, query: np.ndarray, exclude: int | None = None) -> set[int]:
    """The true top K rows of `unit` by cosine to `query` (a unit vector), less `exclude`."""
    sims = unit @ query
    if exclude is not None:
        sims[exclude] = -np.inf
    top = np.argpartition(-sims, K)[:K]
    return {int(i) for i in top}


# -- the load -------------------------------------------------------------------------------------


def _load(bench: Bench, db_url: str, vectors: np.ndarray, start: float) -> uuid.UUID:
    """Records, an embedding, its vectors stored and indexed as the service does; prints the
    times (the records' since `start`, when the vectors were being made) and the index. The
    embedding's id."""
    from nlphub.embeddings.vectors import HNSW_M, _store, hnsw_ef_construction
    from schemas.db import session_scope

    n = len(vectors)
    emb_id, ids = _records(n)
    t_records = time.perf_counter() - start
    start = time.perf_counter()
    # As the service stores a window (`_store`: binary COPY rows into its staging table, one
    # upsert), one transaction per 50,000 rows.
    for at in range(0, n, 50_000):
        with session_scope() as session:
            _store(session, emb_id, ids[at : at + 50_000], vectors[at : at + 50_000])
    t_copy = time.perf_counter() - start
    t_index, mwm, workers, notices = _build_index(emb_id, bench.args.pg_maintenance_work_mem)
    version, size = _index_facts(db_url, emb_id)
    say(
        f"  load: records {t_records:.1f}s, COPY vectors {t_copy:.1f}s ({n / t_copy:.0f} rows/s); "
        f"HNSW build (service's _index, m={HNSW_M}, "
        f"ef_construction={hnsw_ef_construction(n)}) {t_index:.1f}s with "
        f"maintenance_work_mem={mwm}, max_parallel_maintenance_workers={workers}; "
        f"pgvector {version}, index {size / MiB:.0f} MiB"
    )
    for note in notices:
        say(f"  postgres notice during the build: {note}")
    return emb_id


def _records(n: int) -> tuple[uuid.UUID, Sequence[Any]]:
    """The dataset's `n` records (made in the server) and its embedding: (embedding id, the
    record ids in external-id order)."""
    from sqlalchemy import text
    from sqlmodel import Session

    from schemas.db import get_engine, session_scope
    from schemas.models import Dataset

    with session_scope() as session:
        ds = Dataset(name=NAME)
        session.add(ds)
        session.flush()
        session.execute(
            text(
                "INSERT INTO record (id, dataset_id, external_id, data, updated_at) "
                "SELECT gen_random_uuid(), :ds, lpad(i::text, 8, '0'), "
                "jsonb_build_object('text', 'record ' || i), now() "
                "FROM generate_series(0, :n - 1) AS i"
            ),
            {"ds": ds.id, "n": n},
        )
        ds_id = ds.id
    emb_id = new_embedding(NAME, "bow", "tfidf", DIMS)
    with Session(get_engine()) as session:
        ids = (
            session.execute(
                text("SELECT id FROM record WHERE dataset_id = :ds ORDER BY external_id"),
                {"ds": ds_id},
            )
            .scalars()
            .all()
        )
    return emb_id, ids


def _build_index(emb_id: uuid.UUID, work_mem: str) -> tuple[float, str, str, list[str]]:
    """Mark the embedding finished and build its index with the service's `_index` (with
    `work_mem` as maintenance_work_mem when given): (seconds, maintenance_work_mem,
    max_parallel_maintenance_workers, the server's notices during the build)."""
    from sqlalchemy import text

    from nlphub.embeddings.vectors import _index
    from schemas.db import session_scope
    from schemas.models import Embedding, utcnow

    notices: list[str] = []
    with session_scope() as session:
        emb = session.get(Embedding, emb_id)
        assert emb is not None
        emb.output_dims, emb.state, emb.progress = DIMS, "finished", 1.0
        emb.finished_at = utcnow()
        session.add(emb)
        session.flush()
        raw: Any = session.connection().connection.driver_connection

        def notice(diag: Any) -> None:
            notices.append(str(diag.message_primary))

        raw.add_notice_handler(notice)
        if work_mem:
            mwm_value = work_mem.replace("'", "")
            session.execute(text(f"SET LOCAL maintenance_work_mem = '{mwm_value}'"))
        mwm = session.execute(text("SHOW maintenance_work_mem")).scalar_one()
        workers = session.execute(text("SHOW max_parallel_maintenance_workers")).scalar_one()
        start = time.perf_counter()
        _index(session, emb)
        session.commit()
        t_index = time.perf_counter() - start
        raw.remove_notice_handler(notice)
    return t_index, mwm, workers, notices


def _index_facts(db_url: str, emb_id: uuid.UUID) -> tuple[str, int]:
    """VACUUM ANALYZE the vectors, then (pgvector's and Postgres' versions, index bytes)."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE embedding_vector")
        conn.execute("ANALYZE record")
        version = conn.execute(
            "SELECT extversion || ' on PostgreSQL ' || current_setting('server_version') "
            "FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        size = conn.execute(
            "SELECT pg_relation_size(%s::regclass)", (f"ix_embedding_vector_{emb_id.hex}",)
        ).fetchone()
    return (version[0] if version else "?"), (size[0] if size else 0)


# -- the searches ---------------------------------------------------------------------------------


def _similar(bench: Bench, unit: np.ndarray) -> int:
    """Latency and recall of `similar(record=...)`, as a request calls it; the first record
    searched (not counted). See docs/decisions.md, Benchmark method: pgvector searches after
    warm-up searches."""
    import nlphub.embeddings.search as search
    from schemas.settings import get_settings

    args, n, settings = bench.args, len(unit), get_settings()
    rng = np.random.default_rng(args.seed + 4)
    warm = max(1, args.pg_warm)
    picks = rng.choice(n, size=warm + args.queries, replace=False)
    # The first call looks the embedding up and remembers it (two round trips); every later
    # one is one statement (the record's vector, hnsw.ef_search = search.EF_SEARCH, the
    # partial-index kNN join, and the check that the embedding is still the one to search).
    # The first `--pg-warm` searches (other records) are the first reads of a new index, whose
    # pages may not be in shared_buffers yet: printed on their own.
    search._TARGETS.clear()
    latencies: list[float] = []
    recalls: list[float] = []
    cold: list[float] = []
    for number, index in enumerate(picks.tolist()):
        begin = time.perf_counter()
        hits = search.similar(settings, dataset=NAME, record=f"{index:08d}", k=K)
        elapsed = (time.perf_counter() - begin) * 1000
        if number < warm:
            cold.append(elapsed)
            continue
        latencies.append(elapsed)
        found = {int(h["id"]) for h in hits}
        recalls.append(len(found & _exact(unit, unit[index], exclude=index)) / K)
    p50, p95, recall = pct(latencies, 50), pct(latencies, 95), float(np.mean(recalls))
    say(
        f"  first {warm} searches after the build (not counted): p50 {pct(cold, 50):.2f} ms, "
        f"p95 {pct(cold, 95):.2f} ms; the very first (embedding looked up) {cold[0]:.2f} ms"
    )
    say(
        f"  similar(record=...), hnsw.ef_search={search.EF_SEARCH} (set by the service): "
        f"p50 {p50:.2f} ms, "
        f"p95 {p95:.2f} ms (target <= 10), max {max(latencies):.2f} ms; "
        f"recall@{K} {recall:.4f} (target >= 0.95)"
    )
    bench.results.add("pgvector", f"similar() p95 ms, {n} vectors", p95, "{:.2f}", "<=", 10.0)
    bench.results.add(
        "pgvector",
        f"similar() recall@{K}, ef_search {search.EF_SEARCH}",
        recall,
        "{:.4f}",
        ">=",
        0.95,
    )
    return int(picks[0])


def _print_plan(db_url: str, emb_id: uuid.UUID, record: int) -> None:
    """EXPLAIN ANALYZE of similar()'s statement for one record."""
    import psycopg

    import nlphub.embeddings.search as search

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"SET hnsw.ef_search = {search.EF_SEARCH}")
        params = {"ds": NAME, "eid": None, "x": f"{record:08d}"}
        analyzed = conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) " + search._by_record(emb_id, DIMS, K + 1), params
        ).fetchall()
        say("  plan of similar()'s statement (EXPLAIN ANALYZE, one record):")
        for (line,) in analyzed:
            if "Order By" not in line:  # the query vector, 64 numbers
                say(f"    {line}")


def _sweep(
    bench: Bench, db_url: str, emb_id: uuid.UUID, unit: np.ndarray, held_out: np.ndarray
) -> None:
    """The kNN statement similar() sends for a query text, with held-out query vectors, per
    ef_search (search.EF_SEARCH set to each in turn)."""
    import psycopg

    import nlphub.embeddings.search as search
    from nlphub.embeddings.vectors import _vec
    from schemas.db import autocommit_engine

    sql = search._by_vector(emb_id, DIMS, K)
    queries = [_vec(q) for q in held_out]
    truths = [_exact(unit, q) for q in unit_rows(held_out)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        plan = "\n".join(
            line for (line,) in conn.execute("EXPLAIN " + sql, {"q": queries[0]}).fetchall()
        )
    uses_index = f"ix_embedding_vector_{emb_id.hex}" in plan
    say(f"  plan uses the HNSW index: {'yes' if uses_index else 'NO'}")
    chosen = search.EF_SEARCH
    try:
        for ef in bench.args.ef_sweep:
            search.EF_SEARCH = ef
            lat, rec = [], []
            with autocommit_engine().connect() as sa_conn:
                warm = min(20, len(queries))  # untimed first queries (caches)
                for q, truth in zip(queries[:warm] + queries, truths[:warm] + truths, strict=True):
                    begin = time.perf_counter()
                    rows = search._search(sa_conn, sql, {"q": q})
                    lat.append((time.perf_counter() - begin) * 1000)
                    rec.append(len({int(r[0]) for r in rows} & truth) / K)
            lat, rec = lat[warm:], rec[warm:]
            say(
                f"  held-out queries, ef_search={ef:4d}: p50 {pct(lat, 50):.2f} ms, "
                f"p95 {pct(lat, 95):.2f} ms, recall@{K} {np.mean(rec):.4f}"
            )
    finally:
        search.EF_SEARCH = chosen

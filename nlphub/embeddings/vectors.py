"""Vector storage in pgvector: an embedding's vectors upserted per (embedding, record) with a
binary COPY, and its partial HNSW cosine index, built once the vectors are stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import text
from sqlmodel import Session

from nlphub.embeddings.platforms import EmbeddingError
from nlphub.embeddings.reduce import Reducer
from nlphub.errors import Refused
from schemas.db import session_scope
from schemas.models import Embedding

#: The graph's build parameters: m, pgvector's default; ef_construction by size (see
#: docs/decisions.md, HNSW search and build parameters).
HNSW_M = 16
HNSW_LARGE = 200_000  # vectors; a bigger index gets the slower, better-connected build


def hnsw_ef_construction(rows: int) -> int:
    """pgvector's ef_construction for an index of `rows` vectors (see HNSW_M)."""
    return 64 if rows <= HNSW_LARGE else 128


class Cancelled(Refused):
    """The embedding was deleted while it was being computed (`_store` finds it so under the
    row lock; the compute job checks between batches)."""


def _vec(values: np.ndarray) -> str:
    return "[" + ",".join(f"{float(v):.7g}" for v in values) + "]"


def _store_window(
    emb_id: uuid.UUID, reducer: Reducer, flush: Sequence[tuple[Sequence[uuid.UUID], np.ndarray]]
) -> None:
    """Project and store one window's batches in one transaction. (The HNSW index is built
    after the last window: see docs/decisions.md, HNSW index built after the vectors are
    stored.)"""
    from threadpoolctl import threadpool_limits

    ids = [rid for chunk_ids, _ in flush for rid in chunk_ids]
    # One BLAS thread: the model runs on every core meanwhile, and BLAS threads spinning
    # beside it slow both (see docs/decisions.md, Projecting a window on one BLAS thread).
    with threadpool_limits(limits=1, user_api="blas"):
        vectors = np.vstack([reducer.transform(chunk) for _, chunk in flush])
    with session_scope() as session:
        _store(session, emb_id, ids, vectors)


def _store(
    session: Session, emb_id: uuid.UUID, ids: Sequence[uuid.UUID], vectors: np.ndarray
) -> None:
    # Shares the row lock that delete_embedding takes exclusively: a batch is stored before a
    # delete (which then removes it) or not at all.
    state = session.execute(
        text("SELECT state FROM embedding WHERE id = :e FOR SHARE"), {"e": emb_id}
    ).scalar()
    if state is None or state == "deleted":
        raise Cancelled(f"embedding {emb_id} was deleted while it was computed; stopped")
    if len(ids) != len(vectors):
        raise EmbeddingError(f"{len(ids)} records but {len(vectors)} vectors")
    if not ids:
        return
    # Binary COPY into a per-connection staging table, then one upsert: far cheaper than an
    # INSERT per row (see docs/decisions.md, Storing vectors: binary COPY and one upsert).
    session.execute(text(_STAGING_TABLE))
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(_STAGING_COPY) as copy:
        copy.write(_copy_rows(ids, vectors))
    session.execute(text(_STAGING_UPSERT), {"e": emb_id})


_STAGING_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS embedding_vector_in "
    "(record_id uuid NOT NULL, vector vector NOT NULL) ON COMMIT DELETE ROWS"
)
_STAGING_COPY = "COPY embedding_vector_in (record_id, vector) FROM STDIN WITH (FORMAT BINARY)"
_STAGING_UPSERT = (
    "INSERT INTO embedding_vector (embedding_id, record_id, vector) "
    "SELECT :e, record_id, vector FROM embedding_vector_in "
    "ON CONFLICT (embedding_id, record_id) DO UPDATE SET vector = EXCLUDED.vector"
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_COPY_TRAILER = b"\xff\xff"


def _copy_rows(ids: Sequence[uuid.UUID], vectors: np.ndarray) -> bytes:
    """PostgreSQL's binary COPY format for (uuid, vector) rows, built with numpy: per row the
    field count, the uuid, and pgvector's binary vector (dimensions, unused, float32s)."""
    dims = int(vectors.shape[1])
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("uuid_len", ">i4"),
            ("uuid", "V16"),
            ("vector_len", ">i4"),
            ("dims", ">i2"),
            ("unused", ">i2"),
            ("values", ">f4", (dims,)),
        ]
    )
    rows = np.zeros(len(ids), dtype=row)
    rows["fields"], rows["uuid_len"], rows["vector_len"] = 2, 16, 4 + 4 * dims
    rows["uuid"] = np.frombuffer(b"".join(rid.bytes for rid in ids), dtype="V16")
    rows["dims"] = dims
    rows["values"] = vectors
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


#: Memory an HNSW build needs per vector besides the vector itself (pgvector's graph), and a
#: margin over it (see docs/decisions.md, HNSW build: parallel workers and the memory the
#: graph needs).
_HNSW_BYTES_PER_VECTOR, _HNSW_MARGIN, _HNSW_MIN_MEMORY = 700, 1.5, 64 << 20


def _index(session: Session, emb: Embedding, rows: int | None = None) -> None:
    """Build the embedding's partial HNSW index (`rows`: its vectors, counted when None)."""
    name = f"ix_embedding_vector_{emb.id.hex}"
    dims = int(emb.output_dims or 0)
    if rows is None:
        rows = session.execute(
            text("SELECT count(*) FROM embedding_vector WHERE embedding_id = :e"), {"e": emb.id}
        ).scalar_one()
    need = max(_HNSW_MIN_MEMORY, int(rows * (4 * dims + _HNSW_BYTES_PER_VECTOR) * _HNSW_MARGIN))
    # For this transaction only: parallel workers (max_parallel_maintenance_workers) whatever
    # the table's size — the build runs once the model is done and the CPUs are free — and
    # maintenance_work_mem cut to what the graph needs (a parallel build sets up all of it in
    # shared memory first), never above the server's setting. See docs/decisions.md, HNSW
    # build: parallel workers and the memory the graph needs.
    session.execute(
        text(
            "SELECT set_config('min_parallel_table_scan_size', '0', true), "
            "set_config('maintenance_work_mem', (LEAST(pg_size_bytes("
            "current_setting('maintenance_work_mem')), :need) / 1024)::bigint || 'kB', true)"
        ),
        {"need": need},
    )
    session.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS {name} ON embedding_vector USING hnsw "
            f"((vector::vector({int(emb.output_dims or 0)})) vector_cosine_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {hnsw_ef_construction(rows)}) "
            f"WHERE embedding_id = '{emb.id}'"
        )
    )

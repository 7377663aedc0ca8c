"""Datasets, records and embeddings in Postgres (pgvector), and neural search.

`compute` follows refinery's shape: batches of 128 (attribute) or 32 (token) texts (the model
sees 16 attribute batches per call, so it pads less), PCA fitted on the first batches
(`fit_batches`, ~5) then streamed; no PCA when there are fewer records than components; the
fitted reducer (and a bag-of-words vocabulary) is stored so new or edited records — and search
queries — are embedded later with the same projection. Vectors are
upserted per (embedding, record), so a redelivered job never duplicates them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, text
from sqlmodel import Session, col, select

from nlphub import audit
from nlphub.embeddings.platforms import EmbeddingError, Encoder
from nlphub.embeddings.reduce import Reducer
from nlphub.embeddings.registry import make_encoder
from nlphub.embeddings.tokens import token_vectors
from nlphub.errors import NotFound, Refused
from schemas.db import autocommit_engine, driver_connection, get_engine, session_scope
from schemas.embedding_platforms import PLATFORMS
from schemas.models import Dataset, Embedding, utcnow
from schemas.settings import Settings

log = logging.getLogger(__name__)

ATTRIBUTE_BATCH, TOKEN_BATCH = 128, 32
#: HNSW candidates per search (at least the rows asked for: pgvector returns at most that
#: many), and the graph's build parameters: m, pgvector's default; ef_construction by size
#: (see docs/decisions.md, HNSW search and build parameters).
EF_SEARCH = 200
HNSW_M = 16
HNSW_LARGE = 200_000  # vectors; a bigger index gets the slower, better-connected build
ENCODE_WINDOW_BATCHES = 16  # batches of ATTRIBUTE_BATCH per encode() call
_SECRET_REF = re.compile(r"^[A-Z][A-Z0-9_]{1,127}$")
MAX_IMPORT_ERRORS = 50

Progress = Callable[[float, float | None, str | None], None]


def hnsw_ef_construction(rows: int) -> int:
    """pgvector's ef_construction for an index of `rows` vectors (see EF_SEARCH)."""
    return 64 if rows <= HNSW_LARGE else 128


# -- records --------------------------------------------------------------------------------------


class ImportRejected(Refused):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_IMPORT_ERRORS]
        more = f"\n… and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(
            f"{source}: nothing imported ({len(problems)} bad rows):\n" + "\n".join(shown) + more
        )


def _rows_from_file(path: Path) -> Iterator[tuple[int, Any]]:
    """(line or row number, parsed row or an error string)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, f"line {number}: not valid JSON ({exc.msg})"
    elif suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for number, row in enumerate(csv.DictReader(fh), 2):
                if None in row:
                    yield number, f"line {number}: more values than columns"
                else:
                    yield number, dict(row)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield number, row
    else:
        raise Refused(f"{path.name}: unknown format (use .jsonl, .csv or .parquet)")


def import_records(
    session: Session, path: Path, *, dataset: str, actor: str, id_field: str = "id"
) -> dict[str, Any]:
    """All or nothing: every row is a JSON object (with a unique `id`, or its row number)."""
    if not path.is_file():
        raise Refused(f"{path} is not a file")
    try:
        rows = list(_rows_from_file(path))
    except UnicodeDecodeError as exc:
        raise Refused(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    problems: list[str] = []
    records: dict[str, dict[str, Any]] = {}
    for number, row in rows:
        if isinstance(row, str):
            problems.append(row)
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: a record must be an object, got {type(row).__name__}")
            continue
        ext = str(row.get(id_field, number))
        if ext in records:
            problems.append(f"line {number}: duplicate {id_field} {ext!r}")
            continue
        records[ext] = row
    if not rows:
        problems.append("the file has no records")
    if problems:
        raise ImportRejected(path.name, problems)
    ds = session.exec(select(Dataset).where(Dataset.name == dataset)).first()
    if ds is None:
        ds = Dataset(name=dataset)
        session.add(ds)
        session.flush()
    payload = [
        {"id": uuid.uuid4(), "ds": ds.id, "ext": ext, "data": json.dumps(row, default=str)}
        for ext, row in records.items()
    ]
    session.execute(
        text(
            "INSERT INTO record (id, dataset_id, external_id, data, updated_at) "
            "VALUES (:id, :ds, :ext, CAST(:data AS jsonb), now()) "
            "ON CONFLICT (dataset_id, external_id) DO UPDATE SET data = EXCLUDED.data, "
            "updated_at = now()"
        ),
        payload,
    )
    audit.record(
        session,
        actor=actor,
        action="records.imported",
        target=dataset,
        details={"file": path.name, "records": len(payload)},
    )
    return {"dataset": dataset, "records": len(payload)}


def get_dataset(session: Session, name: str) -> Dataset:
    ds = session.exec(select(Dataset).where(Dataset.name == name)).first()
    if ds is None:
        raise NotFound(f"dataset {name!r} not found")
    return ds


# -- embeddings -----------------------------------------------------------------------------------


def resolve_secret(ref: str | None) -> str | None:
    """An API key by reference: the name of an environment variable the workers have."""
    if ref is None:
        return None
    if not _SECRET_REF.match(ref):
        raise EmbeddingError(
            f"api_key_ref {ref!r} must name an environment variable "
            "(e.g. OPENAI_API_KEY); keys are never passed in task arguments"
        )
    value = os.environ.get(ref)
    if not value:
        raise EmbeddingError(f"the API key {ref} is not set in the workers' environment")
    return value


@dataclass
class EmbeddingSpec:
    dataset: str
    attribute: str
    platform: str
    model: str
    granularity: str = "attribute"
    dims: int | None = None
    api_key_ref: str | None = None
    base_url: str | None = None


def create_embedding(session: Session, spec: EmbeddingSpec, *, actor: str) -> Embedding:
    if spec.platform not in PLATFORMS:
        raise EmbeddingError(f"unknown platform {spec.platform!r} (known: {', '.join(PLATFORMS)})")
    if spec.granularity not in ("attribute", "token"):
        raise EmbeddingError("granularity must be attribute or token")
    ds = get_dataset(session, spec.dataset)
    dims = spec.dims or (64 if spec.granularity == "attribute" else 16)
    emb = Embedding(
        dataset_id=ds.id,
        attribute=spec.attribute,
        platform=spec.platform,
        model=spec.model,
        granularity=spec.granularity,
        target_dims=dims,
        api_key_ref=spec.api_key_ref,
    )
    session.add(emb)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="embedding.created",
        target=f"{spec.dataset}.{spec.attribute}",
        details={
            "embedding": str(emb.id),
            "platform": spec.platform,
            "model": spec.model,
            "granularity": spec.granularity,
            "dims": dims,
        },
    )
    return emb


def embedding_of_job(job_id: uuid.UUID) -> uuid.UUID | None:
    """The embedding a compute job created (so a redelivered job continues it)."""
    with session_scope() as session:
        return session.exec(select(Embedding.id).where(Embedding.job_id == job_id)).first()


def _encoder(emb: Embedding, settings: Settings, base_url: str | None = None) -> Encoder:
    options: dict[str, Any] = {}
    if emb.platform == "spark":
        return make_encoder("spark", emb.model)
    if emb.platform == "huggingface":
        options["cache_dir"] = str(settings.home / "models")
    return make_encoder(
        emb.platform,
        emb.model,
        api_key=resolve_secret(emb.api_key_ref),
        base_url=base_url,
        **options,
    )


def _set(emb_id: uuid.UUID, **values: Any) -> None:
    with session_scope() as session:
        emb = session.get(Embedding, emb_id, with_for_update=True)
        if emb is None:
            return
        for key, value in values.items():
            setattr(emb, key, value)
        emb.updated_at = utcnow()
        session.add(emb)


def _state(emb_id: uuid.UUID) -> str | None:
    with session_scope() as session:
        emb = session.get(Embedding, emb_id)
        return None if emb is None else emb.state


def _texts(session: Session, emb: Embedding) -> list[tuple[uuid.UUID, str]]:
    # The server extracts the text (->>) and names its JSON type: no JSON decoding here
    # (see docs/decisions.md, Reading records' text in the server).
    rows = session.execute(
        text(
            "SELECT id, data ->> :attr, jsonb_typeof(data -> :attr), external_id FROM record "
            "WHERE dataset_id = :ds ORDER BY external_id"
        ),
        {"attr": emb.attribute, "ds": emb.dataset_id},
    ).all()
    if not rows:
        raise EmbeddingError("the dataset has no records")
    items: list[tuple[uuid.UUID, str]] = []
    present = 0
    bad: list[str] = []
    for rid, value, kind, external_id in rows:
        if kind == "string":
            present += 1
            items.append((rid, value))
        elif kind is None or kind == "null":  # no such attribute, or null: embedded as ""
            items.append((rid, ""))
        else:
            bad.append(external_id)
    if bad:
        raise EmbeddingError(
            f"attribute {emb.attribute!r} is not text in records "
            f"{', '.join(bad[:10])}" + (" …" if len(bad) > 10 else "")
        )
    if not present:
        raise EmbeddingError(f"no record has an attribute {emb.attribute!r}")
    return items


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


class Cancelled(Refused):
    """The embedding was deleted while it was being computed."""


def compute(
    emb_id: uuid.UUID,
    settings: Settings,
    *,
    actor: str,
    progress: Progress,
    fit_batches: int = 5,
    base_url: str | None = None,
) -> dict[str, Any]:
    """Compute (or finish computing) one embedding. Safe to run again: vectors are upserted."""
    with session_scope() as session:
        emb = session.get(Embedding, emb_id)
        if emb is None:
            raise NotFound(f"embedding {emb_id} not found")
        if emb.state == "finished":
            return {"embedding": str(emb.id), "state": "finished", "already": True}
        if emb.state == "deleted":
            raise Cancelled(f"embedding {emb_id} was deleted")
        snapshot = emb.model_copy()
    _set(emb_id, state="waiting", error=None)
    try:
        with session_scope() as session:
            items = _texts(session, snapshot)
        encoder = _encoder(snapshot, settings, base_url)
        _set(emb_id, state="encoding")
        if snapshot.granularity == "token":
            out = _compute_tokens(snapshot, encoder, items, progress)
        else:
            out = _compute_attributes(snapshot, encoder, items, progress, fit_batches)
        encoder.close()
    except Cancelled:
        raise
    except Exception as exc:
        if _state(emb_id) != "deleted":
            _set(emb_id, state="failed", error=str(exc))
        raise
    with session_scope() as session:
        emb = session.get(Embedding, emb_id, with_for_update=True)
        assert emb is not None
        emb.output_dims = out["dims"]
        emb.reducer_state = out["reducer"]
        emb.encoder_state = out.get("encoder")
        emb.state, emb.progress, emb.finished_at = "finished", 1.0, utcnow()
        session.add(emb)
        session.flush()
        if snapshot.granularity == "attribute":
            _index(session, emb, out["records"])
        audit.record(
            session,
            actor=actor,
            action="embedding.finished",
            target=str(emb.id),
            details={"records": out["records"], "dims": out["dims"], "reduced": out["reduced"]},
        )
    return {
        "embedding": str(emb_id),
        "state": "finished",
        "records": out["records"],
        "dims": out["dims"],
        "reduced": out["reduced"],
    }


def _check_cancel(emb_id: uuid.UUID) -> None:
    if _state(emb_id) == "deleted":
        raise Cancelled(f"embedding {emb_id} was deleted while it was computed; stopped")


def _compute_attributes(
    emb: Embedding,
    encoder: Encoder,
    items: list[tuple[uuid.UUID, str]],
    progress: Progress,
    fit_batches: int,
) -> dict[str, Any]:
    texts = [t for _, t in items]
    encoder.fit(texts)
    reducer = Reducer(emb.target_dims)
    pending: list[tuple[Sequence[uuid.UUID], np.ndarray]] = []
    done = 0
    batches = list(_batches(items, ATTRIBUTE_BATCH))
    number = 0
    # One window's vectors are projected and stored on a helper thread while the model encodes
    # the next window (the model releases the GIL); that thread reports the progress once the
    # window's store has committed. At most one store is in flight; its error is raised here.
    storing = ThreadPoolExecutor(1, thread_name_prefix="embedding-store")
    in_flight: Future[None] | None = None

    def store(flush: list[tuple[Sequence[uuid.UUID], np.ndarray]], count: int) -> None:
        _store_window(emb.id, reducer, flush)
        progress(count, len(items), f"encoded {count}/{len(items)}")
        _set(emb.id, progress=count / len(items))

    try:
        # The model gets a window of batches per call: sentence-transformers sorts the texts
        # of one call by length, so a bigger call pads far less (see docs/decisions.md,
        # Encoding windows of 16 batches). PCA and storage stay per batch.
        for window in _batches(batches, ENCODE_WINDOW_BATCHES):
            _check_cancel(emb.id)
            encoded = encoder.encode([t for batch in window for _, t in batch])
            offset = 0
            flush: list[tuple[Sequence[uuid.UUID], np.ndarray]] = []
            for batch in window:
                vectors = encoded[offset : offset + len(batch)]
                offset += len(batch)
                ids = [rid for rid, _ in batch]
                number += 1
                if reducer.fitted:
                    flush.append((ids, vectors))
                    continue
                pending.append((ids, vectors))
                if len(pending) < fit_batches and number < len(batches):
                    continue
                reducer.fit(np.vstack([v for _, v in pending]))
                flush, pending = pending, []
            if not flush:
                continue
            if in_flight is not None:
                in_flight.result()
            done += sum(len(chunk_ids) for chunk_ids, _ in flush)
            in_flight = storing.submit(store, flush, done)
        if in_flight is not None:
            in_flight.result()
    finally:
        storing.shutdown(wait=True)
    encoder_state = encoder.to_bytes() if hasattr(encoder, "to_bytes") else None
    return {
        "records": done,
        "dims": reducer.output_dim,
        "reducer": reducer.to_bytes(),
        "reduced": reducer.reduced,
        "encoder": encoder_state,
    }


def _compute_tokens(
    emb: Embedding, encoder: Encoder, items: list[tuple[uuid.UUID, str]], progress: Progress
) -> dict[str, Any]:
    encoder.fit([t for _, t in items])
    per_record: list[tuple[uuid.UUID, Any]] = []
    for batch in _batches(items, TOKEN_BATCH):
        _check_cancel(emb.id)
        per_record.extend(
            zip(
                [rid for rid, _ in batch],
                token_vectors(encoder, [t for _, t in batch]),
                strict=True,
            )
        )
        progress(len(per_record), 2 * len(items), "encoding tokens")
    all_vectors = [tv.vector for _, tvs in per_record for tv in tvs]
    reducer = Reducer(emb.target_dims)
    if all_vectors:
        reducer.fit(np.vstack(all_vectors[: 5 * TOKEN_BATCH * 16]))
    with session_scope() as session:
        session.execute(text("DELETE FROM token_vector WHERE embedding_id = :e"), {"e": emb.id})
        rows = []
        for rid, tvs in per_record:
            if not tvs:
                continue
            reduced = reducer.transform(np.vstack([tv.vector for tv in tvs]))
            rows += [
                {"e": emb.id, "r": rid, "i": i, "s": tv.start, "n": tv.end, "v": _vec(vec)}
                for i, (tv, vec) in enumerate(zip(tvs, reduced, strict=True))
            ]
        if rows:
            session.execute(
                text(
                    "INSERT INTO token_vector (embedding_id, record_id, token_index, "
                    "start_offset, end_offset, vector) VALUES (:e, :r, :i, :s, :n, "
                    "CAST(:v AS vector))"
                ),
                rows,
            )
    progress(2 * len(items), 2 * len(items), "stored")
    return {
        "records": len(per_record),
        "dims": reducer.output_dim,
        "reducer": reducer.to_bytes(),
        "reduced": reducer.reduced,
    }


def embed_records(
    emb_id: uuid.UUID, records: list[str], settings: Settings, *, base_url: str | None = None
) -> dict[str, Any]:
    """New or edited records, embedded with the stored model and reducer (no refit)."""
    with session_scope() as session:
        emb = session.get(Embedding, emb_id)
        if emb is None or emb.state != "finished":
            raise NotFound(f"embedding {emb_id} not found or not finished")
        rows = session.execute(
            text(
                "SELECT id, external_id, data -> :attr AS value FROM record "
                "WHERE dataset_id = :ds AND external_id = ANY(:ids)"
            ),
            {"attr": emb.attribute, "ds": emb.dataset_id, "ids": records},
        ).all()
        missing = sorted(set(records) - {r.external_id for r in rows})
        if missing:
            raise NotFound(f"records not found: {', '.join(missing[:20])}")
        bad = [r.external_id for r in rows if not isinstance(r.value, str)]
        if bad:
            raise EmbeddingError(
                f"attribute {emb.attribute!r} is not text in records {', '.join(bad[:10])}"
            )
        vectors = embed_query(emb, settings, [r.value for r in rows], base_url)
        _store(session, emb.id, [r.id for r in rows], vectors)
    return {"embedding": str(emb_id), "records": len(rows)}


def list_embeddings(session: Session) -> list[tuple[Embedding, Dataset]]:
    """Every embedding with its dataset, the latest created first."""
    return list(
        session.exec(
            select(Embedding, Dataset)
            .where(Embedding.dataset_id == Dataset.id)
            .order_by(col(Embedding.created_at).desc())
        ).all()
    )


def delete_embedding(session: Session, emb_id: uuid.UUID, *, actor: str) -> None:
    """Mark deleted (a running job stops at its next batch) and drop its vectors."""
    emb = session.get(Embedding, emb_id, with_for_update=True)
    if emb is None:
        raise NotFound(f"embedding {emb_id} not found")
    emb.state = "deleted"
    session.add(emb)
    session.execute(text(f"DROP INDEX IF EXISTS ix_embedding_vector_{emb.id.hex}"))
    session.execute(text("DELETE FROM embedding_vector WHERE embedding_id = :e"), {"e": emb.id})
    session.execute(text("DELETE FROM token_vector WHERE embedding_id = :e"), {"e": emb.id})
    audit.record(session, actor=actor, action="embedding.deleted", target=str(emb.id))


# -- search ---------------------------------------------------------------------------------------


def _latest(session: Session, dataset: str, embedding_id: uuid.UUID | None) -> Embedding:
    ds = get_dataset(session, dataset)
    query = select(Embedding).where(
        Embedding.dataset_id == ds.id,
        Embedding.state == "finished",
        Embedding.granularity == "attribute",
    )
    if embedding_id is not None:
        query = query.where(Embedding.id == embedding_id)
    emb = session.exec(query.order_by(col(Embedding.finished_at).desc())).first()
    if emb is None:
        raise NotFound(f"dataset {dataset!r} has no finished attribute-level embedding")
    return emb


def embed_query(
    emb: Embedding, settings: Settings, texts: list[str], base_url: str | None = None
) -> np.ndarray:
    """Embed texts with an embedding's model and stored reducer (and bow vocabulary)."""
    if emb.platform == "bow" and emb.encoder_state:
        from nlphub.embeddings.platforms import BowEncoder

        encoder: Encoder = BowEncoder.from_bytes(emb.encoder_state)
    elif emb.platform == "spark" and emb.encoder_state:
        from nlphub.embeddings.spark.encoder import SparkEncoder

        encoder = SparkEncoder.from_bytes(emb.encoder_state)
    else:
        encoder = _encoder(emb, settings, base_url)
    reducer = Reducer.from_bytes(emb.reducer_state or b"")
    try:
        return reducer.transform(encoder.encode(texts))
    finally:
        encoder.close()


#: The embedding a search uses: the dataset's newest finished attribute-level one, or the
#: one asked for (psycopg parameters `ds`, `eid`).
_SEARCHED = (
    "SELECT e.id, e.output_dims, d.id AS dataset_id FROM dataset d "
    "JOIN embedding e ON e.dataset_id = d.id "
    "WHERE d.name = %(ds)s AND e.state = 'finished' AND e.granularity = 'attribute' "
    "AND (CAST(%(eid)s AS uuid) IS NULL OR e.id = CAST(%(eid)s AS uuid)) "
    "ORDER BY e.finished_at DESC LIMIT 1"
)
#: That embedding, and a record's vector in it (`x`; NULL when the record has none).
_FIND = (
    f"WITH target AS MATERIALIZED ({_SEARCHED}) "
    "SELECT target.id, target.output_dims, (SELECT v.vector::text FROM record r "
    "JOIN embedding_vector v ON v.record_id = r.id AND v.embedding_id = target.id "
    "WHERE r.dataset_id = target.dataset_id AND r.external_id = %(x)s) AS vector FROM target"
)
#: For one statement only (its implicit transaction): the HNSW candidates, and a generic plan
#: (a search's text names its embedding, so that plan keeps the partial index).
_SEARCH_SETTINGS = (
    "SELECT set_config('hnsw.ef_search', %(ef)s, true), "
    "set_config('plan_cache_mode', 'force_generic_plan', true)"
)
#: (database, dataset, embedding asked for) -> (the embedding searched, its dimensions), per
#: process, so that a record's search is one statement (`_by_record` checks it is still the
#: one to search). At most `_TARGETS_MAX` entries.
_TARGETS: dict[tuple[str, str, uuid.UUID | None], tuple[uuid.UUID, int]] = {}
_TARGETS_MAX = 1024
_EF_SEARCH_MAX = 1000  # pgvector's limit


def _knn(emb_id: uuid.UUID, dims: int, query: str, limit: int, check: str = "") -> str:
    """A kNN over the embedding's partial HNSW index, to the vector `query` (SQL), of the
    rows that also pass `check`. Its text names the embedding and the dimensions: the index
    is partial, on `vector::vector(dims)`."""
    vector = f"(v.vector::vector({int(dims)}))"
    return (
        f"SELECT r.external_id, 1 - ({vector} <=> {query}) AS score "
        f"FROM embedding_vector v JOIN record r ON r.id = v.record_id "
        f"WHERE v.embedding_id = '{uuid.UUID(str(emb_id))}' {check}"
        f"ORDER BY {vector} <=> {query} LIMIT {int(limit)}"
    )


def _by_vector(emb_id: uuid.UUID, dims: int, limit: int) -> str:
    """The nearest vectors to the vector `q` (its text form)."""
    return _knn(emb_id, dims, f"CAST(%(q)s AS vector({int(dims)}))", limit)


def _by_record(emb_id: uuid.UUID, dims: int, limit: int) -> str:
    """The nearest vectors to record `x`'s, in one statement: no rows when `emb_id` is not
    the embedding to search any more (a newer one finished) or `x` has no vector in it."""
    emb = uuid.UUID(str(emb_id))
    return (
        f"WITH target AS MATERIALIZED ({_SEARCHED}), "
        f"q AS MATERIALIZED (SELECT v.vector::vector({int(dims)}) AS qv FROM record r "
        f"JOIN embedding_vector v ON v.record_id = r.id AND v.embedding_id = '{emb}' "
        f"WHERE r.dataset_id = (SELECT dataset_id FROM target) AND r.external_id = %(x)s) "
    ) + _knn(
        emb,
        dims,
        "(SELECT qv FROM q)",
        limit,
        check=f"AND (SELECT id FROM target) = '{emb}' AND (SELECT qv FROM q) IS NOT NULL ",
    )


def _search(
    conn: Connection, sql: str, params: dict[str, Any], rows: int = 0
) -> list[tuple[Any, ...]]:
    """Run `sql` (a search for `rows` rows) with `_SEARCH_SETTINGS` in one round trip: a
    pipeline on an autocommit connection, whose two statements share the implicit transaction
    until its sync. The statement is prepared on the connection (psycopg keeps it), so later
    searches are not planned again (see docs/decisions.md, Neural search in one prepared
    round trip)."""
    ef = min(_EF_SEARCH_MAX, max(EF_SEARCH, rows))
    with driver_connection(conn, sql, params) as dbapi:
        with dbapi.pipeline():
            dbapi.execute(_SEARCH_SETTINGS, {"ef": str(ef)})
            cursor = dbapi.execute(sql, params, prepare=True)
        return list(cursor.fetchall())


def _find(
    conn: Connection, dataset: str, embedding_id: uuid.UUID | None, record: str | None
) -> tuple[uuid.UUID, int, str | None]:
    """(embedding to search, its dimensions, `record`'s vector in it or None); NotFound
    names what is missing."""
    params = {"ds": dataset, "eid": embedding_id, "x": record}
    with driver_connection(conn, _FIND, params) as dbapi:
        row = dbapi.execute(_FIND, params).fetchone()
    if row is None:
        with Session(conn) as session:
            _latest(session, dataset, embedding_id)  # raises the error that names what is missing
        raise NotFound(f"dataset {dataset!r} has no finished attribute-level embedding")
    return row[0], int(row[1] or 0), row[2]


def similar(
    settings: Settings,
    *,
    dataset: str,
    k: int = 10,
    record: str | None = None,
    query: str | None = None,
    embedding_id: uuid.UUID | None = None,
) -> list[dict[str, Any]]:
    """Nearest records by cosine similarity (HNSW index) to a record or a query text.

    A record's search is one statement, one round trip, once this process has searched the
    dataset: the embedding to search and its dimensions are remembered, and the statement
    itself checks that they are still right (when not, they are looked up again, with the
    record's vector, which the search then uses). A query
    text is embedded with the embedding's model and reducer, loaded only for that."""
    if (record is None) == (query is None):
        raise Refused("give a record id or a query text")
    engine = autocommit_engine()
    key = (str(engine.url), dataset, embedding_id)
    with engine.connect() as conn:
        if record is not None:
            known = _TARGETS.get(key)
            if known is not None:
                params = {"ds": dataset, "eid": embedding_id, "x": record}
                rows = _search(conn, _by_record(*known, k + 1), params, k + 1)
                if rows:
                    return _hits(rows, record, k)
            emb_id, dims, vector = _find(conn, dataset, embedding_id, record)
            if vector is None:
                raise NotFound(f"record {record!r} has no vector in embedding {emb_id}")
            if len(_TARGETS) >= _TARGETS_MAX:
                _TARGETS.clear()
            _TARGETS[key] = (emb_id, dims)
            rows = _search(conn, _by_vector(emb_id, dims, k + 1), {"q": vector}, k + 1)
            return _hits(rows, record, k)
        emb_id, dims, _ = _find(conn, dataset, embedding_id, None)
    with Session(get_engine()) as session:
        emb = session.get(Embedding, emb_id)
    if emb is None:  # deleted since
        raise NotFound(f"dataset {dataset!r} has no finished attribute-level embedding")
    vector = _vec(embed_query(emb, settings, [query or ""])[0])
    with engine.connect() as conn:
        return _hits(_search(conn, _by_vector(emb_id, dims, k), {"q": vector}, k), None, k)


def _hits(rows: Sequence[tuple[Any, ...]], record: str | None, k: int) -> list[dict[str, Any]]:
    return [
        {"id": external_id, "score": round(float(score), 6)}
        for external_id, score in rows
        if external_id != record
    ][:k]

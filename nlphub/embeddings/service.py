"""Embeddings: their definitions, and the job that computes one (its vectors stored by
`nlphub.embeddings.vectors`, searched by `nlphub.embeddings.search`).

`compute` follows refinery's shape: batches of 128 (attribute) or 32 (token) texts (the model
sees 16 attribute batches per call, so it pads less), PCA fitted on the first batches
(`fit_batches`, ~5) then streamed; no PCA when there are fewer records than components; the
fitted reducer (and a bag-of-words vocabulary) is stored so new or edited records — and search
queries — are embedded later with the same projection. Vectors are
upserted per (embedding, record), so a redelivered job never duplicates them.

API keys (the HTTP platforms) follow `nlphub.credentials`: `api_key_ref` names a credential
the operator declared, and the endpoint it is sent to is checked when the embedding is created
and stored with it; every later use (compute, `embed_records`, query embedding for search)
sends the key to that stored endpoint only, checked again against the policy.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlmodel import Session, col, select

from nlphub import audit, counters, credentials, jobstate
from nlphub.embeddings.platforms import EmbeddingError, Encoder
from nlphub.embeddings.records import get_dataset
from nlphub.embeddings.reduce import Reducer
from nlphub.embeddings.registry import http_platform, make_encoder
from nlphub.embeddings.tokens import token_vectors
from nlphub.embeddings.vectors import Cancelled, _index, _store, _store_window, _vec
from nlphub.errors import NotFound
from schemas.db import session_scope
from schemas.embedding_platforms import PLATFORMS
from schemas.models import Dataset, Embedding, utcnow
from schemas.settings import Settings, get_settings
from schemas.states import EMBEDDING_IN_PROGRESS

log = logging.getLogger(__name__)

ATTRIBUTE_BATCH, TOKEN_BATCH = 128, 32
ENCODE_WINDOW_BATCHES = 16  # batches of ATTRIBUTE_BATCH per encode() call

Progress = Callable[[float, float | None, str | None], None]


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


def _endpoint(spec: EmbeddingSpec, settings: Settings) -> str | None:
    """The endpoint an HTTP platform's key will be sent to, allowed by the credential policy
    (None for a local platform, which takes neither a key nor an endpoint)."""
    cls = http_platform(spec.platform)
    if cls is None:
        if spec.api_key_ref is not None or spec.base_url is not None:
            raise EmbeddingError(
                f"{spec.platform} runs on the workers and takes no api_key_ref or base_url "
                "(only openai, azure and cohere send requests)"
            )
        return None
    return credentials.endpoint(
        settings,
        spec.api_key_ref,
        platform=cls.platform,
        base_url=spec.base_url,
        default_base_url=cls.default_base_url,
    )


def create_embedding(
    session: Session, spec: EmbeddingSpec, *, actor: str, settings: Settings | None = None
) -> Embedding:
    """A new embedding row (state initializing). An HTTP platform's credential and endpoint are
    checked here (`nlphub.credentials`) and the endpoint is stored: later uses send the key
    there only."""
    if spec.platform not in PLATFORMS:
        raise EmbeddingError(f"unknown platform {spec.platform!r} (known: {', '.join(PLATFORMS)})")
    if spec.granularity not in ("attribute", "token"):
        raise EmbeddingError("granularity must be attribute or token")
    base_url = _endpoint(spec, settings or get_settings())
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
        base_url=base_url,
    )
    session.add(emb)
    session.flush()
    details: dict[str, Any] = {
        "embedding": str(emb.id),
        "platform": spec.platform,
        "model": spec.model,
        "granularity": spec.granularity,
        "dims": dims,
    }
    if base_url is not None:  # which credential goes where: names only, never a key
        details |= {"api_key_ref": spec.api_key_ref, "base_url": base_url}
    audit.record(
        session,
        actor=actor,
        action="embedding.created",
        target=f"{spec.dataset}.{spec.attribute}",
        details=details,
    )
    return emb


def embedding_of_job(job_id: uuid.UUID) -> uuid.UUID | None:
    """The embedding a compute job created (so a redelivered job continues it)."""
    with session_scope() as session:
        return session.exec(select(Embedding.id).where(Embedding.job_id == job_id)).first()


def _encoder(emb: Embedding, settings: Settings) -> Encoder:
    """The embedding's encoder. An HTTP platform's key comes from the credential policy and
    goes to the embedding's stored endpoint only (an embedding stored before endpoints were:
    the platform's default), whatever a later payload asks."""
    if emb.platform == "spark":
        return make_encoder("spark", emb.model)
    cls = http_platform(emb.platform)
    if cls is not None:
        grant = credentials.resolve(
            settings,
            emb.api_key_ref,
            platform=cls.platform,
            base_url=emb.base_url,
            default_base_url=cls.default_base_url,
        )
        return make_encoder(
            emb.platform,
            emb.model,
            api_key=grant.key,
            base_url=grant.base_url,
        )
    options: dict[str, Any] = {}
    if emb.platform == "huggingface":
        options["cache_dir"] = str(settings.home / "models")
    return make_encoder(emb.platform, emb.model, **options)


def embed_query(emb: Embedding, settings: Settings, texts: list[str]) -> np.ndarray:
    """Embed texts with an embedding's model and stored reducer (and bow vocabulary)."""
    if emb.platform == "bow" and emb.encoder_state:
        from nlphub.embeddings.platforms import BowEncoder

        encoder: Encoder = BowEncoder.from_bytes(emb.encoder_state)
    elif emb.platform == "spark" and emb.encoder_state:
        from nlphub.embeddings.spark.encoder import SparkEncoder

        encoder = SparkEncoder.from_bytes(emb.encoder_state)
    else:
        encoder = _encoder(emb, settings)
    reducer = Reducer.from_bytes(emb.reducer_state or b"")
    try:
        return reducer.transform(encoder.encode(texts))
    finally:
        encoder.close()


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


def compute(
    emb_id: uuid.UUID,
    settings: Settings,
    *,
    actor: str,
    progress: Progress,
    fit_batches: int = 5,
) -> dict[str, Any]:
    """Compute (or finish computing) one embedding. Safe to run again: vectors are upserted.
    An HTTP platform's key goes to the embedding's stored endpoint only."""
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
        encoder = _encoder(snapshot, settings)
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
        counters.add(session, counters.EMBEDDING_RECORDS, out["records"], emb.platform)
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


def embed_records(emb_id: uuid.UUID, records: list[str], settings: Settings) -> dict[str, Any]:
    """New or edited records, embedded with the stored model and reducer (no refit), and an
    HTTP platform's stored credential and endpoint (never one a later payload names). The
    embedding and the records' text are read in one short transaction and the vectors stored
    in another; the encoding between (HTTP requests, a model load) runs with none open. An
    embedding deleted meanwhile gets no vectors (`_store` shares its row lock with the
    delete)."""
    with session_scope() as session:
        emb = session.get(Embedding, emb_id)
        if emb is None or emb.state != "finished":
            raise NotFound(f"embedding {emb_id} not found or not finished")
        snapshot = emb.model_copy()
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
            f"attribute {snapshot.attribute!r} is not text in records {', '.join(bad[:10])}"
        )
    vectors = embed_query(snapshot, settings, [r.value for r in rows])
    with session_scope() as session:
        try:
            _store(session, emb_id, [r.id for r in rows], vectors)
        except Cancelled:
            raise NotFound(
                f"embedding {emb_id} was deleted while its records were embedded"
            ) from None
        counters.add(session, counters.EMBEDDING_RECORDS, len(rows), snapshot.platform)
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


def fail_abandoned_embeddings(session: Session, *, actor: str, limit: int = 1000) -> list[str]:
    """Fail every embedding left initializing, waiting or encoding by a compute job that is
    over (revoked, killed past its time limit, failed by the reconciler) or missing (run by
    the reconciler, like `nlphub.hub.service.fail_abandoned_resources`): it would otherwise
    stay in progress for good. Rows another transaction holds are skipped. Returns their ids."""
    failed = []
    for emb, reason in jobstate.abandoned(session, Embedding, EMBEDDING_IN_PROGRESS, limit=limit):
        emb.state, emb.error, emb.updated_at = "failed", f"abandoned: {reason}", utcnow()
        session.add(emb)
        audit.record(
            session,
            actor=actor,
            action="embedding.failed",
            target=str(emb.id),
            job_id=emb.job_id,
            details={"reason": reason, "abandoned": True},
        )
        failed.append(str(emb.id))
    return failed

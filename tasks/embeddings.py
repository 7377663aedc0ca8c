"""Embedding tasks. Thin: the logic is in nlphub/embeddings/service.py."""

from __future__ import annotations

from typing import Any

from nlphub.embeddings import search, service
from schemas.db import session_scope
from schemas.payloads import ComputeEmbeddingsPayload, EmbedRecordsPayload, SimilarPayload
from schemas.settings import get_settings
from tasks.base import JobContext, nlphub_task


@nlphub_task("nlphub.compute_embeddings")
def compute_embeddings(job: JobContext, payload: ComputeEmbeddingsPayload) -> dict[str, Any]:
    """Embed a dataset's attribute (attribute or token level), reduce with PCA, store the
    vectors (pgvector, HNSW cosine index) and the fitted reducer. Side effects: the embedding
    row, vectors, audit events. Safe to run twice: vectors are upserted per record.
    `api_key_ref` names a declared credential and `base_url` must be one of its endpoints
    (`nlphub.credentials`); for an existing `embedding_id` its stored ones are used."""
    embedding_id = payload.embedding_id or service.embedding_of_job(job.id)
    if embedding_id is None:  # the first delivery creates it; a redelivery finds it
        with session_scope() as session:
            emb = service.create_embedding(
                session,
                service.EmbeddingSpec(
                    payload.dataset,
                    payload.attribute,
                    payload.platform,
                    payload.model,
                    payload.granularity,
                    payload.dims,
                    payload.api_key_ref,
                    payload.base_url,
                ),
                actor=payload.requested_by,
                settings=get_settings(),
            )
            emb.job_id = job.id
            embedding_id = emb.id
    return service.compute(
        embedding_id,
        get_settings(),
        actor=payload.requested_by,
        progress=job.progress,
    )


@nlphub_task("nlphub.embed_records")
def embed_records(job: JobContext, payload: EmbedRecordsPayload) -> dict[str, Any]:
    """Embed new or edited records with the embedding's stored model and reducer (no refit),
    and its stored credential and endpoint: a `base_url` in this payload is ignored (kept for
    compatibility), so a key is never sent where its embedding was not allowed to send it.
    Side effects: their vectors (upserted). Safe to run twice."""
    out = service.embed_records(payload.embedding_id, payload.records, get_settings())
    if payload.base_url is not None:
        out["note"] = "base_url ignored: records are embedded with the embedding's own endpoint"
    return out


@nlphub_task("nlphub.similar")
def similar(job: JobContext, payload: SimilarPayload) -> dict[str, Any]:
    """Nearest records by cosine similarity. Side effects: none. Safe to run twice."""
    hits = search.similar(
        get_settings(),
        dataset=payload.dataset,
        k=payload.k,
        record=payload.record,
        query=payload.text,
    )
    return {"hits": hits}

"""Neural search: the records nearest by cosine similarity (pgvector's HNSW index) to a record
or to a query text, in one prepared round trip.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlmodel import Session, col, select

from nlphub.embeddings.records import get_dataset
from nlphub.embeddings.service import embed_query
from nlphub.embeddings.vectors import _vec
from nlphub.errors import NotFound, Refused
from schemas.db import autocommit_engine, driver_connection, get_engine
from schemas.models import Embedding
from schemas.settings import Settings

#: HNSW candidates per search (at least the rows asked for: pgvector returns at most that
#: many; see docs/decisions.md, HNSW search and build parameters).
EF_SEARCH = 200


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

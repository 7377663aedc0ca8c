"""Neural search end to end: similar records over pgvector, its settings and errors, and the
HNSW index build's memory (the platforms and jobs: test_embeddings.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session

from nlphub.embeddings.search import EF_SEARCH, similar
from schemas.db import get_engine, session_scope
from schemas.settings import get_settings
from tests.integration.test_embeddings import _load, _records, _scores

pytestmark = pytest.mark.integration


def _computed(dims: int, dataset: str = "news") -> uuid.UUID:
    """A finished bow embedding of `dataset`, computed here (no worker)."""
    from nlphub.embeddings.service import EmbeddingSpec, compute, create_embedding

    with session_scope() as session:
        emb = create_embedding(
            session, EmbeddingSpec(dataset, "text", "bow", "tfidf", dims=dims), actor="t"
        )
        emb_id = emb.id
    compute(emb_id, get_settings(), actor="t", progress=lambda *_: None)
    return emb_id


def test_similar_remembers_the_embedding_and_notices_a_newer_one(
    env, tmp_path, monkeypatch
) -> None:
    """Once a dataset was searched, a record's search is one statement on the remembered
    embedding; that statement notices a newer finished embedding, or the remembered one
    deleted, and the search looks the embedding up again. (Scores are compared: the records
    come in 12 copies, whose order among equal scores is the index's.)"""
    import nlphub.embeddings.search as search
    from nlphub.embeddings.service import delete_embedding
    from schemas.db import autocommit_engine

    _load(tmp_path, _records(12))
    first = _computed(16)
    key = (str(autocommit_engine().url), "news", None)
    assert key not in search._TARGETS
    hits = similar(get_settings(), dataset="news", record="food-0-0", k=15)
    assert len(hits) == 15 and search._TARGETS[key] == (first, 16)
    looked_up: list[str | None] = []
    find = search._find

    def counted(conn: Any, dataset: str, embedding_id: Any, record: str | None) -> Any:
        looked_up.append(record)
        return find(conn, dataset, embedding_id, record)

    monkeypatch.setattr(search, "_find", counted)
    assert _scores(similar(get_settings(), dataset="news", record="food-0-0", k=15)) == _scores(
        hits
    )
    assert looked_up == []  # the remembered embedding, one statement
    with pytest.raises(Exception, match="record 'nope' has no vector"):
        similar(get_settings(), dataset="news", record="nope", k=15)
    second = _computed(8)
    newer = similar(get_settings(), dataset="news", record="food-0-0", k=15)
    assert looked_up == ["nope", "food-0-0"]
    assert search._TARGETS[key] == (second, 8)
    assert _scores(newer) == _scores(
        similar(get_settings(), dataset="news", record="food-0-0", k=15, embedding_id=second)
    )
    assert _scores(newer) != _scores(hits)  # 8 dimensions, not 16
    with session_scope() as session:
        delete_embedding(session, second, actor="t")
    assert _scores(similar(get_settings(), dataset="news", record="food-0-0", k=15)) == _scores(
        hits
    )
    assert search._TARGETS[key] == (first, 16)


def test_similar_returns_more_rows_than_ef_search(env, tmp_path, monkeypatch) -> None:
    """pgvector returns at most hnsw.ef_search rows: a search for more raises it for that
    statement (up to pgvector's 1000)."""
    import nlphub.embeddings.search as search

    _load(tmp_path, _records(12))  # 144 records
    _computed(16)
    monkeypatch.setattr(search, "EF_SEARCH", 40)
    # With 144 rows the planner would sort them all; searched through the index, as at scale.
    monkeypatch.setattr(
        search,
        "_SEARCH_SETTINGS",
        search._SEARCH_SETTINGS + ", set_config('enable_seqscan', 'off', true)",
    )
    by_record = similar(get_settings(), dataset="news", record="food-0-0", k=150)
    assert len(by_record) == 143 and "food-0-0" not in {h["id"] for h in by_record}
    assert len(similar(get_settings(), dataset="news", query="pasta", k=150)) == 144
    assert len(similar(get_settings(), dataset="news", record="food-0-0", k=20)) == 20


def test_search_settings_hold_for_its_statement_only(env) -> None:
    """`_search` sends hnsw.ef_search and a generic plan with its statement, in one round
    trip; neither outlives that statement on the pooled connection."""
    import nlphub.embeddings.search as search
    from schemas.db import autocommit_engine

    with autocommit_engine().connect() as conn:
        settings = "SELECT current_setting('hnsw.ef_search'), current_setting('plan_cache_mode')"
        assert search._search(conn, settings, {}) == [(str(EF_SEARCH), "force_generic_plan")]
        after = conn.exec_driver_sql(
            "SELECT current_setting('hnsw.ef_search', true), current_setting('plan_cache_mode')"
        ).one()
        assert after[0] != str(EF_SEARCH) and after[1] == "auto"


def test_search_errors_are_sqlalchemys_and_a_lost_connection_is_temporary(env) -> None:
    """`_search` goes to psycopg (a pipeline); its errors still arrive as SQLAlchemy's: an
    ordinary one leaves the connection usable, a lost connection is invalidated and counts
    as temporary (the task is retried)."""
    import psycopg
    import sqlalchemy.exc

    import nlphub.embeddings.search as search
    from schemas.db import autocommit_engine
    from tasks.base import is_temporary

    with autocommit_engine().connect() as conn:
        with pytest.raises(sqlalchemy.exc.DBAPIError) as bad:
            search._search(conn, "SELECT 1/0", {})
        assert not bad.value.connection_invalidated and not is_temporary(bad.value)
        assert search._search(conn, "SELECT 1", {}) == [(1,)]  # the connection goes on
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with psycopg.connect(env["database_url"], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(sqlalchemy.exc.DBAPIError) as lost:
            search._search(conn, "SELECT 1", {})
        assert lost.value.connection_invalidated and is_temporary(lost.value)


def test_hnsw_build_memory_is_sized_to_the_vectors(env) -> None:
    """The build's maintenance_work_mem is cut to what the graph needs (a parallel build sets
    all of it up first), never raised above the server's setting; only for that transaction."""
    from types import SimpleNamespace

    from nlphub.embeddings.vectors import _index

    def build_memory(rows: int) -> int:
        emb = SimpleNamespace(id=uuid.uuid4(), output_dims=64)
        with Session(get_engine()) as session:
            _index(session, emb, rows)  # type: ignore[arg-type]
            value = session.execute(
                text("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))")
            ).scalar_one()
            session.rollback()
            return int(value)

    with Session(get_engine()) as session:
        server = session.execute(
            text("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))")
        ).scalar_one()
    assert build_memory(5_000) == 64 << 20 < server
    assert 64 << 20 < build_memory(100_000) < server
    assert build_memory(10**9) == server
    with Session(get_engine()) as session:  # the next transaction has the server's value again
        assert (
            session.execute(
                text("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))")
            ).scalar_one()
            == server
        )

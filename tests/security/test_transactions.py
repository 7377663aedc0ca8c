"""Item (d), transactions: no transaction is left open while a task waits on I/O.

A transaction kept open across an HTTP request, an unpack or a file write is a long "idle in
transaction" backend: it blocks DDL and vacuum (and keeps its locks) for as long as the I/O
takes. `embed_records` (HTTP to the embedding platform), `validate_upload` (unpacking and
checksumming up to 20 GiB) and `rules_export` (writing and syncing a file) read in one short
transaction, do the I/O with none open, then write in a new one. Each test runs the real task
in-process and looks at `pg_stat_activity` from a connection of its own at the moment of the
I/O: no backend of the test's database is idle in a transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session

from nlphub.embeddings import service as embeddings
from nlphub.embeddings.records import import_records
from nlphub.hub.policy import upload_guards
from nlphub.jobs import enqueue
from nlphub.rules import service as rules
from nlphub.uploads import service as uploads
from schemas.db import get_engine, session_scope
from schemas.models import Job, Resource
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.unit.nlphub.embeddings.platforms.conftest import KEY, FakeAPI, Seen, serve_fake_api
from tests.unit.nlphub.uploads.conftest import SparkBuilder, zip_dir

pytestmark = pytest.mark.integration

KEY_ENV = "NLPHUB_SECURITY_PROVIDER_KEY"


def _idle_in_transaction(database_url: str) -> list[str]:
    """From a connection of its own: the last statement of every backend of this database
    that is idle inside a transaction."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() "
            "AND state IN ('idle in transaction', 'idle in transaction (aborted)')"
        ).fetchall()
    return [str(row[0]) for row in rows]


def _run(task: str, payload: dict[str, Any]) -> Job:
    """Run `task` in this process, as a worker runs a delivery; its job row after."""
    from workers.app import app

    job_id = enqueue(task, payload, requested_by="tenant")
    with Session(get_engine()) as session:
        row = session.get(Job, job_id)
        assert row is not None
        delivered = dict(row.payload)
    app.tasks[task].apply(kwargs=delivered, task_id=str(job_id))
    with Session(get_engine()) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


class Observer:
    """Wraps a function: each call first records `_idle_in_transaction`."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.seen: list[list[str]] = []

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def observed(*args: Any, **kwargs: Any) -> Any:
            self.seen.append(_idle_in_transaction(self.url))
            return fn(*args, **kwargs)

        return observed


# -- embed_records: HTTP requests ----------------------------------------------------------


@pytest.fixture
def provider() -> Iterator[FakeAPI]:
    yield from serve_fake_api()


@pytest.fixture
def finished_embedding(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: FakeAPI
) -> uuid.UUID:
    """An openai embedding of 4 records, computed against `provider` (declared, plain http)."""
    monkeypatch.setenv(KEY_ENV, KEY)
    credential = {"env": KEY_ENV, "base_urls": [f"{provider.url}/v1"], "allow_http": True}
    monkeypatch.setenv("NLPHUB_CREDENTIALS", json.dumps({"provider": credential}))
    get_settings.cache_clear()
    path = tmp_path / "news.jsonl"
    texts = ["the cat sat", "stock markets fell", "a dog chased the cat", "bread and soup"]
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    with session_scope() as session:
        import_records(session, path, dataset="news", actor="t")
        spec = embeddings.EmbeddingSpec(
            "news", "text", "openai", "m", api_key_ref="provider", base_url=f"{provider.url}/v1"
        )
        emb_id = embeddings.create_embedding(session, spec, actor="t").id
    out = embeddings.compute(emb_id, get_settings(), actor="t", progress=lambda *a: None)
    assert out["state"] == "finished"
    return emb_id


def test_embed_records_holds_no_transaction_while_the_platform_answers(
    env: dict[str, Any], provider: FakeAPI, finished_embedding: uuid.UUID
) -> None:
    """While the embedding platform's request is pending, no backend is idle in a
    transaction (before, the transaction of the embedding's and records' SELECT was)."""
    observer = Observer(env["database_url"])
    answer: Callable[[Seen], Any] = provider.answer
    provider.answer = observer.wrap(answer)  # type: ignore[method-assign]
    payload = {"embedding_id": str(finished_embedding), "records": ["r0", "r2"]}
    job = _run("nlphub.embed_records", payload)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result == {"embedding": str(finished_embedding), "records": 2}
    assert observer.seen == [[]], observer.seen  # one request, with no transaction open


def test_embed_records_of_an_embedding_deleted_meanwhile_stores_nothing(
    env: dict[str, Any], provider: FakeAPI, finished_embedding: uuid.UUID
) -> None:
    """The write transaction looks again: an embedding deleted while its records were being
    embedded gets no vectors, and the job says why."""
    answer: Callable[[Seen], Any] = provider.answer

    def delete_then_answer(request: Seen) -> Any:
        with session_scope() as session:
            embeddings.delete_embedding(session, finished_embedding, actor="admin")
        return answer(request)

    provider.answer = delete_then_answer  # type: ignore[method-assign]
    payload = {"embedding_id": str(finished_embedding), "records": ["r0"]}
    job = _run("nlphub.embed_records", payload)
    assert job.state == JobState.FAILED
    assert "was deleted while its records were embedded" in (job.error or ""), job.error
    with Session(get_engine()) as session:
        vectors = session.execute(
            text("SELECT count(*) FROM embedding_vector WHERE embedding_id = :e"),
            {"e": finished_embedding},
        ).scalar_one()
    assert vectors == 0


# -- validate_upload: unpacking and checksumming -----------------------------------------------


def test_an_upload_is_unpacked_and_validated_with_no_transaction_open(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(incoming))
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", "spark-nlp=5.5.0,spark=3.5.0")
    get_settings.cache_clear()
    archive = zip_dir(SparkBuilder(tmp_path / "src").embeddings("glove_100d"), incoming / "g.zip")
    observer = Observer(env["database_url"])
    monkeypatch.setattr(uploads, "safe_extract", observer.wrap(uploads.safe_extract))
    monkeypatch.setattr(uploads, "_validate", observer.wrap(uploads._validate))
    payload = {"path": str(archive), "kind": "embeddings", "name": "glove_100d"}
    job = _run("nlphub.validate_upload", payload)
    assert job.state == JobState.SUCCEEDED, job.error
    assert observer.seen == [[], []], observer.seen  # unpacking, then validating
    assert job.result is not None
    with Session(get_engine()) as session:
        row = session.get(Resource, uuid.UUID(job.result["resource_id"]))
        assert row is not None and row.state == ResourceState.INSTALLED


def test_an_identity_taken_while_the_upload_was_unpacked_is_refused(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The install's transaction looks the identity up again: another upload of the same
    name that finished meanwhile makes this one a clear refusal, with nothing left behind."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(incoming))
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", "spark-nlp=5.5.0,spark=3.5.0")
    get_settings.cache_clear()
    spark = SparkBuilder(tmp_path / "src")
    first = zip_dir(spark.embeddings("glove_100d"), incoming / "first.zip")
    second = zip_dir(spark.embeddings("glove_100d_b"), incoming / "second.zip")
    real_validate = uploads._validate
    others: list[Any] = []

    def validate_after_another(*args: Any, **kwargs: Any) -> Any:
        if not others:  # the first upload's validation: another upload installs meanwhile
            others.append(None)
            settings = get_settings()
            req = uploads.UploadRequest(path=second, kind="embeddings", name="glove_100d")
            others[0] = uploads.accept_upload(
                session_scope, settings, req, guards=upload_guards(settings)
            )
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(uploads, "_validate", validate_after_another)
    payload = {"path": str(first), "kind": "embeddings", "name": "glove_100d"}
    job = _run("nlphub.validate_upload", payload)
    assert others[0].state == "installed", others[0]
    assert job.state == JobState.FAILED
    error = job.error or ""
    assert "glove_100d" in error and "already exists" in error, error
    assert "duplicate key" not in error, error  # refused by the check, not by the constraint
    with Session(get_engine()) as session:
        assert session.execute(text("SELECT count(*) FROM resource")).scalar_one() == 1
    assert not any((get_settings().home / "tmp").iterdir())


# -- rules_export: writing and syncing the file ------------------------------------------------


def test_a_rules_export_writes_its_file_with_no_transaction_open(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    monkeypatch.setenv("NLPHUB_EXPORT_ROOTS", str(exports))
    get_settings.cache_clear()
    rule = {"name": "height", "type": "regex", "entity": "HEIGHT", "regex": "[0-7]'[0-9]"}
    assert _run("nlphub.rules_import", {"content": json.dumps(rule)}).state == JobState.SUCCEEDED
    observer = Observer(env["database_url"])
    monkeypatch.setattr(rules, "write_confined", observer.wrap(rules.write_confined))
    job = _run("nlphub.rules_export", {"path": str(exports / "rules.zip")})
    assert job.state == JobState.SUCCEEDED, job.error
    assert observer.seen == [[]], observer.seen
    assert job.result is not None
    assert (exports / "rules.zip").stat().st_size == job.result["bytes"]

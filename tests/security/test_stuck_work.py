"""Item (e): work that never ends.

- A job left `started` (or `received`) by a worker that died — its run lock is free, since
  the worker's database session is gone — is published again by the reconciler after
  NLPHUB_STUCK_AFTER, not after the broker's visibility timeout (6 h), nor never when the
  broker lost its message; one whose run lock is held (a worker runs it) is left alone, and
  so is one making progress.
- A run whose database connection (and run lock) was lost while its body went on takes the
  lock again when it next touches its job, or stops without recording anything when another
  session holds it (the job runs elsewhere).
- A resource in a transitional state (queued/downloading/verifying) whose job finished or is
  missing is failed with its reason and can be downloaded again: a download request never
  returns a dead job; any error after the extraction fails the resource with its message.
  An embedding its compute job left initializing/waiting/encoding is failed the same way.

Each test fails with its fix removed (checked once by removing it, then restored).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from nlphub.hub import install
from nlphub.hub.mirror import build_mirror
from nlphub.hub.service import DownloadRequest, request_download
from nlphub.hub.sync import sync_hubs
from nlphub.jobs import enqueue, reconcile_outbox
from nlphub.jobstate import run_lock_key
from schemas.db import get_engine, session_scope
from schemas.models import Dataset, Embedding, Job, Resource
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.conftest import wait_for
from tests.integration.conftest import audit_events
from tests.integration.test_hub import LIBS, res

T = TypeVar("T")

_INVENTORY = '{"requested_by": "app", "verify_checksums": false}'


def _stuck_job(state: str = "started", age: str = "10 minutes") -> uuid.UUID:
    """A job row as a dead worker leaves it: started long ago, published long ago."""
    job_id = uuid.uuid4()
    with Session(get_engine()) as session:
        session.execute(
            text(
                "INSERT INTO job (id, task, queue, payload, state, progress, attempts, "
                "requested_by, created_at, updated_at, published_at, started_at, worker) "
                "VALUES (:id, 'nlphub.inventory', 'default', CAST(:p AS jsonb), :state, 0, 1, "
                "'app', now() - CAST(:age AS interval), now() - CAST(:age AS interval), "
                "now() - CAST(:age AS interval), now() - CAST(:age AS interval), 'dead@host')"
            ),
            {"id": job_id, "p": _INVENTORY, "state": state, "age": age},
        )
        session.commit()
    return job_id


def _reconcile(stuck_after: int | None = 60) -> list[uuid.UUID]:
    with Session(get_engine()) as session:
        ids = reconcile_outbox(
            session, grace_seconds=30, republish_after=900, stuck_after=stuck_after
        )
        session.commit()
    return ids


@pytest.fixture
def held_lock() -> Iterator[Any]:
    """Hold a job's run lock on another connection, as a live worker does."""
    conns: list[Any] = []

    def hold(job_id: uuid.UUID) -> None:
        conn = get_engine().connect()
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": run_lock_key(job_id)})
        conn.commit()
        conns.append(conn)

    yield hold
    for conn in conns:
        conn.close()


@pytest.mark.parametrize("state", ["started", "received"])
def test_a_started_job_whose_worker_is_gone_is_published_again_and_completes(
    worker, wait_job, state: str
) -> None:
    job_id = _stuck_job(state)
    assert job_id in _reconcile()
    assert wait_job(job_id).state == JobState.SUCCEEDED
    republished = audit_events(job_id, "job.republished")
    assert len(republished) == 1
    assert republished[0].details["reason"] == "worker_gone"
    assert republished[0].details["state"] == state
    # published again now: the next run leaves it (and it is finished anyway)
    assert job_id not in _reconcile()


def test_a_job_whose_run_lock_is_held_is_left_alone(env, held_lock) -> None:
    job_id = _stuck_job()
    held_lock(job_id)
    assert job_id not in _reconcile()
    assert audit_events(job_id, "job.republished") == []
    # and the reconciler's check leaves the lock with its holder
    with get_engine().connect() as conn:
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": run_lock_key(job_id)}
        ).scalar()
        assert got is False


def test_a_started_job_is_left_alone_within_the_grace_period(env) -> None:
    recent = _stuck_job(age="10 seconds")
    assert recent not in _reconcile(stuck_after=60)
    assert recent not in _reconcile(stuck_after=None)
    assert _stuck_job() not in _reconcile(stuck_after=None)


# -- a worker whose database connection dropped while its task runs -------------------------


def _lock_holder(database_url: str, key: int) -> int | None:
    """The backend holding advisory lock `key` (a bigint key: its high and low halves)."""
    unsigned = key & (2**64 - 1)
    with psycopg.connect(database_url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s AND objsubid = 1",
            (unsigned >> 32, unsigned & 0xFFFFFFFF),
        ).fetchone()
    return None if row is None else int(row[0])


def _terminate(database_url: str, pid: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def gone() -> bool:
        with psycopg.connect(database_url, autocommit=True) as admin:
            return not admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()

    wait_for(gone, 10, what="the worker's backend to exit")


@pytest.mark.parametrize("taken", [False, True], ids=["lock-free", "lock-taken-elsewhere"])
@pytest.mark.parametrize("touch", ["progress", "outcome"])
def test_a_run_whose_connection_dropped_takes_its_lock_again_or_stops(
    env, monkeypatch, taken: bool, touch: str
) -> None:
    """The run lock is a session advisory lock on the worker's kept connection: when that
    connection is lost while the body goes on, the lock is gone and the reconciler may hand
    the job to another worker. The run notices when it next touches the job (its progress,
    or its outcome) and takes the lock again on a new connection, or, when another session
    holds it (the job runs elsewhere), stops without recording anything (not retried)."""
    import tasks.base
    from workers.app import app

    monkeypatch.setattr(tasks.base, "PROGRESS_INTERVAL", 0.0)
    task = app.tasks["nlphub.ping"]
    job_id = enqueue("nlphub.ping", {}, requested_by="app")
    key = run_lock_key(job_id)
    url = env["database_url"]
    seen: dict[str, Any] = {"calls": 0}
    other = psycopg.connect(url, autocommit=True)

    def body(job: Any, payload: Any) -> dict[str, Any]:
        seen["calls"] += 1
        job.progress(1, 4, "before")
        seen["killed"] = _lock_holder(url, key)
        assert seen["killed"] is not None
        _terminate(url, seen["killed"])  # a Postgres restart, a network blip
        if taken:  # the job was republished and another worker runs it now
            other.execute("SELECT pg_advisory_lock(%s)", (key,))
        if touch == "progress":
            job.progress(2, 4, "after")
        seen["holder"] = _lock_holder(url, key)
        return {"done": True}

    monkeypatch.setattr(type(task), "body", staticmethod(body))
    try:
        with Session(get_engine()) as session:
            row = session.get(Job, job_id)
            assert row is not None
            delivered = dict(row.payload)
        outcome = task.apply(kwargs=delivered, task_id=str(job_id))
        job = _job(job_id)
        actions = [e.action for e in audit_events(job_id)]
        assert seen["calls"] == 1
        if not taken:
            assert outcome.state == "SUCCESS", outcome.traceback
            assert job.state == JobState.SUCCEEDED and job.attempts == 1, job
            assert actions.count("job.started") == actions.count("job.succeeded") == 1
            if touch == "progress":  # taken again at once, on a new connection
                assert seen["holder"] not in (None, seen["killed"])
            assert _lock_holder(url, key) is None  # released with the outcome
        else:
            assert outcome.state == "IGNORED", outcome.traceback
            assert job.state == JobState.STARTED and job.attempts == 1, job
            assert job.progress == 0.25  # the progress after the kill was not recorded
            assert "holder" not in seen or touch == "outcome"
            assert not {"job.succeeded", "job.failed", "job.retry"} & set(actions), actions
            assert _lock_holder(url, key) == other.info.backend_pid  # left to its holder
    finally:
        other.close()


def _row(model: type[T], row_id: uuid.UUID) -> T:
    """A row of `model`, read in a session of its own and detached from it."""
    with Session(get_engine()) as session:
        row = session.get(model, row_id)
        assert row is not None
        session.expunge(row)
        return row


def _job(job_id: uuid.UUID) -> Job:
    return _row(Job, job_id)


def test_the_lock_is_taken_again_only_for_this_runs_attempt(env, held_lock) -> None:
    """A free lock is not enough: the job must still be `started` with this run's attempt (a
    delivery that started, finished or gave up since has it); a lock taken for nothing is
    released at once."""
    from nlphub.jobstate import retake_run_lock
    from schemas.db import autocommit_engine

    job_id = _stuck_job()
    key = run_lock_key(job_id)
    url = env["database_url"]
    with autocommit_engine().connect() as conn:
        assert not retake_run_lock(conn, job_id, key, attempt=2)  # started again since
        assert _lock_holder(url, key) is None
        assert retake_run_lock(conn, job_id, key, attempt=1)
        assert _lock_holder(url, key) == _backend_pid(conn)
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finished = _stuck_job(state="succeeded")
    with autocommit_engine().connect() as conn:
        assert not retake_run_lock(conn, finished, run_lock_key(finished), attempt=1)
    held_lock(job_id)  # another session has it
    with autocommit_engine().connect() as conn:
        assert not retake_run_lock(conn, job_id, key, attempt=1)


def _backend_pid(conn: Any) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_job_making_progress_is_never_taken_for_stuck(env) -> None:
    """Progress touches the job's `updated_at`, which the reconciler reads (with the lock)."""
    from nlphub.jobstate import record_progress
    from schemas.db import autocommit_engine

    job_id = _stuck_job()
    with autocommit_engine().connect() as conn:
        record_progress(conn, job_id, 0.5, "half", attempt=1)
    assert job_id not in _reconcile(stuck_after=60)
    assert _job(job_id).progress == 0.5
    with autocommit_engine().connect() as conn:  # started again since: not this run's to touch
        record_progress(conn, job_id, 0.75, "stale", attempt=0)
    assert _job(job_id).progress == 0.5


# -- resources a dead job left in a transitional state ---------------------------------------


@pytest.fixture
def hub(env, tmp_path, monkeypatch) -> Iterator[None]:
    folder = tmp_path / "hub"
    build_mirror(
        folder,
        [res("glove_100d", "WordEmbeddingsModel"), res("tfhub_use", "UniversalSentenceEncoder")],
    )
    monkeypatch.setenv("NLPHUB_HUB_URLS", f"file://{folder}")
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
    get_settings.cache_clear()
    assert not sync_hubs("test")["errors"]
    yield
    get_settings.cache_clear()


def _request(name: str, **kw: Any) -> DownloadRequest:
    with session_scope() as session:
        return request_download(session, get_settings(), name=name, requested_by="test", **kw)


def _resource(name: str) -> Resource:
    with Session(get_engine()) as session:
        row = session.exec(select(Resource).where(Resource.name == name)).one()
        session.expunge(row)
        return row


def _job_over(state: str, task: str = "nlphub.download", queue: str = "downloads") -> uuid.UUID:
    """A job that is over (`state`: failed, revoked, succeeded), as its worker left it."""
    job_id = uuid.uuid4()
    with Session(get_engine()) as session:
        session.execute(
            text(
                "INSERT INTO job (id, task, queue, payload, state, progress, attempts, "
                "requested_by, created_at, updated_at, finished_at, error) VALUES "
                "(:id, :task, :queue, '{}', :state, 0, 1, 'test', now(), now(), now(), "
                "'killed by the test')"
            ),
            {"id": job_id, "task": task, "queue": queue, "state": state},
        )
        session.commit()
    return job_id


def _abandon(name: str, state: str, job: str) -> uuid.UUID:
    """Leave the resource `state` for a job that is `job` ('missing': no row)."""
    dead = uuid.uuid4() if job == "missing" else _job_over(job)
    with Session(get_engine()) as session:
        session.execute(
            text("UPDATE resource SET state = :s, job_id = :j WHERE name = :n"),
            {"s": state, "j": dead, "n": name},
        )
        session.commit()
    return dead


def test_an_error_after_the_extraction_fails_the_resource_with_its_message(
    hub, worker, wait_job, monkeypatch
) -> None:
    """A ValueError while validating the unpacked archive (not a ProblemError): the job fails
    and so does the resource, with the message, not left `verifying`; a new request works."""

    real, calls = install.validate_resource, []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the first download only
            raise ValueError("metadata says nonsense")
        return real(*args, **kwargs)

    monkeypatch.setattr(install, "validate_resource", broken)
    job = wait_job(_request("glove_100d").job_id)
    assert job.state == JobState.FAILED and "metadata says nonsense" in job.error
    row = _resource("glove_100d")
    assert row.state == ResourceState.FAILED, row.state
    assert row.error == "ValueError: metadata says nonsense"
    again = _request("glove_100d")
    assert again.created and again.job_id != job.id
    assert wait_job(again.job_id).state == JobState.SUCCEEDED
    assert _resource("glove_100d").state == ResourceState.INSTALLED


@pytest.mark.parametrize(
    ("state", "job"),
    [("verifying", "failed"), ("downloading", "revoked"), ("queued", "missing")],
)
def test_a_request_never_returns_a_dead_job(
    hub, worker, wait_job, audit_actions, state: str, job: str
) -> None:
    assert wait_job(_request("tfhub_use").job_id).state == JobState.SUCCEEDED
    dead = _abandon("tfhub_use", state, job)
    again = _request("tfhub_use", redownload=True)
    assert again.job_id != dead and again.created
    assert wait_job(again.job_id).state == JobState.SUCCEEDED
    assert _resource("tfhub_use").state == ResourceState.INSTALLED
    failed = audit_events(dead, "resource.download_failed")
    assert len(failed) == 1 and failed[0].details["abandoned"] is True
    assert str(dead) in failed[0].details["reason"]


def test_the_reconciler_fails_resources_whose_job_is_over(hub, worker, wait_job) -> None:
    assert wait_job(_request("tfhub_use").job_id).state == JobState.SUCCEEDED
    dead = _abandon("tfhub_use", "verifying", "failed")
    out = wait_job(enqueue("nlphub.reconcile_outbox", {}))
    assert out.state == JobState.SUCCEEDED, out.error
    assert out.result["abandoned_resources"] == [_resource("tfhub_use").label]
    row = _resource("tfhub_use")
    assert row.state == ResourceState.FAILED
    assert row.error is not None and str(dead) in row.error and "failed" in row.error
    # and it can be downloaded again
    assert wait_job(_request("tfhub_use").job_id).state == JobState.SUCCEEDED


def _embedding(state: str, job_id: uuid.UUID) -> uuid.UUID:
    """An embedding in `state` that the job `job_id` created."""
    with session_scope() as session:
        dataset = session.exec(select(Dataset).where(Dataset.name == "stuck")).first()
        if dataset is None:
            dataset = Dataset(name="stuck")
            session.add(dataset)
            session.flush()
        emb = Embedding(
            dataset_id=dataset.id, attribute="text", platform="bow", model="tfidf", state=state
        )
        emb.job_id = job_id
        session.add(emb)
        session.flush()
        return emb.id


def test_the_reconciler_fails_embeddings_whose_job_is_over(env, worker, wait_job) -> None:
    """An embedding its compute job left initializing/waiting/encoding (the job revoked,
    killed past its time limit, or gone) is failed with the reason; one whose job is still
    running is left alone."""
    revoked = _job_over("revoked", "nlphub.compute_embeddings", "embeddings")
    running = _stuck_job("started", age="1 second")
    abandoned = {
        _embedding("encoding", revoked): "revoked",
        _embedding("waiting", uuid.uuid4()): "is missing",
    }
    alive = _embedding("encoding", running)
    out = wait_job(enqueue("nlphub.reconcile_outbox", {}))
    assert out.state == JobState.SUCCEEDED, out.error
    assert sorted(out.result["abandoned_embeddings"]) == sorted(str(e) for e in abandoned)
    for emb_id, why in abandoned.items():
        row = _row(Embedding, emb_id)
        assert row.state == "failed" and row.error is not None, row
        assert row.error.startswith("abandoned: its job") and why in row.error, row.error
    assert _row(Embedding, alive).state == "encoding"
    failed = audit_events(revoked, "embedding.failed")
    assert len(failed) == 1 and failed[0].details["abandoned"] is True

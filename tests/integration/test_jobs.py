"""Jobs end to end: enqueue → worker → job rows and audit events, with real servers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session

import nlphub
from nlphub import audit
from nlphub.audit import verify_chain
from schemas.db import get_engine
from schemas.models import Job
from schemas.payloads import PayloadError
from schemas.states import JobState
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def test_enqueue_runs_and_audits_every_transition(worker, wait_job, audit_actions) -> None:
    job_id = nlphub.enqueue("nlphub.inventory", {"verify_checksums": True}, requested_by="alice")
    job = wait_job(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.progress == 1.0
    assert job.attempts == 1
    assert job.requested_by == "alice"
    assert job.published_at is not None and job.finished_at is not None
    assert job.result["checked"] == 0 and "disk" in job.result
    actions = audit_actions(job_id)
    assert actions[0] == "job.enqueued"
    assert actions[-1] == "job.succeeded"
    assert "job.received" in actions and "job.started" in actions
    assert actions.index("job.received") < actions.index("job.started")
    assert "inventory.completed" in actions
    assert actions.count("job.succeeded") == 1
    with Session(get_engine()) as session:
        assert verify_chain(session).ok


def test_enqueue_rejects_bad_payload_naming_the_field(env) -> None:
    with pytest.raises(PayloadError, match=r"verify_checksums: Input should be a valid boolean"):
        nlphub.enqueue("nlphub.inventory", {"verify_checksums": "perhaps"})
    with pytest.raises(PayloadError, match=r"colour: unknown field"):
        nlphub.enqueue("nlphub.inventory", {"colour": "red"})
    with pytest.raises(PayloadError, match=r"unknown task 'nlphub.nope'"):
        nlphub.enqueue("nlphub.nope", {})
    with Session(get_engine()) as session:
        assert session.execute(text("SELECT count(*) FROM job")).scalar_one() == 0


def test_bad_payload_from_another_app_fails_the_job_and_worker_stays_healthy(
    worker, wait_job, audit_actions
) -> None:
    from workers.app import app

    bad_id = uuid.uuid4()
    app.send_task(
        "nlphub.delete", kwargs={"language": "en", "force": "sometimes"}, task_id=str(bad_id)
    )
    job = wait_job(bad_id)
    assert job.state == JobState.FAILED
    assert "force: Input should be a valid boolean" in job.error
    assert audit_actions(bad_id)[-1] == "job.failed"
    no_target = uuid.uuid4()
    app.send_task("nlphub.delete", kwargs={"language": "en"}, task_id=str(no_target))
    assert "give resource_id or name" in wait_job(no_target).error
    good = nlphub.enqueue("nlphub.inventory", {})
    assert wait_job(good).state == JobState.SUCCEEDED


def test_enqueue_in_callers_transaction_publishes_only_after_commit(worker, wait_job) -> None:
    with Session(get_engine()) as session:
        rolled_back = nlphub.enqueue("nlphub.inventory", {}, session=session)
        session.rollback()
    with Session(get_engine()) as session:
        committed = nlphub.enqueue("nlphub.inventory", {}, session=session)
        assert session.get(Job, committed) is not None
        session.commit()
    assert wait_job(committed).state == JobState.SUCCEEDED
    with Session(get_engine()) as session:
        assert session.get(Job, rolled_back) is None


def test_reconciler_republishes_a_job_the_broker_never_got(worker, wait_job, audit_actions) -> None:
    from nlphub.jobs import reconcile_outbox

    job_id = uuid.uuid4()
    with Session(get_engine()) as session:
        session.execute(
            text(
                "INSERT INTO job (id, task, queue, payload, state, progress, attempts, "
                "requested_by, created_at, updated_at) VALUES (:id, 'nlphub.inventory', "
                '\'default\', \'{"requested_by": "app", "verify_checksums": false}\', '
                "'queued', 0, 0, 'app', now() - interval '5 minutes', now())"
            ),
            {"id": job_id},
        )
        session.commit()
    with Session(get_engine()) as session:
        assert reconcile_outbox(session, grace_seconds=30, republish_after=900) == [job_id]
        session.commit()
    assert wait_job(job_id).state == JobState.SUCCEEDED
    with Session(get_engine()) as session:  # published now: not picked again
        assert reconcile_outbox(session, grace_seconds=30, republish_after=900) == []
    assert audit_actions(job_id).count("job.republished") == 1


def test_a_finished_job_delivered_again_is_not_run_twice(worker, wait_job, audit_actions) -> None:
    from workers.app import app

    job_id = nlphub.enqueue("nlphub.inventory", {})
    wait_job(job_id)
    wait_for(lambda: app.AsyncResult(str(job_id)).ready(), 30, what="the first result")
    first = app.backend.get_task_meta(str(job_id), cache=False)
    app.send_task("nlphub.inventory", kwargs={"requested_by": "system"}, task_id=str(job_id))

    def stored_again() -> dict[str, Any] | None:
        meta = app.backend.get_task_meta(str(job_id), cache=False)
        return meta if meta["date_done"] not in (None, first["date_done"]) else None

    # The duplicate stores its outcome again (the result the job row recorded), so it is done
    # once the stored result's time has changed.
    again = wait_for(stored_again, 30, what="the duplicate to be handled")
    assert again["status"] == "SUCCESS"
    assert again["result"] == first["result"]
    actions = audit_actions(job_id)
    assert actions.count("job.started") == 1
    assert actions.count("job.succeeded") == 1


def test_only_nlphub_tasks_store_results_without_reading_them_first(env) -> None:
    """Celery reads a stored result before each write, to keep a success from being
    overwritten by a duplicate delivery; nlphub tasks guard that with the job row instead
    and skip the read for STARTED and SUCCESS (nlphub.messaging.results)."""
    from celery.app.task import Context

    from workers.app import app

    def stored_after(task: str, second: str) -> tuple[str, Any]:
        """(state, result) stored after a success, then `second` with another result."""
        task_id = str(uuid.uuid4())
        app.backend.store_result(task_id, {"first": 1}, "SUCCESS", request=Context(task=task))
        app.backend.store_result(task_id, {"second": 2}, second, request=Context(task=task))
        meta = app.backend.get_task_meta(task_id, cache=False)
        return meta["status"], meta["result"]

    assert stored_after("nlphub.ping", "STARTED") == ("STARTED", {"second": 2})
    assert stored_after("nlphub.ping", "SUCCESS") == ("SUCCESS", {"second": 2})
    # other states, and other tasks: Celery's check keeps the success
    assert stored_after("nlphub.ping", "RETRY") == ("SUCCESS", {"first": 1})
    assert stored_after("not.an.nlphub.task", "STARTED") == ("SUCCESS", {"first": 1})
    assert stored_after("not.an.nlphub.task", "SUCCESS") == ("SUCCESS", {"first": 1})


def test_audit_log_refuses_update_delete_and_truncate(env) -> None:
    nlphub.enqueue("nlphub.inventory", {})  # writes one audit event (no worker needed)
    url = env["database_url"]
    for statement in (
        "UPDATE audit_event SET actor = 'mallory'",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
    ):
        with (
            psycopg.connect(url) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="audit_event is append-only"),
        ):
            conn.execute(statement)


def test_tampering_is_reported_at_the_first_broken_link(env) -> None:
    for _ in range(4):
        nlphub.enqueue("nlphub.inventory", {})
    with Session(get_engine()) as session:
        report = verify_chain(session)
        assert report.ok and report.checked == 4
        seqs = [r[0] for r in session.execute(text("SELECT seq FROM audit_event ORDER BY seq"))]
    with psycopg.connect(env["database_url"], autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_change")
        conn.execute("UPDATE audit_event SET actor = 'mallory' WHERE seq = %s", (seqs[2],))
        conn.execute("ALTER TABLE audit_event ENABLE TRIGGER audit_event_no_change")
    with Session(get_engine()) as session:
        report = verify_chain(session)
    assert not report.ok
    assert report.broken_at == seqs[2]
    assert report.checked == 2
    assert "content does not match" in (report.reason or "")


def test_unmigrated_database_is_refused_with_a_clear_message(servers, monkeypatch) -> None:
    from schemas.db import DatabaseNotMigrated, dispose_engines, require_migrated
    from schemas.settings import get_settings

    name = f"empty_{uuid.uuid4().hex[:8]}"
    url = servers["pg"].create_database(name)
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        with pytest.raises(DatabaseNotMigrated, match=r"empty database .* run `nlphub db upgrade`"):
            require_migrated()
    finally:
        dispose_engines()
        get_settings.cache_clear()
        servers["pg"].drop_database(name)


def _payload(job: Any) -> dict[str, Any]:
    return dict(job.payload)


def test_embedded_postgres_runs_with_its_tuning(env) -> None:
    """shared_buffers and maintenance_work_mem of the embedded server (ALTER SYSTEM + one
    restart on the first start); the defaults would read a large HNSW index from disk."""
    from workers.embedded import tuning

    with Session(get_engine()) as session:
        for name, value in tuning().items():
            same = session.execute(
                text("SELECT pg_size_bytes(current_setting(:n)) = pg_size_bytes(:v)"),
                {"n": name, "v": value},
            ).scalar_one()
            assert same, f"{name} is not {value}"


def test_embedded_postgres_rotates_its_own_log(env) -> None:
    """The server's log goes to Postgres' collector, one file a weekday, overwritten a week
    later, instead of one file in the data folder that grows for good."""
    from workers.embedded import SERVER_LOG

    with Session(get_engine()) as session:
        for name, value in SERVER_LOG.items():
            shown = session.execute(text("SELECT current_setting(:n)"), {"n": name}).scalar_one()
            assert shown == value, name
        data = session.execute(text("SELECT current_setting('data_directory')")).scalar_one()
        session.execute(text("SELECT pg_rotate_logfile()"))
    assert [p.name for p in (Path(data) / "server-log").glob("postgresql-*.log")]


def test_enqueue_publishes_after_the_broker_pool_was_closed(env) -> None:
    """kombu refuses a closed pool ("Acquire on closed pool"), e.g. after an in-process
    worker shut down: enqueue makes new pools and publishes, instead of leaving it queued."""
    import redis as redis_lib

    from workers.app import app

    app.pool.force_close_all()
    job_id = nlphub.enqueue("nlphub.ping")
    with Session(get_engine()) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.published_at is not None
    assert redis_lib.Redis.from_url(env["redis_url"]).llen("default") == 1


def test_pooled_connection_killed_by_the_server_is_replaced_at_checkout(env) -> None:
    """No round trip to check a pooled connection (pool_pre_ping's SELECT 1 cost one per job
    state change): the socket is looked at instead. A backend the server terminated is
    noticed at checkout and replaced; the caller never sees the error."""
    engine = get_engine()
    with engine.connect() as conn:
        first_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with engine.connect() as conn:  # the same pooled connection, checked without a ping
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == first_pid
    with psycopg.connect(env["database_url"], autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,)).fetchone() == (True,)
    wait_for(lambda: _gone(env, first_pid), 10, what="the backend to exit")
    with engine.connect() as conn:
        second_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert second_pid != first_pid
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def _backend_pid(conn: Any) -> int:
    return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _gone(env: dict[str, Any], pid: int) -> bool:
    with psycopg.connect(env["database_url"], autocommit=True) as admin:
        return not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()


def test_the_main_thread_keeps_its_job_connection_until_it_is_unusable(env) -> None:
    """A worker's pool process runs its jobs in its main thread: it keeps one autocommit
    connection for their statements instead of a pool checkout and checkin per job. One the
    server terminated is noticed before use and replaced; dispose_engines closes it."""
    from schemas.db import dispose_engines, held_connection

    pool = get_engine().pool
    with held_connection() as conn:
        first = _backend_pid(conn)
    assert pool.checkedout() == 1  # type: ignore[attr-defined]  # kept, not checked in
    with held_connection() as conn:
        assert _backend_pid(conn) == first
    with psycopg.connect(env["database_url"], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    wait_for(lambda: _gone(env, first), 10, what="the backend to exit")
    with held_connection() as conn:
        second = _backend_pid(conn)
    assert second != first
    assert pool.checkedout() == 1  # type: ignore[attr-defined]
    dispose_engines()
    wait_for(lambda: _gone(env, second), 10, what="dispose_engines to close it")


def test_other_threads_check_a_connection_out_for_each_use(env) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from schemas.db import held_connection

    def use() -> int:
        with held_connection() as conn:
            return _backend_pid(conn)

    with ThreadPoolExecutor(1) as thread:
        thread.submit(use).result()
    assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_use_inside_a_use_gets_a_pooled_connection(env, monkeypatch) -> None:
    """A task body that enqueues a job runs inside the job's own use of the kept connection:
    the enqueue gets a pooled one, and cannot replace (close) the outer one, even when the
    recycle time has passed."""
    import schemas.db
    from schemas.db import held_connection

    with held_connection() as outer:
        monkeypatch.setattr(schemas.db, "POOL_RECYCLE", -1)
        with held_connection() as inner:
            assert inner is not outer
            assert _backend_pid(inner) != _backend_pid(outer)
        nlphub.enqueue("nlphub.ping", requested_by="t")
        assert not outer.closed
        assert _backend_pid(outer) > 0
    assert get_engine().pool.checkedout() == 1  # type: ignore[attr-defined]  # the outer


def test_a_kept_connection_is_replaced_after_the_recycle_time(env, monkeypatch) -> None:
    import schemas.db
    from schemas.db import held_connection

    with held_connection() as conn:
        first = conn
    monkeypatch.setattr(schemas.db, "POOL_RECYCLE", -1)
    with held_connection() as conn:
        assert conn is not first
    assert first.closed
    assert get_engine().pool.checkedout() == 1  # type: ignore[attr-defined]


def test_a_forked_child_leaves_its_parents_kept_connection_alone(env) -> None:
    """A child forked with the parent's kept connection (a pool process) makes its own
    instead of using the parent's session, and leaves that session alone."""
    import os

    from schemas.db import dispose_engines, held_connection

    with held_connection() as conn:
        parent = _backend_pid(conn)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            with held_connection() as conn:  # noticed without dispose_engines(close=False)
                code = 0 if _backend_pid(conn) != parent else 2
            dispose_engines(close=False)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with held_connection() as conn:
        assert _backend_pid(conn) == parent  # still alive, still the same session


def test_job_statements_lost_mid_use_are_temporary_and_leave_a_fresh_connection(env) -> None:
    """The per-job statements go straight to psycopg; their errors still arrive as
    SQLAlchemy's, a lost connection is invalidated (so `is_temporary` retries the job and the
    pool replaces it), and an ordinary error is neither."""
    import sqlalchemy.exc

    from nlphub.jobstate import insert_job, transition
    from schemas.db import autocommit_engine
    from tasks.base import is_temporary

    job_id = uuid.uuid4()
    engine = autocommit_engine()
    with engine.connect() as conn:
        assert insert_job(
            conn, job_id, task="nlphub.ping", queue="default", payload={}, requested_by="t"
        )
        assert not insert_job(  # the same id again: nothing inserted, no error
            conn, job_id, task="nlphub.ping", queue="default", payload={}, requested_by="t"
        )
        with pytest.raises(sqlalchemy.exc.DBAPIError) as bad:
            insert_job(conn, job_id, task="x" * 300, queue="default", payload={}, requested_by="t")
        assert not bad.value.connection_invalidated and not is_temporary(bad.value)
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with psycopg.connect(env["database_url"], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(sqlalchemy.exc.DBAPIError) as lost:
            transition(conn, job_id, JobState.STARTED, actor="t", action="job.started", task="p")
        assert lost.value.connection_invalidated and is_temporary(lost.value)
        assert conn.invalidated
    with engine.connect() as conn:
        outcome = transition(
            conn, job_id, JobState.STARTED, actor="t", action="job.started", task="p"
        )
    assert outcome.attempts == 1
    with Session(get_engine()) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == JobState.STARTED


@pytest.mark.parametrize("flush", [True, False])
def test_a_start_may_commit_without_waiting_for_the_disk(env, flush: bool) -> None:
    """The worker's start transition commits asynchronously (`flush=False`): that
    transaction's synchronous_commit is off; every other change waits for the disk."""
    from nlphub.jobstate import insert_job, transition

    job_id = uuid.uuid4()
    with Session(get_engine()) as session:
        insert_job(
            session, job_id, task="nlphub.ping", queue="default", payload={}, requested_by="t"
        )
        out = transition(
            session,
            job_id,
            JobState.STARTED,
            actor="t",
            action="job.started",
            task="p",
            flush=flush,
        )
        assert out.attempts == 1
        setting = session.execute(text("SHOW synchronous_commit")).scalar_one()
        session.commit()
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    assert setting == ("on" if flush else "off")


def _indexes(env: dict[str, Any]) -> set[str]:
    with psycopg.connect(env["database_url"]) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename IN ('job', 'audit_event')"
        ).fetchall()
    return {r[0] for r in rows}


def _chain_body(env: dict[str, Any]) -> str:
    with psycopg.connect(env["database_url"]) as conn:
        row = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE oid = 'audit_event_chain()'::regprocedure"
        ).fetchone()
    assert row is not None
    return str(row[0])


def _migrate(env: dict[str, Any], revision: str) -> None:
    from alembic import command

    from schemas.db import alembic_config, dispose_engines

    dispose_engines()
    url = env["database_url"].replace("postgresql://", "postgresql+psycopg://", 1)
    if revision == "head":
        command.upgrade(alembic_config(url), revision)
    else:
        command.downgrade(alembic_config(url), revision)


def test_migration_0005_drops_the_unused_job_indexes_and_downgrades(env) -> None:
    """0005 drops the audit hash's UNIQUE constraint and ix_job_task (never queried); its
    downgrade puts both back, and upgrading again leaves the chain verifiable."""
    nlphub.enqueue("nlphub.ping", requested_by="t")  # no worker: the job stays queued
    assert not _indexes(env) & {"audit_event_hash_key", "ix_job_task"}
    _migrate(env, "0004")
    assert {"audit_event_hash_key", "ix_job_task"} <= _indexes(env)
    _migrate(env, "head")
    assert not _indexes(env) & {"audit_event_hash_key", "ix_job_task"}
    with Session(get_engine()) as session:
        assert verify_chain(session).ok


def test_migration_0006_resolves_the_chain_sequence_and_drops_the_target_index(env) -> None:
    """0006 names the audit sequence in the chain trigger instead of looking it up per row
    and drops ix_audit_event_target; events written before, between a downgrade and an
    upgrade, and after still form one verifiable chain."""
    from schemas.db import head_revision

    assert head_revision() >= "0006"  # 0006 or a later revision (0007: embedding.base_url)
    lookup = "pg_get_serial_sequence"
    nlphub.enqueue("nlphub.ping", requested_by="t")  # no worker: the job stays queued
    assert lookup not in _chain_body(env)
    assert "audit_event_seq_seq'::regclass)" in _chain_body(env)
    assert "ix_audit_event_target" not in _indexes(env)
    _migrate(env, "0005")
    assert lookup in _chain_body(env)
    assert "ix_audit_event_target" in _indexes(env)
    with Session(get_engine()) as session:  # at 0005 `job` has no payload_sha256 (0009)
        audit.record(session, actor="t", action="test.between")
        session.commit()
    _migrate(env, "head")
    assert lookup not in _chain_body(env)
    assert "ix_audit_event_target" not in _indexes(env)
    nlphub.enqueue("nlphub.ping", requested_by="t")
    with Session(get_engine()) as session:
        report = verify_chain(session)
    assert report.ok
    assert report.checked == 3


def test_job_statements_are_prepared_once_and_again_after_deallocate(env) -> None:
    """The per-job statements run as server-side prepared statements through libpq; one
    deallocated behind their back (DISCARD ALL, DEALLOCATE) is prepared again. Parameters
    reach Postgres in its text format, arrays quoted."""
    from nlphub.jobstate import insert_job, transition
    from schemas.db import autocommit_engine
    from schemas.prepared import one_row as _one_row

    job_id = uuid.uuid4()
    with autocommit_engine().connect() as conn:
        insert_job(conn, job_id, task="nlphub.ping", queue="default", payload={}, requested_by="t")
        names = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'nlphub_%%'"
        ).scalar_one()
        assert names == 1
        conn.exec_driver_sql("DEALLOCATE ALL")
        out = transition(conn, job_id, JobState.STARTED, actor="t", action="job.started", task="p")
        assert out.attempts == 1
        out = transition(conn, job_id, JobState.STARTED, actor="t", action="job.started", task="p")
        assert out.attempts == 2  # a redelivery starts it again
        tricky = ['a"b', "c\\d", "e,f", "", "{g}", " h "]
        row = _one_row(
            conn,
            "SELECT CAST(:v AS text[]) = CAST(:w AS text[]) AS same, :x AS x, :n AS n",
            {"v": tricky, "w": None, "x": "ünï", "n": None},
        )
        assert row == {"same": None, "x": "ünï", "n": None}
        row = _one_row(
            conn,
            "SELECT array_to_json(CAST(:v AS text[]))::text AS j, :b AS b",
            {"v": tricky, "b": True},
        )
        assert json.loads(row["j"]) == tricky and row["b"] == "t"


def test_a_forked_pool_child_leaves_its_parents_connections_alone(env) -> None:
    """Celery's prefork children inherit the main process's pooled connections. The child's
    `worker_process_init` hook drops them without closing them, so the parent's session on
    the server lives on (closing would send libpq's Terminate over the shared socket)."""
    import gc
    import os

    from tasks.base import _after_fork

    engine = get_engine()
    with engine.connect() as conn:
        before = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    pid = os.fork()
    if pid == 0:  # the child: what a new pool process does, then leave without cleanup
        code = 0
        try:
            _after_fork()
            gc.collect()  # the dropped connections are collected: psycopg leaves them be
            with get_engine().connect() as own:
                code = 0 if own.execute(text("SELECT pg_backend_pid()")).scalar_one() else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with psycopg.connect(env["database_url"], autocommit=True) as admin:
        assert admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (before,)
        ).fetchone() == (1,)
    with engine.connect() as conn:  # the parent's pooled connection, still the same session
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == before

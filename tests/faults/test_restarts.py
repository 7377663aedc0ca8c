"""Servers restarted under load (issue 7): nothing lost — no job, no audit event.

- Redis crashes and comes back in the middle of a burst of 5,000 jobs, while another job is
  running: the outbox keeps every job the broker did not get, the reconciler publishes it
  again, the running job carries on, and each job succeeds once.
- Postgres crashes and comes back while a worker runs jobs: the tasks retry with backoff, the
  pool reconnects, each job's transitions are audited once, in order, and the hash chain
  still verifies. The reconciler runs as beat runs it, so a delivery the crash cost is sent
  again; the jobs it had to send are logged with their trails (a failure lists the jobs left
  unfinished, their trails and the worker's lines about them).

Each test has a server of its own (the session's are shared by every other test), crashed and
restarted in place: same data folder, same port or socket, so every URL stays valid
(tests/faults/servers.py; the fixtures `own_redis`, `own_postgres` and `gated_hub` in
tests/faults/conftest.py).
"""

from __future__ import annotations

import logging
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session

import nlphub
from nlphub.audit import verify_chain
from nlphub.jobs import reconcile_outbox
from schemas.db import dispose_engines, get_engine, session_scope
from schemas.settings import get_settings
from schemas.states import JobState
from tests.conftest import wait_for
from tests.faults.servers import GateHandler, crash_postgres, crash_redis, repoint
from tests.procs import NLPHUB, prefork_worker_cmd, tail
from workers.embedded import EmbeddedPostgres, EmbeddedRedis

pytestmark = [pytest.mark.integration, pytest.mark.slow]

log = logging.getLogger(__name__)

N_BURST = 5000
N_PG = 600
#: The reconciler's republish age in the Postgres crash test (seconds).
RESCUE_AFTER = 60


# -- reading the outcome ------------------------------------------------------------------------


def _states(ids: list[uuid.UUID]) -> Counter[str]:
    with Session(get_engine()) as session:
        rows = session.execute(
            text("SELECT state, count(*) AS n FROM job WHERE id = ANY(:ids) GROUP BY state"),
            {"ids": ids},
        ).all()
    return Counter({row.state: int(row.n) for row in rows})


def _trails(ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, list[str]]]:
    """Per job: its attempts, and its audit events' actions in log order."""
    with Session(get_engine()) as session:
        attempts = {
            row.id: int(row.attempts)
            for row in session.execute(
                text("SELECT id, attempts FROM job WHERE id = ANY(:ids)"), {"ids": ids}
            )
        }
        actions: dict[uuid.UUID, list[str]] = {i: [] for i in ids}
        for row in session.execute(
            text("SELECT job_id, action FROM audit_event WHERE job_id = ANY(:ids) ORDER BY seq"),
            {"ids": ids},
        ):
            actions[row.job_id].append(row.action)
    return {i: (attempts.get(i, -1), actions[i]) for i in ids}


def _trail_problem(attempts: int, actions: list[str]) -> str | None:
    """What is wrong with one succeeded job's audit trail (None: nothing).

    enqueued once, first; a receipt before the first start; one `job.started` per attempt;
    `job.succeeded` once, last; never `job.failed`."""
    count = Counter(actions)
    if not actions or actions[0] != "job.enqueued" or count["job.enqueued"] != 1:
        return "job.enqueued is not the first event, once"
    if actions[-1] != "job.succeeded" or count["job.succeeded"] != 1:
        return "job.succeeded is not the last event, once"
    if count["job.failed"]:
        return "job.failed recorded"
    if count["job.started"] != attempts or attempts < 1:
        return f"{count['job.started']} job.started for {attempts} attempts"
    if "job.received" not in actions or actions.index("job.received") > actions.index(
        "job.started"
    ):
        return "no job.received before the first job.started"
    return None


def _unfinished(ids: list[uuid.UUID], worker_log: Path, *, every: bool = False) -> str:
    """The jobs of `ids` not succeeded (`every`: all of them), each with its audit trail and the
    worker's log lines that name it: what a failure report needs to tell where one stopped."""
    states = _states(ids)
    trails = _trails(ids)
    with Session(get_engine()) as session:
        done = set(
            session.execute(
                text("SELECT id FROM job WHERE id = ANY(:ids) AND state = 'succeeded'"),
                {"ids": ids},
            ).scalars()
        )
    lines = worker_log.read_text(errors="replace").splitlines()
    parts = [f"{dict(states)}"]
    for job_id in ids:
        if every or job_id not in done:
            mentions = [line for line in lines if str(job_id) in line][-20:]
            parts.append(f"{job_id}: {trails[job_id]}\n  " + "\n  ".join(mentions))
    return "\n".join(parts)


def _assert_trails(ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, list[str]]]:
    trails = _trails(ids)
    bad = {
        str(i): (problem, trail)
        for i, trail in trails.items()
        if (problem := _trail_problem(*trail)) is not None
    }
    assert not bad, f"{len(bad)} jobs with a wrong audit trail, e.g. {list(bad.items())[:3]}"
    return trails


def _worker(spawn: Callable[..., subprocess.Popen[bytes]], log_path: Path, name: str) -> Any:
    return spawn(prefork_worker_cmd(name, concurrency=2, loglevel="WARNING"), log=log_path)


# -- the tests --------------------------------------------------------------------------------


def test_a_database_error_that_cost_the_connection_is_temporary(env: dict[str, Any]) -> None:
    """Postgres ending a session arrives as whatever class its SQLSTATE maps to: an idle-in-
    transaction timeout as an InternalError. Tasks retry it like any lost connection."""
    from tasks.base import TEMPORARY_ERRORS, is_temporary

    def gone(pid: int) -> bool:
        with get_engine().connect() as other:
            query = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            return other.execute(query, {"pid": pid}).scalar_one() == 0

    with pytest.raises(Exception) as caught, get_engine().connect() as conn:
        conn.execute(text("SET idle_in_transaction_session_timeout = 100"))
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        wait_for(lambda: gone(pid), 30, what="Postgres to end the idle session")
        conn.execute(text("SELECT 1"))
    exc = caught.value
    assert getattr(exc, "connection_invalidated", False), repr(exc)
    assert not isinstance(exc, TEMPORARY_ERRORS)  # an InternalError, not an OperationalError
    assert is_temporary(exc)
    with get_engine().connect() as conn:  # and the pool hands out a working connection again
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


@pytest.mark.timeout(300)
def test_worker_outlives_a_redis_crash_and_its_running_job_finishes_once(
    env: dict[str, Any],
    own_redis: EmbeddedRedis,
    gated_hub: type[GateHandler],
    spawn: Callable[..., subprocess.Popen[bytes]],
    job_state: Callable[[uuid.UUID], Any],
    wait_job: Callable[..., Any],
    tmp_path: Path,
) -> None:
    url = get_settings().require_redis_url()
    worker_log = tmp_path / "worker.log"
    worker = _worker(spawn, worker_log, "outlive")
    running = nlphub.enqueue("nlphub.hub_sync", requested_by="crash")
    wait_for(gated_hub.arrived.is_set, 60, what="the hub_sync job to be running")
    # The worker holds the running job's message, unacknowledged, and waits for more.
    crash_redis(own_redis, url)
    wait_for(
        lambda: "Connection to broker lost" in worker_log.read_text(errors="replace"),
        30,
        what="the worker to notice",
    )
    assert own_redis.start() == url
    # It reconnects and takes new work, while the job from before the crash still runs.
    ping_id = nlphub.enqueue("nlphub.ping", requested_by="crash")

    def ping_done() -> bool:
        assert worker.poll() is None, f"the worker died\n{tail(worker_log)}"
        job = job_state(ping_id)
        return job is not None and job.state == JobState.SUCCEEDED

    try:
        wait_for(ping_done, 60, what="a job sent after the restart to succeed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{tail(worker_log)}") from None
    job = job_state(running)
    assert job.state == JobState.STARTED, job.state
    gated_hub.gate.set()
    job = wait_job(running, timeout=60)
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{tail(worker_log)}"
    attempts, actions = _assert_trails([running])[running]
    assert attempts == 1, actions  # it carried on: not cancelled, not run again
    assert worker.poll() is None, f"the worker died\n{tail(worker_log)}"


@pytest.mark.timeout(600)
def test_redis_crash_mid_burst_loses_no_job(
    env: dict[str, Any],
    own_redis: EmbeddedRedis,
    gated_hub: type[GateHandler],
    spawn: Callable[..., subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("NLPHUB_OUTBOX_REPUBLISH_AFTER", "10")  # the smallest allowed
    repoint()
    settings = get_settings()
    url = settings.require_redis_url()
    worker_log = tmp_path / "worker.log"
    worker = _worker(spawn, worker_log, "burst")
    # A job that is running while Redis goes away: it reads a hub that answers when told to.
    running = nlphub.enqueue("nlphub.hub_sync", requested_by="burst")
    wait_for(gated_hub.arrived.is_set, 60, what="the hub_sync job to be running")

    crash_at, back_at = N_BURST // 3, N_BURST // 3 + 15
    ids: list[uuid.UUID] = []
    down: list[uuid.UUID] = []
    slowest_down = 0.0
    for i in range(N_BURST):
        if i == crash_at:
            crash_redis(own_redis, url)
        if i == back_at:
            assert own_redis.start() == url  # same port: every client's URL stays valid
            gated_hub.gate.set()  # the running job may finish now
        began = time.monotonic()
        job_id = nlphub.enqueue("nlphub.ping", requested_by="burst")  # never raises: outbox
        ids.append(job_id)
        if crash_at <= i < back_at:
            down.append(job_id)
            slowest_down = max(slowest_down, time.monotonic() - began)
    assert len(set(ids)) == N_BURST
    # With the broker down, enqueue() gives up publishing quickly (the outbox has the job).
    assert slowest_down < 5.0, f"enqueue() took {slowest_down:.1f}s with Redis down"

    last_reconcile = [0.0]

    def all_done() -> bool:
        # The reconciler, as beat runs it (here every 2 s instead of every minute).
        if time.monotonic() - last_reconcile[0] > 2.0:
            with session_scope() as session:
                reconcile_outbox(
                    session,
                    grace_seconds=settings.outbox_grace_seconds,
                    republish_after=settings.outbox_republish_after,
                )
            last_reconcile[0] = time.monotonic()
        assert worker.poll() is None, f"the worker died\n{tail(worker_log)}"
        return _states([*ids, running])[JobState.SUCCEEDED.value] == N_BURST + 1

    try:
        wait_for(all_done, 400, interval=0.5, what="every job to succeed")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: {_states(ids)} {_states([running])}\n{tail(worker_log)}"
        ) from None

    _assert_trails(ids)
    # The job running during the crash carried on and finished: one attempt, not two.
    attempts, actions = _assert_trails([running])[running]
    assert attempts == 1, actions
    # Exactly the jobs enqueued while Redis was down missed their publish (and the reconciler
    # sent them); before the crash and after the restart, `enqueue()` published by itself.
    with Session(get_engine()) as session:
        late = {
            row.job_id
            for row in session.execute(
                text(
                    "SELECT job_id FROM audit_event WHERE action = 'job.republished' "
                    "AND (details->>'first_publish')::boolean"
                )
            )
        }
        report = verify_chain(session)
    assert late == set(down), (len(late - set(down)), len(set(down) - late))
    assert report.ok, report
    assert report.checked >= 4 * N_BURST


@pytest.mark.timeout(600)
def test_postgres_crash_mid_run_retries_and_keeps_the_audit_whole(
    env: dict[str, Any],
    own_postgres: EmbeddedPostgres,
    spawn: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    url = get_settings().require_database_url()
    ids = [nlphub.enqueue("nlphub.ping", requested_by="pg-crash") for _ in range(N_PG)]
    worker_log = tmp_path / "worker.log"
    worker = _worker(spawn, worker_log, "pgcrash")

    def succeeded() -> int:
        return _states(ids)[JobState.SUCCEEDED.value]

    wait_for(lambda: succeeded() >= N_PG // 10, 120, what="the worker to be busy")
    dispose_engines()
    crash_postgres(own_postgres)
    # While Postgres is away the worker's tasks fail to reach it, and retry with backoff.
    wait_for(
        lambda: worker_log.read_text(errors="replace").count("temporary error") >= 3,
        60,
        interval=0.2,
        what="the worker's tasks to meet the missing database",
    )
    own_postgres.start()
    assert get_settings().require_database_url() == url  # same socket: the URL stays valid
    before = succeeded()
    assert before < N_PG, "every job finished before the crash: nothing was tested"

    rescued: list[uuid.UUID] = []
    last_reconcile = [time.monotonic()]

    def all_done() -> bool:
        # The reconciler, as beat runs it (every 5 s here), with a 60 s republish age instead
        # of NLPHUB_OUTBOX_REPUBLISH_AFTER's: a delivery the crash cost (e.g. a failure outside
        # the task body that was not retried) is sent again, as in production.
        if time.monotonic() - last_reconcile[0] > 5.0:
            with session_scope() as session:
                rescued.extend(
                    reconcile_outbox(
                        session,
                        grace_seconds=30,
                        republish_after=RESCUE_AFTER,
                        stuck_after=RESCUE_AFTER,
                    )
                )
            last_reconcile[0] = time.monotonic()
        return succeeded() == N_PG

    try:
        wait_for(all_done, 300, interval=0.5, what="every job to succeed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_unfinished(ids, worker_log)}") from None
    if rescued:
        log.warning(
            "republished by the reconciler: %s", _unfinished(rescued, worker_log, every=True)
        )
    assert worker.poll() is None, tail(worker_log)

    trails = _assert_trails(ids)
    log.info("attempts: %s", Counter(attempts for attempts, _ in trails.values()))
    verify = subprocess.run(
        [NLPHUB, "audit", "verify"], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit chain OK" in verify.stdout

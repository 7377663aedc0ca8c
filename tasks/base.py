"""One task base for every nlphub task: payload validation, job rows, audit, retries, locks.

A task is a typed domain call wrapped by `nlphub_task(name)`:

    @nlphub_task("nlphub.inventory")
    def inventory(job: JobContext, payload: InventoryPayload) -> dict: ...

The wrapper records every job transition (received, started, progress, retry, success,
failure) in `Job` and `AuditEvent`, written here once. A worker's receipt of a waiting job is
recorded in the same statement that starts it (one round trip, and no database write in the
worker's consumer loop). It makes redelivery safe:
- a job that already finished is not run again (its stored result is returned);
- a job that another worker is executing right now (a session advisory lock held for the
  run, released by Postgres if that worker dies) is not run twice: this delivery waits a
  little for the lock, then retries later rather than being dropped (the lock may be a dead
  worker's, held by its backend until the statement it was running ends);
- the success or failure of a job is recorded once, whatever the number of deliveries;
- a run whose database connection was lost (and the run lock with it) takes the lock again
  when it next touches its job (progress, outcome), or, when another delivery has the job
  now, stops without recording anything (`RunLockLost`, not retried).
Retries (exponential backoff with jitter) are for temporary errors only.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import psycopg
import redis.exceptions
import sqlalchemy.exc
from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.signals import worker_init, worker_process_init
from sqlalchemy import Connection, text

from nlphub import audit
from nlphub.callers import CALLER_HEADER, caller_key, verified_caller
from nlphub.errors import GaveUp, NlphubError, TemporaryError
from nlphub.jobstate import (
    insert_job,
    record_progress,
    recorded_outcome,
    release_task_lock,
    retake_run_lock,
    run_lock_key,
    running_job,
    transition,
    try_task_lock,
)
from nlphub.messaging.app import app
from nlphub.redact import redact
from schemas.db import (
    autocommit_engine,
    connection_lost,
    dispose_engines,
    get_engine,
    held_connection,
    require_migrated,
)
from schemas.payloads import (
    Payload,
    PayloadError,
    claimed_identity,
    spec_for,
    validate_payload,
)
from schemas.settings import get_settings
from schemas.states import JobState

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Payload)

#: Exceptions that may go away by themselves: retried with backoff.
TEMPORARY_ERRORS: tuple[type[BaseException], ...] = (
    TemporaryError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    # psycopg's own, should one reach us unwrapped (a raw driver call outside SQLAlchemy).
    psycopg.OperationalError,
    httpx.TransportError,
    redis.exceptions.ConnectionError,
    ConnectionError,
    TimeoutError,
)


def is_temporary(exc: BaseException) -> bool:
    """One of TEMPORARY_ERRORS, or any database error that cost its connection (SQLAlchemy
    invalidated it: the server went away, restarted, or closed the session), whatever its
    class — e.g. a FATAL idle-in-transaction timeout arrives as an InternalError."""
    if isinstance(exc, TEMPORARY_ERRORS):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and bool(exc.connection_invalidated)


MAX_RETRIES = 8
PROGRESS_INTERVAL = 0.5
#: How long a delivery waits for a job's run lock held by another delivery, and how often it
#: looks, before it retries later.
RUN_LOCK_WAIT = 10.0
RUN_LOCK_POLL = 0.1


def backoff(retries: int, *, base: float | None = None, cap: float | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [base/2, min(cap, base * 2**retries)];
    `base` and `cap` default to NLPHUB_RETRY_BACKOFF / NLPHUB_RETRY_BACKOFF_MAX (2 s, 300 s)."""
    settings = get_settings()
    base = settings.retry_backoff_seconds if base is None else base
    cap = settings.retry_backoff_max_seconds if cap is None else cap
    upper = min(cap, base * (2 ** min(retries, 64)))
    return random.uniform(min(base / 2, upper), upper)


def _lock_key(job_id: uuid.UUID) -> int:
    return run_lock_key(job_id)


class RunLockLost(Exception):
    """This delivery's run lock went with its database connection, and the job is another
    delivery's now (the reconciler republished it): this one stops, records nothing, and is
    not retried (`NlphubTask.run`)."""


class _RunLock:
    """A job's run lock and the connection that holds it, for as long as the job runs.

    The lock is a session advisory lock: a lost connection (a Postgres restart, a network
    blip, ``pg_terminate_backend``) takes it along while the task body goes on, and after
    NLPHUB_STUCK_AFTER the reconciler may republish the job. So before each statement about
    the job (progress, the outcome) `conn` makes sure the lock is still held, and takes it
    again on a new connection if it is free and the job still this run's; otherwise
    `RunLockLost` (see docs/decisions.md, A run lock lost with its connection)."""

    def __init__(self, conn: Connection, job_id: uuid.UUID, key: int, attempt: int) -> None:
        self._conn = conn
        self.job_id = job_id
        self.key = key
        self.attempt = attempt
        self.lost = False
        self._replaced = False  # `_conn` is ours (not the process' kept one): close it
        self._mutex = threading.Lock()  # progress may come from a body's helper thread

    def conn(self) -> Connection:
        """The connection holding the run lock (a new one if it had to be taken again)."""
        with self._mutex:
            if self.lost:
                raise self._lost()
            if not connection_lost(self._conn):
                return self._conn
            log.warning(
                "job %s: the database connection holding its run lock was lost; taking the "
                "lock again on a new one",
                self.job_id,
            )
            self._drop()
            fresh = autocommit_engine().connect()
            try:
                ours = retake_run_lock(fresh, self.job_id, self.key, self.attempt)
            except BaseException:
                if not fresh.invalidated:
                    fresh.invalidate()  # whatever it holds goes with its session
                fresh.close()
                raise
            if not ours:
                fresh.close()
                self.lost = True
                raise self._lost()
            self._conn, self._replaced = fresh, True
            return fresh

    def release(self, *, released: bool) -> None:
        """At the end of the run: release the lock unless the outcome's statement did; give
        back a connection made here (invalidated if it may still hold the lock)."""
        conn = self._conn
        try:
            if not released and not conn.closed and not conn.invalidated:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        except BaseException:
            if self._replaced and not conn.invalidated:
                conn.invalidate()
            raise
        finally:
            if self._replaced:
                conn.close()

    def _drop(self) -> None:
        conn = self._conn
        if not conn.closed and not conn.invalidated:
            conn.invalidate()  # the process' kept connection is replaced at its next use
        if self._replaced:
            conn.close()

    def _lost(self) -> RunLockLost:
        return RunLockLost(
            f"job {self.job_id}: the database connection holding its run lock was lost and "
            "the job is another delivery's now (running or finished); this delivery stops "
            "without recording anything"
        )


@dataclass
class JobContext:
    """What a running task may tell the world: progress, and who asked for it."""

    id: uuid.UUID
    task: Task
    requested_by: str
    attempt: int
    last_try: bool = False
    _last_progress: float = field(default=0.0)
    _last_milestone: int = field(default=0)
    _run_lock: _RunLock | None = field(default=None, repr=False)

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress (fraction = done/total), throttled; visible in Flower and jobs.

        Each write first makes sure this delivery still holds the job's run lock (taken again
        if its connection was lost; `RunLockLost` if the job is another delivery's now), and
        touches the job's `updated_at`: a job making progress is never taken for stuck."""
        fraction = 0.0 if not total else max(0.0, min(1.0, done / total))
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        if self._run_lock is not None:
            self._run_lock.conn()
        meta = {"fraction": fraction, "done": done, "total": total, "message": message}
        milestone = int(fraction * 4)  # audit at 25 %, 50 %, 75 %, 100 %
        with get_engine().begin() as conn:
            record_progress(conn, self.id, fraction, message, attempt=self.attempt)
            if milestone > self._last_milestone:
                self._last_milestone = milestone
                audit.record(
                    conn,
                    actor=self.requested_by,
                    action="job.progress",
                    target=self.task.name,
                    job_id=self.id,
                    details=meta,
                )
        try:
            self.task.update_state(task_id=str(self.id), state="PROGRESS", meta=meta)
            self.task.send_event("task-progress", **meta)
        except Exception:  # progress display is best effort; the job row is the record
            log.debug("could not publish progress", exc_info=True)


def one_at_a_time(job: JobContext, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`work()`, unless another job of this task is running it now (system-wide): then at
    once {"coalesced": True, "running_job": its id (None if not found)}, a success.

    The task lock is a session advisory lock on the connection holding this job's run lock
    (autocommit: no transaction is open while `work` runs), released at the end, or by
    Postgres with that connection. docs/decisions.md: "Full scans one at a time"."""
    if job._run_lock is None:
        return work()
    name = job.task.name
    conn = job._run_lock.conn()
    if not try_task_lock(conn, name):
        running = running_job(conn, name, job.id)
        log.info("%s[%s]: coalesced with running job %s", name, job.id, running)
        return {"coalesced": True, "running_job": None if running is None else str(running)}
    try:
        return work()
    finally:
        if not conn.closed and not conn.invalidated:  # else the lock went with it
            try:
                release_task_lock(conn, name)
            except sqlalchemy.exc.DBAPIError:
                log.warning("%s[%s]: could not release its task lock", name, job.id)


class NlphubTask(Task):
    """Base class; see the module docstring. Subclasses are made by `nlphub_task`."""

    typing = False
    max_retries = MAX_RETRIES
    #: A delivery of a job that already finished returns its recorded result without running
    #: it again: the result backend need not guard the stored success (nlphub.messaging.results).
    runs_once_per_job = True
    body: Callable[[JobContext, Any], dict[str, Any] | None]

    def run(self, *args: Any, **kwargs: Any) -> Any:
        job_id = uuid.UUID(self.request.id) if self.request.id else uuid.uuid4()
        try:
            with held_connection() as conn:
                if args:
                    problem = PayloadError(self.name, ["pass the payload as keyword arguments"])
                    return self._fail_without_run(conn, job_id, kwargs, problem)
                try:
                    payload = validate_payload(self.name, kwargs)
                except PayloadError as exc:
                    return self._fail_without_run(conn, job_id, kwargs, exc)
                return self._execute(conn, job_id, payload)
        except RunLockLost as exc:
            # Another delivery owns the job: nothing recorded, not retried, no Celery state
            # stored over that delivery's (Ignore acknowledges the message).
            log.warning("%s[%s]: %s", self.name, job_id, exc)
            raise Ignore() from None
        except (Retry, NlphubError, PayloadError):
            raise
        except Exception as exc:
            if not is_temporary(exc):
                raise
            # The database itself may be what failed: retry without touching the job row.
            log.warning("%s[%s]: temporary error outside the task body: %s", self.name, job_id, exc)
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from None

    # -- the stages ---------------------------------------------------------------------------

    def _execute(self, conn: Connection, job_id: uuid.UUID, payload: Payload) -> Any:
        key = _lock_key(job_id)
        started = self._start(conn, job_id, payload, key)
        if not isinstance(started, int):
            return started  # finished earlier: this delivery is a duplicate
        run = _RunLock(conn, job_id, key, started)
        ctx = JobContext(
            job_id,
            self,
            payload.requested_by,
            started,
            last_try=self.request.retries >= self.max_retries,
            _run_lock=run,
        )
        by = payload.requested_by
        released = False
        try:
            try:
                result = self.body(ctx, payload) or {}
            except (Retry, RunLockLost):
                raise
            except Exception as exc:
                if not is_temporary(exc):
                    released = self._finish(run, JobState.FAILED, by, error=_describe(exc))
                    raise
                if self.request.retries < self.max_retries:
                    countdown = backoff(self.request.retries)
                    released = self._finish(
                        run,
                        JobState.RETRYING,
                        by,
                        error=_describe(exc),
                        details={"retry_in_s": round(countdown, 1)},
                    )
                    raise self.retry(exc=exc, countdown=countdown) from None
                message = f"gave up after {self.request.retries + 1} attempts: {_describe(exc)}"
                released = self._finish(run, JobState.FAILED, by, error=message)
                raise GaveUp(message) from exc
            released = self._finish(run, JobState.SUCCEEDED, by, result=result)
            return result
        finally:
            run.release(released=released)

    def _finish(self, run: _RunLock, state: JobState, requested_by: str, **outcome: Any) -> bool:
        """Record the run's outcome (`_record`) on the connection holding its run lock, made
        sure of first (`_RunLock.conn`). A connection lost during the statement is replaced
        the same way and the outcome recorded once more, unless the job is not this run's any
        more (it was recorded, or another delivery has it: `RunLockLost`)."""
        try:
            return self._record(run.conn(), run.job_id, state, requested_by, run.key, **outcome)
        except sqlalchemy.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("%s[%s]: connection lost while recording %s", self.name, run.job_id, state)
        return self._record(run.conn(), run.job_id, state, requested_by, run.key, **outcome)

    def _start(
        self, conn: Connection, job_id: uuid.UUID, payload: Payload, key: int
    ) -> int | dict[str, Any]:
        """Take the job's run lock and start it: the attempt number. Otherwise the stored
        result of a job that already finished; while another delivery holds the lock (for
        longer than RUN_LOCK_WAIT), a retry later."""
        worker = self.request.hostname
        delivered = payload.model_dump(mode="json")
        for _ in range(2):
            deadline = time.monotonic() + RUN_LOCK_WAIT
            while True:
                outcome = transition(
                    conn,
                    job_id,
                    JobState.STARTED,
                    actor=payload.requested_by,
                    action="job.started",
                    task=self.name,
                    worker=worker,
                    details={"worker": worker},
                    lock_key=key,
                    lock="take",
                    # Not waiting for the disk: a database crash that loses this start loses
                    # nothing after it, the worker's next statement fails (temporary: retried)
                    # and the message, acknowledged only at the end, is delivered again.
                    flush=False,
                    payload=delivered,
                )
                if outcome.matches is False:
                    raise _another_jobs_id(job_id)
                if outcome.locked or time.monotonic() >= deadline:
                    break
                time.sleep(RUN_LOCK_POLL)
            if not outcome.locked:
                # Another delivery holds the run lock: one still running, or one whose worker
                # died in the middle of a statement (its backend keeps the lock until that
                # statement ends). Dropping this delivery could lose the job: look again later.
                log.info("%s[%s] is running elsewhere; checking again later", self.name, job_id)
                raise self.retry(countdown=backoff(self.request.retries))
            if outcome.attempts is not None:
                return outcome.attempts
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            recorded = recorded_outcome(conn, job_id)
            if recorded is not None:
                state, result = recorded
                log.info("%s[%s] already %s; not running it again", self.name, job_id, state)
                return dict(result or {"state": state})
            # Enqueued without our API (Flower's REST API, beat): the row starts here.
            insert_job(
                conn,
                job_id,
                task=self.name,
                queue=spec_for(self.name).queue,
                payload=delivered,
                requested_by=payload.requested_by,
                state=JobState.RECEIVED,
                action="job.received",
                published=True,
                caller=_broker_caller(self),
            )
        raise RuntimeError(f"job {job_id} could not be started")  # pragma: no cover

    def _record(
        self,
        conn: Connection,
        job_id: uuid.UUID,
        state: JobState,
        requested_by: str,
        key: int | None,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        details: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        """Record an outcome once (when a duplicate delivery finished first, nothing changes)
        and release the run lock in the same statement. True when the lock was released.
        With `payload` (a delivery that was not started), only a row made for this task and
        payload changes; another job's is refused (`_another_jobs_id`)."""
        action = {
            JobState.SUCCEEDED: "job.succeeded",
            JobState.FAILED: "job.failed",
            JobState.RETRYING: "job.retry",
        }[state]
        info = {**(details or {}), **({"error": error} if error else {})}
        if result:
            info["result"] = result
        outcome = transition(
            conn,
            job_id,
            state,
            actor=requested_by,
            action=action,
            task=self.name,
            details=info,
            error=error,
            result=result,
            lock_key=key,
            lock="release" if key is not None else None,
            payload=payload,
        )
        if outcome.matches is False:
            raise _another_jobs_id(job_id)
        if error:
            log.warning("%s[%s] %s: %s", self.name, job_id, state.value, error)
        return key is not None

    def _fail_without_run(
        self, conn: Connection, job_id: uuid.UUID, kwargs: dict[str, Any], exc: Exception
    ) -> Any:
        """A payload that can never succeed: record the failure, do not retry, stay healthy.

        What is recorded is bounded (any payload may arrive here): the payload as the audit
        bounds details (`audit.bounded_details`: oversized values, or the whole object, as a
        marker), the actor only if it is a valid `requested_by`, the error as PayloadError
        words it (its first problems)."""
        requested_by = claimed_identity(kwargs.get("requested_by"), "external")
        clean = redact(kwargs)
        stored = json.loads(audit.bounded_details(clean))
        inserted = insert_job(
            conn,
            job_id,
            task=self.name,
            queue=spec_for(self.name).queue,
            payload=stored,
            requested_by=requested_by,
            state=JobState.RECEIVED,
            action="job.received",
            published=True,
            caller=_broker_caller(self),
        )
        # A row made before holds the payload as sent (the Python API) or as stored here (an
        # earlier delivery of this one): the recorded outcome must match either.
        tries = [stored] if inserted or stored == clean else [kwargs, stored]
        for i, payload in enumerate(tries):
            try:
                self._record(
                    conn,
                    job_id,
                    JobState.FAILED,
                    requested_by,
                    None,
                    error=str(exc),
                    payload=payload,
                )
                break
            except Reject:
                if i == len(tries) - 1:
                    raise
        raise exc


def _broker_caller(task: Task) -> dict[str, Any]:
    """Who sent a message that came without our API (Flower's REST API, beat, any broker
    client). Flower run by nlphub (`workers.flower`) signs its authenticated user into the
    `nlphub_caller` header: recorded as `via: flower` only if the signature holds for this
    message (`nlphub.callers`). Otherwise only `via: broker` is known (`origin` is the sender's
    claim); a header that does not verify is marked `forged_caller` and its user never used."""
    request = task.request
    caller: dict[str, Any] = {"via": "broker", "origin": request.origin}
    header = request.get(CALLER_HEADER)  # a message header becomes a request attribute
    if header is None:
        return caller
    verified = verified_caller(
        caller_key(get_settings()),
        header,
        task_id=str(request.id),
        task=task.name,
        args=request.args,
        kwargs=request.kwargs,
    )
    if verified is not None:
        return verified
    log.warning(
        "%s[%s]: its %s header does not verify (forged, or Flower and this worker have "
        "different NLPHUB_CALLER_KEY); recorded as sent through the broker",
        task.name,
        request.id,
        CALLER_HEADER,
    )
    return {**caller, "forged_caller": True}


def _another_jobs_id(job_id: uuid.UUID) -> Reject:
    """A delivery whose task id is a job made for another task or payload (e.g. Flower's
    `task_id` set to a queued job's id): not run, not retried, that job left as it was."""
    return Reject(
        f"refused: task id {job_id} belongs to another job (a different task or payload); "
        "this delivery was not run. Send it without a task id, or with a new one",
        requeue=False,
    )


def _describe(exc: BaseException) -> str:
    message = str(exc).strip() or exc.__class__.__name__
    if isinstance(exc, NlphubError):
        return message
    return f"{exc.__class__.__name__}: {message}"


def nlphub_task(name: str) -> Callable[[Callable[[JobContext, P], dict[str, Any] | None]], Task]:
    """Register `fn(job, payload)` as the Celery task `name` with the nlphub base."""
    spec = spec_for(name)

    def decorate(fn: Callable[[JobContext, P], dict[str, Any] | None]) -> Task:
        attrs = {
            "name": name,
            "body": staticmethod(fn),
            "__doc__": fn.__doc__,
            "__module__": fn.__module__,
            "acks_late": spec.idempotent,
            "reject_on_worker_lost": spec.idempotent,
            "queue": spec.queue,
        }
        cls = type(f"{fn.__name__.title().replace('_', '')}Task", (NlphubTask,), attrs)
        return app.register_task(cls())

    return decorate


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pooled connections must not be shared across fork: the child drops its copies of the
    # parent's (without closing them: that would end the parent's sessions) and opens its own.
    dispose_engines(close=False)


@worker_init.connect
def _check_database(**_: Any) -> None:
    """A worker refuses to start without a broker URL or on an un-migrated database."""
    get_settings().require_redis_url()
    require_migrated(get_engine())

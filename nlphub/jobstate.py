"""Every statement on the `job` table, in one place.

State changes are single statements: the row update and its audit event together, one round
trip each — an UPDATE guarded by the state machine (only from states that may legally move to
the target) and the audit INSERT in the same statement — so recording every transition stays
cheap enough to do for every job (they run as prepared statements: `schemas.prepared`).
Each bounds its own lock waits too (`nlphub.audit.lock_timeout`), in the same statement.
The outbox's look-ups, progress, and the listings the CLI shows are here too. The statement
that finishes a job also adds it to its task's total in `counter` (`nlphub.counters`), which
the metrics read instead of counting the table.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, func, or_, text
from sqlmodel import Session, col, select

from nlphub.audit import BOUND_LOCK_WAITS, audit_params, canonical, lock_timeout
from nlphub.redact import redact
from schemas.db import get_engine
from schemas.models import Job, utcnow
from schemas.prepared import one_row
from schemas.states import JOB_TERMINAL, JobState, job_predecessors

#: Extra SET clauses per target state.
_SETS: dict[JobState, str] = {
    JobState.RECEIVED: "",
    JobState.STARTED: (
        ", attempts = attempts + 1, started_at = coalesce(started_at, now()), "
        "worker = :worker, error = NULL"
    ),
    JobState.RETRYING: ", error = :error",
    JobState.SUCCEEDED: (
        ", progress = 1, result = CAST(:result AS jsonb), error = NULL, finished_at = now()"
    ),
    JobState.FAILED: ", error = :error, finished_at = now()",
    JobState.REVOKED: ", error = :error, finished_at = now()",
}


@dataclass(frozen=True)
class Outcome:
    #: The job's attempts after the change; None when nothing changed (job missing, finished,
    #: or not in a state that may move to the target).
    attempts: int | None
    #: With lock="take": whether this session got the job's run lock.
    locked: bool = False
    #: With `payload`: whether the job's row was made for this task and payload (False: a
    #: delivery under another job's id, and nothing changed); None when there is no row or
    #: nothing was compared.
    matches: bool | None = None


def transition(
    conn: Connection | Session,
    job_id: uuid.UUID,
    target: JobState,
    *,
    actor: str,
    action: str,
    task: str,
    details: dict[str, Any] | None = None,
    worker: str | None = None,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    lock_key: int | None = None,
    lock: Literal["take", "release"] | None = None,
    flush: bool = True,
    payload: dict[str, Any] | None = None,
) -> Outcome:
    """Move the job to `target` and audit it, in one statement.

    With `payload` (a delivery's), the row changes only if it was made for `task` with this
    payload (its `payload_digest`, unredacted; a row from before migration 0009 has none and
    is compared as stored: redacted, as jsonb), and the run lock is not taken otherwise: a
    message sent under another job's id (Flower's `task_id`) leaves that job as it was.

    `lock="take"` first tries the session advisory lock `lock_key` and changes nothing if it
    is held elsewhere; `lock="release"` releases it in the same statement (after the change is
    made, which concurrent takers then see once this statement commits).

    `flush=False` commits the transaction without waiting for its WAL to reach the disk
    (``synchronous_commit`` off for that transaction only). Only for a change that may be
    lost in a database crash: a crash loses the newest asynchronous commits and nothing
    committed after them (any later synchronous commit flushes the WAL before it), so the
    audit chain stays whole."""
    params = audit_params(actor=actor, action=action, target=task, job_id=job_id, details=details)
    params.update(
        id=job_id,
        state=target.value,
        allowed=job_predecessors(target),
        worker=worker,
        error=error,
        result=canonical(redact(result)) if result is not None else None,
        k=lock_key,
    )
    check = payload is not None
    if payload is not None:
        params.update(task=task, payload=canonical(redact(payload)), digest=payload_digest(payload))
    take = lock == "take"
    row = one_row(conn, _transition_sql(target, lock, flush, check), params)
    attempts = None if row["attempts"] is None else int(row["attempts"])
    same = row.get("same")
    return Outcome(
        attempts, row["got"] == "t" if take else False, None if same is None else same == "t"
    )


#: In the statement's first CTE (l), which j reads before any row reaches the audit inserts:
#: the statement's lock waits are bounded (`nlphub.audit.BOUND_LOCK_WAITS`).
_BOUNDED = ", set_config('lock_timeout', :lock_timeout, true) AS bounded"


@functools.cache
def _transition_sql(
    target: JobState,
    lock: Literal["take", "release"] | None,
    flush: bool = True,
    check: bool = False,
) -> str:
    """The statement for one (target, lock, flush, check), built once. `check`: the row must
    be the delivered task's with the delivered payload (no lock taken, nothing changed, else)."""
    take = lock == "take"
    no_wait = "" if flush else ", set_config('synchronous_commit', 'off', true) AS no_wait"
    try_lock = "pg_try_advisory_lock(:k)" if take else "true"
    same, where = "", ""
    if check:
        # The delivered task and payload against the row's: a mismatch takes no lock and
        # changes nothing. No row yet (sent without our API): the lock is taken as before.
        # The payload's digest when the row has one (redaction hides what differs in a
        # secret), else (a row from before 0009) its stored, redacted form.
        match = (
            "task = :task AND CASE WHEN payload_sha256 IS NULL "
            "THEN payload = CAST(:payload AS jsonb) ELSE payload_sha256 = :digest END"
        )
        same, where = f", {match} AS same", f" AND {match}"
        try_lock = f"CASE WHEN (SELECT same FROM o) IS NOT FALSE THEN {try_lock} ELSE false END"
    return f"""
            WITH o AS {"MATERIALIZED " if check else ""}(
                -- the state before this statement (all CTEs share one snapshot; no FOR UPDATE:
                -- a row updated by this same statement could not be locked again)
                SELECT state AS old_state {same} FROM job WHERE id = :id
            ), l AS MATERIALIZED (
                SELECT {try_lock} AS got {no_wait} {_BOUNDED}
            ), j AS (
                UPDATE job SET state = :state, updated_at = now() {_SETS[target]}
                WHERE id = :id AND state = ANY(:allowed) AND (SELECT got FROM l){where}
                RETURNING id, attempts, task
            ), r AS (
                -- starting a job that was waiting also records that a worker received it
                INSERT INTO audit_event (actor, action, target, job_id, details, prev_hash, hash)
                SELECT 'worker', 'job.received', :target, j.id,
                       jsonb_build_object('worker', CAST(:worker AS text)), '', ''
                FROM j, o
                WHERE :state = 'started' AND o.old_state IN ('queued', 'retrying')
                RETURNING seq
            ), a AS (
                INSERT INTO audit_event (actor, action, target, job_id, details, prev_hash, hash)
                SELECT :actor, :action, :target, j.id,
                       CAST(:details AS jsonb) || jsonb_build_object('attempt', j.attempts),
                       '', ''
                FROM j CROSS JOIN (SELECT count(*) FROM r) AS received_first
                RETURNING seq
            ){_finished_total(target)}
            SELECT (SELECT attempts FROM j) AS attempts, (SELECT got FROM l) AS got,
                   (SELECT count(*) FROM a) + (SELECT count(*) FROM r) AS audited
                   {", (SELECT same FROM o) AS same" if check else ""}
                   {", pg_advisory_unlock(:k) AS released" if lock == "release" else ""}
            """


def _finished_total(target: JobState) -> str:
    """For a finishing target: a CTE adding the job to its task's total (`counter`, name
    `job.<state>`), after its audit event (the chain lock first: `nlphub.counters`)."""
    if target not in JOB_TERMINAL:
        return ""
    return f""", t AS (
                INSERT INTO counter AS c (name, label, value, updated_at)
                SELECT 'job.{target.value}', j.task, 1, now()
                FROM j CROSS JOIN (SELECT count(*) FROM a) AS audited_first
                ON CONFLICT (name, label) DO UPDATE SET value = c.value + 1, updated_at = now()
            )"""


_INSERT_JOB = f"""
            WITH l AS MATERIALIZED (
                -- joined to the audit insert's row: this statement's lock waits are bounded
                {BOUND_LOCK_WAITS}
            ), j AS (
                INSERT INTO job (id, task, queue, payload, payload_sha256, state, progress,
                                 attempts, requested_by, created_at, updated_at, published_at)
                VALUES (:id, :task, :queue, CAST(:payload AS jsonb), :digest, :state, 0, 0, :by,
                        now(), now(), CASE WHEN :published THEN now() END)
                ON CONFLICT (id) DO NOTHING
                RETURNING id
            ), a AS (
                INSERT INTO audit_event (actor, action, target, job_id, details, prev_hash, hash)
                SELECT :actor, :action, :target, j.id, CAST(:details AS jsonb), '', ''
                FROM j CROSS JOIN l
                RETURNING seq
            )
            SELECT (SELECT count(*) FROM j) AS inserted, (SELECT count(*) FROM a) AS audited
            """


def insert_job(
    conn: Connection | Session,
    job_id: uuid.UUID,
    *,
    task: str,
    queue: str,
    payload: dict[str, Any],
    requested_by: str,
    state: JobState = JobState.QUEUED,
    action: str = "job.enqueued",
    published: bool = False,
    caller: dict[str, Any] | None = None,
) -> bool:
    """Insert the job row and its audit event in one statement; False if the id exists.
    `caller`: who sent it as far as this process knows (`requested_by` is only claimed). The
    row stores `payload` redacted, and the digest of it as given (`payload_digest`)."""
    clean = redact(payload)
    details: dict[str, Any] = {"payload": clean, "queue": queue}
    if caller is not None:
        details["caller"] = caller
    params = audit_params(
        actor=requested_by, action=action, target=task, job_id=job_id, details=details
    )
    params.update(
        id=job_id,
        task=task,
        queue=queue,
        payload=canonical(clean),
        digest=payload_digest(payload),
        state=state.value,
        by=requested_by[:255],
        published=published,
    )
    row = one_row(conn, _INSERT_JOB, params)
    return int(row["inserted"]) > 0


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of the payload's canonical JSON, unredacted: what a delivery under the
    job's id must match, and how the reconciler tells a payload that redaction changed."""
    return hashlib.sha256(canonical(payload).encode()).hexdigest()


def sendable(job: Job) -> bool:
    """Whether the stored payload is the one the job was made with (a message made from it
    would run as enqueued): False when redaction changed it (a row from before 0009, without
    a digest, is taken as it is)."""
    digest = job.payload_sha256
    return digest is None or payload_digest(dict(job.payload)) == digest


def record_progress(
    conn: Connection,
    job_id: uuid.UUID,
    fraction: float,
    message: str | None,
    attempt: int | None = None,
) -> None:
    """Store a started job's progress and touch its `updated_at` (which `workerless` reads: a
    job making progress is never taken for stuck). A job in any other state, or (with
    `attempt`) started again since by another delivery, is left as it is."""
    conn.execute(
        text(
            "UPDATE job SET progress = :p, progress_message = :m, updated_at = now() "
            "WHERE id = :id AND state = 'started' "
            "AND (CAST(:attempt AS integer) IS NULL OR attempts = :attempt)"
        ),
        {"p": fraction, "m": message, "id": job_id, "attempt": attempt},
    )


def retake_run_lock(conn: Connection, job_id: uuid.UUID, key: int, attempt: int) -> bool:
    """Take the job's run lock again on `conn`, after the connection that held it was lost:
    True when the lock was free and the job is still this delivery's run (`started`, with
    `attempt`). Otherwise nothing is held (a lock taken is released) and False: another
    delivery runs the job, or ran it since (the reconciler republished it meanwhile)."""
    if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one():
        return False
    # Read after the lock is ours: a delivery that took it meanwhile has committed its start.
    ours = conn.execute(
        text("SELECT state = 'started' AND attempts = :a FROM job WHERE id = :id"),
        {"a": attempt, "id": job_id},
    ).scalar_one_or_none()
    if not ours:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    return bool(ours)


def recorded_outcome(
    conn: Connection, job_id: uuid.UUID
) -> tuple[str, dict[str, Any] | None] | None:
    """The job's state and result as recorded, or None when it has no row."""
    row = conn.execute(text("SELECT state, result FROM job WHERE id = :id"), {"id": job_id}).first()
    return None if row is None else (row.state, row.result)


def mark_unpublished(conn: Connection, job_id: uuid.UUID) -> None:
    """Its publish failed: the reconciler sends it after its grace period."""
    conn.execute(text("UPDATE job SET published_at = NULL WHERE id = :id"), {"id": job_id})


def unpublished_or_lost(
    session: Session, *, grace_seconds: int, republish_after: int, limit: int
) -> list[Job]:
    """Jobs the broker never got or may have lost, locked (SKIP LOCKED) for this transaction.

    - `queued` and never published, older than `grace_seconds` (publish failed or the
      enqueuing process died between commit and publish);
    - `queued`/`retrying` and last published more than `republish_after` seconds ago (the
      broker lost the message, e.g. Redis restarted without persistence).
    """
    now = utcnow()
    return list(
        session.exec(
            select(Job)
            .where(
                (
                    (col(Job.state) == JobState.QUEUED.value)
                    & col(Job.published_at).is_(None)
                    & (col(Job.created_at) < now - timedelta(seconds=grace_seconds))
                )
                | (
                    col(Job.state).in_([JobState.QUEUED.value, JobState.RETRYING.value])
                    & (col(Job.published_at) < now - timedelta(seconds=republish_after))
                    & (col(Job.updated_at) < now - timedelta(seconds=republish_after))
                )
            )
            .order_by(col(Job.created_at))
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
    )


def run_lock_key(job_id: uuid.UUID) -> int:
    """The job's run lock: the session advisory lock a worker holds while it runs the job."""
    return int.from_bytes(hashlib.blake2b(job_id.bytes, digest_size=8).digest(), "big", signed=True)


#: First key of the task locks (`try_task_lock`): two-key advisory locks, which Postgres
#: keeps apart from the one-key run locks.
TASK_LOCK_SPACE = 0x6E6C70


def task_lock_key(task: str) -> int:
    """The second key of `task`'s task lock (32 bits of its name's hash)."""
    digest = hashlib.blake2b(task.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def try_task_lock(conn: Connection, task: str) -> bool:
    """Take `task`'s task lock (a session advisory lock: one run of the task at a time,
    system-wide) on `conn` if no session holds it; whether it was taken."""
    return bool(
        conn.execute(
            text("SELECT pg_try_advisory_lock(CAST(:space AS integer), CAST(:k AS integer))"),
            {"space": TASK_LOCK_SPACE, "k": task_lock_key(task)},
        ).scalar_one()
    )


def release_task_lock(conn: Connection, task: str) -> None:
    """Release `task`'s task lock taken on `conn`."""
    conn.execute(
        text("SELECT pg_advisory_unlock(CAST(:space AS integer), CAST(:k AS integer))"),
        {"space": TASK_LOCK_SPACE, "k": task_lock_key(task)},
    )


def running_job(conn: Connection, task: str, other_than: uuid.UUID) -> uuid.UUID | None:
    """The latest started job of `task` other than `other_than`, if any."""
    found = conn.execute(
        text(
            "SELECT id FROM job WHERE state = 'started' AND task = :task AND id <> :me "
            "ORDER BY started_at DESC NULLS LAST LIMIT 1"
        ),
        {"task": task, "me": other_than},
    ).scalar_one_or_none()
    return None if found is None else uuid.UUID(str(found))


#: The keys of `:keys` that no session holds: each is taken and at once released (one
#: statement, on the reconciler's own connection), so nothing stays held.
_FREE_RUN_LOCKS = """
    SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k
    WHERE CASE WHEN pg_try_advisory_lock(k) THEN pg_advisory_unlock(k) ELSE false END
"""


def workerless(session: Session, *, stuck_after: int, limit: int) -> list[Job]:
    """`started`/`received` jobs whose worker is gone, locked (SKIP LOCKED) for this
    transaction: untouched (no progress) and not published for `stuck_after` seconds, and
    their run lock is free — the worker's database session ended (host died, pool process
    killed), so nothing runs them, and the broker may hold their message until the visibility
    timeout, or have lost it. A worker that is running the job holds the lock: not returned."""
    cutoff = utcnow() - timedelta(seconds=stuck_after)
    candidates = list(
        session.exec(
            select(Job)
            .where(
                col(Job.state).in_([JobState.STARTED.value, JobState.RECEIVED.value])
                & (col(Job.updated_at) < cutoff)
                & (func.coalesce(col(Job.published_at), col(Job.created_at)) < cutoff)
            )
            .order_by(col(Job.updated_at))
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
    )
    if not candidates:
        return []
    keys = {run_lock_key(job.id): job for job in candidates}
    free = session.execute(text(_FREE_RUN_LOCKS), {"keys": list(keys)}).scalars().all()
    return [keys[k] for k in free]


def claim_for_publish(session: Session, job_ids: Sequence[uuid.UUID], at: datetime) -> None:
    """The reconciler's claim, in the transaction that locked these rows: `published_at` =
    `at`, so a concurrent reconciler (after this commits) no longer finds them stale and the
    publish can run with no transaction open. No audit event: no chain lock is taken."""
    if job_ids:
        session.execute(
            text("UPDATE job SET published_at = :at WHERE id = ANY(:ids)"),
            {"at": at, "ids": list(job_ids)},
        )


def release_claim(
    conn: Connection | Session, job_id: uuid.UUID, *, claimed: datetime, before: datetime | None
) -> None:
    """A claimed publish failed: `published_at` back to what it was (the job is found stale
    again on the next run), unless something published it since the claim."""
    conn.execute(
        text("UPDATE job SET published_at = :before WHERE id = :id AND published_at = :claimed"),
        {"before": before, "id": job_id, "claimed": claimed},
    )


def lock_unfinished(session: Session, job_id: uuid.UUID) -> bool:
    """Lock the job's row for this transaction (the wait bounded like an audit write's) and
    say whether it is still unfinished. The reconciler records `job.republished` only then: a
    job that finished while its message was being sent keeps its end as its last event."""
    session.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": lock_timeout()})
    state = session.execute(
        text("SELECT state FROM job WHERE id = :id FOR UPDATE"), {"id": job_id}
    ).scalar_one_or_none()
    return state is not None and state not in {s.value for s in JOB_TERMINAL}


def unfinished_jobs(session: Session, job_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Those of `job_ids` that have a row and are not finished (queued, received, started,
    retrying): their files (e.g. an upload's staging) may be in use."""
    if not job_ids:
        return set()
    rows = session.execute(
        text("SELECT id FROM job WHERE id = ANY(:ids) AND NOT (state = ANY(:done))"),
        {"ids": list(job_ids), "done": [s.value for s in JOB_TERMINAL]},
    ).scalars()
    return {uuid.UUID(str(row)) for row in rows}


def job_counts(session: Session) -> dict[object, int]:
    """Jobs per state (states without jobs left out)."""
    return dict(session.exec(select(Job.state, func.count()).group_by(Job.state)).all())


def recent_jobs(state: str | None, limit: int) -> Sequence[Job]:
    """The `limit` latest jobs (in `state`, if given), the newest first."""
    with Session(get_engine()) as session:
        query = select(Job).order_by(col(Job.created_at).desc()).limit(limit)
        if state:
            query = query.where(Job.state == state)
        return session.exec(query).all()


def load_job(job_id: uuid.UUID) -> Job | None:
    """The job as it is now (a fresh session each call: the caller polls it)."""
    with Session(get_engine()) as session:
        return session.get(Job, job_id)


def job_briefs(conn: Connection, job_ids: Sequence[uuid.UUID]) -> dict[str, dict[str, Any]]:
    """Task, payload, who asked, when it started and the resource it names (`resource`: its
    name, when the payload gives a `resource_id`) of each job in `job_ids`, by id as text: how
    `nlphub up` names a job in its console lines."""
    if not job_ids:
        return {}
    rows = conn.execute(
        text(
            "SELECT j.id, j.task, j.payload, j.requested_by, j.started_at, r.name AS resource "
            "FROM job j LEFT JOIN resource r ON r.id::text = j.payload->>'resource_id' "
            "WHERE j.id = ANY(:ids)"
        ),
        {"ids": list(job_ids)},
    ).all()
    return {str(row.id): dict(row._mapping) for row in rows}


def why_over(job_id: uuid.UUID, job: Job | None) -> str | None:
    """Why the job can no longer move the work it owns on (a resource, an embedding): it
    finished, or its row is gone; None while it may still."""
    if job is None:
        return f"its job {job_id} is missing"
    if job.state in JOB_TERMINAL:
        state = JobState(job.state).value
        return f"its job {job_id} {state}" + (f": {job.error}" if job.error else "")
    return None


def abandoned(
    session: Session, model: Any, states: Sequence[str], *, limit: int
) -> list[tuple[Any, str]]:
    """Rows of `model` (a table with `state` and `job_id`: resources, embeddings) in one of
    `states` whose job is over or missing, each with why (`why_over`); locked for this
    transaction, rows another transaction holds skipped."""
    rows = session.exec(
        select(model, Job)
        .outerjoin(Job, col(Job.id) == col(model.job_id))
        .where(
            col(model.state).in_(list(states)),
            col(model.job_id).is_not(None),
            or_(col(Job.id).is_(None), col(Job.state).in_([s.value for s in JOB_TERMINAL])),
        )
        .limit(limit)
        .with_for_update(of=model, skip_locked=True)
    ).all()
    found = []
    for row, job in rows:
        reason = why_over(row.job_id, job)
        if reason is not None:
            found.append((row, reason))
    return found

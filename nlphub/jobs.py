"""Enqueueing jobs for other apps: a transactional outbox.

`enqueue()` writes the `Job` row (and its audit event) first and publishes the Celery message
only after that transaction commits, with the job id as the task id. If the publish fails or
the broker loses the message, the job stays `queued` and the reconciler (run by beat)
publishes it again; redelivery is harmless because every task is idempotent per job id. A job
left `started` by a worker that died (its run lock is free) is published again too, after
NLPHUB_STUCK_AFTER, instead of waiting for the broker's visibility timeout.
"""

from __future__ import annotations

import functools
import logging
import os
import pwd
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, event
from sqlmodel import Session

from nlphub import audit, jobstate
from nlphub.jobstate import insert_job
from nlphub.redact import redact
from schemas.db import autocommit_engine, held_connection
from schemas.models import Job, utcnow
from schemas.payloads import spec_for, validate_payload
from schemas.states import JobState

log = logging.getLogger(__name__)


def _send(
    job_id: uuid.UUID,
    task: str,
    queue: str,
    payload: dict[str, Any],
    countdown: float | None = None,
) -> bool:
    """Publish one job's message; False (logged) when the broker is unreachable."""
    from nlphub.messaging.app import app, drop_connections

    for attempt in range(2):
        try:
            app.send_task(
                task,
                kwargs=payload,
                task_id=str(job_id),
                queue=queue,
                routing_key=queue,
                countdown=countdown,
                kwargsrepr=repr(redact(payload)),
                argsrepr="()",
            )
        except Exception as exc:  # the reconciler publishes it later
            # kombu's "Acquire on closed pool": the app's broker pool was closed under us
            # (e.g. an in-process worker shut down): make new pools and publish again, once.
            if attempt == 0 and isinstance(exc, RuntimeError) and "closed pool" in str(exc):
                drop_connections()
                continue
            log.warning("could not publish job %s (%s); it stays queued: %s", job_id, task, exc)
            return False
        return True
    return False  # pragma: no cover


def _publish(
    job_id: uuid.UUID,
    task: str,
    queue: str,
    payload: dict[str, Any],
    countdown: float | None = None,
) -> bool:
    """Publish after commit. The row was written with `published_at` set (the publish is
    about to happen); a failed publish clears it so the reconciler sends it after its grace
    period. A process that dies between commit and publish leaves a `queued` job whose
    `published_at` grows older than `republish_after`: the reconciler sends that one too."""
    if _send(job_id, task, queue, payload, countdown):
        return True
    with autocommit_engine().connect() as conn:
        jobstate.mark_unpublished(conn, job_id)
    return False


@functools.cache
def _account() -> str:
    """user@host of this process: the OS account it runs as (not $USER, which it may set)."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, OSError):
        user = str(os.geteuid())
    return f"{user}@{socket.gethostname()}"


def caller_identity() -> dict[str, Any]:
    """Who enqueues, as this process knows it (recorded beside the claimed `requested_by`)."""
    return {"via": "python", "process": _account(), "pid": os.getpid()}


def enqueue(
    task: str,
    payload: dict[str, Any] | None = None,
    *,
    requested_by: str | None = None,
    session: Session | None = None,
    countdown: float | None = None,
) -> uuid.UUID:
    """Validate `payload` for `task`, record the job, and publish it after commit.

    With `session`, the job joins the caller's transaction and is published when the caller
    commits (nothing is published on rollback). Returns the job id (= Celery task id).
    Raises `schemas.payloads.PayloadError` naming every bad field.
    """
    data = dict(payload or {})
    if requested_by is not None:
        data["requested_by"] = requested_by
    spec = spec_for(task)
    model = validate_payload(task, data)
    body = model.model_dump(mode="json")
    job_id = uuid.uuid4()

    def add(conn: Session | Connection) -> None:
        insert_job(
            conn,
            job_id,
            task=task,
            queue=spec.queue,
            payload=body,
            requested_by=model.requested_by,
            published=True,
            caller=caller_identity(),
        )

    if session is None:
        with held_connection() as own:
            add(own)
        _publish(job_id, task, spec.queue, body, countdown)
    else:
        add(session)

        @event.listens_for(session, "after_commit", once=True)
        def _after_commit(_s: Session) -> None:
            _publish(job_id, task, spec.queue, body, countdown)

    return job_id


#: The error of a job the reconciler will not send again (`reconcile_outbox`).
UNSENDABLE = (
    "its message was lost and cannot be sent again: its payload held a secret, which the job "
    "row keeps only redacted; enqueue it again"
)


@dataclass(frozen=True)
class _Stale:
    """A job the reconciler claimed, as read in its claiming transaction."""

    id: uuid.UUID
    task: str
    queue: str
    payload: dict[str, Any]
    published_at: datetime | None
    state: str
    reason: str


def reconcile_outbox(
    session: Session,
    *,
    grace_seconds: int,
    republish_after: int,
    stuck_after: int | None = None,
    limit: int = 1000,
) -> list[uuid.UUID]:
    """Publish again the jobs the broker never got or may have lost, and (with `stuck_after`)
    the started jobs whose worker is gone. Returns their ids. Each `job.republished` audit
    event names its reason: `never_published`, `broker_lost` or `worker_gone`.

    A redelivery is safe: the task base takes the job's run lock, and a duplicate finds the
    job running or finished. No lock is held while the broker is called: one short
    transaction claims the jobs (`_claim`), each is then published with no transaction open
    (`_publish_claimed`). This commits `session`'s transactions: pass one with nothing else
    pending. docs/decisions.md: "The reconciler publishes with no transaction open" and "The
    reconciler does not republish a redacted payload"."""
    found = _find_stale(
        session,
        grace_seconds=grace_seconds,
        republish_after=republish_after,
        stuck_after=stuck_after,
        limit=limit,
    )
    stale, claimed = _claim(session, found)
    return _publish_claimed(session, stale, claimed)


def _find_stale(
    session: Session,
    *,
    grace_seconds: int,
    republish_after: int,
    stuck_after: int | None,
    limit: int,
) -> list[tuple[Job, str]]:
    """The jobs to publish again, each with its reason (`nlphub.jobstate.unpublished_or_lost`
    and, with `stuck_after`, `nlphub.jobstate.workerless`; both lock with SKIP LOCKED)."""
    found = [
        (job, "never_published" if job.published_at is None else "broker_lost")
        for job in jobstate.unpublished_or_lost(
            session, grace_seconds=grace_seconds, republish_after=republish_after, limit=limit
        )
    ]
    if stuck_after is not None:
        found += [
            (job, "worker_gone")
            for job in jobstate.workerless(session, stuck_after=stuck_after, limit=limit)
        ]
    return found


def _claim(session: Session, found: list[tuple[Job, str]]) -> tuple[list[_Stale], datetime]:
    """In one short transaction: claim the sendable jobs (`published_at` = now, so a
    concurrent reconciler skips them) and fail those whose stored payload redaction changed
    (`jobstate.sendable`: its message would run with `***`), their rows still locked so no
    delivery starts them meanwhile. Commits: no lock is held after it."""
    stale: list[_Stale] = []
    unsendable: list[tuple[Job, str]] = []
    for job, why in found:
        if jobstate.sendable(job):
            payload = dict(job.payload)
            stale.append(
                _Stale(job.id, job.task, job.queue, payload, job.published_at, str(job.state), why)
            )
        else:
            unsendable.append((job, why))
    claimed = utcnow()
    jobstate.claim_for_publish(session, [job.id for job in stale], claimed)
    for row, why in unsendable:
        log.warning("job %s (%s): %s", row.id, row.task, UNSENDABLE)
        jobstate.transition(
            session,
            row.id,
            JobState.FAILED,
            actor="reconciler",
            action="job.failed",
            task=row.task,
            details={"error": UNSENDABLE, "reason": why},
            error=UNSENDABLE,
        )
    session.commit()
    return stale, claimed


def _publish_claimed(session: Session, stale: list[_Stale], claimed: datetime) -> list[uuid.UUID]:
    """Publish each claimed job with no transaction open, then record its `job.republished`
    in a short transaction of its own, unless the job finished meanwhile (its end stays its
    last event; the message is a harmless duplicate). A failed publish gets its
    `published_at` back."""
    republished: list[uuid.UUID] = []
    for job in stale:
        if not _send(job.id, job.task, job.queue, job.payload):
            jobstate.release_claim(session, job.id, claimed=claimed, before=job.published_at)
            session.commit()
            continue
        republished.append(job.id)
        if not jobstate.lock_unfinished(session, job.id):
            session.commit()  # finished meanwhile: the duplicate message finds it so
            continue
        audit.record(
            session,
            actor="reconciler",
            action="job.republished",
            target=job.task,
            job_id=job.id,
            details={
                "first_publish": job.published_at is None,
                "reason": job.reason,
                "state": job.state,
            },
        )
        session.commit()
    return republished

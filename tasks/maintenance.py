"""Housekeeping tasks run by beat."""

from __future__ import annotations

from typing import Any

from nlphub.jobs import reconcile_outbox as reconcile
from nlphub.resources import cleanup_leftovers
from schemas.db import session_scope
from schemas.payloads import CleanupPayload, PingPayload, ReconcileOutboxPayload
from schemas.settings import get_settings
from tasks.base import JobContext, nlphub_task


@nlphub_task("nlphub.reconcile_outbox")
def reconcile_outbox(job: JobContext, payload: ReconcileOutboxPayload) -> dict[str, Any]:
    """Publish again jobs that are `queued` but never reached the broker, or were lost by it.
    Side effects: Celery messages, `job.published_at`, audit events. Safe to run twice (skips
    rows another reconciler holds; a job published twice runs once)."""
    settings = get_settings()
    with session_scope() as session:
        ids = reconcile(
            session,
            grace_seconds=settings.outbox_grace_seconds,
            republish_after=settings.outbox_republish_after,
            limit=payload.limit,
        )
    return {"republished": len(ids), "job_ids": [str(i) for i in ids[:50]]}


@nlphub_task("nlphub.ping")
def ping(job: JobContext, payload: PingPayload) -> dict[str, Any]:
    """Do nothing but be recorded: proves enqueue → broker → worker → job row → audit works.
    Side effects: the job row and its audit events only. Safe to run twice."""
    return {"pong": job.task.request.hostname}


@nlphub_task("nlphub.cleanup")
def cleanup(job: JobContext, payload: CleanupPayload) -> dict[str, Any]:
    """Remove partial downloads of resources no job is downloading, and upload temp, staging
    and trash folders, older than `older_than` seconds (Celery results expire by themselves in
    Redis after `result_expires`). Side effects: files removed, an audit event. Safe to run
    twice."""
    with session_scope() as session:
        removed = cleanup_leftovers(
            session, get_settings().home, older_than=payload.older_than, actor=payload.requested_by
        )
    return {"removed": len(removed), "paths": removed[:50]}

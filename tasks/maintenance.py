"""Housekeeping tasks run by beat."""

from __future__ import annotations

from typing import Any

from nlphub.anchors import verify_log, write_anchor
from nlphub.embeddings.service import fail_abandoned_embeddings
from nlphub.hub.service import fail_abandoned_resources
from nlphub.jobs import reconcile_outbox as reconcile
from nlphub.resources import cleanup_leftovers
from schemas.db import session_scope
from schemas.payloads import (
    AuditAnchorPayload,
    AuditVerifyPayload,
    CleanupPayload,
    PingPayload,
    ReconcileOutboxPayload,
)
from schemas.settings import get_settings
from tasks.base import JobContext, nlphub_task, one_at_a_time


@nlphub_task("nlphub.reconcile_outbox")
def reconcile_outbox(job: JobContext, payload: ReconcileOutboxPayload) -> dict[str, Any]:
    """Publish again jobs that are `queued` but never reached the broker, or were lost by it,
    and `started` jobs whose worker is gone (run lock free after NLPHUB_STUCK_AFTER); fail the
    resources and embeddings a finished or missing job left in a transitional state.
    Side effects: Celery messages, `job.published_at`, audit events. Safe to run twice (skips
    rows another reconciler holds or claimed; a job published twice runs once). Publishes with
    no transaction open (`nlphub.jobs.reconcile_outbox`); `limit` is bounded by its payload."""
    settings = get_settings()
    with session_scope() as session:  # its own short transactions, none across a publish
        ids = reconcile(
            session,
            grace_seconds=settings.outbox_grace_seconds,
            republish_after=settings.outbox_republish_after,
            stuck_after=settings.stuck_after_seconds,
            limit=payload.limit,
        )
    with session_scope() as session:
        # Resources a finished (or missing) job left queued/downloading/verifying: failed.
        abandoned = fail_abandoned_resources(session, actor="reconciler", limit=payload.limit)
    with session_scope() as session:
        # Embeddings it left initializing/waiting/encoding: failed too.
        embeddings = fail_abandoned_embeddings(session, actor="reconciler", limit=payload.limit)
    return {
        "republished": len(ids),
        "job_ids": [str(i) for i in ids[:50]],
        "abandoned_resources": abandoned[:50],
        "abandoned_embeddings": embeddings[:50],
    }


@nlphub_task("nlphub.ping")
def ping(job: JobContext, payload: PingPayload) -> dict[str, Any]:
    """Do nothing but be recorded: proves enqueue → broker → worker → job row → audit works.
    Side effects: the job row and its audit events only. Safe to run twice."""
    return {"pong": job.task.request.hostname}


@nlphub_task("nlphub.cleanup")
def cleanup(job: JobContext, payload: CleanupPayload) -> dict[str, Any]:
    """Remove partial downloads of resources no job is downloading, and upload temp, staging
    and trash folders of no unfinished job, older than `older_than` seconds (at least
    MIN_CLEANUP_AGE: a tenant may enqueue it); Celery results expire by themselves in Redis
    after `result_expires`. Paths are reported relative to NLPHUB_HOME. Side effects: files
    removed, an audit event. Safe to run twice."""
    with session_scope() as session:
        removed = cleanup_leftovers(
            session, get_settings().home, older_than=payload.older_than, actor=payload.requested_by
        )
    return {"removed": len(removed), "paths": removed[:50]}


@nlphub_task("nlphub.audit_anchor")
def audit_anchor(job: JobContext, payload: AuditAnchorPayload) -> dict[str, Any]:
    """Append the audit chain's head (seq, hash, time) to NLPHUB_AUDIT_ANCHOR_DIR, outside the
    database, so `nlphub audit verify` sees the newest events deleted or the chain rewritten.
    Side effects: one line appended to the anchor file. Safe to run twice (one more line)."""
    with session_scope() as session:
        anchor = write_anchor(session)
    if anchor is None:
        return {"anchored": False}
    return {"anchored": True, "seq": anchor.seq, "hash": anchor.hash}


@nlphub_task("nlphub.audit_verify")
def audit_verify(job: JobContext, payload: AuditVerifyPayload) -> dict[str, Any]:
    """Check the audit chain and its anchors (as `nlphub audit verify`) and record the outcome,
    whose time and result the metrics report. A failed check is a result, not a job failure.
    Side effects: one `audit_verification` row. Safe to run twice (one more row). One run at a
    time system-wide: a request while one runs returns at once, coalesced (`one_at_a_time`)."""

    def verify() -> dict[str, Any]:
        outcome = verify_log(actor=payload.requested_by)
        return {
            "ok": outcome.ok,
            "events": outcome.chain.checked,
            "problems": outcome.problems[:20],
        }

    return one_at_a_time(job, verify)

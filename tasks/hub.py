"""Hub tasks: catalog sync, download + install, dependency fetch. Thin: the logic is in hub/."""

from __future__ import annotations

from typing import Any

from nlphub.hub import install, service, updates
from nlphub.hub.sync import sync_hubs
from schemas.db import session_scope
from schemas.payloads import (
    CheckUpdatesPayload,
    DownloadPayload,
    HubSyncPayload,
    ResourcePayload,
    UpdateDecisionPayload,
)
from schemas.settings import get_settings
from tasks.base import JobContext, nlphub_task


@nlphub_task("nlphub.hub_sync")
def hub_sync(job: JobContext, payload: HubSyncPayload) -> dict[str, Any]:
    """Read every configured hub folder (HTTP cache with ETag/TTL; the last good copy when a
    hub is down) and store the catalog for search. Side effects: `hub_entry` rows, cache files,
    audit event. Safe to run twice."""
    return sync_hubs(payload.requested_by)


@nlphub_task("nlphub.download")
def download(job: JobContext, payload: DownloadPayload) -> dict[str, Any]:
    """Download, verify (MD5, Spark NLP format) and install one hub resource atomically; queue
    its missing dependencies. Side effects: files under NLPHUB_HOME (a resumable partial while
    downloading; the install folder only when complete), resource state, audit events. Safe to
    run twice: resumes, and never installs twice."""
    settings = get_settings()
    resource_id = payload.resource_id
    if resource_id is None:
        assert payload.name is not None
        with session_scope() as session:
            req = service.request_download(
                session,
                settings,
                name=payload.name,
                language=payload.language,
                version=payload.version,
                requested_by=payload.requested_by,
                redownload=payload.redownload,
                job_id=job.id,
            )
        if req.job_id != job.id:
            return {"resource_id": str(req.resource_id), "same_job_as": str(req.job_id)}
        resource_id = req.resource_id
    return install.download_and_install(
        resource_id,
        settings,
        actor=payload.requested_by,
        job_id=job.id,
        progress=job.progress,
        last_try=job.last_try,
    )


@nlphub_task("nlphub.fetch_dependencies")
def fetch_dependencies(job: JobContext, payload: ResourcePayload) -> dict[str, Any]:
    """Queue downloads of the embeddings a model needs (its storageRefs) that are not
    installed; a dependency not in the hub or not compatible is reported with the command that
    fixes it. Side effects: download jobs, resource rows, audit events. Safe to run twice."""
    with session_scope() as session:
        return install.fetch_dependencies(
            session, get_settings(), payload.resource_id, actor=payload.requested_by
        )


@nlphub_task("nlphub.check_updates")
def check_updates(job: JobContext, payload: CheckUpdatesPayload) -> dict[str, Any]:
    """Read the hubs, then record one update notice per newer compatible version of an
    installed resource (never twice for the same version) and announce it (audit, webhook).
    Side effects: catalog rows, notices, audit events, a webhook call. Safe to run twice."""
    synced: dict[str, Any] = {}
    if payload.sync:
        synced = sync_hubs(payload.requested_by)
    # Its own short transactions; the webhook is called after the notices commit.
    out = updates.check_updates(
        session_scope,
        get_settings(),
        actor=payload.requested_by,
        reason=payload.reason,
        min_interval=payload.min_interval,
        hub_errors=synced.get("errors", []),
        hub_warnings=synced.get("warnings", []),
    )
    return {
        **out,
        "hub_errors": synced.get("errors", []),
        "hub_warnings": synced.get("warnings", []),
    }


@nlphub_task("nlphub.apply_update")
def apply_update(job: JobContext, payload: UpdateDecisionPayload) -> dict[str, Any]:
    """Confirmed update: queue the download of the new version (the old one stays in use
    until it is installed; the switch is then recorded). Side effects: a download job, the
    notice, audit events. Safe to run twice (the second run reports the same job)."""
    with session_scope() as session:
        return updates.apply_update(
            session,
            get_settings(),
            payload.notice_id,
            confirmed_by=payload.confirmed_by,
            job_id=job.id,
        )


@nlphub_task("nlphub.dismiss_update")
def dismiss_update(job: JobContext, payload: UpdateDecisionPayload) -> dict[str, Any]:
    """Dismiss an update notice (recorded with who dismissed it). Side effects: the notice,
    an audit event. Running it twice fails the second time with a clear message."""
    with session_scope() as session:
        return updates.dismiss_update(session, payload.notice_id, by=payload.confirmed_by)

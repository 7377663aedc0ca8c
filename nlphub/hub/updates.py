"""Update checks: newer compatible versions of installed hub resources, confirmed before use.

- `check_updates` compares every installed hub resource with the synced catalog; a newer
  compatible version becomes one `UpdateNotice` (never two for the same version), announced
  through the audit log and, when `NLPHUB_UPDATE_WEBHOOK` is set, a webhook.
- `apply_update` (needs who confirmed it) downloads the new version through the normal download
  path; the old version stays installed and in use until the new one is installed, then the
  switch is recorded (`nlphub.install.finish_applied_updates`, run by every install).
- `dismiss_update` records that nobody wants it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlmodel import Session, col, select

from nlphub import audit
from nlphub.errors import NlphubError, NotFound, Refused
from nlphub.hub.service import request_download, resolve
from nlphub.install import Installed
from nlphub.versions import Version
from schemas.models import HubEntryRow, Resource, ResourceSource, UpdateNotice, utcnow
from schemas.settings import Settings
from schemas.states import RESOURCE_INSTALLED

log = logging.getLogger(__name__)

_CHECK_LOCK = 0x75706463  # "updc": one check at a time in the cluster


def _newer(candidate: str | None, current: str | None) -> bool:
    if not candidate:
        return False
    if not current:
        return True
    return Version.parse(candidate) > Version.parse(current)


def notify(settings: Settings, notices: list[dict[str, Any]]) -> str | None:
    """POST new notices to the configured webhook; the error text when it fails (not fatal)."""
    url = settings.update_webhook
    if not url or not notices:
        return None
    try:
        response = httpx.post(
            url, json={"event": "nlphub.updates", "notices": notices}, timeout=10.0
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("update webhook failed: %s", exc)
        return f"webhook failed: {exc.__class__.__name__}"
    return None


def _newest_installed(session: Session) -> dict[tuple[str, str], Resource]:
    """The newest installed hub (or default) resource of each name and language."""
    rows = session.exec(
        select(Resource).where(
            col(Resource.state).in_([s.value for s in RESOURCE_INSTALLED]),
            col(Resource.source).in_([ResourceSource.HUB.value, ResourceSource.DEFAULT.value]),
        )
    ).all()
    newest: dict[tuple[str, str], Resource] = {}
    for res in rows:
        key = (res.name, res.language)
        if key not in newest or _newer(res.version, newest[key].version):
            newest[key] = res
    return newest


def _new_notice(
    session: Session, res: Resource, entry: HubEntryRow, *, actor: str
) -> dict[str, Any] | None:
    """A notice (audited) that `entry` is newer than `res`; None when it is not newer, or
    when that version was noticed already."""
    if not _newer(entry.lib_version, res.version):
        return None
    exists = session.exec(
        select(UpdateNotice).where(
            UpdateNotice.resource_id == res.id, UpdateNotice.new_version == entry.lib_version
        )
    ).first()
    if exists is not None:
        return None
    notice = UpdateNotice(
        resource_id=res.id,
        name=res.name,
        language=res.language,
        current_version=res.version,
        new_version=entry.lib_version or "",
        size_bytes=entry.size_bytes,
        edition=entry.edition,
        archive_url=entry.archive_url,
    )
    session.add(notice)
    session.flush()
    info = {
        "id": str(notice.id),
        "resource": res.label,
        "current": res.version,
        "new": notice.new_version,
        "size": notice.size_bytes,
        "edition": notice.edition,
        "found_at": notice.found_at.isoformat(),
    }
    audit.record(session, actor=actor, action="update.found", target=res.label, details=info)
    return info


def check_updates(
    session: Session,
    settings: Settings,
    *,
    actor: str,
    reason: str,
    min_interval: float = 0.0,
    hub_errors: Sequence[str] = (),
    hub_warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """Find newer compatible versions; one notice per (resource, new version). With
    `min_interval`, a check that ran less than that many seconds ago makes this one a no-op
    (start-up checks from several processes collapse into one). `hub_errors` (hubs that could
    not be read, so their last synced catalog was used) and `hub_warnings` (malformed
    metadata.json lines) of the sync before it are recorded with the check."""
    if not session.execute(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _CHECK_LOCK}
    ).scalar():
        return {"skipped": "another update check is running"}
    if min_interval > 0:
        last = session.execute(
            text("SELECT max(at) FROM audit_event WHERE action = 'update.checked'")
        ).scalar()
        if last is not None and utcnow() - last < timedelta(seconds=min_interval):
            return {"skipped": f"checked at {last.isoformat()}"}
    installed = Installed.from_settings(settings)
    newest_installed = _newest_installed(session)
    found: list[dict[str, Any]] = []
    for res in newest_installed.values():
        try:
            entry = resolve(session, installed, name=res.name, language=res.language)
        except NlphubError:
            continue
        info = _new_notice(session, res, entry, actor=actor)
        if info is not None:
            found.append(info)
    problem = notify(settings, found)
    audit.record(
        session,
        actor=actor,
        action="update.checked",
        target="hub",
        details={
            "reason": reason,
            "checked": len(newest_installed),
            "new_notices": len(found),
            **({"notify": problem} if problem else {}),
            **({"hub_errors": list(hub_errors)} if hub_errors else {}),
            **({"hub_warnings": list(hub_warnings[:20])} if hub_warnings else {}),
        },
    )
    return {"checked": len(newest_installed), "new": found}


def list_notices(session: Session, *, pending_only: bool = True) -> list[UpdateNotice]:
    """Update notices, the latest found first (only pending ones by default)."""
    query = select(UpdateNotice).order_by(col(UpdateNotice.found_at).desc())
    if pending_only:
        query = query.where(UpdateNotice.state == "pending")
    return list(session.exec(query).all())


def _notice(session: Session, notice_id: uuid.UUID) -> UpdateNotice:
    notice = session.get(UpdateNotice, notice_id, with_for_update=True)
    if notice is None:
        raise NotFound(f"update {notice_id} not found")
    return notice


def _confirmed_by_job(session: Session, notice: UpdateNotice, job_id: uuid.UUID | None) -> bool:
    """Whether the apply job `job_id` already confirmed this notice (recorded with it)."""
    if job_id is None:
        return False
    found = session.execute(
        text(
            "SELECT 1 FROM audit_event WHERE action = 'update.confirmed' "
            "AND details ->> 'notice' = :n AND details ->> 'apply_job' = :j LIMIT 1"
        ),
        {"n": str(notice.id), "j": str(job_id)},
    ).first()
    return found is not None


def apply_update(
    session: Session,
    settings: Settings,
    notice_id: uuid.UUID,
    *,
    confirmed_by: str,
    job_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Download the notice's version (the old one stays in use until it is installed).

    `job_id` is the apply job's: delivered again after its worker died, it gets the same
    answer even once the download it queued has finished (the notice `applied` or `failed`).
    """
    notice = _notice(session, notice_id)
    if notice.job_id and (notice.state == "applying" or _confirmed_by_job(session, notice, job_id)):
        return {"notice": str(notice.id), "job_id": str(notice.job_id), "already": True}
    if notice.state != "pending":
        raise Refused(f"update {notice.id} is {notice.state}; only pending updates can be applied")
    req = request_download(
        session,
        settings,
        name=notice.name,
        language=notice.language,
        version=notice.new_version,
        requested_by=confirmed_by,
    )
    notice.state = "applying"
    notice.decided_by = confirmed_by
    notice.decided_at = utcnow()
    notice.job_id = req.job_id
    session.add(notice)
    audit.record(
        session,
        actor=confirmed_by,
        action="update.confirmed",
        target=f"{notice.name}/{notice.language}",
        job_id=req.job_id,
        details={
            "notice": str(notice.id),
            "from": notice.current_version,
            "to": notice.new_version,
            **({"apply_job": str(job_id)} if job_id else {}),
        },
    )
    return {"notice": str(notice.id), "job_id": str(req.job_id)}


def dismiss_update(session: Session, notice_id: uuid.UUID, *, by: str) -> dict[str, Any]:
    notice = _notice(session, notice_id)
    if notice.state != "pending":
        raise Refused(
            f"update {notice.id} is {notice.state}; only pending updates can be dismissed"
        )
    notice.state = "dismissed"
    notice.decided_by = by
    notice.decided_at = utcnow()
    session.add(notice)
    audit.record(
        session,
        actor=by,
        action="update.dismissed",
        target=f"{notice.name}/{notice.language}",
        details={"notice": str(notice.id), "version": notice.new_version},
    )
    return {"notice": str(notice.id), "state": "dismissed"}

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
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
from schemas.db import autocommit_engine
from schemas.models import HubEntryRow, Resource, ResourceSource, UpdateNotice, utcnow
from schemas.settings import Settings
from schemas.states import RESOURCE_INSTALLED

log = logging.getLogger(__name__)

_CHECK_LOCK = 0x75706463  # "updc": one check at a time in the cluster (`_one_check`)


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


@contextmanager
def _one_check() -> Iterator[bool]:
    """Whether this process may run the cluster's one update check now: a session-level
    advisory lock that is only ever tried, never waited for, held on a connection of its own
    with no transaction open (so across the webhook call, which runs after the check's commit),
    released at the end, or by Postgres if this process dies."""
    with autocommit_engine().connect() as conn:
        got = bool(
            conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _CHECK_LOCK}).scalar()
        )
        try:
            yield got
        finally:
            if got and not conn.closed and not conn.invalidated:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _CHECK_LOCK})


def _unannounced(session: Session) -> list[dict[str, Any]]:
    """Notices recorded (`update.found`) after the last completed check (`update.checked`):
    found by a check that died before or while it called the webhook. Announced again, so
    the webhook hears of every notice at least once. Audit `seq` is commit order."""
    rows = session.execute(
        text(
            "SELECT details FROM audit_event WHERE action = 'update.found' AND seq > "
            "coalesce((SELECT max(seq) FROM audit_event WHERE action = 'update.checked'), 0) "
            "ORDER BY seq"
        )
    ).all()
    return [dict(row.details) for row in rows]


def _record_checked(
    session: Session,
    *,
    actor: str,
    reason: str,
    checked: int,
    found: int,
    problem: str | None,
    hub_errors: Sequence[str],
    hub_warnings: Sequence[str],
) -> None:
    audit.record(
        session,
        actor=actor,
        action="update.checked",
        target="hub",
        details={
            "reason": reason,
            "checked": checked,
            "new_notices": found,
            **({"notify": problem} if problem else {}),
            **({"hub_errors": list(hub_errors)} if hub_errors else {}),
            **({"hub_warnings": list(hub_warnings[:20])} if hub_warnings else {}),
        },
    )


def check_updates(
    session_factory: Callable[[], AbstractContextManager[Session]],
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
    metadata.json lines) of the sync before it are recorded with the check.

    `session_factory` opens a unit of work that commits (`schemas.db.session_scope`). The
    notices (and their `update.found` events) commit first; the webhook is called after that
    commit, with no transaction open, and `update.checked` (with the webhook's outcome) is
    recorded in a short transaction after it: the audit chain's lock is never held while the
    network is waited for."""
    with _one_check() as got:
        if not got:
            return {"skipped": "another update check is running"}
        with session_factory() as session:
            if min_interval > 0:
                last = session.execute(
                    text("SELECT max(at) FROM audit_event WHERE action = 'update.checked'")
                ).scalar()
                if last is not None and utcnow() - last < timedelta(seconds=min_interval):
                    return {"skipped": f"checked at {last.isoformat()}"}
            earlier = _unannounced(session) if settings.update_webhook else []
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
            announce = earlier + found if settings.update_webhook else []

            def checked(session: Session, problem: str | None) -> None:
                _record_checked(
                    session,
                    actor=actor,
                    reason=reason,
                    checked=len(newest_installed),
                    found=len(found),
                    problem=problem,
                    hub_errors=hub_errors,
                    hub_warnings=hub_warnings,
                )

            if not announce:
                checked(session, None)  # no webhook call: recorded with the notices
        if announce:
            problem = notify(settings, announce)  # after the commit, no transaction open
            with session_factory() as session:
                checked(session, problem)
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

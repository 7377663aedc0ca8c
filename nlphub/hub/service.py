"""The hub in the database: catalog sync, search, resolving a request, download requests.

Plain functions taking `*, session`; the Celery tasks in `tasks/hub.py` call them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, literal, or_, text
from sqlmodel import Session, col, select

from nlphub import audit, jobstate
from nlphub.errors import NotFound, Refused
from nlphub.hub.catalog import archive_url
from nlphub.hub.fetch_errors import NotEnoughSpace
from nlphub.hub.licence import (
    Licence,
    LicenceError,
    licence_refusal,
    load_licence,
    unusable_licence,
)
from nlphub.hub.metadata import HubEntry
from nlphub.install import Installed
from nlphub.versions import Version, VersionSpec
from schemas.editions import OPEN_SOURCE
from schemas.models import (
    EmbeddingType,
    HubEntryRow,
    Job,
    Resource,
    ResourceKind,
    ResourceSource,
    utcnow,
)
from schemas.settings import Settings
from schemas.states import (
    RESOURCE_IN_PROGRESS,
    RESOURCE_INSTALLED,
    ResourceState,
)

log = logging.getLogger(__name__)


MAX_AUDITED_WARNINGS = 20
"""Malformed metadata.json lines named in a sync's audit event (all are counted)."""


def _v(text: str | None) -> Version | None:
    return Version.parse(text) if text else None


# -- catalog sync ---------------------------------------------------------------------------------


def row_from_entry(entry: HubEntry, folder_url: str, now: datetime) -> HubEntryRow:
    return HubEntryRow(
        folder_url=folder_url,
        archive_url=archive_url(folder_url, entry),
        name=entry.name,
        language=entry.language,
        lib_version=str(entry.lib_version) if entry.lib_version else None,
        spark_version=str(entry.spark_version) if entry.spark_version else None,
        edition=entry.edition,
        kind=ResourceKind(entry.kind),
        embedding_type=EmbeddingType(entry.embedding_type) if entry.embedding_type else None,
        annotator=entry.annotator,
        category=entry.category,
        engine=entry.engine,
        ready_to_use=entry.ready_to_use,
        time=entry.time,
        checksum=entry.checksum,
        size_bytes=entry.size,
        synced_at=now,
    )


#: Transaction-scoped advisory lock key serializing catalog syncs ("nlhc").
CATALOG_SYNC_LOCK = 1852598371


def sync_catalog(
    session: Session,
    entries_by_folder: Mapping[str, Sequence[HubEntry]],
    *,
    actor: str,
    errors: Sequence[str] = (),
    warnings: Sequence[str] = (),
) -> dict[str, int]:
    """Replace the stored catalog of each folder read successfully (folders that failed keep
    their last synced rows). Returns counts per folder. The audit event also records the
    folders that could not be read (`errors`) and the first malformed lines (`warnings`)."""
    # One sync at a time (until this transaction ends): two at once would each delete the
    # rows they see and insert the same archives, and the second would hit the unique key.
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CATALOG_SYNC_LOCK})
    now = utcnow()
    counts: dict[str, int] = {}
    for folder_url, entries in entries_by_folder.items():
        session.execute(delete(HubEntryRow).where(col(HubEntryRow.folder_url) == folder_url))
        seen: set[str] = set()
        for entry in entries:
            row = row_from_entry(entry, folder_url, now)
            if row.archive_url in seen:
                continue
            seen.add(row.archive_url)
            session.add(row)
        counts[folder_url] = len(seen)
    session.flush()
    details: dict[str, Any] = {"entries": counts}
    if errors:
        details["errors"] = list(errors)
    if warnings:
        details["malformed_lines"] = len(warnings)
        details["warnings"] = list(warnings[:MAX_AUDITED_WARNINGS])
    audit.record(session, actor=actor, action="hub.synced", target="hub", details=details)
    return counts


# -- search ---------------------------------------------------------------------------------------


@dataclass
class SearchHit:
    entry: HubEntryRow
    compatible: bool
    installed: bool


def search(
    session: Session,
    installed: Installed,
    *,
    name: str | None = None,
    edition: str | None = None,
    kind: str | None = None,
    embedding_type: str | None = None,
    language: str | None = None,
    version: str | None = None,
    compatible_only: bool = False,
    limit: int = 200,
) -> list[SearchHit]:
    """Catalog rows matching every filter, newest first. `version` is a spec like ">=5.0,<6"."""
    spec = VersionSpec.parse(version) if version else None
    query = select(HubEntryRow).where(col(HubEntryRow.ready_to_use))
    if name:
        query = query.where(col(HubEntryRow.name).icontains(name, autoescape=True))
    if edition:
        query = query.where(col(HubEntryRow.edition).ilike(edition))
    if kind:
        query = query.where(HubEntryRow.kind == ResourceKind(kind))
    if embedding_type:
        query = query.where(col(HubEntryRow.embedding_type) == embedding_type)
    if language:
        query = query.where(HubEntryRow.language == language)
    query = query.order_by(col(HubEntryRow.name), col(HubEntryRow.time).desc())
    rows = session.exec(query).all()
    present = {
        (r.name, r.language, r.version)
        for r in session.exec(
            select(Resource).where(col(Resource.state).in_([s.value for s in RESOURCE_INSTALLED]))
        ).all()
    }
    hits = []
    for row in rows:
        if spec and (not row.lib_version or not spec.contains(Version.parse(row.lib_version))):
            continue
        ok = installed.compatible(row)
        if compatible_only and not ok:
            continue
        hits.append(SearchHit(row, ok, (row.name, row.language, row.lib_version or "") in present))
        if len(hits) >= limit:
            break
    return hits


# -- resolving a request --------------------------------------------------------------------------


def _sort_key(row: HubEntryRow) -> tuple[Version, Version, datetime]:
    zero = Version((0,))
    return (_v(row.spark_version) or zero, _v(row.lib_version) or zero, row.time)


def resolve(
    session: Session,
    installed: Installed,
    *,
    name: str,
    language: str,
    version: str | None = None,
) -> HubEntryRow:
    """The newest compatible catalog entry for a request (Spark NLP's downloader's choice), or
    NotFound / Refused explaining why none fits."""
    rows = session.exec(
        select(HubEntryRow).where(
            HubEntryRow.name == name,
            or_(
                col(HubEntryRow.language) == language,
                col(HubEntryRow.language) == "",
                literal(language) == "",
            ),
        )
    ).all()
    if not rows:
        others = session.exec(
            select(HubEntryRow.language).where(HubEntryRow.name == name).distinct()
        ).all()
        if others:
            raise NotFound(
                f"{name} is not in the hub for language {language!r} "
                f"(it is for: {', '.join(sorted(others))})"
            )
        raise NotFound(f"no resource named {name} in the hub catalog (try `nlphub search {name}`)")
    ready = [r for r in rows if r.ready_to_use]
    if version:
        spec = VersionSpec.parse(version)
        ready = [r for r in ready if r.lib_version and spec.contains(Version.parse(r.lib_version))]
        if not ready:
            listed = ", ".join(sorted({r.lib_version or "?" for r in rows}))
            raise NotFound(
                f"{name} ({language}) has no version matching {version} (the hub has: {listed})"
            )
    fitting = [r for r in ready if installed.compatible(r)]
    if not fitting:
        newest = max(ready or rows, key=_sort_key)
        raise Refused(
            f"{name} ({language}) {newest.lib_version} is not compatible with what is "
            f"installed: {installed.why_not(newest)}"
        )
    return max(fitting, key=_sort_key)


# -- download requests ----------------------------------------------------------------------------


@dataclass
class DownloadRequest:
    job_id: uuid.UUID
    resource_id: uuid.UUID
    created: bool
    entry: HubEntryRow
    notes: list[str] = field(default_factory=list)


def check_licence(edition: str, settings: Settings, licence: Licence | None = None) -> None:
    """Refuse `edition` without a licence that covers it, in the tenant's words
    (`licence_refusal`: no licence file name or contents; those go to the log)."""
    if edition == OPEN_SOURCE:
        return
    try:
        lic = licence if licence is not None else load_licence(settings.license_file)
    except LicenceError as exc:
        raise Refused(unusable_licence(edition, exc)) from None
    problem = licence_refusal(edition, lic)
    if problem:
        raise Refused(problem)


def space_refusal(exc: NotEnoughSpace) -> str:
    """`NotEnoughSpace`'s message as a tenant is told it: without the server folder (logged)."""
    log.warning("%s", exc)
    return str(exc).removesuffix(f" at {exc.path}")


def request_download(
    session: Session,
    settings: Settings,
    *,
    name: str,
    language: str = "en",
    version: str | None = None,
    requested_by: str,
    redownload: bool = False,
    source: ResourceSource = ResourceSource.HUB,
    job_id: uuid.UUID | None = None,
) -> DownloadRequest:
    """Resolve, check licence and disk, and queue one download job for the resource.

    Concurrent identical requests serialise on the resource: the first creates the job, the
    others get the same job id. Commit the session to publish the job (outbox). With `job_id`
    (a download job already running, enqueued by name), that job claims the resource instead.
    """
    from nlphub.jobs import enqueue

    installed = Installed.from_settings(settings)
    entry = resolve(session, installed, name=name, language=language, version=version)
    check_licence(entry.edition, settings)
    res = _locked_resource(session, entry)
    if res is not None and job_id is not None and res.job_id == job_id:
        # The same job again (its message redelivered after its worker died): whatever that
        # worker got to, even the install, is this job's own work: carry on with it.
        return DownloadRequest(job_id, res.id, False, entry, ["claimed by this job already"])
    if res is not None and res.state in RESOURCE_IN_PROGRESS and res.job_id is not None:
        dead = _dead_job(session, res.job_id)
        if dead is None:
            return DownloadRequest(res.job_id, res.id, False, entry, ["already being downloaded"])
        # Its job is over (failed, revoked, or gone) and left it in a transitional state:
        # fail it with the reason, and queue a new job below (never hand back a dead one).
        fail_abandoned(session, res, dead, actor=requested_by)
    if res is not None and res.state in RESOURCE_INSTALLED and not redownload:
        raise Refused(
            f"{res.label} is already {res.state.value}; use `nlphub redownload {res.name}` "
            "to fetch it again"
        )
    _check_disk(settings, entry)
    res = _queued(session, res, entry, source)
    if job_id is None:
        job_id = enqueue(
            "nlphub.download",
            {"resource_id": str(res.id)},
            requested_by=requested_by,
            session=session,
        )
    res.job_id = job_id
    session.add(res)
    audit.record(
        session,
        actor=requested_by,
        action="resource.download_requested",
        target=res.label,
        job_id=job_id,
        details={
            "url": entry.archive_url,
            "edition": entry.edition,
            "size": entry.size_bytes,
            "redownload": redownload,
        },
    )
    return DownloadRequest(job_id, res.id, True, entry)


def _dead_job(session: Session, job_id: uuid.UUID) -> str | None:
    """Why the job can no longer move its resource on (None while it may): it finished, or
    its row is gone."""
    return jobstate.why_over(job_id, session.get(Job, job_id))


def fail_abandoned(session: Session, res: Resource, reason: str, *, actor: str) -> None:
    """A resource left queued/downloading/verifying by a job that is over: `failed` with the
    reason (and ready to be downloaded again), audited as `resource.download_failed`."""
    res.move_to(ResourceState.FAILED, error=f"abandoned: {reason}")
    session.add(res)
    audit.record(
        session,
        actor=actor,
        action="resource.download_failed",
        target=res.label,
        job_id=res.job_id,
        details={"reason": reason, "abandoned": True},
    )


def fail_abandoned_resources(session: Session, *, actor: str, limit: int = 1000) -> list[str]:
    """Fail every resource in a transitional state whose job is finished (failed, succeeded,
    revoked) or missing (run by the reconciler). Rows another transaction holds are skipped.
    Returns their labels."""
    states = [s.value for s in RESOURCE_IN_PROGRESS]
    failed = []
    for res, reason in jobstate.abandoned(session, Resource, states, limit=limit):
        fail_abandoned(session, res, reason, actor=actor)
        failed.append(res.label)
    return failed


def _locked_resource(session: Session, entry: HubEntryRow) -> Resource | None:
    """The resource row of `entry`'s identity, locked (None when there is none yet).

    Identical requests serialise here: a transaction-scoped advisory lock on the resource's
    identity (the row may not exist yet), then the row itself."""
    version = entry.lib_version or ""
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
        {"k": f"resource:{entry.name}:{entry.language}:{version}"},
    )
    return session.exec(
        select(Resource)
        .where(
            Resource.name == entry.name,
            Resource.language == entry.language,
            Resource.version == version,
        )
        .with_for_update()
    ).first()


def _check_disk(settings: Settings, entry: HubEntryRow) -> None:
    """Refuse a download the disk has no room for (`space.check_free_space`'s rule)."""
    from nlphub.hub import space

    if not entry.size_bytes:
        return
    try:
        space.check_free_space(
            settings.resources_dir if settings.resources_dir.exists() else settings.home,
            entry.size_bytes,
            what=f"{entry.name} {entry.lib_version}",
        )
    except NotEnoughSpace as exc:
        raise Refused(space_refusal(exc)) from None


def _queued(
    session: Session, res: Resource | None, entry: HubEntryRow, source: ResourceSource
) -> Resource:
    """`res` (a failed, deleted or, to redownload, installed one), or a new row for `entry`,
    now `queued` with the archive to download."""
    if res is None:
        res = Resource(
            name=entry.name,
            language=entry.language,
            version=entry.lib_version or "",
            kind=entry.kind,
            embedding_type=entry.embedding_type,
            edition=entry.edition,
            source=source,
            lib_version=entry.lib_version,
            spark_version=entry.spark_version,
            size_bytes=entry.size_bytes,
            state=ResourceState.QUEUED,
        )
    else:
        res.move_to(ResourceState.QUEUED)
    res.source_url = entry.archive_url
    res.archive_md5 = entry.checksum
    res.hub_time = entry.time
    res.size_bytes = entry.size_bytes or res.size_bytes
    session.add(res)
    session.flush()
    return res


def labels(rows: Iterable[Resource]) -> list[str]:
    return [r.label for r in rows]

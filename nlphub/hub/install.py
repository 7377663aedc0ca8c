"""Downloading, verifying and installing one hub resource; fetching its dependencies.

`download_and_install` runs one function per step, each safe to repeat after a crash or
redelivery:

1. `_claim`: `queued`/`downloading` → `downloading`, for this job;
2. `_download`: stream the archive to `<home>/downloads/<archive>` (`.partial` while
   incomplete, resumed with HTTP Range), stopped at the hub's declared size (else at
   `NLPHUB_MAX_DOWNLOAD_BYTES`), check the hub's MD5 (the archive's own SHA-256 is
   recorded only when the hub gives no MD5), then `downloading` → `verifying`;
3. `_unpack_and_validate`: unpack safely into a staging folder next to the install folder,
   validate it as a Spark NLP resource of the expected kind; the tree's SHA-256 (recorded as
   the resource's checksum) comes from the files hashed as they were unpacked;
4. `_install_and_record`: the install every source shares (`nlphub.install.install_resource`:
   atomic rename staging → install folder, `installed` or `missing_dependencies`, the audit
   record, released dependents, applied updates, redeploys) in one transaction, with the
   dependencies to fetch queued in that same transaction.

A resource is visible as installed only after step 4. A failure (any error but a temporary
one that is retried) removes the partial archive and the staging folder and leaves the
resource `failed` with its message, ready for `nlphub redownload`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy.exc
from sqlmodel import Session

from nlphub import audit, counters
from nlphub.errors import NlphubError, NotFound, Refused, TemporaryError
from nlphub.files import remove_path
from nlphub.hub.fetch import fetch
from nlphub.hub.fetch_errors import DownloadError, NotEnoughSpace, TemporaryDownloadError
from nlphub.hub.partial import partial_path
from nlphub.hub.service import request_download, resolve, space_refusal
from nlphub.hub.space import check_free_space
from nlphub.install import (
    Installed,
    Staged,
    finish_applied_updates,
    install_resource,
    missing_dependencies,
)
from nlphub.resources import install_dir
from nlphub.uploads.archive import (
    ProblemError,
    remove_extraction,
    resource_root,
    safe_extract,
)
from nlphub.uploads.sparknlp import validate_resource
from schemas.db import session_scope
from schemas.models import Resource, ResourceKind
from schemas.settings import Settings
from schemas.states import RESOURCE_IN_PROGRESS, RESOURCE_INSTALLED, ResourceState

log = logging.getLogger(__name__)

Progress = Callable[[float, float | None, str | None], None]
#: What the task base may retry (its TEMPORARY_ERRORS, and any database error): left to it,
#: with the resource as it is, but on the last try.
_MAYBE_TEMPORARY: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.SQLAlchemyError,
    httpx.TransportError,
    ConnectionError,
    TimeoutError,
)
STAGING_PREFIX = ".staging-"


def downloads_dir(settings: Settings) -> Path:
    path = settings.home / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _archive_path(settings: Settings, res: Resource) -> Path:
    name = (res.source_url or "").rstrip("/").rsplit("/", 1)[-1] or f"{res.id}.zip"
    return downloads_dir(settings) / f"{res.id}-{name}"


def _staging(settings: Settings, res: Resource) -> Path:
    base = settings.resources_dir / ResourceKind(res.kind).value
    base.mkdir(parents=True, exist_ok=True)
    return base / f"{STAGING_PREFIX}{res.id}"


def _cleanup(*paths: Path) -> None:
    for path in paths:
        remove_path(path)


def _fail(
    resource_id: uuid.UUID, settings: Settings, message: str, *, actor: str, job_id: uuid.UUID
) -> None:
    with session_scope() as session:
        res = session.get(Resource, resource_id, with_for_update=True)
        if res is None:
            return
        archive = _archive_path(settings, res)
        _cleanup(archive, partial_path(archive))
        remove_extraction(_staging(settings, res))
        if res.state in RESOURCE_IN_PROGRESS:
            res.move_to(ResourceState.FAILED, error=message)
            session.add(res)
        finish_applied_updates(session, res, job_id=job_id, failed=message)
        audit.record(
            session,
            actor=actor,
            action="resource.download_failed",
            target=res.label,
            job_id=job_id,
            details={"reason": message},
        )


def _tenant_reason(exc: Exception, message: str) -> str:
    """A failed download's reason without server paths: a disk that is full says how much is
    needed and free, not where; another OS error says what went wrong, not on which file. The
    whole reason goes to the worker log."""
    if isinstance(exc, NotEnoughSpace):
        return space_refusal(exc)
    if isinstance(exc, OSError):
        log.warning("download failed: %s", message)
        if exc.errno == 28:  # ENOSPC
            return "the disk filled up during the download"
        return f"the download could not be stored: {exc.strerror or type(exc).__name__}"
    return without_locations(message)


#: A URL, or an absolute path, in a download's error. Each alternative starts only where a
#: run of its characters starts (the look-behinds), so a long message is matched in linear time.
_LOCATION = re.compile(
    r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^\s'\"]*|(?<![\w.~/-])/[^\s'\"]+", re.IGNORECASE
)


def without_locations(text: str) -> str:
    """`text` with each URL or absolute path cut to its last part: a download's error names
    the archive (`ner_dl_en_5.0.0_3.0_….zip`), not the hub's address nor, for a `file://` hub
    or a partial download, a server folder. The worker log and the resource keep the whole
    message for the operator."""

    def last_part(match: re.Match[str]) -> str:
        found = match.group()
        path = urlsplit(found).path if "://" in found else found
        return PurePosixPath(path).name or "the hub"

    return _LOCATION.sub(last_part, text)


def download_and_install(
    resource_id: uuid.UUID,
    settings: Settings,
    *,
    actor: str,
    job_id: uuid.UUID,
    progress: Progress,
    last_try: bool,
) -> dict[str, Any]:
    try:
        return _download_and_install(
            resource_id, settings, actor=actor, job_id=job_id, progress=progress
        )
    except TemporaryDownloadError as exc:
        # The worker log and the resource get the whole reason; the job, no location.
        log.warning("download of resource %s failed: %s", resource_id, exc)
        if last_try:
            _fail(resource_id, settings, f"download failed: {exc}", actor=actor, job_id=job_id)
            raise Refused(f"download failed: {without_locations(str(exc))}") from exc
        raise TemporaryError(without_locations(str(exc))) from exc
    except (DownloadError, ProblemError, NlphubError, OSError) as exc:
        # The resource (operator: `nlphub resources`, the audit log) gets the whole reason;
        # the job's error, which the tenant sees, no server path (`_tenant_reason`).
        message = str(exc)
        if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
            message = f"the disk filled up during the download: {exc}"
        _fail(resource_id, settings, message, actor=actor, job_id=job_id)
        if isinstance(exc, NlphubError) and not isinstance(exc, Refused):
            raise
        raise Refused(_tenant_reason(exc, message)) from exc
    except Exception as exc:
        # Anything else (a ValueError from a malformed archive's metadata, a bug) fails the job
        # too: the resource must not stay `verifying` (or `downloading`) for a dead job. A
        # database or network error is retried by the task base (the resource stays as it is
        # for the retry), unless this is the last try.
        if not last_try and isinstance(exc, _MAYBE_TEMPORARY):
            raise
        _fail(
            resource_id,
            settings,
            f"{exc.__class__.__name__}: {str(exc).strip() or 'no message'}",
            actor=actor,
            job_id=job_id,
        )
        raise


def _download_and_install(
    resource_id: uuid.UUID,
    settings: Settings,
    *,
    actor: str,
    job_id: uuid.UUID,
    progress: Progress,
) -> dict[str, Any]:
    snapshot = _claim(resource_id, settings, actor=actor, job_id=job_id)
    if snapshot.state in RESOURCE_INSTALLED:
        return {"resource": snapshot.label, "state": snapshot.state.value, "already": True}
    archive = _archive_path(settings, snapshot)
    if snapshot.state != ResourceState.VERIFYING or not archive.exists():
        _download(snapshot, archive, settings, actor=actor, job_id=job_id, progress=progress)
    staged = _unpack_and_validate(snapshot, archive, settings, progress)
    result = _install_and_record(resource_id, staged, settings, actor=actor, job_id=job_id)
    remove_extraction(_staging(settings, snapshot))
    _cleanup(archive)
    progress(1, 1, "installed")
    return result


def _claim(
    resource_id: uuid.UUID, settings: Settings, *, actor: str, job_id: uuid.UUID
) -> Resource:
    """Step 1: claim the resource for this job; a copy of it as it is now. An installed one
    (an earlier delivery of this job got that far) comes back as it is."""
    with session_scope() as session:
        res = session.get(Resource, resource_id, with_for_update=True)
        if res is None:
            raise NotFound(f"resource {resource_id} not found")
        if res.job_id not in (None, job_id):
            raise Refused(f"{res.label} is handled by another job ({res.job_id})")
        if res.state in RESOURCE_INSTALLED:
            # A delivery killed after the install committed, before the archive was deleted,
            # left it behind: this redelivery removes it.
            archive = _archive_path(settings, res)
            _cleanup(archive, partial_path(archive))
            return res.model_copy()
        if res.state not in RESOURCE_IN_PROGRESS:
            raise Refused(f"{res.label} is {res.state.value}; request it again to download it")
        if res.state != ResourceState.VERIFYING:
            first = res.state == ResourceState.QUEUED
            res.move_to(ResourceState.DOWNLOADING)
            session.add(res)
            if first:
                audit.record(
                    session,
                    actor=actor,
                    action="resource.download_started",
                    target=res.label,
                    job_id=job_id,
                    details={"url": res.source_url},
                )
        return res.model_copy()


def _download(
    snapshot: Resource,
    archive: Path,
    settings: Settings,
    *,
    actor: str,
    job_id: uuid.UUID,
    progress: Progress,
) -> None:
    """Step 2: download the archive (resuming a partial one from an earlier attempt), check
    its MD5, then `verifying`."""
    partial = partial_path(archive)
    have = partial.stat().st_size if partial.exists() else 0
    if snapshot.size_bytes:
        check_free_space(
            downloads_dir(settings), snapshot.size_bytes, what=snapshot.label, already_have=have
        )

    def report(done: int, total: int | None) -> None:
        progress(done, total, f"downloading {snapshot.name}")

    result = fetch(
        snapshot.source_url or "",
        archive,
        expected_md5=snapshot.archive_md5,
        expected_size=snapshot.size_bytes,
        progress=report,
        timeout=settings.hub_timeout,
        # Stops at the hub's declared size; without one, at NLPHUB_MAX_DOWNLOAD_BYTES.
        max_size=settings.max_download_bytes,
        # With the hub's MD5 the archive is verified, and the unpacked tree's SHA-256 is
        # recorded; the archive's own SHA-256 is only worth a pass when there is no MD5.
        sha256=not snapshot.archive_md5,
    )
    with session_scope() as session:
        res = session.get(Resource, snapshot.id, with_for_update=True)
        assert res is not None
        res.move_to(ResourceState.VERIFYING)
        session.add(res)
        audit.record(
            session,
            actor=actor,
            action="resource.downloaded",
            target=res.label,
            job_id=job_id,
            details={
                "bytes": result.size,
                "md5": result.md5,
                "resumed_from": result.resumed_from,
                **({"sha256": result.sha256} if result.sha256 else {}),
            },
        )
        # Once per archive: later deliveries of this job find the resource `verifying`.
        counters.add(session, counters.DOWNLOAD_BYTES, result.size)


def _unpack_and_validate(
    snapshot: Resource, archive: Path, settings: Settings, progress: Progress
) -> Staged:
    """Step 3: unpack into the staging folder, validate, checksum (from the digests taken
    while unpacking)."""
    progress(0, 1, f"verifying {snapshot.name}")
    staging = _staging(settings, snapshot)
    remove_extraction(staging)
    try:
        digests = safe_extract(archive, staging)  # hashes each file as it writes it
        root = resource_root(staging)
        info = validate_resource(root, kind=snapshot.kind.value, require_labels=False)  # type: ignore[arg-type]
    except ProblemError as exc:  # name what was downloaded from where, not just the problem
        raise Refused(
            f"the archive of {snapshot.label} from {snapshot.source_url or ''} is not a usable "
            f"resource: {exc}"
        ) from exc
    return Staged.of(root, info.storage_refs, staging=staging, digests=digests)


def _install_and_record(
    resource_id: uuid.UUID, staged: Staged, settings: Settings, *, actor: str, job_id: uuid.UUID
) -> dict[str, Any]:
    """Step 4: the shared install (`nlphub.install.install_resource`), and the download's own
    answer to missing dependencies: a `nlphub.fetch_dependencies` job, in the same
    transaction."""
    from nlphub.jobs import enqueue

    with session_scope() as session:
        res = session.get(Resource, resource_id, with_for_update=True)
        assert res is not None
        target = install_dir(settings.resources_dir, res.kind, res.name, res.language, res.version)
        done = install_resource(
            session,
            res,
            staged,
            target,
            actor=actor,
            job_id=job_id,
            action="resource.installed",
            details={"path": str(target)},
        )
        if done.missing:
            enqueue(
                "nlphub.fetch_dependencies",
                {"resource_id": str(res.id)},
                requested_by=actor,
                session=session,
            )
        return {
            "resource": res.label,
            "state": res.state.value,
            "path": f"{target.parent.name}/{target.name}",  # under the resources folder
            "bytes": done.size,
            "checksum": done.checksum,
            "dependencies": done.dependencies,
            "missing_dependencies": done.missing,
            "released": done.released,
        }


# -- dependencies ---------------------------------------------------------------------------------


def fetch_dependencies(
    session: Session, settings: Settings, resource_id: uuid.UUID, *, actor: str
) -> dict[str, Any]:
    """Queue downloads of the missing embeddings a model was trained with (its storageRefs).

    Returns the queued jobs and the problems (dependency not in the hub, or not compatible),
    each with the command that would fix it. Safe to run twice: queued ones are reused."""
    res = session.get(Resource, resource_id, with_for_update=True)
    if res is None:
        raise NotFound(f"resource {resource_id} not found")
    installed = Installed.from_settings(settings)
    queued: dict[str, str] = {}
    problems: list[str] = []
    for dep in missing_dependencies(session, res):
        languages = list(dict.fromkeys([res.language, "xx", "en"]))
        last_error: NlphubError | None = None
        for lang in languages:
            try:
                resolve(session, installed, name=dep, language=lang)
            except NotFound as exc:
                last_error = exc
                continue
            except Refused as exc:
                last_error = exc
                break
            try:
                req = request_download(
                    session, settings, name=dep, language=lang, requested_by=actor
                )
            except Refused as exc:
                last_error = exc
                break
            queued[dep] = str(req.job_id)
            last_error = None
            break
        if last_error is not None:
            problems.append(
                f"{res.label} needs {dep}: {last_error} — fix it with "
                f"`nlphub download {dep} --language {res.language}` once a compatible version "
                f"is available, or `nlphub upload PATH --kind embeddings --name {dep}`"
            )
    if problems:
        res.error = "; ".join(problems)
        session.add(res)
    audit.record(
        session,
        actor=actor,
        action="resource.dependencies_requested",
        target=res.label,
        details={"queued": queued, "problems": problems},
    )
    return {"resource": res.label, "queued": queued, "problems": problems}

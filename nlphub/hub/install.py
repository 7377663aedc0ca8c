"""Downloading, verifying and installing one hub resource; fetching its dependencies.

The steps of `download_and_install`, each safe to repeat after a crash or redelivery:

1. `queued`/`downloading` → `downloading`: stream the archive to `<home>/downloads/<archive>`
   (`.partial` while incomplete, resumed with HTTP Range), check the hub's MD5 (the archive's
   own SHA-256 is recorded only when the hub gives no MD5);
2. `downloading` → `verifying`: unpack safely into a staging folder next to the install folder,
   validate it as a Spark NLP resource of the expected kind; the tree's SHA-256 (recorded as
   the resource's checksum) comes from the files hashed as they were unpacked;
3. atomic rename staging → install folder, then `installed` (or `missing_dependencies`) in
   one transaction, with the dependencies to fetch queued in that same transaction.

A resource is visible as installed only after step 3. A failure removes the partial archive
and the staging folder and leaves the resource `failed`, ready for `nlphub redownload`.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlmodel import Session

from nlphub import audit
from nlphub.errors import NlphubError, NotFound, Refused, TemporaryError
from nlphub.hub.fetch import (
    DownloadError,
    TemporaryDownloadError,
    check_free_space,
    fetch,
    partial_path,
)
from nlphub.hub.service import (
    Installed,
    missing_dependencies,
    release_dependents,
    request_download,
    resolve,
)
from nlphub.hub.updates import finish_applied_updates
from nlphub.preannotation.service import request_redeploys
from nlphub.resources import TRASH_PREFIX, install_dir, tree_checksum_of
from nlphub.uploads.archive import (
    ProblemError,
    remove_extraction,
    remove_path,
    resource_root,
    safe_extract,
)
from nlphub.uploads.sparknlp import validate_resource
from schemas.db import session_scope
from schemas.models import Resource, ResourceKind
from schemas.settings import Settings
from schemas.states import ResourceState

log = logging.getLogger(__name__)

Progress = Callable[[float, float | None, str | None], None]
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
        if res.state in (ResourceState.QUEUED, ResourceState.DOWNLOADING, ResourceState.VERIFYING):
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
        if last_try:
            _fail(resource_id, settings, f"download failed: {exc}", actor=actor, job_id=job_id)
            raise Refused(f"download failed: {exc}") from exc
        raise TemporaryError(str(exc)) from exc
    except (DownloadError, ProblemError, NlphubError, OSError) as exc:
        message = str(exc)
        if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
            message = f"the disk filled up during the download: {exc}"
        _fail(resource_id, settings, message, actor=actor, job_id=job_id)
        if isinstance(exc, NlphubError):
            raise
        raise Refused(message) from exc


def _download_and_install(
    resource_id: uuid.UUID,
    settings: Settings,
    *,
    actor: str,
    job_id: uuid.UUID,
    progress: Progress,
) -> dict[str, Any]:
    # 1. claim the resource for this job
    with session_scope() as session:
        res = session.get(Resource, resource_id, with_for_update=True)
        if res is None:
            raise NotFound(f"resource {resource_id} not found")
        if res.job_id not in (None, job_id):
            raise Refused(f"{res.label} is handled by another job ({res.job_id})")
        if res.state in (ResourceState.INSTALLED, ResourceState.MISSING_DEPENDENCIES):
            # A delivery killed after the install committed, before the archive was deleted,
            # left it behind: this redelivery removes it.
            archive = _archive_path(settings, res)
            _cleanup(archive, partial_path(archive))
            return {"resource": res.label, "state": res.state.value, "already": True}
        if res.state not in (
            ResourceState.QUEUED,
            ResourceState.DOWNLOADING,
            ResourceState.VERIFYING,
        ):
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
        snapshot = res.model_copy()
    archive = _archive_path(settings, snapshot)
    url = snapshot.source_url or ""

    # 2. download (resumes a partial archive from an earlier attempt)
    if snapshot.state != ResourceState.VERIFYING or not archive.exists():
        partial = partial_path(archive)
        have = partial.stat().st_size if partial.exists() else 0
        if snapshot.size_bytes:
            check_free_space(
                downloads_dir(settings),
                snapshot.size_bytes,
                what=f"{snapshot.label}",
                already_have=have,
            )

        def report(done: int, total: int | None) -> None:
            progress(done, total, f"downloading {snapshot.name}")

        result = fetch(
            url,
            archive,
            expected_md5=snapshot.archive_md5,
            expected_size=snapshot.size_bytes,
            progress=report,
            timeout=settings.hub_timeout,
            # With the hub's MD5 the archive is verified, and the unpacked tree's SHA-256 is
            # recorded; the archive's own SHA-256 is only worth a pass when there is no MD5.
            sha256=not snapshot.archive_md5,
        )
        with session_scope() as session:
            res = session.get(Resource, resource_id, with_for_update=True)
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

    # 3. unpack, validate, checksum
    progress(0, 1, f"verifying {snapshot.name}")
    staging = _staging(settings, snapshot)
    remove_extraction(staging)
    try:
        digests = safe_extract(archive, staging)  # hashes each file as it writes it
        root = resource_root(staging)
        info = validate_resource(root, kind=snapshot.kind.value, require_labels=False)  # type: ignore[arg-type]
    except ProblemError as exc:  # name what was downloaded from where, not just the problem
        raise Refused(
            f"the archive of {snapshot.label} from {url} is not a usable resource: {exc}"
        ) from exc
    checksum, size = tree_checksum_of(digests, root.relative_to(staging).as_posix())

    # 4. install atomically, then record it
    target = install_dir(
        settings.resources_dir, snapshot.kind, snapshot.name, snapshot.language, snapshot.version
    )
    if target.exists():  # a redownload, or a crash after the rename below
        trash = target.with_name(f"{TRASH_PREFIX}{snapshot.id}")
        _cleanup(trash)
        os.replace(target, trash)
        _cleanup(trash)
    os.replace(root, target)
    remove_extraction(staging)
    deps = [ref for ref in info.storage_refs if ref != snapshot.name]
    with session_scope() as session:
        res = session.get(Resource, resource_id, with_for_update=True)
        assert res is not None
        res.install_path = str(target)
        res.checksum = checksum
        res.bytes_on_disk = size
        res.dependencies = deps
        missing = missing_dependencies(session, res)
        res.move_to(ResourceState.MISSING_DEPENDENCIES if missing else ResourceState.INSTALLED)
        session.add(res)
        audit.record(
            session,
            actor=actor,
            action="resource.installed",
            target=res.label,
            job_id=job_id,
            details={
                "path": str(target),
                "checksum": checksum,
                "bytes": size,
                "dependencies": deps,
                "missing": missing,
            },
        )
        if missing:
            from nlphub.jobs import enqueue

            enqueue(
                "nlphub.fetch_dependencies",
                {"resource_id": str(res.id)},
                requested_by=actor,
                session=session,
            )
        released = release_dependents(session, actor=actor, job_id=job_id)
        finish_applied_updates(session, res, job_id=job_id)
        request_redeploys(session, models=[res.name], reason=f"{res.label} installed", actor=actor)
        state = res.state.value
        label = res.label
    _cleanup(archive)
    progress(1, 1, "installed")
    return {
        "resource": label,
        "state": state,
        "path": str(target),
        "bytes": size,
        "checksum": checksum,
        "dependencies": deps,
        "missing_dependencies": missing,
        "released": released,
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

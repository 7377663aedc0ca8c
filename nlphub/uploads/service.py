"""Accepting or rejecting a custom model / embeddings / pipeline upload.

`accept_upload` works in a staging folder next to the install folder: archive safety checks,
Spark NLP format validation and compatibility are all run, every problem is collected, and only
a fully valid upload is installed (`source = upload`) through the install every source shares
(`nlphub.install.install_resource`: rename into place, record, release the resources waiting
for it, redeploys). A rejected upload leaves nothing behind: no files, no resource row — only
the job and its audit events.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from nlphub.errors import NlphubError
from nlphub.install import Installed, Staged, install_resource, missing_dependencies
from nlphub.resources import install_dir, tree_checksum
from nlphub.uploads.archive import (
    ProblemError,
    check_tree,
    remove_extraction,
    resource_root,
    safe_extract,
)
from nlphub.uploads.sparknlp import ResourceInfo, check_compatibility, validate_resource
from schemas.editions import EDITION_OF_LIBRARY, OPEN_SOURCE
from schemas.models import Resource, ResourceKind, ResourceSource
from schemas.settings import Settings
from schemas.states import RESOURCE_INSTALLED, ResourceState

log = logging.getLogger(__name__)


class UploadRejected(NlphubError):
    """Every problem found in an upload, one per line in `problems`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"- {p}" for p in problems)
        super().__init__(f"upload {source} rejected ({len(problems)} problems):\n{lines}")


@dataclass
class UploadRequest:
    path: Path
    kind: str
    name: str
    language: str = "en"
    version: str | None = None
    labels: list[str] | None = None
    edition: str | None = None
    requested_by: str = "system"
    job_id: uuid.UUID | None = None


@dataclass
class UploadResult:
    resource_id: uuid.UUID
    label: str
    state: str
    path: str
    missing: list[str] = field(default_factory=list)
    notice: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "resource_id": str(self.resource_id),
            "resource": self.label,
            "state": self.state,
            "path": self.path,
            "missing_dependencies": self.missing,
            "notice": self.notice,
        }


def _unpack(req: UploadRequest, staging: Path) -> tuple[Path, dict[str, tuple[int, str]] | None]:
    """Bring the upload into `staging` (safely); the resource's root inside it, and each
    file's size and SHA-256 when they were hashed on the way (a zip)."""
    source = req.path
    if not source.exists():
        raise UploadRejected(
            str(source),
            [f"{source} does not exist (the path must be on storage the workers share)"],
        )
    if source.is_symlink():
        raise UploadRejected(str(source), [f"{source} is a symbolic link"])
    digests = None
    if source.is_dir():
        check_tree(source)
        shutil.copytree(source, staging, symlinks=True)
        check_tree(staging)  # the tree may have changed while it was copied
    elif source.is_file():
        digests = safe_extract(source, staging)
    else:
        raise UploadRejected(str(source), [f"{source} is neither a zip file nor a folder"])
    return resource_root(staging), digests


def _validate(req: UploadRequest, root: Path, settings: Settings) -> ResourceInfo:
    info = validate_resource(root, kind=req.kind, labels=req.labels)  # type: ignore[arg-type]
    installed = Installed.from_settings(settings)
    problems = check_compatibility(info, installed.versions, installed.spark)
    if problems:
        raise UploadRejected(str(req.path), problems)
    return info


def _installed_by(res: Resource, job_id: uuid.UUID | None) -> bool:
    return job_id is not None and res.job_id == job_id and res.state in RESOURCE_INSTALLED


def _same_files(path: Path, checksum: str) -> bool:
    return path.is_dir() and not path.is_symlink() and tree_checksum(path)[0] == checksum


def _result_of(session: Session, res: Resource) -> UploadResult:
    missing = missing_dependencies(session, res)
    notice = res.error if res.state == ResourceState.MISSING_DEPENDENCIES else None
    return UploadResult(res.id, res.label, res.state.value, res.install_path or "", missing, notice)


def _present(session: Session, req: UploadRequest, version: str) -> Resource | None:
    """The resource of the upload's identity, unless it is deleted."""
    return session.exec(
        select(Resource).where(
            Resource.name == req.name,
            Resource.language == req.language,
            Resource.version == version,
            col(Resource.state) != ResourceState.DELETED.value,
        )
    ).first()


def _stage(
    req: UploadRequest, settings: Settings, staging: Path, target: Path
) -> tuple[Staged, ResourceInfo]:
    """Unpack, validate and checksum the upload in `staging`; `UploadRejected` with every
    problem, or when `target` holds other files than these that no resource owns."""
    orphan = target.exists() or target.is_symlink()
    try:
        root, digests = _unpack(req, staging)
        info = _validate(req, root, settings)
    except ProblemError as exc:
        raise UploadRejected(str(req.path), list(exc.problems)) from None
    staged = Staged.of(root, info.storage_refs, staging=staging, digests=digests)
    if orphan and not _same_files(target, staged.checksum):
        raise UploadRejected(
            str(req.path),
            [
                f"{target} already exists but no resource owns it (run `nlphub inventory` and "
                "remove the orphan folder)"
            ],
        )
    # Same files: renamed into place by an earlier delivery of this upload whose worker died
    # before its commit; the install puts them in place again from staging.
    return staged, info


def _new_row(
    session: Session,
    req: UploadRequest,
    kind: ResourceKind,
    version: str,
    info: ResourceInfo,
    size: int,
) -> Resource:
    """The upload's resource row (`verifying` until it is installed), replacing a deleted
    upload of the same identity."""
    deleted = session.exec(
        select(Resource).where(
            Resource.name == req.name,
            Resource.language == req.language,
            Resource.version == version,
        )
    ).first()
    if deleted is not None:  # a deleted upload of the same identity: reuse its row
        session.delete(deleted)
        session.flush()
    res = Resource(
        name=req.name,
        language=req.language,
        version=version,
        kind=kind,
        edition=req.edition or EDITION_OF_LIBRARY.get(info.library, OPEN_SOURCE),
        source=ResourceSource.UPLOAD,
        spark_version=info.spark_version,
        lib_version=info.lib_version,
        labels=list(req.labels or []),
        state=ResourceState.VERIFYING,
        size_bytes=size,
        source_url=str(req.path),
        job_id=req.job_id,
    )
    session.add(res)
    session.flush()
    return res


def _missing_notice(req: UploadRequest, missing: list[str]) -> str:
    """What an upload says about its missing dependencies: the commands that fetch them."""
    return (
        f"{req.name} needs {', '.join(missing)}, not installed: download with "
        + "; ".join(f"`nlphub download {m} --language {req.language}`" for m in missing)
        + f" or all at once with `nlphub deps {req.name}`"
    )


def accept_upload(session: Session, settings: Settings, req: UploadRequest) -> UploadResult:
    """Validate and install an upload, or raise `UploadRejected` listing every problem. The
    caller commits right after (the install renames the files into place just before)."""
    kind = ResourceKind(req.kind)
    version = req.version or "upload"
    target = install_dir(settings.resources_dir, kind, req.name, req.language, version)
    # The temp area: on the same volume as the install folders (the final rename is atomic).
    staging = settings.home / "tmp" / f"upload-{req.job_id or uuid.uuid4()}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    remove_extraction(staging)
    try:
        existing = _present(session, req, version)
        if existing is not None and _installed_by(existing, req.job_id):
            # This very job, delivered again after its worker died between the commit and
            # the job's success: the upload is done; report it, do not reject it.
            return _result_of(session, existing)
        if existing is not None:
            raise UploadRejected(
                str(req.path),
                [
                    f"{existing.label} already exists ({existing.state.value}); delete it first or "
                    "upload with another --version"
                ],
            )
        staged, info = _stage(req, settings, staging, target)
        res = _new_row(session, req, kind, version, info, staged.size)
        done = install_resource(
            session,
            res,
            staged,
            target,
            actor=req.requested_by,
            job_id=req.job_id,
            action="resource.uploaded",
            details={"class": info.class_name, "kind": kind.value},
        )
        notice = _missing_notice(req, done.missing) if done.missing else None
        res.error = notice
        session.add(res)
        session.flush()
        return UploadResult(res.id, res.label, res.state.value, str(target), done.missing, notice)
    finally:
        remove_extraction(staging)

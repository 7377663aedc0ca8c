"""Accepting or rejecting a custom model / embeddings / pipeline upload.

`accept_upload` works in a staging folder next to the install folder: archive safety checks,
Spark NLP format validation and compatibility are all run, every problem is collected, and only
a fully valid upload is installed (`source = upload`) through the install every source shares
(`nlphub.install.install_resource`: rename into place, record, release the resources waiting
for it, redeploys). A rejected upload leaves nothing behind: no files, no resource row — only
the job and its audit events. No transaction is open while the upload is unpacked,
validated and checksummed (`accept_upload`).

The caller (a tenant) is trusted with nothing:

- the path must lie in ``NLPHUB_INCOMING_ROOTS`` and is opened through no symbolic link
  (`nlphub.paths`); everything after is read through the opened descriptor;
- the unpacked size (a zip's declared sizes, a folder's files) must fit the free-space rule of
  downloads (twice the size free) before anything is copied or extracted;
- the edition is the one of the upload's classes (`ResourceInfo.library` through
  `schemas.editions.EDITION_OF_LIBRARY`); a caller-given edition must agree with it, and every
  licensed edition among the classes needs a valid licence that covers it.

The licence and free-space rules are the hub's; `nlphub.hub` depends on this package, so they
come in as an `UploadGuards` (`nlphub.hub.policy.upload_guards`).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlmodel import Session, col, select

from nlphub.errors import NlphubError, TemporaryError
from nlphub.install import Installed, Staged, install_resource, missing_dependencies
from nlphub.paths import Opened, PathRefused, copy_tree, incoming_roots, open_confined, tree_size
from nlphub.resources import SessionFactory, install_dir, tree_checksum
from nlphub.uploads.archive import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    ArchiveProblem,
    ProblemError,
    check_directory,
    check_tree,
    format_size,
    remove_extraction,
    resource_root,
    safe_extract,
)
from nlphub.uploads.sparknlp import ResourceInfo, check_compatibility, validate_resource
from schemas.editions import EDITION_OF_LIBRARY, EDITIONS, LIBRARY_LABEL, OPEN_SOURCE
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


@dataclass(frozen=True)
class UploadGuards:
    """The hub's rules an upload must pass (see the module docstring)."""

    licence_problem: Callable[[str], str | None]
    """Why resources of an edition may not be used under the configured licence, or None."""
    space_problem: Callable[[Path, int], str | None]
    """Why ``size`` bytes may not be written below ``path`` (the free-space rule), or None."""


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
            # The install folder under the resources folder (`kind/name_language_version`):
            # a tenant sees no server path.
            "path": "/".join(Path(self.path).parts[-2:]),
            "missing_dependencies": self.missing,
            "notice": self.notice,
        }


def _declared_size(archive: Path, limits: ArchiveLimits) -> int | None:
    """What a zip says it unpacks to (its entries' uncompressed sizes); None when it cannot be
    read (`safe_extract` then says why). Its central directory is checked first
    (`check_directory`: `ArchiveProblem` over the limits), before zipfile loads it whole."""
    check_directory(archive, limits)
    try:
        with zipfile.ZipFile(archive) as zf:
            return sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return None


def _check_space(guards: UploadGuards, staging: Path, size: int) -> None:
    problem = guards.space_problem(staging.parent, size)
    if problem:
        raise ArchiveProblem([problem])


def _copy_folder(source: Opened, staging: Path, guards: UploadGuards) -> None:
    """Copy an uploaded folder into `staging` (measured first, links never followed)."""
    limits = DEFAULT_LIMITS
    entries, size = tree_size(source.fd, max_entries=limits.max_entries, shown=source.shown)
    problems = []
    if entries == 0:
        problems.append("directory is empty")
    if entries > limits.max_entries:
        problems.append(f"folder has more than {limits.max_entries} entries, the limit")
    if size > limits.max_total_bytes:
        problems.append(
            f"folder holds {format_size(size)}, above the limit of "
            f"{format_size(limits.max_total_bytes)}"
        )
    if problems:
        raise ArchiveProblem(problems)
    _check_space(guards, staging, size)
    problems = copy_tree(
        source.fd, staging, max_entries=entries, max_bytes=size, shown=source.shown
    )
    try:
        check_tree(staging)  # names, per-file sizes, on the copy
    except ArchiveProblem as exc:
        problems += exc.problems
    if problems:
        raise ArchiveProblem(problems)


def _unpack(
    req: UploadRequest, settings: Settings, staging: Path, guards: UploadGuards
) -> tuple[Path, dict[str, tuple[int, str]] | None]:
    """Bring the upload into `staging` (safely); the resource's root inside it, and each
    file's size and SHA-256 when they were hashed on the way (a zip)."""
    try:
        source = open_confined(str(req.path), incoming_roots(settings))
    except PathRefused as exc:
        raise UploadRejected(str(req.path), [str(exc)]) from None
    digests = None
    with source:
        if source.is_dir:
            _copy_folder(source, staging, guards)
        else:  # a regular file: read as a zip, through the opened descriptor
            if source.size > settings.max_upload_bytes:
                raise ArchiveProblem(
                    [
                        f"the zip is {format_size(source.size)}, above the limit of "
                        f"{format_size(settings.max_upload_bytes)} (NLPHUB_MAX_UPLOAD_BYTES)"
                    ]
                )
            limits = DEFAULT_LIMITS
            size = _declared_size(source.path, limits)
            if size is not None:
                _check_space(guards, staging, size)
                # What was measured is all that may be written (the file may change meanwhile).
                cap = min(size, limits.max_total_bytes)
                limits = dataclasses.replace(limits, max_total_bytes=cap)
            digests = safe_extract(source.path, staging, limits)
    return resource_root(staging), digests


def _validate(req: UploadRequest, root: Path, settings: Settings) -> tuple[ResourceInfo, list[str]]:
    info = validate_resource(root, kind=req.kind, labels=req.labels)  # type: ignore[arg-type]
    installed = Installed.from_settings(settings)
    return info, check_compatibility(info, installed.versions, installed.spark)


def _edition(req: UploadRequest, info: ResourceInfo, guards: UploadGuards) -> tuple[str, list[str]]:
    """The upload's edition (from its classes) and the problems with it: a caller-given
    edition that contradicts the classes, a licensed edition without a valid licence."""
    edition = EDITION_OF_LIBRARY.get(info.library, OPEN_SOURCE)
    problems: list[str] = []
    if req.edition is not None:
        wanted = {e.lower(): e for e in EDITIONS}.get(req.edition.strip().lower())
        if wanted is None:
            problems.append(
                f"edition {req.edition[:64]!r} is not an edition (known: {', '.join(EDITIONS)})"
            )
        elif wanted != edition:
            problems.append(
                f"edition {wanted!r} contradicts the upload's classes: {info.simple_name} is "
                f"{LIBRARY_LABEL.get(info.library, info.library)}, edition {edition!r} (leave "
                "the edition out: it comes from the classes)"
            )
    # Every licensed edition among the classes (a pipeline may mix them), the resource's first.
    needed = [edition] + [EDITION_OF_LIBRARY.get(lib, OPEN_SOURCE) for lib in info.libraries]
    for each in dict.fromkeys(needed):
        if each != OPEN_SOURCE and (problem := guards.licence_problem(each)):
            problems.append(problem)
    if problems and info.licensed_classes:  # name what made it licensed
        problems.append(
            f"licensed classes: {', '.join(info.licensed_classes[:5])} (only Spark NLP's "
            "open-source classes install without a licence)"
        )
    return edition, problems


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
    req: UploadRequest, settings: Settings, staging: Path, target: Path, guards: UploadGuards
) -> tuple[Staged, ResourceInfo, str]:
    """Unpack, validate and checksum the upload in `staging`; its edition. `UploadRejected`
    with every problem, or when `target` holds other files than these that no resource owns."""
    orphan = target.exists() or target.is_symlink()
    try:
        root, digests = _unpack(req, settings, staging, guards)
        info, problems = _validate(req, root, settings)
    except ProblemError as exc:
        raise UploadRejected(str(req.path), list(exc.problems)) from None
    edition, edition_problems = _edition(req, info, guards)
    if problems or edition_problems:
        raise UploadRejected(str(req.path), problems + edition_problems)
    staged = Staged.of(root, info.storage_refs, staging=staging, digests=digests)
    if orphan and not _same_files(target, staged.checksum):
        raise UploadRejected(
            str(req.path),
            [
                f"{req.name} ({req.language}, {req.version or 'upload'}) already has files on "
                "the server that no resource owns (an administrator must run `nlphub "
                "inventory` and remove the orphan folder)"
            ],
        )
    # Same files: renamed into place by an earlier delivery of this upload whose worker died
    # before its commit; the install puts them in place again from staging.
    return staged, info, edition


def _new_row(
    session: Session,
    req: UploadRequest,
    kind: ResourceKind,
    version: str,
    info: ResourceInfo,
    edition: str,
    size: int,
) -> Resource:
    """The upload's resource row (`verifying` until it is installed), replacing a deleted
    upload of the same identity."""
    deleted = session.exec(
        select(Resource).where(
            Resource.name == req.name,
            Resource.language == req.language,
            Resource.version == version,
            col(Resource.state) == ResourceState.DELETED.value,  # never a live one
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
        edition=edition,
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


def _done_or_taken(session: Session, req: UploadRequest, version: str) -> UploadResult | None:
    """What an earlier delivery of this job installed, or None when the identity is free;
    `UploadRejected` when another resource has it."""
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
    return None


def accept_upload(
    session_factory: SessionFactory,
    settings: Settings,
    req: UploadRequest,
    *,
    guards: UploadGuards,
) -> UploadResult:
    """Validate and install an upload, or raise `UploadRejected` listing every problem.
    `session_factory` opens a unit of work that commits (`schemas.db.session_scope`): the
    identity is looked up in a short transaction, the upload is unpacked, validated and
    checksummed (gigabytes of file I/O) with no transaction open, then it is installed and
    recorded in a second one, which looks the identity up again (another upload may have taken
    it meanwhile); the install renames the files into place just before that commit.
    `guards`: the licence and free-space rules (`nlphub.hub.policy.upload_guards(settings)`)."""
    kind = ResourceKind(req.kind)
    version = req.version or "upload"
    target = install_dir(settings.resources_dir, kind, req.name, req.language, version)
    # The temp area: on the same volume as the install folders (the final rename is atomic).
    staging = settings.home / "tmp" / f"upload-{req.job_id or uuid.uuid4()}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    remove_extraction(staging)
    try:
        with session_factory() as session:
            found = _done_or_taken(session, req, version)
        if found is not None:
            return found
        staged, info, edition = _stage(req, settings, staging, target, guards)
        try:
            with session_factory() as session:
                return _record(session, req, kind, version, info, edition, staged, target)
        except sqlalchemy.exc.IntegrityError as exc:
            if _constraint_of(exc) != _IDENTITY:
                raise
            # Another upload of this identity committed between the look-up and the insert:
            # this one is rejected as if it had come second (the insert failed before
            # anything was renamed into place).
            with session_factory() as session:
                found = _done_or_taken(session, req, version)
            if found is not None:
                return found
            raise TemporaryError(f"{req.name} was uploaded and deleted meanwhile") from None
    finally:
        remove_extraction(staging)


#: The resource table's unique (name, language, version).
_IDENTITY = "uq_resource_nlv"


def _constraint_of(exc: sqlalchemy.exc.IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


def _record(
    session: Session,
    req: UploadRequest,
    kind: ResourceKind,
    version: str,
    info: ResourceInfo,
    edition: str,
    staged: Staged,
    target: Path,
) -> UploadResult:
    """The upload's install, in `session`'s transaction: the identity looked up again (another
    upload may have taken it while this one was unpacked), the row, then the shared install."""
    found = _done_or_taken(session, req, version)
    if found is not None:
        return found
    res = _new_row(session, req, kind, version, info, edition, staged.size)
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

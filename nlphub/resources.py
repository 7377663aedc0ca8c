"""Resources on disk: where they live, their checksums, inventory and deletion."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from nlphub import audit, jobstate
from nlphub.errors import NotFound, Refused
from nlphub.files import remove_path
from schemas.models import Resource, ResourceKind
from schemas.payloads import MIN_CLEANUP_AGE
from schemas.states import RESOURCE_IN_PROGRESS, RESOURCE_ON_DISK, ResourceState

log = logging.getLogger(__name__)

TRASH_PREFIX = ".trash-"
CHUNK = 1 << 20

ProgressFn = Callable[[float, float, str], None]
#: Opens one unit of work: a session whose transaction commits when the block ends.
SessionFactory = Callable[[], AbstractContextManager[Session]]


def install_dir(
    root: Path, kind: ResourceKind | str, name: str, language: str, version: str
) -> Path:
    """Where a resource is installed: <root>/<kind>/<name>_<language>_<version>."""
    safe = f"{name}_{language}_{version or 'unversioned'}"
    if "/" in safe or safe.startswith(".") or "\0" in safe:
        raise ValueError(f"resource name {name!r} cannot be used as a folder name")
    return root / ResourceKind(kind).value / safe


def tree_checksum(path: Path) -> tuple[str, int]:
    """sha256 over every file's relative path, size and content (sorted); and total bytes."""
    digest = hashlib.sha256()
    total = 0
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    if path.is_file():
        files = [path]
    for file in files:
        rel = file.name if file == path else file.relative_to(path).as_posix()
        size = file.stat().st_size
        total += size
        h = hashlib.sha256()
        with file.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        digest.update(f"{rel}\0{size}\0{h.hexdigest()}\n".encode())
    return digest.hexdigest(), total


def tree_checksum_of(digests: dict[str, tuple[int, str]], under: str = "") -> tuple[str, int]:
    """`tree_checksum` from per-file (size, sha256) already known, e.g. hashed while
    `nlphub.uploads.archive.safe_extract` wrote them (keys: posix paths; only those below ``under``
    count, relative to it). Same digest as reading the tree again."""
    prefix = f"{under.strip('/')}/" if under.strip("/") not in ("", ".") else ""
    files = [
        (rel[len(prefix) :], size, sha)
        for rel, (size, sha) in digests.items()
        if rel.startswith(prefix)
    ]
    # the order of tree_checksum: sorted Paths, i.e. by their parts
    files.sort(key=lambda f: f[0].split("/"))
    digest = hashlib.sha256()
    total = 0
    for rel, size, sha in files:
        total += size
        digest.update(f"{rel}\0{size}\0{sha}\n".encode())
    return digest.hexdigest(), total


def bytes_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass
class DiskUsage:
    total_bytes: int
    free_bytes: int
    used_by_resources: int
    per_resource: dict[str, int] = field(default_factory=dict)


def disk_usage(root: Path, per_resource: dict[str, int]) -> DiskUsage:
    root.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(root)
    return DiskUsage(usage.total, usage.free, sum(per_resource.values()), per_resource)


@dataclass
class InventoryReport:
    checked: int = 0
    verified: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    trash_removed: list[str] = field(default_factory=list)
    disk: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _on_disk_dirs(root: Path) -> Iterable[Path]:
    for kind in ResourceKind:
        base = root / kind.value
        if base.is_dir():
            yield from (p for p in base.iterdir() if not p.name.startswith("."))


def _trash_dirs(root: Path) -> Iterable[Path]:
    for kind in ResourceKind:
        base = root / kind.value
        if base.is_dir():
            yield from (p for p in base.iterdir() if p.name.startswith(TRASH_PREFIX))


@dataclass(frozen=True)
class _Seen:
    """A resource as the inventory read it, before checking its files (no transaction open)."""

    id: uuid.UUID
    label: str
    install_path: str | None
    checksum: str | None


@dataclass(frozen=True)
class _Finding:
    """What checking one resource's files found: `problem` (None when they verify), `missing`,
    and the tree's checksum and size when the files are there."""

    problem: str | None
    missing: bool = False
    checksum: str | None = None
    size: int | None = None


def _check_files(seen: _Seen, *, verify_checksums: bool) -> _Finding:
    """What is wrong with `seen`'s files (missing, or not the checksum recorded). File I/O
    only: it runs with no transaction open."""
    path = Path(seen.install_path) if seen.install_path else None
    if path is None or not path.exists():
        return _Finding(f"files missing at {path}", missing=True)
    if verify_checksums or seen.checksum is None:
        checksum, size = tree_checksum(path)
    else:
        checksum, size = seen.checksum, bytes_on_disk(path)
    if seen.checksum is not None and checksum != seen.checksum:
        problem = f"checksum mismatch: stored {seen.checksum[:12]}…, on disk {checksum[:12]}…"
        return _Finding(problem, checksum=checksum, size=size)
    return _Finding(None, checksum=checksum, size=size)


def _record_check(
    session: Session,
    seen: _Seen,
    finding: _Finding,
    report: InventoryReport,
    per_resource: dict[str, int],
    *,
    actor: str,
    job_id: uuid.UUID | None,
) -> None:
    """Record one resource's finding in the caller's (short) transaction: a problem → invalid;
    an invalid one whose files verify again → installed (audited); its size and a first
    checksum on the row. Counted in `report`, its size in `per_resource`. A row that changed
    while its files were read (deleted, reinstalled elsewhere, checksummed by another
    inventory) is left as it is: the finding is about files it no longer describes."""
    res = session.get(Resource, seen.id, with_for_update=True)
    if (
        res is None
        or res.state not in RESOURCE_ON_DISK
        or res.install_path != seen.install_path
        or res.checksum != seen.checksum
    ):
        log.info("inventory: %s changed while it was checked; left as it is", seen.label)
        return
    problem = finding.problem
    if finding.missing:
        report.missing.append(res.label)
    else:
        assert finding.size is not None
        res.bytes_on_disk = finding.size
        per_resource[res.label] = finding.size
        if res.checksum is None:
            res.checksum = finding.checksum
        elif problem:
            report.corrupt.append(res.label)
        else:
            report.verified += 1
    if problem and res.state != ResourceState.INVALID:
        res.move_to(ResourceState.INVALID, error=problem)
        audit.record(
            session,
            actor=actor,
            action="resource.invalid",
            target=res.label,
            job_id=job_id,
            details={"reason": problem},
        )
    elif not problem and res.state == ResourceState.INVALID:
        res.move_to(ResourceState.INSTALLED)
        report.recovered.append(res.label)
        audit.record(
            session,
            actor=actor,
            action="resource.recovered",
            target=res.label,
            job_id=job_id,
            details={"checksum": res.checksum},
        )
    session.add(res)


def inventory(
    session_factory: SessionFactory,
    root: Path,
    *,
    actor: str,
    job_id: uuid.UUID | None = None,
    verify_checksums: bool = True,
    progress: ProgressFn | None = None,
) -> InventoryReport:
    """Reconcile `resource` rows with `root`: files missing or corrupt → invalid (audited);
    invalid ones whose files verify again → installed; folders no row knows → orphans;
    leftovers of interrupted deletes → removed. Safe to run twice.

    Each unit of work is its own short transaction from `session_factory` (a context manager
    that commits, e.g. `schemas.db.session_scope`): the rows are read, then each resource's
    files are checked (hashing a large tree takes long) and `progress` reported with no
    transaction open, then its finding is recorded, audit event included, in a transaction of
    its own. So the audit chain's lock, which a transaction holds from its first audit event
    to its commit, is never held across file I/O, nor while `progress` writes its own audit
    event on another connection (which would wait for it forever)."""
    report = InventoryReport()
    with session_factory() as session:
        rows = [
            _Seen(res.id, res.label, res.install_path, res.checksum)
            for res in session.exec(
                select(Resource)
                .where(col(Resource.state).in_([s.value for s in RESOURCE_ON_DISK]))
                .order_by(col(Resource.name), col(Resource.language), col(Resource.version))
            ).all()
        ]
    known: set[Path] = set()
    per_resource: dict[str, int] = {}
    for index, seen in enumerate(rows):
        report.checked += 1
        if progress:
            progress(index, len(rows), f"checking {seen.label}")
        if seen.install_path:
            known.add(Path(seen.install_path).resolve())
        finding = _check_files(seen, verify_checksums=verify_checksums)
        with session_factory() as session:
            _record_check(session, seen, finding, report, per_resource, actor=actor, job_id=job_id)
    for path in _on_disk_dirs(root):
        if path.resolve() not in known:
            report.orphans.append(str(path))
    for trash in _trash_dirs(root):
        shutil.rmtree(trash, ignore_errors=True)
        report.trash_removed.append(str(trash))
    report.disk = asdict(disk_usage(root, per_resource))
    with session_factory() as session:
        audit.record(
            session,
            actor=actor,
            action="inventory.completed",
            target=str(root),
            job_id=job_id,
            details={k: v for k, v in report.as_dict().items() if k != "disk"}
            | {
                "total_bytes": report.disk["used_by_resources"],
                "free_bytes": report.disk["free_bytes"],
            },
        )
    return report


def find_resource(
    session: Session,
    *,
    resource_id: uuid.UUID | None = None,
    name: str | None = None,
    language: str = "en",
    version: str | None = None,
    lock: bool = False,
) -> Resource:
    query = select(Resource)
    if resource_id is not None:
        query = query.where(Resource.id == resource_id)
        what = f"resource {resource_id}"
    else:
        query = query.where(Resource.name == name, Resource.language == language)
        if version is not None:
            query = query.where(Resource.version == version)
        else:
            query = query.where(col(Resource.state) != ResourceState.DELETED.value)
        query = query.order_by(col(Resource.updated_at).desc())
        what = f"resource {name} ({language}{', ' + version if version else ''})"
    if lock:
        query = query.with_for_update()
    found = session.exec(query).first()
    if found is None:
        raise NotFound(f"{what} not found")
    return found


def dependents(session: Session, res: Resource) -> list[Resource]:
    """Resources in use that name `res` as a dependency (by name, the storageRef)."""
    rows = session.exec(
        select(Resource).where(
            col(Resource.state).in_([s.value for s in RESOURCE_ON_DISK]),
            col(Resource.dependencies).contains([res.name]),
            Resource.id != res.id,
        )
    ).all()
    return list(rows)


DELETABLE = frozenset(
    {
        ResourceState.INSTALLED,
        ResourceState.MISSING_DEPENDENCIES,
        ResourceState.FAILED,
        ResourceState.INVALID,
        ResourceState.DELETING,
    }
)


def begin_delete(
    session: Session, res: Resource, *, actor: str, force: bool, job_id: uuid.UUID | None = None
) -> bool:
    """Move to `deleting` (audited). False when it is already deleted (nothing to do)."""
    if res.state == ResourceState.DELETED:
        return False
    if res.state not in DELETABLE:
        raise Refused(f"{res.label} is {res.state.value}; it can be deleted once that finishes")
    users = dependents(session, res)
    if users and not force:
        names = ", ".join(sorted(u.label for u in users))
        raise Refused(f"{res.label} is used by {names}; pass force to delete it anyway")
    if res.state != ResourceState.DELETING:
        res.move_to(ResourceState.DELETING)
        session.add(res)
        audit.record(
            session,
            actor=actor,
            action="resource.deleting",
            target=res.label,
            job_id=job_id,
            details={"force": force, "dependents": [u.label for u in users]},
        )
    return True


def remove_files(res: Resource) -> int:
    """Take the files out of sight atomically (rename), then remove them. Returns bytes freed."""
    if not res.install_path:
        return 0
    path = Path(res.install_path)
    freed = 0
    if path.exists():
        freed = bytes_on_disk(path)
        trash = path.with_name(f"{TRASH_PREFIX}{res.id}")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(path, trash)
        shutil.rmtree(trash)
    else:
        trash = path.with_name(f"{TRASH_PREFIX}{res.id}")
        if trash.exists():  # an earlier attempt renamed it, then died
            shutil.rmtree(trash)
    return freed


def finish_delete(
    session: Session, res: Resource, *, actor: str, freed: int, job_id: uuid.UUID | None = None
) -> None:
    from nlphub.preannotation.service import request_redeploys

    res.move_to(ResourceState.DELETED)
    res.bytes_on_disk = 0
    session.add(res)
    request_redeploys(session, models=[res.name], reason=f"{res.label} deleted", actor=actor)
    audit.record(
        session,
        actor=actor,
        action="resource.deleted",
        target=res.label,
        job_id=job_id,
        details={"freed_bytes": freed, "path": res.install_path},
    )


def list_resources(session: Session) -> list[Resource]:
    """Every resource known here (any source, any state), by name."""
    return list(session.exec(select(Resource).order_by(col(Resource.name))).all())


def present_resources(session: Session) -> list[Resource]:
    """The resources whose files are here (RESOURCE_ON_DISK states), the largest first."""
    return list(
        session.exec(
            select(Resource)
            .where(col(Resource.state).in_([s.value for s in RESOURCE_ON_DISK]))
            .order_by(col(Resource.bytes_on_disk).desc())
        ).all()
    )


def resource_totals(session: Session) -> dict[str, int]:
    rows = session.exec(select(Resource.state, func.count()).group_by(Resource.state)).all()
    return {str(state): int(n) for state, n in rows}


#: An id in a leftover's name: a resource's (`<id>-<archive>.partial`, `.staging-<id>`,
#: `.trash-<id>`) or a job's (an upload's `upload-<id>` and `.upload-<id>.<random>.partial`).
_ID_IN_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def _ids_in(name: str) -> set[uuid.UUID]:
    return {uuid.UUID(found) for found in _ID_IN_NAME.findall(name)}


#: Leftovers beside the install folders: a hub download's staging folder, the hidden work
#: folder a killed `safe_extract` into it leaves (`..staging-<id>.<random>.partial`), trash.
_BESIDE_INSTALLS = (".staging-", "..staging-", TRASH_PREFIX)


def cleanup_leftovers(session: Session, home: Path, *, older_than: float, actor: str) -> list[str]:
    """Remove what interrupted work left behind and nothing uses any more: partial downloads
    of resources not being downloaded, upload temp folders, staging and trash folders — all
    older than `older_than` seconds (`Refused` below MIN_CLEANUP_AGE). Returns the removed
    paths relative to `home` (what the caller sees names no server folder).

    Kept whatever age: a leftover whose name holds the id of a resource in progress or of a job
    that is not finished (an upload's staging is named by its job, and a running upload renames
    it into place; a folder's mtime says nothing of the files written below it). The folders
    are listed first and the states read after: work that starts in between either is
    listed with its job already `started`, or is not listed at all. docs/decisions.md:
    "Maintenance tasks a tenant may enqueue"."""
    import time

    if not older_than >= MIN_CLEANUP_AGE:  # NaN too
        raise Refused(
            f"cleanup removes only leftovers at least {MIN_CLEANUP_AGE:.0f} seconds old "
            f"(older_than {older_than:g} asked): younger ones may belong to work in progress"
        )
    cutoff = time.time() - older_than
    candidates: list[Path] = []
    for folder in (home / "downloads", home / "tmp"):
        if folder.is_dir():
            candidates += list(folder.iterdir())
    resources = home / "resources"
    if resources.is_dir():
        for kind in resources.iterdir():
            if kind.is_dir():
                candidates += [p for p in kind.iterdir() if p.name.startswith(_BESIDE_INSTALLS)]
    named = set().union(*(_ids_in(p.name) for p in candidates)) if candidates else set()
    busy = {
        r.id
        for r in session.exec(
            select(Resource).where(col(Resource.state).in_([s.value for s in RESOURCE_IN_PROGRESS]))
        ).all()
    } | jobstate.unfinished_jobs(session, sorted(named))
    removed = []
    for path in candidates:
        if _ids_in(path.name) & busy:
            continue
        try:
            if path.lstat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        remove_path(path)
        removed.append(path.relative_to(home).as_posix())
    if removed:
        audit.record(
            session,
            actor=actor,
            action="cleanup.removed",
            target="NLPHUB_HOME",
            details={"paths": removed[:200], "count": len(removed)},
        )
    return removed

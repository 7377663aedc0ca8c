"""Installing a resource, whatever its source, and what is installed here.

Every source installs through this module: a hub download (`nlphub.hub.install`, which an
applied update goes through too) and an upload (`nlphub.uploads.service`). The caller unpacks
and validates the resource into a staging folder on the install volume, then:

1. `Staged.of`: the tree's checksum (from the digests taken while unpacking, else by reading it);
2. `install_resource`, in the caller's transaction: the dependencies (storageRefs), the state
   (`installed`, or `missing_dependencies` while some are not installed), the atomic rename of
   the staged folder onto the install folder, the audit record (the source's action and
   details), then `after_install`, the effects of every install: resources waiting for this one
   are released, a confirmed update that downloaded it is marked applied, pre-annotation servers
   using it get a redeploy.

What to do about missing dependencies stays with each source: a download queues
`nlphub.fetch_dependencies`, an upload tells the user which `nlphub download` commands fix it.
This module imports neither `nlphub.hub` nor `nlphub.uploads`: both call it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from nlphub import audit
from nlphub.preannotation.service import request_redeploys
from nlphub.resources import TRASH_PREFIX, remove_path, tree_checksum, tree_checksum_of
from nlphub.versions import Version, incompatibility_reason, is_compatible
from schemas.editions import EDITION_LIBRARY, LIBRARY_LABEL
from schemas.models import HubEntryRow, Resource, UpdateNotice
from schemas.settings import Settings
from schemas.states import ResourceState

log = logging.getLogger(__name__)

# -- installed library versions -------------------------------------------------------------------


def _v(text: str | None) -> Version | None:
    return Version.parse(text) if text else None


@dataclass(frozen=True)
class Installed:
    """The installed library versions that decide compatibility."""

    versions: dict[str, Version | None]

    @classmethod
    def from_settings(cls, settings: Settings) -> Installed:
        out: dict[str, Version | None] = {}
        for lib in (*EDITION_LIBRARY.values(), "spark"):
            text = settings.library_version(lib)
            out[lib] = Version.parse(text) if text else None
        return cls(out)

    def lib_for(self, edition: str) -> str:
        return EDITION_LIBRARY.get(edition, "healthcare-nlp")

    def lib(self, edition: str) -> Version | None:
        return self.versions.get(self.lib_for(edition))

    @property
    def spark(self) -> Version | None:
        return self.versions.get("spark")

    def compatible(self, row: HubEntryRow) -> bool:
        return is_compatible(self.lib(row.edition), _v(row.lib_version)) and is_compatible(
            self.spark, _v(row.spark_version)
        )

    def why_not(self, row: HubEntryRow) -> str:
        lib = self.lib_for(row.edition)
        reasons = [
            incompatibility_reason(self.lib(row.edition), _v(row.lib_version), LIBRARY_LABEL[lib]),
            incompatibility_reason(self.spark, _v(row.spark_version), "Spark"),
        ]
        found = [r for r in reasons if r]
        if not found:
            return "compatible"
        hint = ""
        if self.lib(row.edition) is None:
            hint = f" (set NLPHUB_LIBRARY_VERSIONS={lib}=VERSION if it is installed elsewhere)"
        return "; ".join(found) + hint


# -- installed resources and their dependencies ---------------------------------------------------


def installed_names(session: Session) -> set[str]:
    rows = session.exec(
        select(Resource.name).where(col(Resource.state) == ResourceState.INSTALLED.value)
    ).all()
    return set(rows)


def missing_dependencies(session: Session, res: Resource) -> list[str]:
    have = installed_names(session)
    return [d for d in res.dependencies if d not in have]


def release_dependents(
    session: Session, *, actor: str, job_id: uuid.UUID | None = None
) -> list[str]:
    """Resources waiting for dependencies that are all installed now → installed (audited)."""
    waiting = session.exec(
        select(Resource)
        .where(col(Resource.state) == ResourceState.MISSING_DEPENDENCIES.value)
        .with_for_update()
    ).all()
    have = installed_names(session)
    released = []
    for res in waiting:
        if all(d in have for d in res.dependencies):
            res.move_to(ResourceState.INSTALLED)
            session.add(res)
            audit.record(
                session,
                actor=actor,
                action="resource.dependencies_installed",
                target=res.label,
                job_id=job_id,
                details={"dependencies": res.dependencies},
            )
            released.append(res.label)
    return released


def finish_applied_updates(
    session: Session, res: Resource, *, job_id: uuid.UUID | None, failed: str | None = None
) -> None:
    """Called when a download ends: record the switch (or the failure) of a confirmed update
    (`nlphub.hub.updates.apply_update` downloads it through the normal download path)."""
    if job_id is None:
        return
    for notice in session.exec(
        select(UpdateNotice)
        .where(UpdateNotice.job_id == job_id, UpdateNotice.state == "applying")
        .with_for_update()
    ).all():
        notice.state = "failed" if failed else "applied"
        session.add(notice)
        audit.record(
            session,
            actor=notice.decided_by or "system",
            action="update.failed" if failed else "update.applied",
            target=f"{notice.name}/{notice.language}",
            job_id=job_id,
            details={
                "from": notice.current_version,
                "to": notice.new_version,
                "confirmed_by": notice.decided_by,
                **({"error": failed} if failed else {}),
            },
        )


# -- installing a staged resource -----------------------------------------------------------------


@dataclass(frozen=True)
class Staged:
    """A resource unpacked and validated in a staging folder, with its tree checksum."""

    root: Path
    checksum: str
    size: int
    storage_refs: tuple[str, ...]

    @classmethod
    def of(
        cls,
        root: Path,
        storage_refs: Sequence[str],
        *,
        staging: Path | None = None,
        digests: dict[str, tuple[int, str]] | None = None,
    ) -> Staged:
        """The checksum step: from `digests` (per-file size and SHA-256 keyed by their path
        relative to `staging`, as `safe_extract` returns them) when given, else by reading the
        tree; the same digest either way (`nlphub.resources.tree_checksum`)."""
        if digests is not None and staging is not None:
            checksum, size = tree_checksum_of(digests, root.relative_to(staging).as_posix())
        else:
            checksum, size = tree_checksum(root)
        return cls(root, checksum, size, tuple(storage_refs))


@dataclass(frozen=True)
class Installation:
    """What `install_resource` did: where, which dependencies, which are missing, and the
    resources it released."""

    path: Path
    checksum: str
    size: int
    dependencies: list[str]
    missing: list[str]
    released: list[str]


def put_in_place(root: Path, target: Path, trash: Path) -> None:
    """Rename `root` onto `target` atomically. What is already there (a redownload, or the
    files an earlier attempt renamed there before it died) is first renamed to `trash` (out of
    sight at once) and removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        remove_path(trash)
        os.replace(target, trash)
        remove_path(trash)
    os.replace(root, target)


def install_resource(
    session: Session,
    res: Resource,
    staged: Staged,
    target: Path,
    *,
    actor: str,
    job_id: uuid.UUID | None,
    action: str,
    details: dict[str, Any],
) -> Installation:
    """Install `staged` as `res` at `target` in the caller's transaction: dependencies → state →
    atomic rename → audit record (`action`, the source's `details` plus the checksum, bytes,
    dependencies and the missing ones) → `after_install`. The caller commits right after: a
    crash in between leaves the files in place and the row as it was, and the next attempt
    puts the same files in place again."""
    deps = [ref for ref in staged.storage_refs if ref != res.name]
    res.install_path = str(target)
    res.checksum = staged.checksum
    res.bytes_on_disk = staged.size
    res.dependencies = deps
    missing = missing_dependencies(session, res)
    res.move_to(ResourceState.MISSING_DEPENDENCIES if missing else ResourceState.INSTALLED)
    session.add(res)
    put_in_place(staged.root, target, target.with_name(f"{TRASH_PREFIX}{res.id}"))
    audit.record(
        session,
        actor=actor,
        action=action,
        target=res.label,
        job_id=job_id,
        details={
            **details,
            "checksum": staged.checksum,
            "bytes": staged.size,
            "dependencies": deps,
            "missing": missing,
        },
    )
    released = after_install(session, res, actor=actor, job_id=job_id)
    return Installation(target, staged.checksum, staged.size, deps, missing, released)


def after_install(
    session: Session, res: Resource, *, actor: str, job_id: uuid.UUID | None
) -> list[str]:
    """The effects of every install, whatever its source: resources waiting for this one are
    released (returned), a confirmed update whose download this was is marked applied, and the
    pre-annotation servers using it get a pending redeploy."""
    released = release_dependents(session, actor=actor, job_id=job_id)
    finish_applied_updates(session, res, job_id=job_id)
    request_redeploys(session, models=[res.name], reason=f"{res.label} installed", actor=actor)
    return released

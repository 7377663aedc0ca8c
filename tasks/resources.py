"""Resource tasks: inventory and delete. Thin: unpack, one session, call the domain."""

from __future__ import annotations

from typing import Any

from nlphub import resources
from schemas.db import session_scope
from schemas.payloads import DeletePayload, InventoryPayload
from schemas.settings import get_settings
from tasks.base import JobContext, nlphub_task, one_at_a_time


@nlphub_task("nlphub.inventory")
def inventory(job: JobContext, payload: InventoryPayload) -> dict[str, Any]:
    """Scan NLPHUB_HOME, reconcile `resource` rows with the files, verify checksums, report disk
    usage. Side effects: resource states (installed ⇄ invalid), checksums and sizes, removal of
    leftovers of interrupted deletes, audit events. Safe to run twice. One run at a time
    system-wide: a request while one runs returns at once, coalesced (`one_at_a_time`)."""

    def scan() -> dict[str, Any]:
        # A transaction per finding, none open while files are hashed or progress is reported
        # (progress audits on its own connection): see nlphub.resources.inventory.
        report = resources.inventory(
            session_scope,
            get_settings().resources_dir,
            actor=payload.requested_by,
            job_id=job.id,
            verify_checksums=payload.verify_checksums,
            progress=job.progress,
        )
        return report.as_dict()

    return one_at_a_time(job, scan)


@nlphub_task("nlphub.delete")
def delete(job: JobContext, payload: DeletePayload) -> dict[str, Any]:
    """Delete a resource: refuse while an installed resource depends on it (unless `force`),
    move it to `deleting`, remove its files (atomic rename, then removal), mark it `deleted`.
    Side effects: files removed, resource row state, audit events. Safe to run twice."""
    with session_scope() as session:
        res = resources.find_resource(
            session,
            resource_id=payload.resource_id,
            name=payload.name,
            language=payload.language,
            version=payload.version,
            lock=True,
        )
        if not resources.begin_delete(
            session, res, actor=payload.requested_by, force=payload.force, job_id=job.id
        ):
            return {"resource": res.label, "deleted": True, "already": True}
        res_id = res.id
    with session_scope() as session:
        res = resources.find_resource(session, resource_id=res_id, lock=True)
        if res.state.value == "deleted":
            return {"resource": res.label, "deleted": True, "already": True}
        freed = resources.remove_files(res)
        resources.finish_delete(
            session, res, actor=payload.requested_by, freed=freed, job_id=job.id
        )
        return {"resource": res.label, "deleted": True, "freed_bytes": freed}

"""Upload validation task. Thin: the logic is in nlphub/uploads/service.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlphub import audit
from nlphub.hub.policy import upload_guards
from nlphub.uploads.service import UploadRejected, UploadRequest, accept_upload
from schemas.db import session_scope
from schemas.payloads import UploadPayload
from schemas.settings import get_settings
from tasks.base import JobContext, nlphub_task


@nlphub_task("nlphub.validate_upload")
def validate_upload(job: JobContext, payload: UploadPayload) -> dict[str, Any]:
    """Check an uploaded zip or folder (a path in NLPHUB_INCOMING_ROOTS, no symbolic links;
    archive safety, free space, Spark NLP format, kind, labels, compatibility, the edition of
    its classes and its licence) and install it atomically with source `upload`, through the
    install a download uses (resources waiting for it are released); a rejection lists every
    problem and leaves nothing behind. Side effects: the install folder, the resource row, the
    rows of the resources it releases, pending redeploys, audit events. Safe to run twice: a
    redelivered job finds what an earlier delivery of it installed and reports it (another
    upload of the same identity is rejected as a duplicate); nothing is half-written."""
    req = UploadRequest(
        path=Path(payload.path),
        kind=payload.kind,
        name=payload.name,
        language=payload.language,
        version=payload.version,
        labels=payload.labels,
        edition=payload.edition,
        requested_by=payload.requested_by,
        job_id=job.id,
    )
    settings = get_settings()
    try:
        # Short transactions of its own: none is open while the upload is unpacked.
        return accept_upload(session_scope, settings, req, guards=upload_guards(settings)).as_dict()
    except UploadRejected as exc:
        with session_scope() as session:
            audit.record(
                session,
                actor=payload.requested_by,
                action="upload.rejected",
                target=f"{payload.name}/{payload.language}",
                job_id=job.id,
                details={"path": payload.path, "kind": payload.kind, "problems": exc.problems},
            )
        raise

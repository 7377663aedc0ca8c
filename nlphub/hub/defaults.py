"""The default embeddings every installation starts with (glove_100d, bert_base_cased,
tfhub_use): requested once, at `nlphub up`, when a hub is reachable."""

from __future__ import annotations

import logging

from sqlmodel import col, select

from nlphub.errors import NlphubError
from nlphub.hub.service import request_download
from schemas.db import session_scope
from schemas.models import Resource, ResourceSource
from schemas.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_EMBEDDINGS = ("glove_100d", "bert_base_cased", "tfhub_use")


def ensure_defaults(settings: Settings, *, actor: str = "nlphub up") -> list[str]:
    """Queue the default embeddings that were never requested; one line per outcome.
    Idempotent: a default with any resource row (queued, installed, failed, …) is left alone."""
    notes = []
    for name in DEFAULT_EMBEDDINGS:
        with session_scope() as session:
            known = session.exec(
                select(Resource.id).where(
                    Resource.name == name,
                    Resource.language == "en",
                    col(Resource.state) != "deleted",
                )
            ).first()
            if known is not None:
                continue
            try:
                req = request_download(
                    session,
                    settings,
                    name=name,
                    language="en",
                    requested_by=actor,
                    source=ResourceSource.DEFAULT,
                )
            except NlphubError as exc:
                notes.append(f"default {name} not queued: {exc}")
                continue
            notes.append(f"default {name} {req.entry.lib_version} queued (job {req.job_id})")
    return notes

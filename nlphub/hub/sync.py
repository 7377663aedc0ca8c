"""Reading the configured hubs into the catalog table."""

from __future__ import annotations

from typing import Any

from nlphub.errors import TemporaryError
from nlphub.hub import service
from nlphub.hub.catalog import folders_from_settings, read_catalog
from schemas.db import session_scope
from schemas.settings import get_settings


def sync_hubs(actor: str, *, ttl: float = 0.0) -> dict[str, Any]:
    """Read every configured hub folder into the catalog table. With the default `ttl` of 0
    every folder is revalidated (a conditional request: 304 when unchanged); a folder that
    fails keeps its last synced catalog."""
    settings = get_settings()
    folders = folders_from_settings(settings)
    result = read_catalog(
        folders, settings.home / "cache" / "hub", ttl=ttl, timeout=settings.hub_timeout
    )
    by_folder: dict[str, list[Any]] = {f.url: [] for f in folders}
    for entry in result.entries:
        by_folder.setdefault(result.folder_url(entry), []).append(entry)
    readable = {
        url: entries for url, entries in by_folder.items() if result.sources.get(url) != "failed"
    }
    with session_scope() as session:
        counts = service.sync_catalog(
            session, readable, actor=actor, errors=result.errors, warnings=result.warnings
        )
    if result.errors and not readable:
        raise TemporaryError("; ".join(result.errors))
    return {
        "entries": counts,
        "warnings": result.warnings[:100],
        "errors": result.errors,
        "sources": result.sources,
    }

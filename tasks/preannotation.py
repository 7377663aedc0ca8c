"""Pre-annotation redeploy task (run by beat). Thin: the logic is in preannotation/."""

from __future__ import annotations

from typing import Any

from nlphub.preannotation.service import run_redeploys
from schemas.db import session_scope
from schemas.payloads import RedeployPayload
from schemas.settings import get_settings
from tasks.base import JobContext, nlphub_task


@nlphub_task("nlphub.redeploy_preannotation")
def redeploy_preannotation(job: JobContext, payload: RedeployPayload) -> dict[str, Any]:
    """Call each pre-annotation server with pending changes older than the debounce window,
    once for all of them; failures stay pending with their error. Side effects: HTTP calls to
    the servers, redeploy rows, audit events. Safe to run twice (a done redeploy is not
    repeated; concurrent runs skip the server another run is calling)."""
    debounce = (
        payload.debounce
        if payload.debounce is not None
        else get_settings().redeploy_debounce_seconds
    )
    return {
        "redeploys": run_redeploys(session_scope, debounce=debounce, actor=payload.requested_by)
    }

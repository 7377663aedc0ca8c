"""Rules tasks. Thin: the logic is in nlphub/rules/service.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nlphub.rules import service
from schemas.db import session_scope
from schemas.payloads import (
    RuleNamePayload,
    RuleSavePayload,
    RulesExportPayload,
    RulesImportPayload,
)
from tasks.base import JobContext, nlphub_task


@nlphub_task("nlphub.rules_import")
def rules_import(job: JobContext, payload: RulesImportPayload) -> dict[str, Any]:
    """Import a JSON file, JSON content or a ZIP of JSON files, all or nothing; every problem
    is named with its file and field. Side effects: rule rows, pending redeploys, audit events.
    Safe to run twice (the second run reports the names as existing, unless `replace`)."""
    if payload.path is not None:
        path = Path(payload.path)
        data, filename = path.read_bytes(), path.name
    else:
        data, filename = (payload.content or "").encode(), "content.json"
    with session_scope() as session:
        return service.import_rules(
            session, data, filename=filename, actor=payload.requested_by, replace=payload.replace
        ).as_dict()


@nlphub_task("nlphub.rule_save")
def rule_save(job: JobContext, payload: RuleSavePayload) -> dict[str, Any]:
    """Create or edit a rule (version + 1 on edit). Side effects: the rule row, pending
    redeploys of the servers using it, audit events. Running twice edits twice (version)."""
    with session_scope() as session:
        return service.save_rule(session, payload.rule, actor=payload.requested_by).as_dict()


@nlphub_task("nlphub.rule_delete")
def rule_delete(job: JobContext, payload: RuleNamePayload) -> dict[str, Any]:
    """Delete a rule. Side effects: the row, pending redeploys, an audit event. Running it twice
    fails the second time with a clear message (rule not found)."""
    with session_scope() as session:
        return service.delete_rule(session, payload.name, actor=payload.requested_by).as_dict()


@nlphub_task("nlphub.rules_export")
def rules_export(job: JobContext, payload: RulesExportPayload) -> dict[str, Any]:
    """Write a ZIP with one JSON per rule to `path` (atomically). Side effects: that file.
    Safe to run twice (same bytes)."""
    with session_scope() as session:
        data = service.export(session, payload.names)
    target = Path(payload.path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return {"path": str(target), "bytes": len(data)}

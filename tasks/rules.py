"""Rules tasks. Thin: the logic is in nlphub/rules/service.py."""

from __future__ import annotations

from typing import Any

from nlphub.paths import export_roots, incoming_roots
from nlphub.rules import service
from schemas.db import session_scope
from schemas.payloads import (
    RuleNamePayload,
    RuleSavePayload,
    RulesExportPayload,
    RulesImportPayload,
)
from schemas.settings import get_settings
from tasks.base import JobContext, nlphub_task


@nlphub_task("nlphub.rules_import")
def rules_import(job: JobContext, payload: RulesImportPayload) -> dict[str, Any]:
    """Import a JSON file (in NLPHUB_INCOMING_ROOTS, no symbolic links, at most the import
    limit), JSON content or a ZIP of JSON files, all or nothing; every problem is named with its
    file and field. Side effects: rule rows, pending redeploys, audit events. Safe to run twice
    (the second run reports the names as existing, unless `replace`)."""
    by, replace = payload.requested_by, payload.replace
    with session_scope() as session:
        if payload.path is not None:
            roots = incoming_roots(get_settings())
            change = service.import_rules_file(
                session, payload.path, roots=roots, actor=by, replace=replace
            )
        else:
            data = (payload.content or "").encode()
            change = service.import_rules(
                session, data, filename="content.json", actor=by, replace=replace
            )
        return change.as_dict()


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
    """Write a ZIP with one JSON per rule to `path`, in NLPHUB_EXPORT_ROOTS (atomically, through
    no symbolic link). Side effects: that file. Safe to run twice (same bytes)."""
    roots = export_roots(get_settings())
    size = service.export_to_file(session_scope, payload.path, roots=roots, names=payload.names)
    return {"path": payload.path, "bytes": size}

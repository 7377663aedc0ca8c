"""Rules in Postgres: create, edit, delete, import (all-or-nothing) and export.

Every change records a pending redeploy for the pre-annotation servers that use the rule
("Redeploy preannotation server to apply these changes").

Files named by callers (`import_rules_file`, `export_to_file`) are confined to the configured
roots by `nlphub.paths`: read from ``NLPHUB_INCOMING_ROOTS`` (at most the import limit, checked
before reading), written into ``NLPHUB_EXPORT_ROOTS`` (atomically, through no symbolic link).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from nlphub import audit
from nlphub.errors import NotFound
from nlphub.paths import Roots, read_confined, write_confined
from nlphub.preannotation.service import REDEPLOY_MESSAGE, request_redeploys
from nlphub.resources import SessionFactory
from nlphub.rules.io import DEFAULT_LIMITS, export_rules, load_rules
from nlphub.rules.model import RuleError, RuleSpec, validate_rule
from schemas.models import Rule, utcnow

OPTION_FIELDS = ("match_scope", "rule_scope", "case_sensitive", "complete_match_regex")


def spec_of(row: Rule) -> RuleSpec:
    return RuleSpec.model_validate(
        {
            "name": row.name,
            "type": row.type,
            "entity": row.entity,
            "regex": row.regex,
            "dictionary": row.dictionary,
            "description": row.description,
            "version": row.version,
            **{k: v for k, v in row.options.items() if k in OPTION_FIELDS},
        }
    )


def _apply(row: Rule, spec: RuleSpec) -> None:
    row.name, row.type, row.entity = spec.name, spec.type, spec.entity
    row.regex, row.dictionary, row.description = spec.regex, spec.dictionary, spec.description
    row.options = {k: getattr(spec, k) for k in OPTION_FIELDS}
    row.version = spec.version
    row.updated_at = utcnow()


@dataclass
class RuleChange:
    rules: list[str]
    servers: list[str] = field(default_factory=list)

    @property
    def message(self) -> str | None:
        return REDEPLOY_MESSAGE if self.servers else None

    def as_dict(self) -> dict[str, Any]:
        return {"rules": self.rules, "servers_to_redeploy": self.servers, "message": self.message}


def _changed(session: Session, names: list[str], *, actor: str, action: str) -> RuleChange:
    servers = request_redeploys(
        session, rules=names, reason=f"{action}: {', '.join(names)}", actor=actor
    )
    return RuleChange(names, servers)


def list_rules(session: Session, names: Iterable[str] | None = None) -> list[Rule]:
    query = select(Rule).order_by(col(Rule.name))
    if names is not None:
        query = query.where(col(Rule.name).in_(list(names)))
    return list(session.exec(query).all())


def get_rule(session: Session, name: str, *, lock: bool = False) -> Rule:
    query = select(Rule).where(Rule.name == name)
    row = session.exec(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFound(f"rule {name!r} not found")
    return row


def save_rule(
    session: Session, data: dict[str, Any], *, actor: str, source: str = "rule"
) -> RuleChange:
    """Create a rule, or edit the one with that name (its version goes up by one)."""
    existing = session.exec(
        select(Rule).where(Rule.name == data.get("name")).with_for_update()
    ).first()
    if existing is not None:
        merged = {**spec_of(existing).model_dump(), **data, "version": existing.version + 1}
        spec = validate_rule(merged, source=source)
        _apply(existing, spec)
        session.add(existing)
        action = "rule.edited"
    else:
        spec = validate_rule(data, source=source)
        row = Rule(name=spec.name, type=spec.type, entity=spec.entity)
        _apply(row, spec)
        session.add(row)
        action = "rule.created"
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=action,
        target=spec.name,
        details={"type": spec.type, "entity": spec.entity, "version": spec.version},
    )
    return _changed(session, [spec.name], actor=actor, action=action)


def delete_rule(session: Session, name: str, *, actor: str) -> RuleChange:
    row = get_rule(session, name, lock=True)
    session.delete(row)
    session.flush()
    audit.record(
        session, actor=actor, action="rule.deleted", target=name, details={"version": row.version}
    )
    return _changed(session, [name], actor=actor, action="rule.deleted")


def import_rules(
    session: Session, data: bytes, *, filename: str, actor: str, replace: bool = False
) -> RuleChange:
    """All or nothing: every rule is valid and new (or `replace`), or nothing is written."""
    specs = load_rules(data, filename=filename)
    existing = {r.name: r for r in list_rules(session, [s.name for s in specs])}
    if existing and not replace:
        raise RuleError(
            [
                f"{filename}: name: {name!r} already exists (import with replace to overwrite it)"
                for name in sorted(existing)
            ]
        )
    for spec in specs:
        row = existing.get(spec.name)
        if row is None:
            row = Rule(name=spec.name, type=spec.type, entity=spec.entity)
            _apply(row, spec)
        else:
            _apply(row, spec.model_copy(update={"version": row.version + 1}))
        session.add(row)
    session.flush()
    names = [s.name for s in specs]
    audit.record(
        session,
        actor=actor,
        action="rule.imported",
        target=filename,
        details={"rules": names, "replaced": sorted(existing)},
    )
    return _changed(session, names, actor=actor, action="rule.imported")


def import_rules_file(
    session: Session, path: str, *, roots: Roots, actor: str, replace: bool = False
) -> RuleChange:
    """`import_rules` from the file at `path`, a regular file inside `roots` reached through no
    symbolic link, refused (`nlphub.paths.PathRefused`) above the import size limit before
    anything is read."""
    data, filename = read_confined(path, roots, max_bytes=DEFAULT_LIMITS.max_input_bytes)
    return import_rules(session, data, filename=filename, actor=actor, replace=replace)


def export_to_file(
    session_factory: SessionFactory, path: str, *, roots: Roots, names: list[str] | None = None
) -> int:
    """Write `export` to `path` inside `roots` (`nlphub.paths.write_confined`); its size. The
    rules are read in a short transaction from `session_factory` (`schemas.db.session_scope`),
    closed before the file is written and synced: no transaction waits on the disk."""
    with session_factory() as session:
        data = export(session, names)
    write_confined(path, roots, data)
    return len(data)


def export(session: Session, names: list[str] | None = None) -> bytes:
    rows = list_rules(session, names)
    if names:
        missing = sorted(set(names) - {r.name for r in rows})
        if missing:
            raise NotFound(f"rules not found: {', '.join(missing)}")
    return export_rules([spec_of(r) for r in rows])

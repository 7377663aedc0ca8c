"""`nlphub rules`: pre-annotation rules (regex / dictionary)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from schemas.settings import SettingsError
from workers.cli.common import clear_errors, console, err, needs_database

app = typer.Typer(help="Pre-annotation rules (regex / dictionary).", no_args_is_help=True)


def _rule_change(change: Any) -> None:
    console.print(f"rules: {', '.join(change.rules)}")
    if change.servers:
        console.print(f"[yellow]{change.message}[/yellow]: {', '.join(change.servers)}")


@app.command("list")
@clear_errors
@needs_database
def rules_list() -> None:
    """Every rule, with type, entity and version."""
    from nlphub.rules.service import list_rules
    from schemas.db import session_scope

    with session_scope() as session:
        rows = list_rules(session)
        table = Table("name", "type", "entity", "version", "size", "updated")
        for r in rows:
            size = (
                f"{len(r.dictionary or [])} entries"
                if r.type == "dictionary"
                else (r.regex or "")[:40]
            )
            table.add_row(
                r.name,
                r.type,
                r.entity,
                str(r.version),
                size,
                r.updated_at.strftime("%Y-%m-%d %H:%M"),
            )
    console.print(table)


@app.command("add")
@clear_errors
@needs_database
def rules_add(
    name: str = typer.Option(...),
    entity: str = typer.Option(..., help="The label hits get, e.g. HEIGHT."),
    regex: str | None = typer.Option(None, help="A regex rule's pattern."),
    dictionary_csv: str | None = typer.Option(None, help="A dictionary rule's CSV file."),
    description: str = typer.Option(""),
) -> None:
    """Create a rule, or edit the one with this name (its version goes up)."""
    from pathlib import Path

    from nlphub.rules.model import RuleError, parse_dictionary_csv
    from nlphub.rules.service import save_rule
    from schemas.db import session_scope

    data: dict[str, Any] = {"name": name, "entity": entity, "description": description}
    if regex is not None:
        data.update(type="regex", regex=regex)
    if dictionary_csv is not None:
        path = Path(dictionary_csv)
        data.update(
            type="dictionary",
            dictionary=parse_dictionary_csv(path.read_text(encoding="utf-8-sig"), source=path.name),
        )
    try:
        with session_scope() as session:
            _rule_change(save_rule(session, data, actor="cli", source="rule"))
    except RuleError as exc:
        raise SettingsError(str(exc).replace("\n", "; ")) from None


@app.command("delete")
@clear_errors
@needs_database
def rules_delete(name: str) -> None:
    """Delete a rule."""
    from nlphub.rules.service import delete_rule
    from schemas.db import session_scope

    with session_scope() as session:
        _rule_change(delete_rule(session, name, actor="cli"))


@app.command("import")
@clear_errors
@needs_database
def rules_import(
    file: str, replace: bool = typer.Option(False, help="Overwrite rules with the same name.")
) -> None:
    """Import a JSON file or a ZIP of JSON files: all rules or none."""
    from pathlib import Path

    from nlphub.rules.model import RuleError
    from nlphub.rules.service import import_rules
    from schemas.db import session_scope

    path = Path(file)
    try:
        with session_scope() as session:
            _rule_change(
                import_rules(
                    session, path.read_bytes(), filename=path.name, actor="cli", replace=replace
                )
            )
    except RuleError as exc:
        err.print(f"[red]import refused, nothing was imported:[/red]\n{exc}")
        raise typer.Exit(2) from None


@app.command("export")
@clear_errors
@needs_database
def rules_export(
    out: str = typer.Option(..., "--out", help="ZIP file to write."),
    names: list[str] = typer.Argument(None, help="Rules to export (default: all)."),
) -> None:
    """Export rules as a ZIP with one JSON per rule (it imports back unchanged)."""
    from pathlib import Path

    from nlphub.rules.service import export
    from schemas.db import session_scope

    with session_scope() as session:
        data = export(session, names or None)
    Path(out).write_bytes(data)
    console.print(f"wrote {out} ({len(data)} bytes)")

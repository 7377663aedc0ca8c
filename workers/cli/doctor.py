"""`nlphub doctor`: check the whole installation, one line per part, and say what to fix.

No readiness checks are declared (`common.requires`): a database that is down or not migrated
is one of the doctor's findings, not a reason to refuse to run."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from workers.cli.common import console

#: Top-level commands (the root app takes them over in its own order).
app = typer.Typer()

_MARK = {"ok": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]"}
_MARK_SKIP = "[dim]-[/dim]"


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="One JSON document, for machines."),
    deep: bool = typer.Option(False, help="Also start Spark to load the Spark NLP jar (slow)."),
    skip: list[str] = typer.Option(
        [], "--skip", help="A check not to run (repeatable): e.g. --skip flower."
    ),
    timeout: float = typer.Option(
        5.0, min=0.5, max=600, help="Seconds each check may take (the audit walk: six times)."
    ),
    min_free: str = typer.Option(
        "1GiB", help="Least free space on the resources volume (e.g. 500MiB, 10GiB)."
    ),
    licence_days: int = typer.Option(
        30, min=0, help="Warn when the licence expires within this many days."
    ),
) -> None:
    """Check the installation: database, broker, workers per queue, beat, Flower, disk, Spark
    NLP, licence, hubs, audit chain. Exit 0 only when no check fails."""
    from nlphub.doctor import CHECK_NAMES, Context, Status, diagnose, exit_code
    from nlphub.doctor import summary as count
    from nlphub.doctor.core import fail
    from nlphub.doctor.core import skip as skipped  # `skip` is an option here
    from nlphub.doctor.storage import parse_size
    from schemas.settings import SettingsError, get_settings

    try:
        minimum = parse_size(min_free)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--min-free") from None
    try:
        settings = get_settings()
    except SettingsError as exc:
        findings = [
            fail("settings", str(exc), "correct that setting"),
            *(skipped(name, "not checked: the settings are invalid") for name in CHECK_NAMES),
        ]
    else:
        ctx = Context(
            settings,
            timeout=timeout,
            deep=deep,
            min_free=minimum,
            licence_days=licence_days,
        )
        try:
            findings = diagnose(ctx, skip=skip)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--skip") from None
    code = exit_code(findings)
    counts = count(findings)
    if as_json:
        doc = {"ok": code == 0, "summary": counts, "checks": [f.as_dict() for f in findings]}
        typer.echo(json.dumps(doc, indent=2))
        raise typer.Exit(code)
    for f in findings:
        mark = _MARK.get(f.status.value, _MARK_SKIP)
        line = f"{mark} [bold]{escape(f.name)}[/bold]: {escape(f.summary)}"
        if f.fix and f.status in (Status.FAIL, Status.WARN):
            line += f" [dim]→ fix:[/dim] {escape(f.fix)}"
        console.print(line, highlight=False, soft_wrap=True, markup=True)
    verdict = "[green]all checks pass[/green]" if code == 0 else "[red]FAILED[/red]"
    warnings = f"{counts['warn']} warning{'' if counts['warn'] == 1 else 's'}"
    console.print(
        f"doctor: {verdict} ({counts['ok']} ok, {warnings}, {counts['fail']} failed, "
        f"{counts['skip']} skipped)",
        highlight=False,
    )
    raise typer.Exit(code)

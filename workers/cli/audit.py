"""`nlphub audit`: the append-only audit log."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from workers.cli.common import clear_errors, console, err, needs_database

app = typer.Typer(help="The append-only audit log.", invoke_without_command=True)


@app.callback()
@clear_errors
@needs_database
def audit_list(
    ctx: typer.Context,
    limit: int = typer.Option(30, min=1, max=10000),
    action: str | None = typer.Option(None),
) -> None:
    """Show the latest audit events."""
    if ctx.invoked_subcommand is not None:
        return
    from sqlmodel import Session

    from nlphub.audit import latest_events
    from schemas.db import get_engine

    with Session(get_engine()) as session:
        rows = latest_events(session, limit=limit, action=action)
    table = Table("seq", "at", "actor", "action", "target", "details")
    for ev in reversed(rows):
        table.add_row(
            str(ev.seq),
            ev.at.strftime("%Y-%m-%d %H:%M:%S"),
            ev.actor,
            ev.action,
            ev.target or "",
            json.dumps(ev.details)[:80],
        )
    console.print(table)


@app.command("anchor")
@clear_errors
@needs_database
def audit_anchor() -> None:
    """Append the chain's head (seq, hash, time) to the anchor file, outside the database."""
    from sqlmodel import Session

    from nlphub.anchors import ANCHOR_FILE, anchor_dir, write_anchor
    from schemas.db import get_engine

    with Session(get_engine()) as session:
        anchor = write_anchor(session)
    if anchor is None:
        console.print("the audit log is empty: nothing to anchor")
        return
    console.print(
        f"audit chain anchored: event {anchor.seq} ({anchor.hash}) in {anchor_dir() / ANCHOR_FILE}"
    )


@app.command("verify")
@clear_errors
@needs_database
def audit_verify() -> None:
    """Check the hash chain, and the log against the anchors written outside the database
    (truncation, rewrite); report what is wrong (exit 1). The outcome is recorded (metrics)."""
    from nlphub.anchors import ANCHOR_FILE, anchor_dir, verify_log

    outcome = verify_log(actor="cli")
    report, anchors = outcome.chain, outcome.anchors
    for warning in anchors.warnings:
        err.print(f"audit anchors: {warning}")
    if report.ok:
        console.print(f"audit chain OK: {report.checked} events verified")
    else:
        err.print(
            f"audit chain BROKEN at event {report.broken_at}: {report.reason} "
            f"({report.checked} events before it verified)"
        )
    for problem in anchors.problems:
        err.print(f"audit chain {problem}")
    if anchors.anchors == 0:
        console.print(
            f"no anchor in {anchor_dir() / ANCHOR_FILE} yet: deleting the newest events or "
            "rewriting the whole chain cannot be seen (`nlphub audit anchor`)"
        )
    elif anchors.ok:
        console.print(f"audit anchors OK: {anchors.anchors} anchors match the log")
    if not report.ok or not anchors.ok:
        raise typer.Exit(1)

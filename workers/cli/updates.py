"""`nlphub updates`: update notices (newer compatible versions)."""

from __future__ import annotations

import typer
from rich.table import Table

from workers.cli.common import clear_errors, console, enqueue_and_maybe_wait, human, needs_database

app = typer.Typer(help="Update notices (newer compatible versions).", invoke_without_command=True)


@app.callback()
@clear_errors
@needs_database
def updates_list(ctx: typer.Context, show_all: bool = typer.Option(False, "--all")) -> None:
    """Update notices (pending ones; --all for every decision)."""
    if ctx.invoked_subcommand is not None:
        return
    from sqlmodel import Session

    from nlphub.hub.updates import list_notices
    from schemas.db import get_engine

    with Session(get_engine()) as session:
        rows = list_notices(session, pending_only=not show_all)
    table = Table("id", "resource", "current", "new", "size", "edition", "found", "state", "by")
    for n in rows:
        table.add_row(
            str(n.id),
            f"{n.name} ({n.language})",
            n.current_version,
            n.new_version,
            human(n.size_bytes),
            n.edition,
            n.found_at.strftime("%Y-%m-%d %H:%M"),
            n.state,
            n.decided_by or "",
        )
    console.print(table)
    if not rows:
        console.print("no pending updates" if not show_all else "no update notices")


@app.command("check")
@clear_errors
@needs_database
def updates_check(wait: bool = typer.Option(True)) -> None:
    """Check the hubs for newer compatible versions now."""
    enqueue_and_maybe_wait("nlphub.check_updates", {"reason": "manual"}, wait, 600)


@app.command("apply")
@clear_errors
@needs_database
def updates_apply(
    notice_id: str,
    by: str = typer.Option(..., "--by", help="Who confirms the update (recorded)."),
    wait: bool = typer.Option(False),
) -> None:
    """Confirm an update: download the new version (the old one stays in use until then)."""
    enqueue_and_maybe_wait(
        "nlphub.apply_update", {"notice_id": notice_id, "confirmed_by": by}, wait, 600
    )


@app.command("dismiss")
@clear_errors
@needs_database
def updates_dismiss(notice_id: str, by: str = typer.Option(..., "--by")) -> None:
    """Dismiss an update notice (recorded with who dismissed it)."""
    enqueue_and_maybe_wait(
        "nlphub.dismiss_update", {"notice_id": notice_id, "confirmed_by": by}, True, 120
    )

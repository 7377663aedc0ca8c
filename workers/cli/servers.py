"""Pre-annotation servers: `nlphub servers set|list` and `redeploys`."""

from __future__ import annotations

import typer
from rich.table import Table

from workers.cli.common import clear_errors, console, needs_database

#: Top-level commands (the root app takes them over in its own order).
app = typer.Typer()
#: `nlphub servers …`
servers_app = typer.Typer(help="Pre-annotation servers.", no_args_is_help=True)


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@servers_app.command("set")
@clear_errors
@needs_database
def servers_set(
    name: str,
    url: str,
    models: str = typer.Option("", help="Comma-separated model names (at most 5)."),
    rules: str = typer.Option("", help="Comma-separated rule names."),
) -> None:
    """Add or change a pre-annotation server (refuses > 5 models or mixed embeddings)."""
    from nlphub.preannotation.service import set_server
    from schemas.db import session_scope

    with session_scope() as session:
        server = set_server(
            session, name=name, url=url, models=_split(models), rules=_split(rules), actor="cli"
        )
        console.print(
            f"server {server.name}: {server.url} models={server.models} rules={server.rules}"
        )


@servers_app.command("list")
@clear_errors
@needs_database
def servers_list() -> None:
    """Configured pre-annotation servers."""
    from sqlmodel import Session

    from nlphub.preannotation.service import list_servers
    from schemas.db import get_engine

    with Session(get_engine()) as session:
        rows = list_servers(session)
    table = Table("name", "url", "models", "rules")
    for r in rows:
        table.add_row(r.name, r.url, ", ".join(r.models), ", ".join(r.rules))
    console.print(table)


@app.command()
@clear_errors
@needs_database
def redeploys(show_all: bool = typer.Option(False, "--all")) -> None:
    """Pending (and failed) pre-annotation redeploys; --all includes the done ones."""
    from sqlmodel import Session

    from nlphub.preannotation.service import list_redeploys
    from schemas.db import get_engine

    with Session(get_engine()) as session:
        rows = list_redeploys(session, pending_only=not show_all)
    table = Table("server", "state", "changes", "attempts", "last error", "requested")
    for red, server in rows:
        table.add_row(
            server.name,
            red.state,
            str(len(red.reasons)),
            str(red.attempts),
            red.last_error or "",
            red.requested_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)

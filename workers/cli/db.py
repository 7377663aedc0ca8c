"""`nlphub db`: the database schema (Alembic)."""

from __future__ import annotations

import typer

from workers.cli.common import clear_errors, console, settings, setup_logging

app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)


@app.command("upgrade")
@clear_errors
def db_upgrade() -> None:
    """Migrate the database to the revision this code needs."""
    from schemas.db import upgrade

    setup_logging()
    url = settings().require_database_url()
    console.print(f"database at revision {upgrade(url)}")


@app.command("current")
@clear_errors
def db_current() -> None:
    """Show the database's revision and the one this code needs."""
    from schemas.db import current_revision, head_revision

    console.print(f"current: {current_revision()}  head: {head_revision()}")

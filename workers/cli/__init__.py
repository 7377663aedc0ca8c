"""The `nlphub` command line: the root app, made of one module per command group.

`common` holds what they share (consoles, `clear_errors`, the readiness checks a command
declares with `requires` / `needs_database`, human sizes, following a job). Queries live in
the domain modules that own them (`nlphub.jobstate` for the `job` table).
"""

from __future__ import annotations

import sys

import typer

from schemas.settings import SettingsError
from workers.cli import (
    audit,
    db,
    doctor,
    embeddings,
    hub,
    jobs,
    logs,
    metrics,
    resources,
    rules,
    servers,
    stack,
    updates,
)
from workers.cli.common import err

app = typer.Typer(help="nlphub: workers that keep NLP resources in order.", no_args_is_help=True)

#: The top-level commands, in the order `nlphub --help` lists them.
TOP_LEVEL = (
    "up",
    "worker",
    "beat",
    "flower",
    "logs",
    "status",
    "doctor",
    "jobs",
    "enqueue",
    "inventory",
    "delete",
    "tasks",
    "search",
    "download",
    "redownload",
    "upload",
    "deps",
    "disk",
    "resources",
    "redeploys",
    "similar",
)

#: The command groups, in the order `nlphub --help` lists them (after the commands).
GROUPS = (
    ("db", db.app),
    ("audit", audit.app),
    ("metrics", metrics.app),
    ("hub", hub.hub_app),
    ("updates", updates.app),
    ("servers", servers.servers_app),
    ("rules", rules.app),
    ("records", embeddings.records_app),
    ("embeddings", embeddings.emb_app),
    ("models", embeddings.models_app),
)


def _top_level_commands() -> None:
    owners = (
        stack.app,
        logs.app,
        jobs.app,
        doctor.app,
        resources.app,
        hub.app,
        servers.app,
        embeddings.app,
    )
    by_name = {
        info.name or info.callback.__name__: info
        for owner in owners
        for info in owner.registered_commands
        if info.callback is not None
    }
    if set(by_name) != set(TOP_LEVEL):
        raise RuntimeError(f"TOP_LEVEL and the command modules disagree: {sorted(by_name)}")
    app.registered_commands.extend(by_name[name] for name in TOP_LEVEL)


_top_level_commands()
for _name, _group in GROUPS:
    app.add_typer(_group, name=_name)


def main() -> None:
    try:
        app()
    except SettingsError as exc:  # raised while typer parses (e.g. settings read eagerly)
        err.print(f"error: {exc}")
        sys.exit(2)

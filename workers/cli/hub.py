"""The hub: `search`, `download`, `redownload`, `deps`, and `nlphub hub sync|serve|demo`."""

from __future__ import annotations

import typer
from rich.table import Table

from schemas.settings import SettingsError
from workers.cli.common import (
    clear_errors,
    console,
    enqueue_and_maybe_wait,
    err,
    human,
    needs_database,
    settings,
    setup_logging,
    wait_for,
)

#: Top-level commands (the root app takes them over in its own order).
app = typer.Typer()
#: `nlphub hub …`
hub_app = typer.Typer(help="Models Hub mirrors and catalog.", no_args_is_help=True)

SEARCH_COLUMNS = (
    "name",
    "lang",
    "kind",
    "type",
    "edition",
    "version",
    "spark",
    "size",
    "date",
    "compatible",
    "installed",
)


@app.command()
@clear_errors
@needs_database
def search(
    name: str | None = typer.Argument(None, help="Part of the name."),
    edition: str | None = typer.Option(None, help="Open Source, Healthcare NLP, …"),
    kind: str | None = typer.Option(None, help="model, embeddings or pipeline"),
    embedding_type: str | None = typer.Option(None, "--type", help="word, sentence, document"),
    language: str | None = typer.Option(None, "--language", "-l"),
    version: str | None = typer.Option(None, help="Version spec, e.g. '>=5.0,<6'"),
    compatible: bool = typer.Option(False, help="Only what the installed libraries can use."),
    sync: bool = typer.Option(False, help="Read the hubs first (`nlphub hub sync`)."),
    limit: int = typer.Option(50, min=1, max=5000),
) -> None:
    """Search the hub catalog (synced into Postgres)."""
    from sqlmodel import Session

    from nlphub.hub.service import Installed
    from nlphub.hub.service import search as do_search
    from schemas.db import get_engine

    if sync:
        _sync_now()
    with Session(get_engine()) as session:
        hits = do_search(
            session,
            Installed.from_settings(settings()),
            name=name,
            edition=edition,
            kind=kind,
            embedding_type=embedding_type,
            language=language,
            version=version,
            compatible_only=compatible,
            limit=limit,
        )
    table = Table(*SEARCH_COLUMNS)
    for hit in hits:
        e = hit.entry
        table.add_row(
            e.name,
            e.language,
            e.kind.value,
            e.embedding_type or "",
            e.edition,
            e.lib_version or "",
            e.spark_version or "",
            human(e.size_bytes),
            e.time.strftime("%Y-%m-%d"),
            "yes" if hit.compatible else "no",
            "yes" if hit.installed else "",
        )
    console.print(table)
    if not hits:
        err.print("nothing found (run `nlphub hub sync` to read the hubs first)")


def _sync_now() -> None:
    from nlphub.hub.sync import sync_hubs

    out = sync_hubs("cli")
    for problem in out["errors"]:
        err.print(f"[yellow]warning:[/yellow] {problem}")
    console.print(f"catalog synced: {out['entries']}")


@hub_app.command("sync")
@clear_errors
@needs_database
def hub_sync() -> None:
    """Read every configured hub folder now and store its catalog."""
    _sync_now()


@hub_app.command("serve")
@clear_errors
def hub_serve(
    folder: str = typer.Argument(..., help="Mirror folder (with metadata.json)."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8765),
) -> None:
    """Serve a mirror folder over HTTP (GET, HEAD, Range) for air-gapped sites."""
    from pathlib import Path

    from nlphub.hub.server import serve_forever

    setup_logging()
    path = Path(folder)
    if not (path / "metadata.json").is_file():
        raise SettingsError(f"{folder} has no metadata.json: not a hub mirror folder")
    console.print(f"serving {path} at http://{host}:{port} (Ctrl-C stops)")
    serve_forever(path, host, port)


@hub_app.command("demo")
@clear_errors
def hub_demo(folder: str = typer.Argument(..., help="Where to write the demo mirror.")) -> None:
    """Write the small demo mirror (generated data, clearly not real models)."""
    from pathlib import Path

    from nlphub.hub.mirror import build_demo_mirror

    console.print(f"demo mirror written to {build_demo_mirror(Path(folder))}")


def _download(
    name: str, language: str, version: str | None, redownload: bool, wait: bool, timeout: float
) -> None:
    from sqlmodel import Session

    from nlphub.hub.service import request_download
    from schemas.db import get_engine

    with Session(get_engine(), expire_on_commit=False) as session:
        req = request_download(
            session,
            settings(),
            name=name,
            language=language,
            version=version,
            requested_by="cli",
            redownload=redownload,
        )
        session.commit()
    e = req.entry
    note = "" if req.created else " (already queued: following that job)"
    console.print(
        f"job {req.job_id}: {e.name} ({e.language}) {e.lib_version} from {e.edition}, "
        f"{human(e.size_bytes)}{note}"
    )
    if wait:
        raise typer.Exit(wait_for(req.job_id, timeout))


@app.command()
@clear_errors
@needs_database
def download(
    name: str,
    language: str = typer.Option("en", "--language", "-l"),
    version: str | None = typer.Option(
        None, help="Exact version or spec; default: newest compatible."
    ),
    wait: bool = typer.Option(False, help="Show a progress bar until it is installed."),
    timeout: float = typer.Option(24 * 3600.0),
) -> None:
    """Download a resource from the hub (and, after install, its dependencies)."""
    _download(name, language, version, False, wait, timeout)


@app.command()
@clear_errors
@needs_database
def redownload(
    name: str,
    language: str = typer.Option("en", "--language", "-l"),
    version: str | None = typer.Option(None),
    wait: bool = typer.Option(False),
    timeout: float = typer.Option(24 * 3600.0),
) -> None:
    """Download a resource again (a failed one, or to replace installed files)."""
    _download(name, language, version, True, wait, timeout)


@app.command()
@clear_errors
@needs_database
def deps(
    name: str,
    language: str = typer.Option("en", "--language", "-l"),
    wait: bool = typer.Option(True),
) -> None:
    """Download the missing dependencies (embeddings) of an installed or uploaded model."""
    from sqlmodel import Session

    from nlphub.resources import find_resource
    from schemas.db import get_engine

    with Session(get_engine()) as session:
        res = find_resource(session, name=name, language=language)
    enqueue_and_maybe_wait("nlphub.fetch_dependencies", {"resource_id": str(res.id)}, wait, 3600)

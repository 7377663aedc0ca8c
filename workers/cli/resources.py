"""Installed resources: `inventory`, `delete`, `upload`, `disk`, `resources`."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from workers.cli.common import (
    clear_errors,
    console,
    enqueue_and_maybe_wait,
    human,
    needs_database,
    settings,
)

#: Top-level commands (the root app takes them over in its own order).
app = typer.Typer()


@app.command()
@clear_errors
@needs_database
def inventory(
    wait: bool = typer.Option(True), verify: bool = typer.Option(True, help="Verify checksums.")
) -> None:
    """Reconcile installed resources with NLPHUB_HOME and report disk usage."""
    enqueue_and_maybe_wait("nlphub.inventory", {"verify_checksums": verify}, wait, 3600)


@app.command()
@clear_errors
@needs_database
def delete(
    name: str,
    language: str = typer.Option("en", "--language", "-l"),
    version: str | None = typer.Option(None),
    force: bool = typer.Option(False, help="Delete even if an installed model depends on it."),
    wait: bool = typer.Option(True),
) -> None:
    """Delete a resource's files and mark it deleted (audited)."""
    payload = {"name": name, "language": language, "version": version, "force": force}
    enqueue_and_maybe_wait("nlphub.delete", payload, wait, 600)


@app.command()
@clear_errors
@needs_database
def upload(
    path: str = typer.Argument(
        ..., help="Zip file or folder in NLPHUB_INCOMING_ROOTS (storage the workers share)."
    ),
    kind: str = typer.Option(..., help="model, embeddings or pipeline"),
    name: str = typer.Option(...),
    language: str = typer.Option("en", "--language", "-l"),
    labels: str | None = typer.Option(None, help="Labels an NER model predicts: L1,L2,…"),
    edition: str | None = typer.Option(
        None, help="Always that of the classes' library; one given must match it."
    ),
    version: str | None = typer.Option(None),
    wait: bool = typer.Option(True),
) -> None:
    """Validate a custom Spark NLP model/embeddings/pipeline and install it (source upload)."""
    from pathlib import Path

    payload: dict[str, Any] = {
        "path": str(Path(path).resolve()),
        "kind": kind,
        "name": name,
        "language": language,
        "edition": edition,
        "version": version,
    }
    if labels is not None:
        payload["labels"] = [x.strip() for x in labels.split(",") if x.strip()]
    enqueue_and_maybe_wait("nlphub.validate_upload", payload, wait, 3600)


@app.command()
@clear_errors
@needs_database
def disk() -> None:
    """Bytes per installed resource, their total, and the storage volume's free/total space."""
    from sqlmodel import Session

    from nlphub.resources import disk_usage, present_resources
    from schemas.db import get_engine

    with Session(get_engine()) as session:
        rows = present_resources(session)
    usage = disk_usage(settings().resources_dir, {r.label: r.bytes_on_disk or 0 for r in rows})
    table = Table("resource", "state", "on disk")
    for r in rows:
        table.add_row(r.label, r.state.value, human(r.bytes_on_disk))
    console.print(table)
    console.print(
        f"resources: {human(usage.used_by_resources)}   free: "
        f"{human(usage.free_bytes)} of {human(usage.total_bytes)} "
        f"({settings().resources_dir})"
    )


@app.command()
@clear_errors
@needs_database
def resources(as_json: bool = typer.Option(False, "--json")) -> None:
    """Resources known here (any source), with state and dependencies."""
    from sqlmodel import Session

    from nlphub.resources import list_resources
    from schemas.db import get_engine

    with Session(get_engine()) as session:
        rows = list_resources(session)
    if as_json:
        console.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    table = Table("name", "lang", "version", "kind", "edition", "source", "state", "needs", "error")
    for r in rows:
        table.add_row(
            r.name,
            r.language,
            r.version,
            r.kind.value,
            r.edition,
            r.source.value,
            r.state.value,
            ", ".join(r.dependencies),
            (r.error or "")[:70],
        )
    console.print(table)

"""Records, embeddings and search: `nlphub records|embeddings|models …` and `similar`."""

from __future__ import annotations

import uuid

import typer
from rich.table import Table

from schemas.embedding_platforms import PLATFORMS
from schemas.settings import SettingsError
from workers.cli.common import (
    clear_errors,
    console,
    enqueue_and_maybe_wait,
    needs_database,
    settings,
)

#: Top-level commands (the root app takes them over in its own order).
app = typer.Typer()
records_app = typer.Typer(help="Datasets and their records.", no_args_is_help=True)
emb_app = typer.Typer(help="Embeddings of records' text attributes.", no_args_is_help=True)
models_app = typer.Typer(help="The shared Hugging Face models cache.", no_args_is_help=True)


@records_app.command("import")
@clear_errors
@needs_database
def records_import(
    file: str,
    dataset: str = typer.Option(..., help="Dataset name (created if new)."),
    id_field: str = typer.Option("id", help="Field holding each record's id."),
) -> None:
    """Import records from JSONL, CSV or Parquet (all or nothing; bad rows by line number)."""
    from pathlib import Path

    from nlphub.embeddings.records import import_records
    from schemas.db import session_scope

    with session_scope() as session:
        out = import_records(session, Path(file), dataset=dataset, actor="cli", id_field=id_field)
    console.print(f"{out['records']} records in dataset {out['dataset']}")


@emb_app.command("compute")
@clear_errors
@needs_database
def embeddings_compute(
    dataset: str,
    attribute: str,
    platform: str = typer.Option(..., help=", ".join(PLATFORMS)),
    model: str = typer.Option(..., help="e.g. tfidf, all-MiniLM-L6-v2, text-embedding-3-small"),
    granularity: str = typer.Option("attribute", help="attribute or token"),
    dims: int | None = typer.Option(None, help="PCA dimensions (64 attribute / 16 token)"),
    api_key_ref: str | None = typer.Option(
        None, help="Credential declared in NLPHUB_CREDENTIALS (openai, azure, cohere)."
    ),
    base_url: str | None = typer.Option(
        None, help="Endpoint: one of the credential's base_urls (default: the platform's)."
    ),
    wait: bool = typer.Option(True),
) -> None:
    """Embed a dataset's text attribute (progress bar with --wait)."""
    payload = {
        "dataset": dataset,
        "attribute": attribute,
        "platform": platform,
        "model": model,
        "granularity": granularity,
        "dims": dims,
        "api_key_ref": api_key_ref,
        "base_url": base_url,
    }
    enqueue_and_maybe_wait("nlphub.compute_embeddings", payload, wait, 24 * 3600)


@emb_app.command("list")
@clear_errors
@needs_database
def embeddings_list() -> None:
    """Embeddings with their state and progress."""
    from sqlmodel import Session

    from nlphub.embeddings.service import list_embeddings
    from schemas.db import get_engine

    with Session(get_engine()) as session:
        rows = list_embeddings(session)
    table = Table(
        "id", "dataset", "attribute", "platform", "model", "level", "dims", "state", "progress"
    )
    for emb, ds in rows:
        table.add_row(
            str(emb.id),
            ds.name,
            emb.attribute,
            emb.platform,
            emb.model,
            emb.granularity,
            str(emb.output_dims or emb.target_dims),
            emb.state,
            f"{emb.progress:.0%}",
        )
    console.print(table)


@emb_app.command("delete")
@clear_errors
@needs_database
def embeddings_delete(embedding_id: str) -> None:
    """Delete an embedding (a running computation stops at its next batch)."""
    from nlphub.embeddings.service import delete_embedding
    from schemas.db import session_scope

    with session_scope() as session:
        delete_embedding(session, uuid.UUID(embedding_id), actor="cli")
    console.print(f"embedding {embedding_id} deleted")


@app.command()
@clear_errors
@needs_database
def similar(
    dataset: str,
    record: str | None = typer.Option(None, "--record"),
    text: str | None = typer.Option(None, "--text"),
    k: int = typer.Option(10, "-k", min=1, max=1000),
) -> None:
    """Nearest records by cosine similarity (to a record, or to a query text)."""
    from nlphub.embeddings.search import similar as find

    hits = find(settings(), dataset=dataset, k=k, record=record, query=text)
    table = Table("record", "similarity")
    for hit in hits:
        table.add_row(hit["id"], f"{hit['score']:.4f}")
    console.print(table)


@models_app.command("add")
@clear_errors
def models_add(name: str) -> None:
    """Add a sentence-transformers model to the shared cache (from the bundled copy, or the
    Hugging Face hub when this machine can reach it)."""
    import shutil

    from nlphub.embeddings.platforms import bundled_model_path, models_cache_path

    target = models_cache_path(settings().home / "models", name)
    if target.exists():
        console.print(f"{name} is already in the cache ({target})")
        return
    source = bundled_model_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        shutil.copytree(source, target)
    else:
        from sentence_transformers import SentenceTransformer

        SentenceTransformer(name).save(str(target))
    console.print(f"{name} added to {target}")


@models_app.command("list")
@clear_errors
def models_list() -> None:
    """Models in the shared cache (not the ONNX exports, kept in its ``.onnx`` folder)."""
    root = settings().home / "models"
    names = (
        sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        if root.is_dir()
        else []
    )
    console.print("\n".join(names) or "the models cache is empty")


@models_app.command("remove")
@clear_errors
def models_remove(name: str) -> None:
    """Remove a model from the shared cache, with its ONNX exports (``backend=onnx``)."""
    import shutil

    from nlphub.embeddings.onnx import onnx_model_folder
    from nlphub.embeddings.platforms import models_cache_path

    root = settings().home / "models"
    target = models_cache_path(root, name)
    exports = onnx_model_folder(root, name)
    if not target.exists() and not exports.exists():
        raise SettingsError(f"{name} is not in the models cache")
    for folder in (target, exports):
        if folder.exists():
            shutil.rmtree(folder)
    console.print(f"{name} removed")

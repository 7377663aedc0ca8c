"""Looking at the jobs: `status`, `jobs`, `enqueue`, `tasks`."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from schemas.settings import SettingsError
from workers.cli.common import (
    clear_errors,
    console,
    database,
    enqueue_and_maybe_wait,
    requires,
    settings,
)

#: Top-level commands (the root app takes them over in its own order).
app = typer.Typer()


@app.command()
@clear_errors
def status() -> None:
    """Database revision, workers answering, queue lengths, jobs and resources by state."""
    from sqlmodel import Session

    from nlphub.jobstate import job_counts
    from nlphub.resources import resource_totals
    from schemas.db import current_revision, get_engine, head_revision
    from workers.app import Queue
    from workers.app import app as celery_app

    current = settings()
    engine = get_engine()
    rev = current_revision(engine)
    console.print(f"database: revision {rev} (code needs {head_revision()})")
    with Session(engine) as session:
        jobs = job_counts(session)
        console.print(f"jobs: {json.dumps({str(k): v for k, v in jobs.items()}) or '{}'}")
        console.print(f"resources: {json.dumps(resource_totals(session))}")
    current.require_redis_url()
    with celery_app.connection_for_write() as conn:
        client = conn.default_channel.client
        lengths = {q.value: client.llen(q.value) for q in Queue}
    console.print(f"queues: {json.dumps(lengths)}")
    replies = celery_app.control.inspect(timeout=1.0).ping() or {}
    console.print(f"workers answering: {', '.join(sorted(replies)) or 'none'}")


@app.command()
@clear_errors
@requires(database)
def jobs(
    state: str | None = typer.Option(None, help="Only jobs in this state."),
    limit: int = typer.Option(20, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent jobs with state and progress."""
    from nlphub.jobstate import recent_jobs

    rows = recent_jobs(state, limit)
    if as_json:
        console.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    table = Table("id", "task", "state", "progress", "by", "created", "error")
    for r in rows:
        table.add_row(
            str(r.id)[:8],
            r.task,
            r.state.value,
            f"{r.progress:.0%} {r.progress_message or ''}",
            r.requested_by,
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            (r.error or "")[:60],
        )
    console.print(table)


def _payload(text: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--payload is not valid JSON: {exc}") from None
    return data


def valid_payload(args: dict[str, Any]) -> None:
    """`--payload` is JSON (checked before the database, as a malformed command line is)."""
    _payload(args["payload"])


@app.command()
@clear_errors
@requires(valid_payload, database)
def enqueue(
    task: str,
    payload: str = typer.Option("{}", help="JSON object with the task's payload."),
    wait: bool = typer.Option(False, help="Follow the job until it ends."),
    timeout: float = typer.Option(3600.0),
) -> None:
    """Enqueue any nlphub task by name (see `nlphub tasks`)."""
    enqueue_and_maybe_wait(task, _payload(payload), wait, timeout)


@app.command()
@clear_errors
def tasks(schema: bool = typer.Option(False, help="Print every payload's JSON schema.")) -> None:
    """The task contract: names, queues and payload fields."""
    from schemas.payloads import TASKS, json_schemas

    if schema:
        console.print_json(json.dumps(json_schemas()))
        return
    table = Table("task", "queue", "safe to redeliver", "payload fields")
    for name, spec in TASKS.items():
        table.add_row(
            name,
            spec.queue,
            "yes" if spec.idempotent else "no",
            ", ".join(spec.payload.model_fields),
        )
    console.print(table)

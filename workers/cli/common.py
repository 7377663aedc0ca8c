"""What the command groups share: the consoles, error handling, the readiness checks a command
declares, human sizes, and enqueueing a job then following it with a progress bar."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from schemas.settings import Settings, SettingsError, get_settings

F = TypeVar("F", bound=Callable[..., Any])

#: Options that pass whatever the command does not know on to the program it starts.
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}

console = Console()
err = Console(stderr=True)


def setup_logging(settings: Settings | None = None) -> None:
    level = settings.log_level if settings else "INFO"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def clear_errors(fn: F) -> F:
    """Expected failures print one clear line and exit 2 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from nlphub.errors import NlphubError
        from schemas.db import DatabaseNotMigrated
        from schemas.payloads import PayloadError

        try:
            return fn(*args, **kwargs)
        except (SettingsError, DatabaseNotMigrated, PayloadError, NlphubError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    return get_settings()


# -- readiness: declared once per command, checked before its body -------------------------------

#: A check a command needs to pass before it runs; it gets the command's arguments by name and
#: raises (SettingsError, DatabaseNotMigrated, …) to refuse.
Check = Callable[[dict[str, Any]], None]


def database(_: dict[str, Any]) -> None:
    """Settings valid, database reachable and migrated — or one clear line."""
    from schemas.db import get_engine, require_migrated

    settings().require_database_url()
    require_migrated(get_engine())


def redis(_: dict[str, Any]) -> None:
    """REDIS_URL set (or a running `nlphub up`) — or one clear line."""
    settings().require_redis_url()


def requires(*checks: Check) -> Callable[[F], F]:
    """Run `checks`, in order, before the command's body (under `clear_errors`, which reports a
    failed one). A group callback (its context parameter named `ctx`) runs them only when it is
    the command itself, not on its way to one of its subcommands (those declare their own)."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if getattr(kwargs.get("ctx"), "invoked_subcommand", None) is None:
                for check in checks:
                    check(kwargs)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


#: The commands that read or write the database: settings valid, database migrated.
needs_database = requires(database)


# -- rendering -----------------------------------------------------------------------------------


def human(n: int | None) -> str:
    from nlphub.hub.space import human_size

    return "?" if n is None else human_size(n)


def wait_for(job_id: uuid.UUID, timeout: float) -> int:
    """Follow a job with a progress bar until it ends; exit code 0 only for success."""
    from nlphub.jobstate import load_job
    from schemas.states import JOB_TERMINAL, JobState

    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tid = bar.add_task(f"job {str(job_id)[:8]}", total=1.0)
        while time.monotonic() < deadline:
            job = load_job(job_id)
            if job is not None:
                bar.update(
                    tid,
                    completed=job.progress,
                    description=f"{job.task} {job.state.value} {job.progress_message or ''}",
                )
                if job.state in JOB_TERMINAL:
                    break
            time.sleep(0.3)
        else:
            err.print(f"job {job_id} still running after {timeout:.0f}s")
            return 3
    if job.state == JobState.SUCCEEDED:
        console.print_json(json.dumps(job.result or {}))
        return 0
    err.print(f"[red]job {job.state.value}:[/red] {job.error}")
    return 1


def enqueue_and_maybe_wait(task: str, payload: dict[str, Any], wait: bool, timeout: float) -> None:
    """Enqueue `task` (the calling command declares `needs_database`) and, with `wait`, follow
    the job: the command then exits with `wait_for`'s code."""
    import nlphub

    job_id = nlphub.enqueue(task, payload, requested_by=payload.pop("requested_by", "cli"))
    console.print(f"job {job_id} queued ({task})")
    if wait:
        raise typer.Exit(wait_for(job_id, timeout))

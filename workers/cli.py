"""The `nlphub` command line."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.settings import Settings, SettingsError, get_settings

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(help="nlphub: workers that keep NLP resources in order.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
audit_app = typer.Typer(help="The append-only audit log.", invoke_without_command=True)
hub_app = typer.Typer(help="Models Hub mirrors and catalog.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(hub_app, name="hub")
updates_app = typer.Typer(
    help="Update notices (newer compatible versions).", invoke_without_command=True
)
servers_app = typer.Typer(help="Pre-annotation servers.", no_args_is_help=True)
app.add_typer(updates_app, name="updates")
app.add_typer(servers_app, name="servers")
rules_app = typer.Typer(help="Pre-annotation rules (regex / dictionary).", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
records_app = typer.Typer(help="Datasets and their records.", no_args_is_help=True)
emb_app = typer.Typer(help="Embeddings of records' text attributes.", no_args_is_help=True)
models_app = typer.Typer(help="The shared Hugging Face models cache.", no_args_is_help=True)
app.add_typer(records_app, name="records")
app.add_typer(emb_app, name="embeddings")
app.add_typer(models_app, name="models")

console = Console()
err = Console(stderr=True)


def _setup_logging(settings: Settings | None = None) -> None:
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


def _settings() -> Settings:
    return get_settings()


def _ready_db() -> None:
    """Settings valid, database reachable and migrated — or one clear line."""
    from schemas.db import get_engine, require_migrated

    _settings().require_database_url()
    require_migrated(get_engine())


# -- running the stack ---------------------------------------------------------------------------


@app.command()
@clear_errors
def up(
    beat: bool = typer.Option(True, help="Start celery beat."),
    flower: bool = typer.Option(True, help="Start Flower (127.0.0.1, basic auth)."),
    demo: bool = typer.Option(False, help="Serve and use the generated demo hub mirror."),
) -> None:
    """Start everything: embedded Postgres + Redis (unless URLs are set), migrations, a worker per
    queue, beat and Flower. Ctrl-C / SIGTERM stops it all; data is kept."""
    from workers.stack import run_stack

    settings = _settings()
    _setup_logging(settings)
    raise typer.Exit(
        run_stack(
            settings,
            lambda m: console.print(m, highlight=False),
            beat=beat,
            flower=flower,
            demo=demo,
        )
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@clear_errors
def worker(
    ctx: typer.Context,
    queues: str = typer.Option("downloads,embeddings,default", "-Q", "--queues"),
    concurrency: int | None = typer.Option(None, "-c", "--concurrency"),
) -> None:
    """Run a Celery worker (extra options go to `celery worker`)."""
    settings = _settings()
    settings.require_redis_url()
    _ready_db()
    from workers.app import app as celery_app

    argv = ["worker", "-Q", queues, "-E", "-l", settings.log_level]
    argv += ["-c", str(concurrency or settings.worker_concurrency), *ctx.args]
    celery_app.worker_main(argv)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@clear_errors
def beat(ctx: typer.Context) -> None:
    """Run celery beat with nlphub's schedule (extra options go to `celery beat`)."""
    settings = _settings()
    settings.require_redis_url()
    _ready_db()
    from workers.app import app as celery_app

    schedule = settings.home / "run" / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", "-s", str(schedule), "-l", settings.log_level, *ctx.args])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@clear_errors
def flower(ctx: typer.Context) -> None:
    """Run Flower bound to NLPHUB_FLOWER_ADDRESS with basic auth (credentials via environment)."""
    import os

    from workers.stack import flower_env

    settings = _settings()
    settings.require_redis_url()
    os.environ.update(flower_env(settings, {}))
    from workers.app import app as celery_app

    celery_app.start(["flower", *ctx.args])


# -- looking at it -------------------------------------------------------------------------------


@app.command()
@clear_errors
def status() -> None:
    """Database revision, workers answering, queue lengths, jobs and resources by state."""
    from sqlalchemy import func
    from sqlmodel import Session, select

    from nlphub.resources import resource_totals
    from schemas.db import current_revision, get_engine, head_revision
    from schemas.models import Job
    from workers.app import Queue
    from workers.app import app as celery_app

    settings = _settings()
    engine = get_engine()
    rev = current_revision(engine)
    console.print(f"database: revision {rev} (code needs {head_revision()})")
    with Session(engine) as session:
        jobs = dict(session.exec(select(Job.state, func.count()).group_by(Job.state)).all())
        console.print(f"jobs: {json.dumps({str(k): v for k, v in jobs.items()}) or '{}'}")
        console.print(f"resources: {json.dumps(resource_totals(session))}")
    settings.require_redis_url()
    with celery_app.connection_for_write() as conn:
        client = conn.default_channel.client
        lengths = {q.value: client.llen(q.value) for q in Queue}
    console.print(f"queues: {json.dumps(lengths)}")
    replies = celery_app.control.inspect(timeout=1.0).ping() or {}
    console.print(f"workers answering: {', '.join(sorted(replies)) or 'none'}")


@app.command()
@clear_errors
def jobs(
    state: str | None = typer.Option(None, help="Only jobs in this state."),
    limit: int = typer.Option(20, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent jobs with state and progress."""
    from sqlmodel import Session, col, select

    from schemas.db import get_engine
    from schemas.models import Job

    _ready_db()
    with Session(get_engine()) as session:
        query = select(Job).order_by(col(Job.created_at).desc()).limit(limit)
        if state:
            query = query.where(Job.state == state)
        rows = session.exec(query).all()
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


def _wait(job_id: uuid.UUID, timeout: float) -> int:
    """Follow a job with a progress bar until it ends; exit code 0 only for success."""
    from sqlmodel import Session

    from schemas.db import get_engine
    from schemas.models import Job
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
            with Session(get_engine()) as session:
                job = session.get(Job, job_id)
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


def _enqueue_and_maybe_wait(task: str, payload: dict[str, Any], wait: bool, timeout: float) -> None:
    import nlphub

    _ready_db()
    job_id = nlphub.enqueue(task, payload, requested_by=payload.pop("requested_by", "cli"))
    console.print(f"job {job_id} queued ({task})")
    if wait:
        raise typer.Exit(_wait(job_id, timeout))


@app.command()
@clear_errors
def enqueue(
    task: str,
    payload: str = typer.Option("{}", help="JSON object with the task's payload."),
    wait: bool = typer.Option(False, help="Follow the job until it ends."),
    timeout: float = typer.Option(3600.0),
) -> None:
    """Enqueue any nlphub task by name (see `nlphub tasks`)."""
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--payload is not valid JSON: {exc}") from None
    _enqueue_and_maybe_wait(task, data, wait, timeout)


@app.command()
@clear_errors
def inventory(
    wait: bool = typer.Option(True), verify: bool = typer.Option(True, help="Verify checksums.")
) -> None:
    """Reconcile installed resources with NLPHUB_HOME and report disk usage."""
    _enqueue_and_maybe_wait("nlphub.inventory", {"verify_checksums": verify}, wait, 3600)


@app.command()
@clear_errors
def delete(
    name: str,
    language: str = typer.Option("en", "--language", "-l"),
    version: str | None = typer.Option(None),
    force: bool = typer.Option(False, help="Delete even if an installed model depends on it."),
    wait: bool = typer.Option(True),
) -> None:
    """Delete a resource's files and mark it deleted (audited)."""
    payload = {"name": name, "language": language, "version": version, "force": force}
    _enqueue_and_maybe_wait("nlphub.delete", payload, wait, 600)


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


# -- hub -----------------------------------------------------------------------------------------


def _human(n: int | None) -> str:
    from nlphub.hub.fetch import human_size

    return "?" if n is None else human_size(n)


@app.command()
@clear_errors
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

    _ready_db()
    if sync:
        _sync_now()
    with Session(get_engine()) as session:
        hits = do_search(
            session,
            Installed.from_settings(_settings()),
            name=name,
            edition=edition,
            kind=kind,
            embedding_type=embedding_type,
            language=language,
            version=version,
            compatible_only=compatible,
            limit=limit,
        )
    table = Table(
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
            _human(e.size_bytes),
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
def hub_sync() -> None:
    """Read every configured hub folder now and store its catalog."""
    _ready_db()
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

    _setup_logging()
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

    _ready_db()
    with Session(get_engine(), expire_on_commit=False) as session:
        req = request_download(
            session,
            _settings(),
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
        f"{_human(e.size_bytes)}{note}"
    )
    if wait:
        raise typer.Exit(_wait(req.job_id, timeout))


@app.command()
@clear_errors
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
def upload(
    path: str = typer.Argument(..., help="Zip file or folder on storage the workers share."),
    kind: str = typer.Option(..., help="model, embeddings or pipeline"),
    name: str = typer.Option(...),
    language: str = typer.Option("en", "--language", "-l"),
    labels: str | None = typer.Option(None, help="Labels an NER model predicts: L1,L2,…"),
    edition: str | None = typer.Option(None, help="Default: from the classes' library."),
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
    _enqueue_and_maybe_wait("nlphub.validate_upload", payload, wait, 3600)


@app.command()
@clear_errors
def deps(
    name: str,
    language: str = typer.Option("en", "--language", "-l"),
    wait: bool = typer.Option(True),
) -> None:
    """Download the missing dependencies (embeddings) of an installed or uploaded model."""
    from sqlmodel import Session

    from nlphub.resources import find_resource
    from schemas.db import get_engine

    _ready_db()
    with Session(get_engine()) as session:
        res = find_resource(session, name=name, language=language)
    _enqueue_and_maybe_wait("nlphub.fetch_dependencies", {"resource_id": str(res.id)}, wait, 3600)


@app.command()
@clear_errors
def disk() -> None:
    """Bytes per installed resource, their total, and the storage volume's free/total space."""
    from sqlmodel import Session, col, select

    from nlphub.resources import disk_usage
    from schemas.db import get_engine
    from schemas.models import Resource
    from schemas.states import RESOURCE_PRESENT

    _ready_db()
    with Session(get_engine()) as session:
        rows = session.exec(
            select(Resource)
            .where(col(Resource.state).in_([s.value for s in RESOURCE_PRESENT]))
            .order_by(col(Resource.bytes_on_disk).desc())
        ).all()
    usage = disk_usage(_settings().resources_dir, {r.label: r.bytes_on_disk or 0 for r in rows})
    table = Table("resource", "state", "on disk")
    for r in rows:
        table.add_row(r.label, r.state.value, _human(r.bytes_on_disk))
    console.print(table)
    console.print(
        f"resources: {_human(usage.used_by_resources)}   free: "
        f"{_human(usage.free_bytes)} of {_human(usage.total_bytes)} "
        f"({_settings().resources_dir})"
    )


@app.command()
@clear_errors
def resources(as_json: bool = typer.Option(False, "--json")) -> None:
    """Resources known here (any source), with state and dependencies."""
    from sqlmodel import Session, col, select

    from schemas.db import get_engine
    from schemas.models import Resource

    _ready_db()
    with Session(get_engine()) as session:
        rows = session.exec(select(Resource).order_by(col(Resource.name))).all()
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


# -- updates, servers, redeploys ----------------------------------------------------------------


@updates_app.callback()
@clear_errors
def updates_list(ctx: typer.Context, show_all: bool = typer.Option(False, "--all")) -> None:
    """Update notices (pending ones; --all for every decision)."""
    if ctx.invoked_subcommand is not None:
        return
    from sqlmodel import Session, col, select

    from schemas.db import get_engine
    from schemas.models import UpdateNotice

    _ready_db()
    with Session(get_engine()) as session:
        query = select(UpdateNotice).order_by(col(UpdateNotice.found_at).desc())
        if not show_all:
            query = query.where(UpdateNotice.state == "pending")
        rows = session.exec(query).all()
    table = Table("id", "resource", "current", "new", "size", "edition", "found", "state", "by")
    for n in rows:
        table.add_row(
            str(n.id),
            f"{n.name} ({n.language})",
            n.current_version,
            n.new_version,
            _human(n.size_bytes),
            n.edition,
            n.found_at.strftime("%Y-%m-%d %H:%M"),
            n.state,
            n.decided_by or "",
        )
    console.print(table)
    if not rows:
        console.print("no pending updates" if not show_all else "no update notices")


@updates_app.command("check")
@clear_errors
def updates_check(wait: bool = typer.Option(True)) -> None:
    """Check the hubs for newer compatible versions now."""
    _enqueue_and_maybe_wait("nlphub.check_updates", {"reason": "manual"}, wait, 600)


@updates_app.command("apply")
@clear_errors
def updates_apply(
    notice_id: str,
    by: str = typer.Option(..., "--by", help="Who confirms the update (recorded)."),
    wait: bool = typer.Option(False),
) -> None:
    """Confirm an update: download the new version (the old one stays in use until then)."""
    _enqueue_and_maybe_wait(
        "nlphub.apply_update", {"notice_id": notice_id, "confirmed_by": by}, wait, 600
    )


@updates_app.command("dismiss")
@clear_errors
def updates_dismiss(notice_id: str, by: str = typer.Option(..., "--by")) -> None:
    """Dismiss an update notice (recorded with who dismissed it)."""
    _enqueue_and_maybe_wait(
        "nlphub.dismiss_update", {"notice_id": notice_id, "confirmed_by": by}, True, 120
    )


@servers_app.command("set")
@clear_errors
def servers_set(
    name: str,
    url: str,
    models: str = typer.Option("", help="Comma-separated model names (at most 5)."),
    rules: str = typer.Option("", help="Comma-separated rule names."),
) -> None:
    """Add or change a pre-annotation server (refuses > 5 models or mixed embeddings)."""
    from nlphub.preannotation.service import set_server
    from schemas.db import session_scope

    _ready_db()
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()]  # noqa: E731
    with session_scope() as session:
        server = set_server(
            session, name=name, url=url, models=split(models), rules=split(rules), actor="cli"
        )
        console.print(
            f"server {server.name}: {server.url} models={server.models} rules={server.rules}"
        )


@servers_app.command("list")
@clear_errors
def servers_list() -> None:
    """Configured pre-annotation servers."""
    from sqlmodel import Session, select

    from schemas.db import get_engine
    from schemas.models import PreannotationServer

    _ready_db()
    with Session(get_engine()) as session:
        rows = session.exec(select(PreannotationServer)).all()
    table = Table("name", "url", "models", "rules")
    for r in rows:
        table.add_row(r.name, r.url, ", ".join(r.models), ", ".join(r.rules))
    console.print(table)


@app.command()
@clear_errors
def redeploys(show_all: bool = typer.Option(False, "--all")) -> None:
    """Pending (and failed) pre-annotation redeploys; --all includes the done ones."""
    from sqlmodel import Session, col, select

    from schemas.db import get_engine
    from schemas.models import PreannotationServer, Redeploy

    _ready_db()
    with Session(get_engine()) as session:
        query = (
            select(Redeploy, PreannotationServer)
            .where(Redeploy.server_id == PreannotationServer.id)
            .order_by(col(Redeploy.requested_at).desc())
        )
        if not show_all:
            query = query.where(Redeploy.state == "pending")
        rows = session.exec(query).all()
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


# -- rules ---------------------------------------------------------------------------------------


def _rule_change(change: Any) -> None:
    console.print(f"rules: {', '.join(change.rules)}")
    if change.servers:
        console.print(f"[yellow]{change.message}[/yellow]: {', '.join(change.servers)}")


@rules_app.command("list")
@clear_errors
def rules_list() -> None:
    """Every rule, with type, entity and version."""
    from nlphub.rules.service import list_rules
    from schemas.db import session_scope

    _ready_db()
    with session_scope() as session:
        rows = list_rules(session)
        table = Table("name", "type", "entity", "version", "size", "updated")
        for r in rows:
            size = (
                f"{len(r.dictionary or [])} entries"
                if r.type == "dictionary"
                else (r.regex or "")[:40]
            )
            table.add_row(
                r.name,
                r.type,
                r.entity,
                str(r.version),
                size,
                r.updated_at.strftime("%Y-%m-%d %H:%M"),
            )
    console.print(table)


@rules_app.command("add")
@clear_errors
def rules_add(
    name: str = typer.Option(...),
    entity: str = typer.Option(..., help="The label hits get, e.g. HEIGHT."),
    regex: str | None = typer.Option(None, help="A regex rule's pattern."),
    dictionary_csv: str | None = typer.Option(None, help="A dictionary rule's CSV file."),
    description: str = typer.Option(""),
) -> None:
    """Create a rule, or edit the one with this name (its version goes up)."""
    from pathlib import Path

    from nlphub.rules.model import RuleError, parse_dictionary_csv
    from nlphub.rules.service import save_rule
    from schemas.db import session_scope

    _ready_db()
    data: dict[str, Any] = {"name": name, "entity": entity, "description": description}
    if regex is not None:
        data.update(type="regex", regex=regex)
    if dictionary_csv is not None:
        path = Path(dictionary_csv)
        data.update(
            type="dictionary",
            dictionary=parse_dictionary_csv(path.read_text(encoding="utf-8-sig"), source=path.name),
        )
    try:
        with session_scope() as session:
            _rule_change(save_rule(session, data, actor="cli", source="rule"))
    except RuleError as exc:
        raise SettingsError(str(exc).replace("\n", "; ")) from None


@rules_app.command("delete")
@clear_errors
def rules_delete(name: str) -> None:
    """Delete a rule."""
    from nlphub.rules.service import delete_rule
    from schemas.db import session_scope

    _ready_db()
    with session_scope() as session:
        _rule_change(delete_rule(session, name, actor="cli"))


@rules_app.command("import")
@clear_errors
def rules_import(
    file: str, replace: bool = typer.Option(False, help="Overwrite rules with the same name.")
) -> None:
    """Import a JSON file or a ZIP of JSON files: all rules or none."""
    from pathlib import Path

    from nlphub.rules.model import RuleError
    from nlphub.rules.service import import_rules
    from schemas.db import session_scope

    _ready_db()
    path = Path(file)
    try:
        with session_scope() as session:
            _rule_change(
                import_rules(
                    session, path.read_bytes(), filename=path.name, actor="cli", replace=replace
                )
            )
    except RuleError as exc:
        err.print(f"[red]import refused, nothing was imported:[/red]\n{exc}")
        raise typer.Exit(2) from None


@rules_app.command("export")
@clear_errors
def rules_export(
    out: str = typer.Option(..., "--out", help="ZIP file to write."),
    names: list[str] = typer.Argument(None, help="Rules to export (default: all)."),
) -> None:
    """Export rules as a ZIP with one JSON per rule (it imports back unchanged)."""
    from pathlib import Path

    from nlphub.rules.service import export
    from schemas.db import session_scope

    _ready_db()
    with session_scope() as session:
        data = export(session, names or None)
    Path(out).write_bytes(data)
    console.print(f"wrote {out} ({len(data)} bytes)")


# -- records, embeddings, search ----------------------------------------------------------------


@records_app.command("import")
@clear_errors
def records_import(
    file: str,
    dataset: str = typer.Option(..., help="Dataset name (created if new)."),
    id_field: str = typer.Option("id", help="Field holding each record's id."),
) -> None:
    """Import records from JSONL, CSV or Parquet (all or nothing; bad rows by line number)."""
    from pathlib import Path

    from nlphub.embeddings.service import import_records
    from schemas.db import session_scope

    _ready_db()
    with session_scope() as session:
        out = import_records(session, Path(file), dataset=dataset, actor="cli", id_field=id_field)
    console.print(f"{out['records']} records in dataset {out['dataset']}")


@emb_app.command("compute")
@clear_errors
def embeddings_compute(
    dataset: str,
    attribute: str,
    platform: str = typer.Option(..., help="bow, huggingface, openai, azure or cohere"),
    model: str = typer.Option(..., help="e.g. tfidf, all-MiniLM-L6-v2, text-embedding-3-small"),
    granularity: str = typer.Option("attribute", help="attribute or token"),
    dims: int | None = typer.Option(None, help="PCA dimensions (64 attribute / 16 token)"),
    api_key_ref: str | None = typer.Option(None, help="Environment variable with the key."),
    base_url: str | None = typer.Option(None),
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
    _enqueue_and_maybe_wait("nlphub.compute_embeddings", payload, wait, 24 * 3600)


@emb_app.command("list")
@clear_errors
def embeddings_list() -> None:
    """Embeddings with their state and progress."""
    from sqlmodel import Session, col, select

    from schemas.db import get_engine
    from schemas.models import Dataset, Embedding

    _ready_db()
    with Session(get_engine()) as session:
        rows = session.exec(
            select(Embedding, Dataset)
            .where(Embedding.dataset_id == Dataset.id)
            .order_by(col(Embedding.created_at).desc())
        ).all()
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
def embeddings_delete(embedding_id: str) -> None:
    """Delete an embedding (a running computation stops at its next batch)."""
    from nlphub.embeddings.service import delete_embedding
    from schemas.db import session_scope

    _ready_db()
    with session_scope() as session:
        delete_embedding(session, uuid.UUID(embedding_id), actor="cli")
    console.print(f"embedding {embedding_id} deleted")


@app.command()
@clear_errors
def similar(
    dataset: str,
    record: str | None = typer.Option(None, "--record"),
    text: str | None = typer.Option(None, "--text"),
    k: int = typer.Option(10, "-k", min=1, max=1000),
) -> None:
    """Nearest records by cosine similarity (to a record, or to a query text)."""
    from nlphub.embeddings.service import similar as find

    _ready_db()
    hits = find(_settings(), dataset=dataset, k=k, record=record, query=text)
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

    target = models_cache_path(_settings().home / "models", name)
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
    root = _settings().home / "models"
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

    root = _settings().home / "models"
    target = models_cache_path(root, name)
    exports = onnx_model_folder(root, name)
    if not target.exists() and not exports.exists():
        raise SettingsError(f"{name} is not in the models cache")
    for folder in (target, exports):
        if folder.exists():
            shutil.rmtree(folder)
    console.print(f"{name} removed")


# -- audit ---------------------------------------------------------------------------------------


@audit_app.callback()
@clear_errors
def audit_list(
    ctx: typer.Context,
    limit: int = typer.Option(30, min=1, max=10000),
    action: str | None = typer.Option(None),
) -> None:
    """Show the latest audit events."""
    if ctx.invoked_subcommand is not None:
        return
    from sqlmodel import Session, col, select

    from schemas.db import get_engine
    from schemas.models import AuditEvent

    _ready_db()
    with Session(get_engine()) as session:
        query = select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(limit)
        if action:
            query = query.where(AuditEvent.action == action)
        rows = session.exec(query).all()
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


@audit_app.command("verify")
@clear_errors
def audit_verify() -> None:
    """Check the hash chain; report the first broken link (exit 1)."""
    from sqlmodel import Session

    from nlphub.audit import verify_chain
    from schemas.db import get_engine

    _ready_db()
    with Session(get_engine()) as session:
        report = verify_chain(session)
    if report.ok:
        console.print(f"audit chain OK: {report.checked} events verified")
        return
    err.print(
        f"audit chain BROKEN at event {report.broken_at}: {report.reason} "
        f"({report.checked} events before it verified)"
    )
    raise typer.Exit(1)


# -- database ------------------------------------------------------------------------------------


@db_app.command("upgrade")
@clear_errors
def db_upgrade() -> None:
    """Migrate the database to the revision this code needs."""
    from schemas.db import upgrade

    _setup_logging()
    url = _settings().require_database_url()
    console.print(f"database at revision {upgrade(url)}")


@db_app.command("current")
@clear_errors
def db_current() -> None:
    """Show the database's revision and the one this code needs."""
    from schemas.db import current_revision, head_revision

    console.print(f"current: {current_revision()}  head: {head_revision()}")


def main() -> None:
    try:
        app()
    except SettingsError as exc:  # raised while typer parses (e.g. settings read eagerly)
        err.print(f"error: {exc}")
        sys.exit(2)

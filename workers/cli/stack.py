"""Running the stack: `up`, `worker`, `beat`, `flower`."""

from __future__ import annotations

import typer

from workers.cli.common import (
    PASS_THROUGH,
    clear_errors,
    console,
    database,
    redis,
    requires,
    settings,
    setup_logging,
)

#: Top-level commands (the root app takes them over in its own order).
app = typer.Typer()


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

    current = settings()
    setup_logging(current)
    raise typer.Exit(
        run_stack(
            current,
            lambda m: console.print(m, highlight=False),
            beat=beat,
            flower=flower,
            demo=demo,
        )
    )


@app.command(context_settings=PASS_THROUGH)
@clear_errors
@requires(redis, database)
def worker(
    ctx: typer.Context,
    queues: str = typer.Option("downloads,embeddings,default", "-Q", "--queues"),
    concurrency: int | None = typer.Option(None, "-c", "--concurrency"),
) -> None:
    """Run a Celery worker (extra options go to `celery worker`)."""
    from workers.app import app as celery_app

    current = settings()
    argv = ["worker", "-Q", queues, "-E", "-l", current.log_level]
    argv += ["-c", str(concurrency or current.worker_concurrency), *ctx.args]
    celery_app.worker_main(argv)


@app.command(context_settings=PASS_THROUGH)
@clear_errors
@requires(redis, database)
def beat(ctx: typer.Context) -> None:
    """Run celery beat with nlphub's schedule (extra options go to `celery beat`)."""
    from workers.app import app as celery_app

    current = settings()
    schedule = current.home / "run" / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", "-s", str(schedule), "-l", current.log_level, *ctx.args])


@app.command(context_settings=PASS_THROUGH)
@clear_errors
@requires(redis)
def flower(ctx: typer.Context) -> None:
    """Run Flower bound to NLPHUB_FLOWER_ADDRESS with basic auth (credentials via environment)."""
    import os

    from workers.stack import flower_env

    os.environ.update(flower_env(settings(), {}))
    from workers.app import app as celery_app

    celery_app.start(["flower", *ctx.args])

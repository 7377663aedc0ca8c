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
)

#: Top-level commands (the root app takes them over in its own order).
app = typer.Typer()


@app.command()
@clear_errors
def up(
    beat: bool = typer.Option(True, help="Start celery beat."),
    flower: bool = typer.Option(True, help="Start Flower (127.0.0.1, basic auth)."),
    demo: bool = typer.Option(False, help="Serve and use the generated demo hub mirror."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Stream every process' log to the console too."
    ),
) -> None:
    """Start everything: embedded Postgres + Redis (unless URLs are set), migrations, a worker per
    queue, beat and Flower. The console shows where things are, one line per job event, and
    warnings and errors; each process logs to its file under NLPHUB_HOME/logs (`nlphub logs`).
    Ctrl-C / SIGTERM stops it all; data is kept."""
    from workers.stack import run_stack

    raise typer.Exit(
        run_stack(
            settings(),
            # one console line per message, whatever the terminal's width; no markup in it
            lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True),
            beat=beat,
            flower=flower,
            demo=demo,
            verbose=verbose,
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
    """Run Flower bound to NLPHUB_FLOWER_ADDRESS with basic auth (credentials via environment);
    its REST API signs the user into each message and refuses options (`workers.flower`)."""
    import os

    from workers.logs import configure, process_role
    from workers.stack import flower_env

    current = settings()
    os.environ.update(flower_env(current, {}))
    # before Flower's own (tornado's) logging set-up, which then keeps this one
    configure(process_role(current), level=current.log_level, fmt=current.log_format)
    from workers.flower import app as celery_app

    celery_app.start(["flower", *ctx.args])

"""`nlphub metrics`: the Prometheus endpoint."""

from __future__ import annotations

import typer

from workers.cli.common import clear_errors, console, needs_database, settings, setup_logging

app = typer.Typer(help="Prometheus metrics read from the database.", no_args_is_help=True)


@app.command("serve")
@clear_errors
@needs_database
def serve(
    address: str | None = typer.Option(None, help="Listen address (NLPHUB_METRICS_ADDRESS)."),
    port: int | None = typer.Option(
        None, min=1, max=65535, help="Listen port (NLPHUB_METRICS_PORT)."
    ),
) -> None:
    """Serve /metrics (jobs, resources, disk, updates, redeploys, audit) until SIGTERM."""
    from workers.metrics import serve as serve_metrics

    current = settings()
    setup_logging(current)
    address = address or current.metrics_address
    port = port or current.metrics_port
    console.print(f"metrics: http://{address}:{port}/metrics", highlight=False)
    serve_metrics(current, address, port)

"""`nlphub logs`: the log files `nlphub up` keeps per process under NLPHUB_HOME/logs."""

from __future__ import annotations

import sys

import typer

from workers.cli.common import clear_errors, err, settings

#: Top-level commands (the root app takes them over in its own order).
app = typer.Typer()


@app.command()
@clear_errors
def logs(
    role: str | None = typer.Argument(
        None, help="A process (worker-default, beat, flower, up, postgres, …) or a prefix (worker)."
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Go on printing new lines."),
    lines: int = typer.Option(40, "--lines", "-n", min=0, help="How many last lines to show."),
) -> None:
    """Show the last lines of each process' log (one file per process, rotated by size)."""
    from workers.logs import follow as follow_files
    from workers.logs import select, tail

    folder = settings().logs_dir
    try:
        chosen = select(folder, role)
    except ValueError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    for name, path in chosen.items():
        if len(chosen) > 1:
            write(f"==> {name} ({path}) <==")
        for line in tail(path, lines):
            write(line)
    if follow:
        try:
            follow_files(chosen.values(), write)
        except KeyboardInterrupt:
            pass

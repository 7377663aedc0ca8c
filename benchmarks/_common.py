"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def child_env() -> dict[str, str]:
    """This process's environment for a child that must import the project: the checkout
    first on PYTHONPATH, then whatever PYTHONPATH already held (e.g. an extra site folder)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_kib() -> int:
    """The resident set now, KiB."""
    return status_kib("VmRSS")


def peak_rss_kib() -> int:
    """This process's peak resident set, KiB.

    VmHWM, not ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux a spawned child's ru_maxrss
    starts at its parent's RSS at fork time (the forked copy of the parent's memory is counted
    before exec), so it would report the parent's size rather than the child's.
    """
    try:
        return status_kib("VmHWM")
    except (OSError, RuntimeError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _entry(conn: Any, func: Any, args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", func(*args)))
    except BaseException as exc:  # report it to the parent, whatever it is
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


def in_child(func: Any, *args: Any, error: type[BaseException] = SystemExit) -> Any:
    """Run `func(*args)` in a fresh (spawned) process and return its result (its peak memory
    is then its own, not the parent's); a failure in the child raises `error`."""
    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_entry, args=(child_end, func, args))
    proc.start()
    child_end.close()
    try:
        status, value = parent_end.recv()
    except EOFError:
        status, value = "error", f"the child died without an answer (exit {proc.exitcode})"
    proc.join()
    if status != "ok":
        raise error(f"{func.__name__} failed: {value}")
    return value

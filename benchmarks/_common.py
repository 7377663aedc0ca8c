"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


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

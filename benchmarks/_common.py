"""Helpers shared by the benchmark scripts: the project's environment for children, memory
figures from /proc, a function run in a spawned child, the embedded servers (started, pointed
at, migrated, stopped) and Celery command lines."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: A Redis URL for runs that publish nothing (compute, similar, download_and_install with its
#: job id): any redis:// URL satisfies the settings.
NO_REDIS = "redis://127.0.0.1:1/0"


def child_env() -> dict[str, str]:
    """This process's environment for a child that must import the project: the checkout
    first on PYTHONPATH, then whatever PYTHONPATH already held (e.g. an extra site folder)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


# -- memory -----------------------------------------------------------------------------------


def status_kib(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` field in KiB (``VmRSS``, ``VmHWM``); this process by default."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


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


def peak_rss_kib_of(pid: int) -> int | None:
    """VmHWM of a live process (its peak resident set so far), KiB; None once it is gone."""
    try:
        return status_kib("VmHWM", pid)
    except (OSError, ValueError, RuntimeError):
        return None


def mib(kib: float, width: int = 7) -> str:
    """KiB shown as MiB, right-aligned in `width` characters before the unit."""
    return f"{kib / 1024:{width}.1f} MiB"


# -- a function in a spawned child ------------------------------------------------------------


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


# -- servers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_servers(
    base: Path, *, redis: bool = True, from_env: bool = False
) -> Iterator[tuple[str, str | None]]:
    """(database URL, Redis URL or None): embedded Postgres (and Redis when `redis`) with their
    data under `base`, stopped on exit after the process's engines are disposed. `from_env`:
    DATABASE_URL and REDIS_URL when both are set (then nothing is started)."""
    from workers.embedded import EmbeddedPostgres, EmbeddedRedis

    db_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    pg = server = None
    try:
        if not (from_env and db_url and redis_url):
            pg = EmbeddedPostgres(base / "pg")
            server = EmbeddedRedis(base / "redis") if redis else None
            db_url = pg.start()
            redis_url = server.start() if server is not None else None
        assert db_url is not None
        yield db_url, redis_url
    finally:
        from schemas.db import dispose_engines

        dispose_engines()
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop()


def use_servers(db_url: str, redis_url: str, home: Path, **more: str) -> None:
    """Point nlphub's settings (this process's environment, inherited by its children) at the
    servers, with `home` as NLPHUB_HOME, WARNING logs and any `more` variables."""
    from schemas.settings import get_settings

    os.environ.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "NLPHUB_HOME": str(home),
            "NLPHUB_LOG_LEVEL": "WARNING",
            **more,
        }
    )
    get_settings.cache_clear()


#: The library versions the benchmarks' hub mirrors are compatible with.
MIRROR_LIBS = "spark-nlp=5.5.0,spark=3.5.0"


def use_mirror(
    db_url: str, redis_url: str, home: Path, hub_url: str, *, actor: str, failure: str, **more: str
) -> None:
    """`use_servers` with `hub_url` as the only hub (no licensed ones) and `MIRROR_LIBS`
    installed, migrate, and read the hub's catalog (SystemExit "`failure`: errors" when it
    cannot be read)."""
    more = {
        "NLPHUB_HUB_URLS": hub_url,
        "NLPHUB_LICENSED_HUB_URLS": "",
        "NLPHUB_LIBRARY_VERSIONS": MIRROR_LIBS,
        **more,
    }
    use_servers(db_url, redis_url, home, **more)
    migrate(db_url)
    from nlphub.hub.sync import sync_hubs

    synced = sync_hubs(actor)
    if synced["errors"]:
        raise SystemExit(f"{failure}: {synced['errors']}")


def migrate(db_url: str) -> None:
    """Migrate the database at `db_url` (a ``postgresql://`` URL) to the code's revision."""
    from schemas.db import upgrade

    upgrade(db_url.replace("postgresql://", "postgresql+psycopg://", 1))


def celery_argv(*args: str) -> list[str]:
    """`celery -A workers.app <args>` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "workers.app", *args]

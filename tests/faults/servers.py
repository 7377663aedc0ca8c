"""Servers the fault tests crash or hold: a test's own Redis and Postgres crashed in place (same
data folder, same port or socket, so every URL stays valid), and a hub that answers only when
the test lets it. The fixtures that make them are in tests/faults/conftest.py."""

from __future__ import annotations

import os
import signal
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from schemas.db import dispose_engines
from schemas.settings import get_settings
from tests.conftest import wait_for
from tests.procs import alive
from workers.app import configure
from workers.embedded import EmbeddedPostgres, EmbeddedRedis


def repoint() -> None:
    """The test process follows its environment (DATABASE_URL, REDIS_URL, settings)."""
    get_settings.cache_clear()
    dispose_engines()
    configure(get_settings())


def crash_redis(server: EmbeddedRedis, url: str) -> None:
    """SIGKILL the Redis server (no shutdown, no final save), then clean up after it."""
    import redis as redis_lib

    client = redis_lib.Redis.from_url(url)
    pid = int(client.info("server")["process_id"])
    client.close()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, what="the killed Redis to exit")
    server.stop()


def crash_postgres(server: EmbeddedPostgres) -> None:
    """Immediate shutdown of the postmaster (SIGQUIT: every backend killed, no checkpoint; the
    next start runs crash recovery), then clean up after it."""
    pid = int((server.datadir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGQUIT)
    wait_for(lambda: not alive(pid), 30, what="the crashed Postgres to exit")
    server.stop()


class GateHandler(BaseHTTPRequestHandler):
    """A hub folder whose metadata.json is answered (empty: a valid, empty catalog) only once
    the test opens the gate: the `nlphub.hub_sync` job reading it is running until then."""

    arrived: threading.Event
    gate: threading.Event

    def do_GET(self) -> None:
        self.arrived.set()
        self.gate.wait(120)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass

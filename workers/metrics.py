"""The metrics process (`nlphub metrics serve`): prometheus-client's HTTP server over nlphub's
collector, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import errno
import itertools
import logging
import signal
import threading
from typing import Any

from prometheus_client import start_http_server

from nlphub.metrics.collector import registry
from schemas.db import dispose_engines, get_engine
from schemas.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between tries to listen while the address is taken.
RETRY_BIND = 10.0


def serve(settings: Settings, address: str, port: int) -> None:
    """Serve /metrics on `address`:`port` (each scrape reads the database) until stopped.

    While the port is taken (another `nlphub up` on this host), it says so and tries again
    every RETRY_BIND seconds instead of exiting: `nlphub up` would restart it in a loop and
    then stop the whole stack over its metrics."""
    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    reg = registry(settings, lambda: get_engine().connect())
    for attempt in itertools.count():
        try:
            server, thread = start_http_server(port, addr=address, registry=reg)
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            if attempt == 0:
                log.error(
                    "metrics: %s:%s is in use (NLPHUB_METRICS_PORT); trying again every %.0f s",
                    address,
                    port,
                    RETRY_BIND,
                )
            if stop.wait(RETRY_BIND):
                return
    log.info("metrics: serving http://%s:%s/metrics", address, port)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        dispose_engines()
        log.info("metrics: stopped")

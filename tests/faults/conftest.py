"""Fault tests (issue 7): real servers, real worker processes, bounded loops, loopback only.

The integration fixtures (per-test database, worker, spawn, job helpers, hub mirror) are
shared from tests/integration/conftest.py. The harness the fixtures here set up is in
tests/faults/harness.py (worker kills), locks.py, servers.py and stacks.py.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from schemas.db import dispose_engines, upgrade
from tests.faults.harness import Rig
from tests.faults.servers import GateHandler, repoint
from tests.integration.conftest import (  # noqa: F401
    audit_actions,
    job_state,
    mirror,
    spark_written,
    spawn,
    wait_job,
    worker,
)
from workers.embedded import EmbeddedPostgres, EmbeddedRedis


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def rig_factory(
    env: dict[str, Any],
    spawn: Callable[..., Any],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> Iterator[Callable[[str], Rig]]:
    """Makes the test's `Rig`s (a worker on the given queues each); closed at teardown."""
    made: list[Rig] = []

    def make(queues: str) -> Rig:
        rig = Rig(env, spawn, tmp_path, queues)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


@pytest.fixture
def own_redis(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (own folder, own port), for the test to crash."""
    base = Path(tempfile.mkdtemp(prefix="nlphub-own-redis-"))
    server = EmbeddedRedis(base / "redis")
    monkeypatch.setenv("REDIS_URL", server.start())
    repoint()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def own_postgres(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmbeddedPostgres]:
    """A Postgres of this test's own (own data folder and socket), migrated, for it to crash."""
    base = Path(tempfile.mkdtemp(prefix="nlphub-own-pg-"))
    server = EmbeddedPostgres(base / "pg")
    server.start()
    url = server.create_database("nlphub")
    upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
    monkeypatch.setenv("DATABASE_URL", url)
    repoint()
    yield server
    dispose_engines()
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def gated_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[GateHandler]]:
    """The test's hub (NLPHUB_HUB_URLS): it answers once the test sets `gate` (`GateHandler`)."""
    handler: type[GateHandler] = type(
        "Gate", (GateHandler,), {"arrived": threading.Event(), "gate": threading.Event()}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NLPHUB_HUB_URLS", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("NLPHUB_LICENSED_HUB_URLS", "")
    yield handler
    handler.gate.set()
    server.shutdown()
    server.server_close()

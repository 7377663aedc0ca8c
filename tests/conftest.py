"""Shared fixtures: real embedded Postgres + Redis for the session, one database per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Property tests run on loaded 2-core CI machines: no per-example deadline, no "too slow" /
# "filters too much" health checks (they judge speed, not correctness).
from hypothesis import HealthCheck, settings

settings.register_profile(
    "nlphub",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile("nlphub")


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, Any]]:
    from schemas.db import dispose_engines, upgrade
    from workers.embedded import EmbeddedPostgres, EmbeddedRedis

    # Not under pytest's basetemp: another pytest run on this machine prunes old basetemps.
    base = Path(tempfile.mkdtemp(prefix="nlphub-test-servers-"))
    pg = EmbeddedPostgres(base / "pg")
    pg.start()
    redis = EmbeddedRedis(base / "redis")
    redis_url = redis.start()
    template = "nlphub_template"
    pg.drop_database(template)
    template_url = pg.create_database(template)
    upgrade(template_url.replace("postgresql://", "postgresql+psycopg://", 1))
    dispose_engines()
    yield {"pg": pg, "redis": redis, "redis_url": redis_url, "template": template}
    dispose_engines()
    redis.stop()
    pg.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def env(
    servers: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """A fresh migrated database (cloned from the template), empty Redis, own NLPHUB_HOME."""
    import redis as redis_lib

    from schemas.db import dispose_engines
    from schemas.settings import get_settings
    from workers.app import configure

    name = f"t_{uuid.uuid4().hex[:12]}"
    db_url = servers["pg"].create_database(name, template=servers["template"])
    home = tmp_path / "home"
    home.mkdir()
    redis_lib.Redis.from_url(servers["redis_url"]).flushall()
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("REDIS_URL", servers["redis_url"])
    monkeypatch.setenv("NLPHUB_HOME", str(home))
    monkeypatch.setenv("NLPHUB_OUTBOX_GRACE", "1")
    get_settings.cache_clear()
    dispose_engines()
    configure(get_settings())
    yield {"database_url": db_url, "redis_url": servers["redis_url"], "home": home, "db_name": name}
    dispose_engines()
    get_settings.cache_clear()
    servers["pg"].drop_database(name)


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local Spark session (JVM) for the whole test run."""
    from tests.sparkml import start_spark

    spark = start_spark()
    yield spark
    spark.stop()


@pytest.fixture(scope="session")
def onnx_models_cache() -> Iterator[Path]:
    """A models cache (``cache_dir``) holding the ONNX export of all-MiniLM-L6-v2
    (``backend=onnx``): exported once per test run, as that takes a while."""
    from nlphub.embeddings import make_encoder

    base = Path(tempfile.mkdtemp(prefix="nlphub-test-onnx-"))
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        make_encoder("huggingface", "all-MiniLM-L6-v2?backend=onnx", cache_dir=base, device="cpu")
        yield base
    finally:
        mp.undo()
        shutil.rmtree(base, ignore_errors=True)

"""A real Celery worker (celery.contrib.testing, thread pool) per test, on the test's servers."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlmodel import Session, col, select

from tests.conftest import wait_for

# celery_cmd lives in tests.procs; the integration tests import it from here.
from tests.procs import celery_cmd  # noqa: F401

if TYPE_CHECKING:
    from schemas.models import AuditEvent

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(env: dict[str, Any]) -> Iterator[Any]:
    from celery.contrib.testing.worker import start_worker

    from workers.app import app

    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30.0,
        queues=["downloads", "embeddings", "default"],
    ) as w:
        yield w


@pytest.fixture
def job_state() -> Callable[[uuid.UUID], Any]:
    from schemas.db import get_engine
    from schemas.models import Job

    def get(job_id: uuid.UUID) -> Any:
        with Session(get_engine()) as session:
            job = session.get(Job, job_id)
            if job is not None:
                session.expunge(job)
            return job

    return get


@pytest.fixture
def wait_job(job_state: Callable[[uuid.UUID], Any]) -> Callable[..., Any]:
    from schemas.states import JOB_TERMINAL

    def wait(job_id: uuid.UUID, timeout: float = 60.0) -> Any:
        def done() -> Any:
            job = job_state(job_id)
            return job if job is not None and job.state in JOB_TERMINAL else None

        return wait_for(done, timeout, what=f"job {job_id} to finish")

    return wait


def audit_events(job_id: uuid.UUID | None = None, action: str | None = None) -> list[AuditEvent]:
    """The audit events (of a job, with an action), in log order."""
    from schemas.db import get_engine
    from schemas.models import AuditEvent

    with Session(get_engine()) as session:
        query = select(AuditEvent).order_by(col(AuditEvent.seq))
        if job_id is not None:
            query = query.where(AuditEvent.job_id == job_id)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        rows = list(session.exec(query).all())
        for row in rows:
            session.expunge(row)
        return rows


@pytest.fixture
def audit_actions() -> Callable[..., list[str]]:
    def actions(job_id: uuid.UUID | None = None) -> list[str]:
        return [e.action for e in audit_events(job_id)]

    return actions


@pytest.fixture
def spawn(env: dict[str, Any]) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real processes (celery worker, flower) with the test's environment; all killed
    at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        argv: list[str], extra_env: dict[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        out = log.open("wb") if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def flower(spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path) -> dict[str, Any]:
    """`nlphub flower` (nlphub's Flower: basic auth, signed callers) on a free port, answering:
    its URL, a tenant's basic-auth user and password (NLPHUB_FLOWER_TENANTS), the operator's
    (user, password) and its log file."""
    import sys

    import httpx

    from workers.embedded import free_port

    port = free_port()
    user, password = "carol", f"pw-{uuid.uuid4().hex}"
    operator, operator_password = "admin", f"op-{uuid.uuid4().hex}"
    log = tmp_path / "flower.log"
    spawn(
        [str(Path(sys.executable).with_name("nlphub")), "flower"],
        {
            "NLPHUB_FLOWER_PORT": str(port),
            "NLPHUB_FLOWER_USER": operator,
            "NLPHUB_FLOWER_PASSWORD": operator_password,
            "NLPHUB_FLOWER_TENANTS": f"{user}:{password}",
        },
        log=log,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 60, interval=0.2, what="Flower to answer")
    return {
        "url": url,
        "user": user,
        "password": password,
        "operator": (operator, operator_password),
        "log": log,
    }


# The hub mirror fixtures, shared by the hub and update tests.
from tests.integration.test_hub import mirror, spark_written  # noqa: E402, F401

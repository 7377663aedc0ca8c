"""Item (e) of the security issue: work that never ends, with real worker processes.

A worker host that dies mid-download (its whole process group SIGKILLed: the main process does
not get to restore the unacknowledged message, which Redis then keeps until the visibility
timeout, 6 h) leaves its job `started` with a free run lock. Beat's reconciler publishes it
again after NLPHUB_STUCK_AFTER (3 s here), and a restarted worker completes it: in seconds,
not hours. Without the fix (`nlphub.jobstate.workerless`) the job stays `started` and this
test times out (checked once by removing it, then restored).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nlphub
from nlphub.hub.mirror import build_mirror
from nlphub.hub.server import MirrorServer
from nlphub.hub.sync import sync_hubs
from schemas.settings import get_settings
from schemas.states import JOB_TERMINAL, JobState
from tests.conftest import wait_for
from tests.faults.harness import Rig, leftovers
from tests.integration.test_hub import LIBS, res

NAME = "slow_glove"
STUCK_AFTER = 3


@pytest.fixture
def slow_hub(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MirrorServer]:
    folder = tmp_path / "hub"
    build_mirror(folder, [res(NAME, "WordEmbeddingsModel", payload_bytes=1_000_000)])
    with MirrorServer(folder) as server:
        monkeypatch.setenv("NLPHUB_HUB_URLS", server.url)
        monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
        # the workers started below read it (the visibility timeout stays at its 6 h)
        monkeypatch.setenv("NLPHUB_STUCK_AFTER", str(STUCK_AFTER))
        monkeypatch.delenv("NLPHUB_VISIBILITY_TIMEOUT", raising=False)
        get_settings.cache_clear()
        assert not sync_hubs("test")["errors"]
        server.faults.delay_per_chunk = 0.1  # about 1.6 s for the archive
        yield server
    get_settings.cache_clear()


def _partial_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "downloads").glob("*.partial"))


@pytest.mark.timeout(300)
def test_a_job_whose_worker_host_died_completes_after_the_grace_period(
    slow_hub, rig_factory
) -> None:
    assert get_settings().visibility_timeout >= 3600
    first: Rig = rig_factory("default,downloads")
    job_id = nlphub.enqueue("nlphub.download", {"name": NAME})
    wait_for(lambda: _partial_bytes(first.home) > 100_000, 60, interval=0.01, what="mid-download")
    # the host dies: the worker and its pool process at once, nothing restores the message
    os.killpg(first.worker.proc.pid, signal.SIGKILL)
    first.worker.proc.wait(timeout=10)
    killed = time.monotonic()
    assert first.db.job_state(job_id) == "started"

    second = rig_factory("default,downloads")  # a worker restarted on another host
    slow_hub.faults.delay_per_chunk = 0.0

    def done() -> bool:
        # beat's reconciler, every second here (60 s in production)
        nlphub.enqueue("nlphub.reconcile_outbox", {}, requested_by="beat")
        return second.db.job_state(job_id) in JOB_TERMINAL

    wait_for(done, 90, interval=1.0, what="the killed job to complete")
    took = time.monotonic() - killed
    job = second.job(job_id)
    assert job.state == JobState.SUCCEEDED, (job.error, second.worker.tail())
    assert took < 90 < get_settings().visibility_timeout
    republished = [
        r[0]
        for r in second.db.conn.execute(
            "SELECT details FROM audit_event WHERE job_id = %s AND action = 'job.republished'",
            (job_id,),
        ).fetchall()
    ]
    assert [d["reason"] for d in republished] == ["worker_gone"], republished
    row = second.check_installed(NAME, "5.4.0")
    assert second.actions(target=row.label).count("resource.installed") == 1
    assert second.actions(job_id).count("job.succeeded") == 1
    assert leftovers(second.home) == []

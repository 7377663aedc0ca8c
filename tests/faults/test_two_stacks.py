"""Two `nlphub up` stacks on one database and one Redis (issue 7): each scheduled job once.

Both stacks run a beat; the beat lock (scheduler/locked.py) makes one of them active and the
other a standby. Every message a beat sends is seen here as a Celery `task-sent` event, which
names the sending process: during the run all heartbeats come from one beat, one per tick.
Killing the stack whose beat is active lets the other take over (and leaves no process of the
killed stack behind); the survivor then stops cleanly.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session

from schemas.db import get_engine
from tests.conftest import wait_for
from tests.faults.stacks import SentEvents, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

log = logging.getLogger(__name__)

HEARTBEAT = 1.0  # seconds between heartbeats (NLPHUB_HEARTBEAT)


@pytest.fixture
def stacks(env: dict[str, Any]) -> Iterator[tuple[Stack, Stack]]:
    base = Path(tempfile.mkdtemp(prefix="nlphub-two-stacks-"))
    hub = base / "hub"
    hub.mkdir()
    (hub / "metadata.json").write_text("")  # a reachable, empty hub: nothing to download
    common = {
        **os.environ,
        "DATABASE_URL": env["database_url"],
        "REDIS_URL": env["redis_url"],
        "NLPHUB_HEARTBEAT": str(HEARTBEAT),
        "NLPHUB_CONCURRENCY": "1",
        "NLPHUB_LOG_LEVEL": "INFO",
        "NLPHUB_HUB_URLS": hub.as_uri(),
        "NLPHUB_LICENSED_HUB_URLS": "",
    }
    pair = (Stack("one", base, common), Stack("two", base, common))
    try:
        yield pair
    finally:
        for stack in pair:
            stack.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _startup_checks() -> int:
    """Start-up update checks queued: one each time a beat becomes the active one."""
    with Session(get_engine()) as session:
        return int(
            session.execute(
                text(
                    "SELECT count(*) FROM job WHERE task = 'nlphub.check_updates' "
                    "AND payload->>'reason' = 'startup'"
                )
            ).scalar_one()
        )


def _ping_jobs(ids: set[str]) -> Counter[str]:
    """The heartbeat jobs the workers ran, by state."""
    with Session(get_engine()) as session:
        rows = session.execute(
            text("SELECT id::text AS id, state FROM job WHERE task = 'nlphub.ping'")
        ).all()
    unknown = {row.id for row in rows} - ids
    assert not unknown, f"ping jobs no beat sent: {sorted(unknown)[:5]}"
    return Counter(row.state for row in rows)


@pytest.mark.timeout(600)
def test_two_stacks_on_one_database_send_each_scheduled_run_once(
    env: dict[str, Any], stacks: tuple[Stack, Stack]
) -> None:
    sent = SentEvents()
    sent.start()
    try:
        for stack in stacks:
            stack.start()

        def both_beats_running() -> bool:
            for stack in stacks:
                assert stack.proc is not None and stack.proc.poll() is None, stack.text()[-3000:]
            return all("beat: Starting" in s.text() for s in stacks) and all(
                s.beat_pid() for s in stacks
            )

        wait_for(both_beats_running, 240, interval=0.5, what="both stacks' beats to run")
        beats = {stack.name: stack.beat_pid() for stack in stacks}
        wait_for(lambda: len(sent.pings()) >= 2, 60, interval=0.2, what="the first heartbeats")

        # A window in which both beats run: the standby looks for the lock every 5 s.
        start = time.time()
        wait_for(lambda: time.time() - start >= 12, 20, interval=0.2, what="12 seconds")
        window = sent.pings(since=start)
        elapsed = time.time() - start
        senders = Counter(int(e["pid"]) for e in window)
        assert len(senders) == 1, f"heartbeats from several processes: {senders}, beats {beats}"
        assert len(window) <= elapsed / HEARTBEAT + 2, f"{len(window)} heartbeats in {elapsed}s"
        assert len(window) >= elapsed / HEARTBEAT - 3, f"{len(window)} heartbeats in {elapsed}s"
        (active_pid,) = senders
        active = next(s for s in stacks if beats[s.name] == active_pid)
        standby = next(s for s in stacks if s is not active)
        assert _startup_checks() == 1  # queued once, by the one beat that became active

        # Kill the stack whose beat is active: the other stack's beat takes over.
        active.kill()
        wait_for(
            lambda: not active.leftovers(),
            60,
            interval=0.2,
            what=f"no process of the killed stack left (of {sorted(active.family)})",
        )
        killed_at = time.time()
        wait_for(
            lambda: len(sent.pings(since=killed_at)) >= 3,
            60,
            interval=0.2,
            what="the standby beat to take over",
        )
        after = Counter(int(e["pid"]) for e in sent.pings(since=killed_at))
        assert set(after) == {beats[standby.name]}, (after, beats)
        wait_for(lambda: _startup_checks() == 2, 30, what="the new active beat's start-up check")

        # Each heartbeat sent is one job at most (run once, by whichever worker took it).
        ids = {str(e["uuid"]) for e in sent.pings()}
        assert len(ids) == len(sent.pings())
        states = _ping_jobs(ids)
        log.info("heartbeats sent %s, jobs %s", len(ids), dict(states))
        assert states["succeeded"] >= 1, states
        assert not states["failed"], states

        # The survivor stops cleanly, leaving nothing behind.
        assert standby.stop() == 0, standby.text()[-3000:]
        wait_for(lambda: not standby.leftovers(), 60, interval=0.2, what="no orphan processes")
        assert not (standby.home / "run" / "embedded.json").exists()
    finally:
        sent.stop()

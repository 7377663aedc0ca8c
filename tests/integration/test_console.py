"""`nlphub up`'s job event lines, followed from the audit log of a real database while a real
worker runs the jobs (`workers.events.EventFollower`)."""

from __future__ import annotations

import pytest

import nlphub
from tests.conftest import wait_for
from workers.events import EventFollower
from workers.logs import one_line

pytestmark = [pytest.mark.integration]


def test_job_events_are_followed_from_the_audit_log(env, worker, wait_job) -> None:
    said: list[str] = []
    follower = EventFollower(said.append, interval=0.05)
    follower.start()
    try:
        ok = nlphub.enqueue("nlphub.ping", {}, requested_by="tester")
        bad = nlphub.enqueue(
            "nlphub.validate_upload",
            {"path": "missing.zip", "kind": "model", "name": "broken"},
            requested_by="tester",
        )
        assert wait_job(ok).state == "succeeded"
        failure = wait_job(bad).error
        wait_for(
            lambda: any(f"job {str(bad)[:8]}" in line and "failed" in line for line in said),
            30,
            interval=0.05,
            what=f"the failure line in {said}",
        )
    finally:
        follower.stop()
    pinged = [line.split(" ", 1)[1] for line in said if f"job {str(ok)[:8]}" in line]
    what = [line.split(": ", 1)[1] for line in pinged]
    assert len(what) == 3, said
    assert what[0] == "queued" and what[1].startswith("started on ")
    assert what[2].startswith("succeeded in ")
    failed = [line for line in said if f"job {str(bad)[:8]}" in line and "failed" in line]
    assert len(failed) == 1, said
    # one line, with the reason the job row records (its lines joined)
    assert "\n" in failure
    assert failed[0].endswith(f"nlphub.validate_upload broken: failed: {one_line(failure)}")

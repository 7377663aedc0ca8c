"""Payload input a tenant controls, through a real worker (security issue: regex denial of
service, unbounded payloads, log injection).

- URL passwords are redacted in linear time (`nlphub.redact`): a 1 MB `rules_import` content
  of `"a://:" * n`, which the worker redacts before the job starts, no longer pins a worker
  (it was quadratic: most of an hour for 1 MB).
- What a refused delivery records is bounded: 10,000 unknown keys give a job error of a few
  lines (the first problems, then a count) and a payload stored as a bounded marker; a row
  made earlier with the payload as sent is still matched, and failed.
- `requested_by` is one printable line: one with a newline is refused with a clear message and
  the job is recorded with the actor `external`, never the forged text.

Each test fails with its fix removed (checked once each).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from schemas.db import get_engine
from schemas.settings import get_settings
from schemas.states import JobState


def _send(task: str, kwargs: dict[str, Any]) -> uuid.UUID:
    """Sent without the API, as through Flower's REST API or any broker client."""
    from nlphub.messaging.app import app

    job_id = uuid.uuid4()
    app.send_task(task, kwargs=kwargs, task_id=str(job_id), queue="default")
    return job_id


def test_a_url_password_bomb_does_not_pin_a_worker(worker, wait_job) -> None:
    job_id = _send("nlphub.rules_import", {"content": "a://:" * 200_000})
    job = wait_job(job_id, timeout=60)  # quadratic redaction took most of an hour
    assert job.state == JobState.FAILED, job.error  # not JSON: refused by the import itself


def test_ten_thousand_unknown_keys_are_recorded_bounded(worker, wait_job) -> None:
    job_id = _send("nlphub.ping", {f"unknown_{i:05}": "v" * 100 for i in range(10_000)})
    job = wait_job(job_id)
    assert job.state == JobState.FAILED
    assert len(job.error.encode()) < 4096, len(job.error)
    assert job.error.startswith("invalid payload for nlphub.ping: unknown_00000: unknown field")
    assert job.error.endswith("; and 9,990 more")
    with Session(get_engine()) as session:
        stored = session.execute(
            text("SELECT octet_length(payload::text) FROM job WHERE id = :id"), {"id": job_id}
        ).scalar_one()
    assert stored <= get_settings().audit_details_max_bytes, stored
    assert job.payload["truncated"] is True and job.payload["bytes"] > 1_000_000


def test_a_requested_by_with_a_newline_is_refused(worker, wait_job, audit_actions) -> None:
    forged = "alice\n2026-01-01 00:00:00,000 INFO worker nlphub: admin approved"
    job_id = _send("nlphub.ping", {"requested_by": forged})
    job = wait_job(job_id)
    assert job.state == JobState.FAILED
    assert "requested_by: must be one line of printable text" in job.error
    assert "\n" not in job.error
    assert job.requested_by == "external"
    assert audit_actions(job_id) == ["job.received", "job.failed"]


def test_a_large_refused_payload_matches_the_row_made_with_it(worker, wait_job) -> None:
    """A row made with the payload as sent (the Python API of another version) is failed by
    its own delivery, not taken for another job's because the refusal stores it bounded."""
    from nlphub.jobstate import insert_job
    from schemas.db import held_connection

    kwargs = {"requested_by": "erp", "junk": "y" * 100_000}
    job_id = uuid.uuid4()
    with held_connection() as conn:
        insert_job(
            conn, job_id, task="nlphub.ping", queue="default", payload=kwargs, requested_by="erp"
        )
    from nlphub.messaging.app import app

    app.send_task("nlphub.ping", kwargs=kwargs, task_id=str(job_id), queue="default")
    job = wait_job(job_id)
    assert job.state == JobState.FAILED
    assert job.error == "invalid payload for nlphub.ping: junk: unknown field"
    assert job.payload == kwargs  # the row keeps what it was made with

"""Secrets never reach job rows, the audit log or logs — whatever a caller puts in a payload."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import text
from sqlmodel import Session

from schemas.db import get_engine
from schemas.payloads import TASKS
from schemas.states import JobState

pytestmark = pytest.mark.integration


def test_marker_secrets_in_every_task_type_are_never_stored_or_logged(
    env, worker, wait_job, caplog
) -> None:
    from workers.app import app

    marker = f"MARKER-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    ids = []
    for name in TASKS:
        job_id = uuid.uuid4()
        app.send_task(
            name,
            task_id=str(job_id),
            kwargs={
                "requested_by": "intruder",
                "api_key": marker,
                "password": marker,
                "license_key": marker,
                "url": f"redis://:{marker}@host:6379/0",
            },
        )
        ids.append(job_id)
    for job_id in ids:
        job = wait_job(job_id)
        assert job.state == JobState.FAILED
        assert "api_key: unknown field" in job.error
    with Session(get_engine()) as session:
        dumps = (
            session.execute(
                text(
                    "SELECT payload::text || coalesce(error, '') "
                    "|| coalesce(result::text, '') FROM job "
                    "UNION ALL SELECT details::text FROM audit_event"
                )
            )
            .scalars()
            .all()
        )
    assert dumps and not [d for d in dumps if marker in d]
    assert marker not in caplog.text

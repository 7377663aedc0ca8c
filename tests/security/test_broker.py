"""Spoofing through Flower and Redis (security issue, item g).

- A delivery under a job's id runs only if its task name and payload are the job's: one sent
  with another task, another payload, or a payload that can never run (Flower's `task_id`, or
  `send_task(task_id=...)`) is refused, not retried, and leaves the job's row as it was; the
  job runs when its own message arrives. Payloads are compared by their digest, unredacted:
  one that differs only in a secret (a URL password) is another payload.
- The reconciler never sends a payload that redaction changed (it would run with `***`): such
  a job fails, saying to enqueue it again.
- Workers run nlphub tasks only: Celery's built-ins (`celery.*`) and unknown names sent to the
  nlphub queues are refused and discarded before anything runs.
- The embedded Redis (`nlphub up`) requires a generated password, kept in run/redis-password
  (0600) and carried by the URL in run/embedded.json that the other commands read.
"""

from __future__ import annotations

import os
import stat
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery import signals
from celery.states import READY_STATES
from sqlmodel import Session

import nlphub
from nlphub.jobs import UNSENDABLE, reconcile_outbox
from nlphub.jobstate import insert_job
from schemas.db import get_engine, held_connection
from schemas.payloads import validate_payload
from schemas.states import JobState
from tests.conftest import wait_for

REAL = {"requested_by": "erp", "verify_checksums": False}


def _queued_job() -> uuid.UUID:
    """An `nlphub.inventory` job committed to the outbox, its message not sent yet (what
    `nlphub.enqueue` leaves between its commit and its publish, or after a failed publish)."""
    job_id = uuid.uuid4()
    with held_connection() as conn:
        insert_job(
            conn,
            job_id,
            task="nlphub.inventory",
            queue="default",
            payload=REAL,
            requested_by="erp",
        )
    return job_id


def _stored(task_id: uuid.UUID | str) -> dict[str, Any]:
    from workers.app import app

    return dict(app.backend.get_task_meta(str(task_id), cache=False))


def _handled(task_id: uuid.UUID) -> dict[str, Any]:
    """The stored outcome of the delivery sent under `task_id`, once it has one."""
    return wait_for(
        lambda: (meta := _stored(task_id))["status"] in READY_STATES and meta,
        60,
        what=f"the delivery of {task_id} to be handled",
    )


@pytest.mark.parametrize(
    ("task", "kwargs"),
    [
        pytest.param("nlphub.ping", {"requested_by": "erp"}, id="another-task"),
        pytest.param("nlphub.inventory", {**REAL, "verify_checksums": True}, id="another-payload"),
        pytest.param("nlphub.inventory", {**REAL, "verify_checksums": "never"}, id="a-bad-payload"),
    ],
)
def test_a_delivery_under_another_jobs_id_is_refused_and_that_job_runs_later(
    worker, wait_job, job_state, audit_actions, task: str, kwargs: dict[str, Any]
) -> None:
    from workers.app import app

    job_id = _queued_job()
    before = job_state(job_id)
    app.send_task(task, kwargs=kwargs, task_id=str(job_id))  # what Flower's task_id does
    refused = _handled(job_id)
    assert refused["status"] == "FAILURE", refused
    assert "belongs to another job" in str(refused["result"]), refused
    # the job's row and audit trail are as they were, and nothing was retried
    after = job_state(job_id)
    assert after is not None and before is not None
    assert (after.task, after.state, after.attempts, after.payload, after.error, after.worker) == (
        "nlphub.inventory",
        JobState.QUEUED,
        0,
        REAL,
        None,
        None,
    )
    assert after.updated_at == before.updated_at
    assert audit_actions(job_id) == ["job.enqueued"]
    # its own message (published by the outbox reconciler) runs it as enqueued
    with Session(get_engine()) as session:
        assert reconcile_outbox(session, grace_seconds=0, republish_after=900) == [job_id]
        session.commit()
    job = wait_job(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.task == "nlphub.inventory" and job.attempts == 1
    assert "checked" in job.result
    actions = audit_actions(job_id)
    assert actions.count("job.started") == 1 and actions[-1] == "job.succeeded"


def _queued_import(content: str, *, published: bool = True) -> tuple[uuid.UUID, dict[str, Any]]:
    """An `nlphub.rules_import` job of `content` as `nlphub.enqueue` records it (its payload
    validated), committed, its message not sent."""
    body = validate_payload("nlphub.rules_import", {"requested_by": "erp", "content": content})
    payload = body.model_dump(mode="json")
    job_id = uuid.uuid4()
    with held_connection() as conn:
        insert_job(
            conn,
            job_id,
            task="nlphub.rules_import",
            queue="default",
            payload=payload,
            requested_by="erp",
            published=published,
        )
    return job_id, payload


def test_a_delivery_differing_only_in_a_secret_is_another_payload(
    worker, wait_job, job_state, audit_actions
) -> None:
    from workers.app import app

    job_id, payload = _queued_import("x://u:p@h")
    before = job_state(job_id)
    app.send_task(
        "nlphub.rules_import", kwargs={**payload, "content": "x://u:q@h"}, task_id=str(job_id)
    )
    refused = _handled(job_id)
    assert refused["status"] == "FAILURE", refused
    assert "belongs to another job" in str(refused["result"]), refused
    after = job_state(job_id)
    assert (after.state, after.attempts, after.updated_at, after.error) == (
        JobState.QUEUED,
        0,
        before.updated_at,
        None,
    )
    assert audit_actions(job_id) == ["job.enqueued"]
    # its own payload (the same secret) is the job's: it runs (and fails: no rules in it)
    app.send_task("nlphub.rules_import", kwargs=payload, task_id=str(job_id))
    job = wait_job(job_id)
    assert job.attempts == 1 and "belongs to another job" not in (job.error or "")
    assert "job.started" in audit_actions(job_id)


def test_the_reconciler_fails_a_job_whose_payload_lost_a_secret_to_redaction(
    env, job_state, audit_actions
) -> None:
    job_id, _ = _queued_import("x://u:p@h", published=False)
    with Session(get_engine()) as session:
        assert reconcile_outbox(session, grace_seconds=0, republish_after=900) == []
        session.commit()
    job = job_state(job_id)
    assert (job.state, job.error) == (JobState.FAILED, UNSENDABLE)
    assert audit_actions(job_id) == ["job.enqueued", "job.failed"]


@dataclass
class Seen:
    """What the in-process worker did while a test ran (Celery's signals)."""

    #: task id -> why the consumer refused its message (`task_rejected`)
    refused: dict[str, str] = field(default_factory=dict)
    #: task ids of the runs that began (`task_prerun`)
    started: set[str] = field(default_factory=set)
    #: task id -> (task name, final state, return value) of each run (`task_postrun`)
    ran: dict[str, list[tuple[str, str, Any]]] = field(default_factory=dict)


@pytest.fixture
def seen() -> Iterator[Seen]:
    record = Seen()
    lock = threading.Lock()

    def on_rejected(message: Any = None, exc: Exception | None = None, **_: Any) -> None:
        with lock:
            record.refused[str(message.headers.get("id"))] = str(exc)

    def on_prerun(task_id: str = "", **_: Any) -> None:
        with lock:
            record.started.add(task_id)

    def on_postrun(
        task_id: str = "", task: Any = None, state: str = "", retval: Any = None, **_: Any
    ) -> None:
        with lock:
            record.ran.setdefault(task_id, []).append((task.name, state, retval))

    signals.task_rejected.connect(on_rejected, weak=False)
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_postrun.connect(on_postrun, weak=False)
    try:
        yield record
    finally:
        signals.task_rejected.disconnect(on_rejected)
        signals.task_prerun.disconnect(on_prerun)
        signals.task_postrun.disconnect(on_postrun)


def test_a_finished_jobs_result_is_not_handed_to_another_task(
    worker, wait_job, audit_actions, seen: Seen
) -> None:
    """A delivery of a finished job returns the result its row recorded; one under its id
    for another task is refused instead, and the job's stored result stays its own."""
    from workers.app import app

    job_id = nlphub.enqueue("nlphub.inventory", {"verify_checksums": False})
    job = wait_job(job_id)
    assert job.state == JobState.SUCCEEDED
    stored = wait_for(lambda: (m := _stored(job_id))["status"] == "SUCCESS" and m, 30)
    app.send_task("nlphub.ping", kwargs={"requested_by": "mallory"}, task_id=str(job_id))
    runs = wait_for(
        lambda: len(seen.ran.get(str(job_id), [])) == 2 and seen.ran[str(job_id)],
        30,
        what="the delivery under the finished job's id to be handled",
    )
    name, state, retval = runs[1]
    assert (name, state) == ("nlphub.ping", "REJECTED"), runs[1]
    assert "belongs to another job" in str(retval) and "checked" not in str(retval)
    assert _stored(job_id) == stored  # the job's result, as its own task stored it
    again = wait_job(job_id)
    assert (again.state, again.updated_at) == (JobState.SUCCEEDED, job.updated_at)
    assert audit_actions(job_id).count("job.started") == 1


def test_celery_builtin_and_unknown_tasks_are_refused_and_discarded(
    worker, wait_job, env, seen: Seen
) -> None:
    from workers.app import app

    sent = {
        "celery.backend_cleanup": "default",
        "celery.accumulate": "downloads",
        "celery.chord_unlock": "embeddings",
        "nlphub.no_such_task": "default",
    }
    ids = {}
    for name, queue in sent.items():
        ids[name] = str(uuid.uuid4())
        app.send_task(name, task_id=ids[name], queue=queue, routing_key=queue)
    wait_for(
        lambda: set(ids.values()) <= set(seen.refused),
        30,
        what="the worker to refuse every non-nlphub message",
    )
    for name, task_id in ids.items():
        assert task_id not in seen.started, f"{name} ran"
        assert "refused" in seen.refused[task_id] and name in seen.refused[task_id]
        assert _stored(task_id)["status"] == "PENDING", name  # nothing stored under its id
    # discarded: neither waiting in a queue nor held unacknowledged for redelivery
    client = redis_lib.Redis.from_url(env["redis_url"])
    assert [client.llen(q) for q in ("default", "downloads", "embeddings")] == [0, 0, 0]
    assert client.hlen("unacked") == 0
    # and the worker goes on running nlphub's tasks
    assert wait_job(nlphub.enqueue("nlphub.ping")).state == JobState.SUCCEEDED


def test_embedded_redis_requires_the_password_kept_for_the_other_commands(
    env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schemas.settings import get_settings, load_settings
    from workers.stack import Stack

    monkeypatch.delenv("REDIS_URL")  # `nlphub up` starts its own Redis
    get_settings.cache_clear()
    home: Path = env["home"]
    said: list[str] = []
    stack = Stack(load_settings(), said.append)
    try:
        _, url = stack.start_servers()
        assert stack.redis is not None and stack.redis.port is not None
        port = stack.redis.port
        password_file = home / "run" / "redis-password"
        password = password_file.read_text().strip()
        assert len(password) >= 32
        for path in (password_file, home / "run" / "embedded.json"):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        # the other commands find the URL, password included, in run/embedded.json
        assert load_settings().require_redis_url() == url
        assert f":{password}@127.0.0.1:{port}/" in url
        assert redis_lib.Redis.from_url(url).ping()
        # no password, or a wrong one: refused
        refused = (redis_lib.exceptions.AuthenticationError, redis_lib.exceptions.ResponseError)
        for client in (
            redis_lib.Redis(host="127.0.0.1", port=port),
            redis_lib.Redis(host="127.0.0.1", port=port, password="guess"),
        ):
            with pytest.raises(
                refused, match=r"NOAUTH|WRONGPASS|authenticated|invalid username-password"
            ):
                client.set("nlphub-test", "x")
            client.close()
        assert not any(password in line for line in said)  # `nlphub up` prints no password
        stack.redis.stop()
        _, again = stack.start_servers()  # the next `nlphub up`: the same password
        assert f":{password}@" in again and redis_lib.Redis.from_url(again).ping()
    finally:
        if stack.redis is not None:
            stack.redis.stop()

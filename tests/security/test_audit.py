"""Item (h): the audit chain proves what it seems to.

- The chain's head is anchored outside the database (`nlphub audit anchor`, beat's
  `nlphub.audit_anchor`): `nlphub audit verify` reports the newest events deleted
  (TRUNCATED) and the whole chain recomputed (REWRITTEN), which the hash chain alone passes.
- Audit details are bounded (NLPHUB_AUDIT_DETAILS_MAX_BYTES): a 5 MB payload goes in as a
  marker, never whole, and the chain still verifies (it hashes what is stored).
- The caller is recorded beside the claimed `requested_by`: the enqueuing process's account,
  host and pid through the Python API; the authenticated Flower user through nlphub's Flower
  (a header signed for that message, `workers.flower`, `nlphub.callers`), whose REST API
  refuses client-set `headers` and any other option outside its allow-list; `via: broker`
  for messages sent without either, and `forged_caller` for a caller header that does not
  verify.

Each test fails with its fix removed (checked once each: see the report of item h).
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session
from typer.testing import CliRunner

import nlphub
from nlphub.anchors import ANCHOR_FILE, anchor_dir
from nlphub.audit import GENESIS, event_body, event_hash, verify_chain
from nlphub.callers import CALLER_HEADER, caller_key, signed_caller
from schemas.db import get_engine
from schemas.settings import get_settings
from schemas.states import JobState
from tests.integration.conftest import audit_events

pytestmark = pytest.mark.integration

FIVE_MB = 5 * 2**20


def _cli(*args: str) -> Any:
    from workers.cli import app

    return CliRunner().invoke(app, ["audit", *args])


def _events(count: int) -> None:
    for _ in range(count):
        nlphub.enqueue("nlphub.ping", {}, requested_by="alice")  # one audit event each


def _chain_ok() -> bool:
    with Session(get_engine()) as session:
        return verify_chain(session).ok


def _owner(env: dict[str, Any]) -> psycopg.Connection[Any]:
    """The database owner's connection, the append-only trigger disabled (an attacker who
    owns the database)."""
    conn = psycopg.connect(env["database_url"], autocommit=True)
    conn.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_change")
    return conn


def test_anchor_then_deleting_the_newest_events_is_reported_as_truncation(env) -> None:
    _events(5)
    anchored = _cli("anchor")
    assert anchored.exit_code == 0, anchored.output
    assert "anchored: event" in anchored.output
    assert _cli("verify").exit_code == 0
    with _owner(env) as conn:
        conn.execute("DELETE FROM audit_event WHERE seq > (SELECT max(seq) - 2 FROM audit_event)")
    assert _chain_ok()  # the hash chain alone does not see it
    result = _cli("verify")
    assert result.exit_code == 1, result.output
    assert "TRUNCATED" in result.output and "newest events were deleted" in result.output
    # appended to again after the deletion: the anchored event is gone, the head above it
    _events(3)
    assert _chain_ok()
    result = _cli("verify")
    assert result.exit_code == 1, result.output
    assert "TRUNCATED" in result.output and "is gone from the log" in result.output


def test_anchor_then_rewriting_the_whole_chain_is_reported_as_rewrite(env) -> None:
    _events(4)
    assert _cli("anchor").exit_code == 0
    with _owner(env) as conn:
        rows = conn.execute(
            "SELECT seq, at, actor, action, target, job_id, details::text FROM audit_event "
            "ORDER BY seq"
        ).fetchall()
        prev = GENESIS
        for seq, at, actor, action, target, job_id, details in rows:
            actor = "mallory" if seq == rows[1][0] else actor
            body = event_body(
                seq=seq,
                at=at,
                actor=actor,
                action=action,
                target=target,
                job_id=job_id,
                details_text=details,
            )
            digest = event_hash(prev, body)
            conn.execute(
                "UPDATE audit_event SET actor = %s, prev_hash = %s, hash = %s WHERE seq = %s",
                (actor, prev, digest, seq),
            )
            prev = digest
    assert _chain_ok()  # recomputed consistently: the hash chain alone passes
    result = _cli("verify")
    assert result.exit_code == 1, result.output
    assert "REWRITTEN" in result.output and f"event {rows[-1][0]}'s hash" in result.output


def test_beat_anchors_through_a_task_into_a_private_file(worker, wait_job) -> None:
    from scheduler.schedule import beat_schedule

    entry = beat_schedule(get_settings())["audit-anchor"]
    assert entry["task"] == "nlphub.audit_anchor" and entry["options"]["expires"] > 0
    job_id = nlphub.enqueue("nlphub.audit_anchor", {}, requested_by="beat")
    job = wait_job(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    folder = anchor_dir()
    lines = (folder / ANCHOR_FILE).read_text().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["seq"] == job.result["seq"] and line["hash"] == job.result["hash"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / ANCHOR_FILE).stat().st_mode) == 0o600
    assert _cli("verify").exit_code == 0


def test_a_5mb_payload_goes_into_the_audit_log_as_a_bounded_marker(worker, wait_job, env) -> None:
    content = json.dumps([{"name": "r", "kind": "regex", "pattern": "x" * FIVE_MB}])
    job_id = nlphub.enqueue("nlphub.rules_import", {"content": content}, requested_by="alice")
    wait_job(job_id)
    # a rejected payload sent without the API (as through Flower): 5 MB in an unknown field
    from nlphub.messaging.app import app

    rejected = uuid.uuid4()
    app.send_task(
        "nlphub.ping", kwargs={"junk": "y" * FIVE_MB}, task_id=str(rejected), queue="default"
    )
    assert wait_job(rejected).state == JobState.FAILED
    cap = get_settings().audit_details_max_bytes
    with Session(get_engine()) as session:
        sizes = session.execute(
            text(
                "SELECT action, octet_length(details::text) FROM audit_event "
                "WHERE job_id = ANY(:jobs)"
            ),
            {"jobs": [job_id, rejected]},
        ).all()
    assert sizes and all(size <= cap for _, size in sizes), sizes
    (enqueued,) = audit_events(job_id, "job.enqueued")
    marker = enqueued.details["payload"]
    assert marker["truncated"] is True and marker["bytes"] > FIVE_MB
    assert len(marker["sha256"]) == 64 and marker["preview"].startswith("{")
    assert enqueued.details["queue"] == "default"  # the small values stay
    (received,) = audit_events(rejected, "job.received")
    # a refused delivery's payload is stored bounded (its large value a marker) before auditing
    assert received.details["payload"]["junk"]["truncated"] is True
    assert _chain_ok()  # the chain hashes what is stored


def test_the_enqueue_records_the_process_identity_beside_the_claim(worker, wait_job) -> None:
    job_id = nlphub.enqueue("nlphub.ping", {}, requested_by="someone-else")
    assert wait_job(job_id).state == JobState.SUCCEEDED
    (enqueued,) = audit_events(job_id, "job.enqueued")
    assert enqueued.actor == "someone-else"  # the claim, as before
    account = f"{pwd.getpwuid(os.geteuid()).pw_name}@{socket.gethostname()}"
    assert enqueued.details["caller"] == {"via": "python", "process": account, "pid": os.getpid()}
    # sent without the API (Flower, any broker client): only the way in is known
    from nlphub.messaging.app import app

    other = uuid.uuid4()
    app.send_task("nlphub.ping", kwargs={"requested_by": "x"}, task_id=str(other), queue="default")
    assert wait_job(other).state == JobState.SUCCEEDED
    (received,) = audit_events(other, "job.received")
    assert received.details["caller"]["via"] == "broker"


def _callers(job_id: uuid.UUID) -> list[Any]:
    return [e.details.get("caller") for e in audit_events(job_id, "job.received")]


def test_flower_records_its_authenticated_user_beside_the_claim(worker, flower, wait_job) -> None:
    auth = (flower["user"], flower["password"])
    endpoints = {
        "async-apply": {},
        "send-task": {},
        "apply": {"timeout": 30},  # waits for the result
    }
    for endpoint, extra in endpoints.items():
        body = {"kwargs": {"requested_by": f"erp-{endpoint}"}, "countdown": 0, **extra}
        reply = httpx.post(
            f"{flower['url']}/api/task/{endpoint}/nlphub.ping", json=body, auth=auth, timeout=60
        )
        assert reply.status_code == 200, reply.text
        job_id = uuid.UUID(reply.json()["task-id"])
        job = wait_job(job_id)
        assert job.state == JobState.SUCCEEDED, job.error
        assert job.requested_by == f"erp-{endpoint}"  # the claim, as before
        (received,) = audit_events(job_id, "job.received")
        assert received.actor == f"erp-{endpoint}"
        assert received.details["caller"] == {"via": "flower", "user": "carol"}, endpoint
        assert flower["password"] not in json.dumps(received.details)


def test_flower_refuses_client_headers_and_other_options(worker, flower, wait_job) -> None:
    auth = (flower["user"], flower["password"])
    url = f"{flower['url']}/api/task/async-apply/nlphub.ping"
    forged_id = uuid.uuid4()
    forged = {CALLER_HEADER: {"via": "flower", "user": "root", "sig": "0" * 64}}
    for option, value in [("headers", forged), ("queue", "downloads"), ("retries", 7)]:
        body = {"kwargs": {"requested_by": "x"}, "task_id": str(forged_id), option: value}
        reply = httpx.post(url, json=body, auth=auth, timeout=30)
        assert reply.status_code == 400, reply.text
        assert f"option {option!r} is not accepted" in reply.text
    # a later job runs: the refused ones were never sent
    reply = httpx.post(url, json={"kwargs": {"requested_by": "x"}}, auth=auth, timeout=30)
    assert reply.status_code == 200, reply.text
    assert wait_job(uuid.UUID(reply.json()["task-id"])).state == JobState.SUCCEEDED
    assert audit_events(forged_id) == []
    users = [(e.details.get("caller") or {}).get("user") for e in audit_events()]
    assert "root" not in users


def test_a_caller_header_that_does_not_verify_is_marked_and_not_trusted(worker, wait_job) -> None:
    from nlphub.messaging.app import app

    key = caller_key(get_settings())
    caller = {"via": "flower", "user": "root"}

    def send(task_id: uuid.UUID, kwargs: dict[str, Any], header: Any) -> None:
        app.send_task(
            "nlphub.ping",
            kwargs=kwargs,
            task_id=str(task_id),
            queue="default",
            headers={CALLER_HEADER: header},
        )

    # made up, and signed for another message (another id and payload): not trusted
    made_up, copied = uuid.uuid4(), uuid.uuid4()
    send(made_up, {"requested_by": "m"}, {**caller, "sig": "0" * 64})
    other = signed_caller(
        key, task_id=str(uuid.uuid4()), task="nlphub.ping", caller=caller, args=[], kwargs={}
    )
    send(copied, {"requested_by": "m"}, other)
    # signed for this very message (what nlphub's Flower sends): trusted
    signed = uuid.uuid4()
    kwargs = {"requested_by": "m"}
    send(
        signed,
        kwargs,
        signed_caller(
            key, task_id=str(signed), task="nlphub.ping", caller=caller, args=[], kwargs=kwargs
        ),
    )
    for job_id in (made_up, copied, signed):
        assert wait_job(job_id).state == JobState.SUCCEEDED
    for job_id in (made_up, copied):
        (got,) = _callers(job_id)
        assert got["via"] == "broker" and got["forged_caller"] is True
        assert "user" not in got
    assert _callers(signed) == [caller]

"""Update checks with confirmation, the locked beat, pre-annotation servers and redeploys."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

import nlphub
from nlphub.errors import Refused
from nlphub.hub.mirror import build_mirror
from nlphub.preannotation.service import request_redeploys, run_redeploys, set_server
from schemas.db import get_engine, session_scope
from schemas.models import Redeploy, Resource, ResourceKind, UpdateNotice
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.conftest import wait_for
from tests.integration.conftest import celery_cmd
from tests.integration.test_hub import res

pytestmark = pytest.mark.integration


def _notices() -> list[UpdateNotice]:
    with Session(get_engine()) as session:
        rows = list(session.exec(select(UpdateNotice)).all())
        for r in rows:
            session.expunge(r)
        return rows


def _installed(name: str) -> list[str]:
    with Session(get_engine()) as session:
        return sorted(
            r.version
            for r in session.exec(select(Resource).where(Resource.name == name)).all()
            if r.state == ResourceState.INSTALLED
        )


def test_update_found_once_confirmed_and_switch_recorded(
    mirror, worker, wait_job, audit_actions
) -> None:
    assert wait_job(nlphub.enqueue("nlphub.download", {"name": "glove_100d"})).state == (
        JobState.SUCCEEDED
    )
    check = wait_job(nlphub.enqueue("nlphub.check_updates", {"reason": "manual"}))
    assert check.state == JobState.SUCCEEDED and check.result["new"] == []
    # the hub publishes a newer compatible version
    build_mirror(Path(mirror.folder), [res("glove_100d", "WordEmbeddingsModel", "5.5.0")])
    first = wait_job(nlphub.enqueue("nlphub.check_updates", {"reason": "manual"}))
    assert [n["new"] for n in first.result["new"]] == ["5.5.0"]
    again = wait_job(nlphub.enqueue("nlphub.check_updates", {"reason": "schedule"}))
    assert again.result["new"] == []
    notices = _notices()
    assert len(notices) == 1
    notice = notices[0]
    assert (notice.current_version, notice.new_version, notice.state) == (
        "5.4.0",
        "5.5.0",
        "pending",
    )
    assert notice.size_bytes and notice.edition == "Open Source"
    applied = wait_job(
        nlphub.enqueue("nlphub.apply_update", {"notice_id": str(notice.id), "confirmed_by": "dora"})
    )
    assert applied.state == JobState.SUCCEEDED, applied.error
    download = wait_job(uuid.UUID(applied.result["job_id"]))
    assert download.state == JobState.SUCCEEDED, download.error
    assert _installed("glove_100d") == ["5.4.0", "5.5.0"]  # the old one stayed in use
    assert _notices()[0].state == "applied" and _notices()[0].decided_by == "dora"
    actions = audit_actions()
    assert actions.count("update.found") == 1
    assert "update.confirmed" in actions and "update.applied" in actions
    dismissed = wait_job(
        nlphub.enqueue(
            "nlphub.dismiss_update", {"notice_id": str(notice.id), "confirmed_by": "dora"}
        )
    )
    assert dismissed.state == JobState.FAILED
    assert "is applied; only pending updates can be dismissed" in dismissed.error


def test_start_up_checks_collapse_into_one(mirror, worker, wait_job, audit_actions) -> None:
    jobs = [
        nlphub.enqueue(
            "nlphub.check_updates", {"reason": "startup", "min_interval": 600, "sync": False}
        )
        for _ in range(3)
    ]
    results = [wait_job(j).result for j in jobs]
    assert sum(1 for r in results if "skipped" not in r) == 1, results
    assert audit_actions().count("update.checked") == 1


class _Recorder(BaseHTTPRequestHandler):
    calls: list[str]
    status: int

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.calls.append(self.rfile.read(length).decode())
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def redeploy_target() -> Iterator[Any]:
    handler = type("H", (_Recorder,), {"calls": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_server_config_refuses_too_many_models_and_mixed_embeddings(env) -> None:
    with session_scope() as session:
        with pytest.raises(Refused, match=r"at most 5 models \(6 given\)"):
            set_server(
                session, name="s", url="http://x", models=list("abcdef"), rules=[], actor="t"
            )
        for name, deps in (("ner_a", ["glove_100d"]), ("ner_b", ["w2v_cc_300d"])):
            session.add(
                Resource(
                    name=name,
                    version="1",
                    kind=ResourceKind.MODEL,
                    state=ResourceState.INSTALLED,
                    dependencies=deps,
                )
            )
        session.flush()
        with pytest.raises(
            Refused,
            match=r"models trained on different embeddings cannot share "
            r"a server: ner_a on glove_100d, ner_b on w2v_cc_300d",
        ):
            set_server(
                session, name="s", url="http://x", models=["ner_a", "ner_b"], rules=[], actor="t"
            )


def test_debounced_redeploy_reaches_the_server_once(env, redeploy_target, audit_actions) -> None:
    server, handler = redeploy_target
    url = f"http://127.0.0.1:{server.server_address[1]}"
    with session_scope() as session:
        set_server(session, name="pre1", url=url, models=["ner_dl"], rules=["height"], actor="t")
    for i in range(5):  # five edits in the window
        with session_scope() as session:
            assert request_redeploys(session, rules=["height"], reason=f"edit {i}", actor="t") == [
                "pre1"
            ]
    assert run_redeploys(session_scope, debounce=3600) == []  # still inside the window
    assert handler.calls == []
    out = run_redeploys(session_scope, debounce=0)
    assert [(o["server"], o["ok"], o["changes"]) for o in out] == [("pre1", True, 5)]
    assert len(handler.calls) == 1
    assert run_redeploys(session_scope, debounce=0) == []
    assert audit_actions().count("redeploy.done") == 1


def test_failing_server_is_retried_then_stays_pending(env, redeploy_target) -> None:
    server, handler = redeploy_target
    handler.status = 503
    url = f"http://127.0.0.1:{server.server_address[1]}"
    with session_scope() as session:
        set_server(session, name="pre2", url=url, models=[], rules=["r"], actor="t")
        request_redeploys(session, rules=["r"], reason="edit", actor="t")
    out = run_redeploys(session_scope, debounce=0)
    assert out[0]["ok"] is False and out[0]["detail"] == "HTTP 503"
    assert len(handler.calls) == 3  # retried with backoff
    with Session(get_engine()) as session:
        row = session.exec(select(Redeploy)).one()
        assert row.state == "pending" and row.last_error == "HTTP 503" and row.attempts == 1


@pytest.mark.slow
@pytest.mark.faults  # issue 7's fault list; kept beside its fixtures
def test_two_beats_send_each_scheduled_run_once(env, spawn, tmp_path, monkeypatch) -> None:
    beat_env = {"NLPHUB_HEARTBEAT": "1"}
    logs = [tmp_path / "beat1.log", tmp_path / "beat2.log"]
    beats = [
        spawn(
            celery_cmd("beat", "-s", str(tmp_path / f"schedule{i}"), "-l", "INFO"),
            beat_env,
            log=logs[i],
        )
        for i in range(2)
    ]

    def heartbeats() -> int:
        with Session(get_engine()) as session:
            return int(
                session.execute(
                    text("SELECT count(*) FROM job WHERE task = 'nlphub.ping'")
                ).scalar_one()
            )

    # Beats publish; there is no worker, so each ping waits in Redis. Count messages instead.
    import redis as redis_lib

    client = redis_lib.Redis.from_url(env["redis_url"])

    def queued_pings() -> int:
        return int(client.llen("default"))

    wait_for(lambda: queued_pings() >= 2, 60, interval=0.2, what="the first heartbeats")
    start, count0 = time.monotonic(), queued_pings()
    wait_for(lambda: time.monotonic() - start > 6, 10, interval=0.2, what="six seconds")
    sent = queued_pings() - count0
    elapsed = time.monotonic() - start
    assert sent <= elapsed + 2, f"{sent} heartbeats in {elapsed:.1f}s: both beats sent"
    assert sent >= elapsed - 3, f"only {sent} heartbeats in {elapsed:.1f}s"
    assert all(b.poll() is None for b in beats)
    assert heartbeats() == 0
    # the active beat dies: the standby takes over
    text_logs = [p.read_text(errors="replace") for p in logs]
    active = next(i for i, t in enumerate(text_logs) if "Sending due task heartbeat" in t)
    beats[active].kill()
    beats[active].wait()
    before = queued_pings()
    wait_for(
        lambda: queued_pings() >= before + 3, 30, interval=0.2, what="the standby beat to take over"
    )
    assert "Sending due task heartbeat" in logs[1 - active].read_text(errors="replace")
    assert get_settings().heartbeat_seconds  # settings still load with the env

"""Item (d): no lock across I/O or across two connections.

A unit of work writes its audit events in its own short transaction, never from a second
connection while the first holds the audit chain's lock, and never keeps that lock while it
does file or network I/O; a statement writing audit events waits for a lock at most
NLPHUB_AUDIT_LOCK_TIMEOUT seconds, then fails as a temporary error.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlmodel import Session, select

import nlphub
from nlphub import audit, resources
from nlphub.hub import updates
from nlphub.hub.mirror import build_mirror
from nlphub.hub.sync import sync_hubs
from nlphub.preannotation.service import request_redeploys, run_redeploys, set_server
from schemas.db import get_engine, session_scope
from schemas.models import Redeploy, Resource, ResourceKind, ResourceSource
from schemas.settings import get_settings
from schemas.states import JOB_TERMINAL, JobState, ResourceState
from tasks.base import is_temporary
from tests.conftest import wait_for
from tests.integration.conftest import audit_events
from tests.integration.test_hub import LIBS, res
from tests.integration.test_resources import make_installed, reload

pytestmark = pytest.mark.integration

#: The audit chain trigger's advisory lock key (migration 0001).
AUDIT_CHAIN_LOCK = 1852796008
#: How long checking each (slow) resource takes: over the progress throttle (0.5 s), so every
#: check is followed by a progress write, and its milestones by an audit event.
CHECK_SECONDS = 0.6
#: How long an enqueue (one statement, one publish) may take while an inventory runs.
ENQUEUE_DEADLINE = 3.0


class _Call:
    """`fn()` on a thread of its own: a call that blocks on a lock fails the test when its
    deadline passes instead of hanging it."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.elapsed: float | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.elapsed = time.monotonic() - self.started

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, deadline: float, what: str) -> Any:
        wait_for(self.done, deadline, what=what)
        if self.error is not None:
            raise AssertionError(f"{what} failed after {self.elapsed:.1f}s") from self.error
        return self.value


def _enqueue_within(deadline: float) -> uuid.UUID:
    call = _Call(lambda: nlphub.enqueue("nlphub.ping", requested_by="probe"))
    value: uuid.UUID = call.result(deadline, f"an enqueue to finish within {deadline}s")
    return value


def _chain_ok() -> bool:
    with Session(get_engine()) as session:
        return audit.verify_chain(session).ok


# -- the inventory that froze the system ---------------------------------------------------


def test_inventory_records_each_finding_briefly_and_jobs_enqueue_meanwhile(
    env, worker, wait_job, job_state, monkeypatch
) -> None:
    """One installed resource's folder removed, the others slow to check: the inventory used
    to hold the chain lock from its `resource.invalid` event on, its own progress milestone
    then waited for that lock on a second connection, and every job insert queued behind it.
    Now it finishes in seconds, its milestones recorded, and enqueues complete meanwhile."""
    home = env["home"]
    missing = make_installed(home, "aaa_missing")  # first, by name and by insertion order
    slow = [make_installed(home, f"slow_{i}") for i in range(4)]
    shutil.rmtree(missing.install_path or "")
    real_checksum = resources.tree_checksum

    def slow_checksum(path: Path) -> tuple[str, int]:
        time.sleep(CHECK_SECONDS)  # a large resource's hashing, deterministic
        return real_checksum(path)

    monkeypatch.setattr(resources, "tree_checksum", slow_checksum)
    started = time.monotonic()
    inventory = nlphub.enqueue("nlphub.inventory", {}, requested_by="ops")
    probes: list[uuid.UUID] = []
    # progress with 5 resources: 0 (missing: instant), then 0.4, 0.6, 0.8 after each check
    for step in (0.0, 0.4, 0.6, 0.8):

        def reached(step: float = step) -> bool:
            job = job_state(inventory)
            if job is None:
                return False
            return job.state in JOB_TERMINAL or (
                job.state == JobState.STARTED and job.progress >= step
            )

        wait_for(reached, 20, what=f"the inventory's progress to reach {step:.0%}")
        probes.append(_enqueue_within(ENQUEUE_DEADLINE))
    job = wait_job(inventory, timeout=30)
    elapsed = time.monotonic() - started
    assert job.state == JobState.SUCCEEDED, job.error
    assert elapsed < 20, f"the inventory took {elapsed:.1f}s"
    assert job.result["missing"] == [missing.label]
    assert job.result["verified"] == len(slow)
    assert reload(missing).state == ResourceState.INVALID
    assert all(reload(r).state == ResourceState.INSTALLED for r in slow)
    milestones = [e.details["fraction"] for e in audit_events(inventory, "job.progress")]
    assert milestones == [0.4, 0.6, 0.8]
    assert [e.target for e in audit_events(action="resource.invalid")] == [missing.label]
    assert len(audit_events(inventory, "inventory.completed")) == 1
    for probe in probes:
        assert wait_job(probe).state == JobState.SUCCEEDED
    assert _chain_ok()


# -- lock_timeout on audit writes ----------------------------------------------------------


@pytest.fixture
def short_lock_timeout(env, monkeypatch) -> Iterator[float]:
    monkeypatch.setenv("NLPHUB_AUDIT_LOCK_TIMEOUT", "0.5")
    get_settings.cache_clear()
    yield 0.5
    get_settings.cache_clear()


def _lock_not_available(exc: BaseException | None) -> bool:
    return isinstance(exc, sqlalchemy.exc.OperationalError) and isinstance(
        exc.orig, psycopg.errors.LockNotAvailable
    )


def _record(action: str) -> int:
    with session_scope() as session:
        return audit.record(session, actor="t", action=action, target="locks")


def test_an_audit_write_blocked_on_the_chain_lock_fails_after_lock_timeout(
    short_lock_timeout: float,
) -> None:
    """A transaction keeps the chain lock (a mistake: it waits for something with an audit
    event written): the other audit writes, `audit.record`'s and a job insert's, fail after
    lock_timeout with a temporary error instead of waiting for ever."""
    assert audit.lock_timeout() == "500ms"
    with Session(get_engine()) as holder:
        audit.record(holder, actor="t", action="test.hold", target="locks")
        try:
            blocked = _Call(lambda: _record("test.blocked"))
            enqueue = _Call(lambda: nlphub.enqueue("nlphub.ping", requested_by="t"))
            wait_for(lambda: blocked.done() and enqueue.done(), 10, what="the lock timeouts")
        finally:
            holder.rollback()
    for call in (blocked, enqueue):
        assert _lock_not_available(call.error), call.error
        assert call.error is not None and is_temporary(call.error)
        assert call.elapsed is not None and short_lock_timeout <= call.elapsed < 5
    # the lock free again, the same writes go through and the chain verifies
    _record("test.after")
    nlphub.enqueue("nlphub.ping", requested_by="t")
    actions = [e.action for e in audit_events()]
    assert actions == ["test.after", "job.enqueued"]
    assert _chain_ok()


# -- network calls outside transactions ------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    """Records each POST, with what its `observers` saw while it was being answered; waits
    for `release` before answering."""

    calls: list[dict[str, Any]]
    entered: threading.Event
    release: threading.Event
    observers: list[Callable[[], dict[str, Any]]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        seen: dict[str, Any] = {"body": self.rfile.read(length).decode()}
        for observe in self.observers:
            seen.update(observe())
        self.calls.append(seen)
        self.entered.set()
        self.release.wait(20)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    class Hook(_Hook):
        calls: list[dict[str, Any]] = []
        entered = threading.Event()
        release = threading.Event()
        observers: list[Callable[[], dict[str, Any]]] = []

    handler = Hook
    handler.release.set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    handler.release.set()
    server.shutdown()
    server.server_close()


def _database_now() -> dict[str, Any]:
    """From a connection of its own: the committed update notices, and whether any session
    holds the audit chain's lock."""
    with get_engine().connect() as conn:
        notices = conn.execute(text("SELECT count(*) FROM update_notice")).scalar_one()
        chain = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = 0 AND objid = :k AND objsubid = 1"
            ),
            {"k": AUDIT_CHAIN_LOCK},
        ).scalar_one()
    return {"notices": notices, "chain_lock_held": chain > 0}


def test_update_webhook_is_called_after_the_notices_commit(
    env, tmp_path, monkeypatch, hook
) -> None:
    """The update check's webhook POST runs after its notices (and their `update.found`
    events) commit, without the chain lock; `update.checked` records its outcome."""
    url, handler = hook
    handler.observers.append(_database_now)
    folder = tmp_path / "hub"
    build_mirror(folder, [res("glove_100d", "WordEmbeddingsModel", v) for v in ("5.4.0", "5.5.0")])
    monkeypatch.setenv("NLPHUB_HUB_URLS", f"file://{folder}")
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
    monkeypatch.setenv("NLPHUB_UPDATE_WEBHOOK", url)
    get_settings.cache_clear()
    assert not sync_hubs("test")["errors"]
    with session_scope() as session:
        session.add(
            Resource(
                name="glove_100d",
                version="5.4.0",
                kind=ResourceKind.EMBEDDINGS,
                source=ResourceSource.HUB,
                lib_version="5.4.0",
                spark_version="3.4",
                state=ResourceState.INSTALLED,
            )
        )
    out = updates.check_updates(session_scope, get_settings(), actor="t", reason="manual")
    assert [n["new"] for n in out["new"]] == ["5.5.0"]
    assert len(handler.calls) == 1
    call = handler.calls[0]
    assert '"new":"5.5.0"' in call["body"].replace(" ", "")
    assert call["notices"] == 1, "the webhook was called before the notices committed"
    assert not call["chain_lock_held"], "the webhook was called with the chain lock held"
    checked = audit_events(action="update.checked")
    assert len(checked) == 1 and checked[0].details["new_notices"] == 1
    assert "notify" not in checked[0].details
    # a second check finds nothing new and calls nobody
    again = updates.check_updates(session_scope, get_settings(), actor="t", reason="manual")
    assert again["new"] == [] and len(handler.calls) == 1
    assert _chain_ok()


def test_a_change_requested_while_a_server_is_redeployed_does_not_wait_for_it(env, hook) -> None:
    """The redeploy POST runs with no transaction open: a change requested meanwhile (which
    locks the server's pending redeploy and writes an audit event) completes at once, and
    waits for the next redeploy instead of being folded into the one in flight."""
    url, handler = hook
    handler.release.clear()
    with session_scope() as session:
        set_server(session, name="pre", url=url, models=[], rules=["r"], actor="t")
        request_redeploys(session, rules=["r"], reason="edit 1", actor="t")
    sending = _Call(lambda: run_redeploys(session_scope, debounce=0))
    try:
        wait_for(handler.entered.is_set, 10, what="the redeploy POST")

        def change() -> list[str]:
            with session_scope() as session:
                return request_redeploys(session, rules=["r"], reason="edit 2", actor="t")

        assert _Call(change).result(ENQUEUE_DEADLINE, "a change during the POST") == ["pre"]
    finally:
        handler.release.set()
    out = sending.result(20, "the redeploy")
    assert [(o["server"], o["ok"], o["changes"]) for o in out] == [("pre", True, 1)]
    with Session(get_engine()) as session:
        rows = {r.state: r.reasons for r in session.exec(select(Redeploy)).all()}
    assert rows == {"done": ["edit 1"], "pending": ["edit 2"]}
    again = run_redeploys(session_scope, debounce=0)
    assert [(o["ok"], o["changes"]) for o in again] == [(True, 1)]
    assert len(handler.calls) == 2
    assert _chain_ok()


def test_the_changes_requested_during_a_redeploy_are_the_new_tail_of_its_reasons() -> None:
    from nlphub.preannotation.service import _appended

    assert _appended(["a", "b"], ["a", "b", "c"]) == ["c"]
    assert _appended([], ["a", "b"]) == ["a", "b"]
    full = [f"edit {i}" for i in range(50)]  # request_redeploys keeps the last 50
    assert _appended(full, [*full, "x", "y"][-50:]) == ["x", "y"]


# -- the outbox reconciler publishes with no transaction open ---------------------------------


def _never_published(n: int) -> list[uuid.UUID]:
    """`n` jobs committed 5 minutes ago whose publish never happened (past any grace)."""
    ids = [uuid.uuid4() for _ in range(n)]
    with Session(get_engine()) as session:
        for job_id in ids:
            session.execute(
                text(
                    "INSERT INTO job (id, task, queue, payload, state, progress, attempts, "
                    "requested_by, created_at, updated_at) VALUES (:id, 'nlphub.ping', "
                    "'default', '{\"requested_by\": \"app\"}', 'queued', 0, 0, 'app', "
                    "now() - interval '5 minutes', now() - interval '5 minutes')"
                ),
                {"id": job_id},
            )
        session.commit()
    return ids


def _reconcile_once() -> list[uuid.UUID]:
    from nlphub.jobs import reconcile_outbox

    with Session(get_engine()) as session:
        return reconcile_outbox(session, grace_seconds=30, republish_after=900)


def test_the_reconciler_holds_no_lock_while_it_publishes(env, monkeypatch) -> None:
    """The publish of the second stale job blocks (a slow Redis): an enqueue elsewhere still
    completes at once (before, the first `job.republished` event had taken the chain lock,
    held across every later publish), and a second reconciler skips the claimed jobs."""
    from nlphub import jobs

    stale = _never_published(3)
    real_send = jobs._send
    sent: list[uuid.UUID] = []
    entered, release = threading.Event(), threading.Event()

    def slow_send(job_id: uuid.UUID, *args: Any, **kwargs: Any) -> bool:
        if job_id not in stale:
            return real_send(job_id, *args, **kwargs)  # the probes' enqueues
        sent.append(job_id)
        if len(sent) == 2:
            entered.set()
            release.wait(20)
        return True

    monkeypatch.setattr(jobs, "_send", slow_send)
    first = _Call(_reconcile_once)
    try:
        wait_for(entered.is_set, 10, what="the second publish")
        _enqueue_within(2.0)  # before: failed after the chain lock's 5 s timeout
        again = _Call(_reconcile_once).result(2.0, "a concurrent reconciler")
        assert again == []  # claimed by the first one: not published twice
    finally:
        release.set()
    assert sorted(first.result(20, "the reconciler")) == sorted(stale)
    assert sorted(sent) == sorted(stale)
    republished = [e.job_id for e in audit_events(action="job.republished")]
    assert len(republished) == len(stale) and set(republished) == set(stale)
    assert _chain_ok()


def test_a_failed_republish_is_found_again(env, monkeypatch) -> None:
    """A publish that fails gives the claim back (`published_at` as it was), so the next run
    sends the job, recorded as its first publish."""
    from nlphub import jobs

    [job_id] = _never_published(1)
    monkeypatch.setattr(jobs, "_send", lambda *a, **k: False)
    assert _reconcile_once() == []
    with Session(get_engine()) as session:
        assert (
            session.execute(
                text("SELECT published_at FROM job WHERE id = :id"), {"id": job_id}
            ).scalar_one()
            is None
        )
    monkeypatch.setattr(jobs, "_send", lambda *a, **k: True)
    assert _reconcile_once() == [job_id]
    [event] = audit_events(job_id, "job.republished")
    assert event.details["first_publish"] is True and event.details["reason"] == "never_published"

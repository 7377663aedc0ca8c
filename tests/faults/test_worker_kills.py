"""Worker SIGKILL in the middle of each long task type (issue 7, reliability suite).

One real prefork worker (`-P prefork -c 1`) per test. Each trial starts a new job on a new
resource / upload / embedding / update notice, stops it at a chosen point, SIGKILLs the pool
process and lets the parent fork a new one: the message comes back (acks_late +
reject_on_worker_lost) and the job must finish exactly once — one `job.succeeded`, no duplicate
resources, downloads or vectors, nothing half-written left on disk, the audit chain intact.

Trials cycle through their task type's kill modes; the random parts (a threshold, a delay) come
from `random.Random(trial)`, so a failing trial reproduces with the same numbers. The points:

- *observed progress*: the ``.partial`` or the stored vectors reach a threshold, or a random
  delay after the job started; the process dies between two statements.
- *a job-row write* (`RowGate` on the job row): the test holds the row's lock, so the task
  stops at its next write of its own row (start, progress, outcome); the test lets the writes
  through one at a time until the chosen point. This reaches "the work is committed but its
  success is not recorded" deterministically — where redelivery bugs hide.
- *a lock inside the work*: the identity lock of a download request, a resource row, a
  conflicting (uncommitted) resource row: the task stops in the middle of its transaction.

A task stopped at a lock has a Postgres backend in the middle of a statement, and a backend
outlives its dead client until that statement ends (its transaction then aborts). `terminate`
ends that backend with the process (what happens to an idle connection); `stuck` keeps it
waiting until the redelivered message has started the job again in a new pool process, then
lets the orphaned statement run, alongside the new attempt.

NLPHUB_FAULT_TRIALS (default 20) sets the number of trials per task type; NLPHUB_FAULT_MODES
(e.g. ``renamed,committed``) keeps only those kill modes. Run with
``-o log_cli=true --log-cli-level=INFO`` to see where each test's trials stopped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text
from sqlmodel import Session, select

import nlphub
from nlphub.audit import verify_chain
from nlphub.embeddings.service import import_records
from nlphub.hub.mirror import build_mirror, write_resource_dir
from nlphub.hub.server import MirrorServer
from nlphub.hub.service import request_download
from nlphub.hub.sync import sync_hubs
from nlphub.hub.updates import check_updates
from nlphub.jobs import reconcile_outbox
from nlphub.resources import install_dir, tree_checksum
from nlphub.uploads.service import UploadRequest, accept_upload
from schemas.db import get_engine, session_scope
from schemas.models import Resource, ResourceKind, ResourceSource, UpdateNotice
from schemas.settings import get_settings
from schemas.states import JOB_TERMINAL, JobState, ResourceState
from tests.conftest import wait_for
from tests.integration.conftest import celery_cmd
from tests.integration.test_hub import LIBS, res
from tests.procs import alive, children

pytestmark = [pytest.mark.slow]

log = logging.getLogger(__name__)

TRIALS = int(os.environ.get("NLPHUB_FAULT_TRIALS", "20"))
CHUNK_DELAY = 0.05  # seconds per 64 KiB chunk: a 1 MB archive takes about 0.8 s
DL_BYTES = 1_000_000
RECORDS = 5000  # stored in windows of 2048: killed after 0, 2048 or 4096 of them


# -- the hub -----------------------------------------------------------------------------------


def _dl(i: int) -> str:
    return f"kill_dl_{i:02d}"


def _dep(i: int) -> str:
    return f"kill_dep_{i:02d}"


def _upd(i: int) -> str:
    return f"kill_upd_{i:02d}"


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror with one resource per trial and task type (built once for the module)."""
    folder = tmp_path_factory.mktemp("kill-hub")
    build_mirror(
        folder,
        [res(_dl(i), "WordEmbeddingsModel", payload_bytes=DL_BYTES) for i in range(TRIALS)]
        + [res(_dep(i), "WordEmbeddingsModel", payload_bytes=200_000) for i in range(TRIALS)]
        + [
            res(_upd(i), "WordEmbeddingsModel", "5.5.0", payload_bytes=DL_BYTES)
            for i in range(TRIALS)
        ],
    )
    return folder


@pytest.fixture
def hub(
    env: dict[str, Any], hub_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MirrorServer]:
    with MirrorServer(hub_folder) as server:
        monkeypatch.setenv("NLPHUB_HUB_URLS", server.url)
        monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
        get_settings.cache_clear()
        out = sync_hubs("test")
        assert not out["errors"], out
        yield server


def _archive_size(server: MirrorServer, name: str, version: str = "5.4.0") -> int:
    lines = (Path(server.folder) / "metadata.json").read_text().splitlines()
    for line in lines:
        entry = json.loads(line)
        if entry["name"] == name and ".".join(map(str, entry["libVersion"]["parts"])) == version:
            return int(entry["size"])
    raise AssertionError(f"{name} {version} is not in the mirror")


# -- the worker, the database, the locks ---------------------------------------------------------


#: The worker notices a killed pool process by its sentinel pipe, but when it wakes up before
#: the kernel has made the child a zombie it finds nothing to reap, and then only notices at
#: the pool's maintenance timer: Celery's 5 s made 60 % of the kills here 3 s late on average
#: (two thirds of this module's time). nlphub/messaging/app.py sets it to 0.5 s
#: (POOL_MAINTAIN_INTERVAL); `noticed_after` reports the delay per trial.


class PoolWorker:
    """`celery worker -P prefork -c 1`: its one pool process is what a trial kills."""

    def __init__(self, spawn: Callable[..., Any], log_path: Path, queues: str) -> None:
        self.log_path = log_path
        python, _m, _celery, *args = celery_cmd(
            "worker",
            "-Q",
            queues,
            "-c",
            "1",
            "-P",
            "prefork",
            "-n",
            f"kill-{uuid.uuid4().hex[:6]}@%h",
            "-l",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        )
        self.proc = spawn([python, _m, _celery, *args], log=log_path)
        self.child()

    def child(self) -> int:
        def one() -> int | None:
            assert self.proc.poll() is None, f"the worker exited\n{self.tail()}"
            kids = [p for p in children(self.proc.pid) if alive(p)]
            return kids[0] if len(kids) == 1 else None

        return int(wait_for(one, 60, interval=0.01, what="the worker's pool process"))

    def kill(self) -> tuple[int, datetime]:
        pid = self.child()
        log.info("SIGKILL pool process %d", pid)
        os.kill(pid, signal.SIGKILL)
        return pid, datetime.now()

    def noticed_after(self, pid: int, killed: datetime) -> float | None:
        """Seconds until the worker noticed that its pool process `pid` was gone."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f" pid:{pid} exited" in line:
                at = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
                return (at - killed).total_seconds()
        return None

    def stop(self) -> None:
        """SIGSTOP the pool process: it stays where it is until it is killed."""
        os.kill(self.child(), signal.SIGSTOP)

    def tail(self, size: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]


class Db:
    """The test's own connection (autocommit): observe the database, end backends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        self.pid = self.conn.info.backend_pid

    def value(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def blocked_by(self, holder: int) -> list[tuple[int, str]]:
        rows = self.conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (holder,),
        ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def terminate(self, pid: int) -> None:
        self.value("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(
            lambda: not self.value("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)),
            30,
            interval=0.01,
            what=f"backend {pid} to end",
        )

    def job_state(self, job_id: uuid.UUID) -> str | None:
        return self.value("SELECT state FROM job WHERE id = %s", (job_id,))

    def close(self) -> None:
        self.conn.close()


class Hold:
    """A lock the test holds in an open transaction of its own; `release` rolls it back."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())

    def release(self) -> None:
        self.session.close()  # rolls back


def identity_hold(name: str, version: str, language: str = "en") -> Hold:
    """The lock `request_download` takes on a resource's identity (name, language, version)."""
    session = Session(get_engine())
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
        {"k": f"resource:{name}:{language}:{version}"},
    )
    return Hold(session)


def conflicting_row_hold(name: str, version: str) -> Hold:
    """An uncommitted resource row with the same identity: the task's insert waits for it."""
    session = Session(get_engine())
    session.add(
        Resource(
            name=name,
            version=version,
            kind=ResourceKind.EMBEDDINGS,
            source=ResourceSource.UPLOAD,
            state=ResourceState.QUEUED,
        )
    )
    session.flush()
    return Hold(session)


class RowGate:
    """Holds one row's lock (FOR NO KEY UPDATE) and lets the task's writes of it through one
    at a time.

    Two connections take turns: while the task waits for the holder, the other one queues
    behind the task; the holder lets go, the task's statement runs and commits, and the
    queued connection then holds the row again before the task's next write of it.
    """

    def __init__(self, db: Db, table: str) -> None:
        self.db = db
        self.sql = f"SELECT 1 FROM {table} WHERE id = %s FOR NO KEY UPDATE"
        self.conns = [psycopg.connect(db.url), psycopg.connect(db.url)]
        self.row: uuid.UUID | None = None

    @property
    def pids(self) -> set[int]:
        return {c.info.backend_pid for c in self.conns}

    def hold(self, row: uuid.UUID) -> None:
        self.row = row
        self.conns[0].execute(self.sql, (row,))

    def waiting(self) -> tuple[int, str] | None:
        """The backend waiting for the holder (the task's), with its statement."""
        found = [
            (pid, q)
            for pid, q in self.db.blocked_by(self.conns[0].info.backend_pid)
            if pid not in self.pids
        ]
        return found[0] if found else None

    def step(self) -> None:
        """Let the waiting statement through; hold the row again before the next one."""
        queued = self.conns[1]
        taker = threading.Thread(target=queued.execute, args=(self.sql, (self.row,)))
        taker.start()
        wait_for(
            lambda: self.db.value(
                "SELECT cardinality(pg_blocking_pids(%s))", (queued.info.backend_pid,)
            ),
            10,
            interval=0.002,
            what="the second gate connection to queue behind the task",
        )
        self.conns[0].rollback()
        taker.join(30)
        assert not taker.is_alive(), "the gate could not take the row back"
        self.conns.reverse()

    def until(
        self, job_id: uuid.UUID, stop: Callable[[str], bool], timeout: float = 60.0
    ) -> tuple[int, str] | None:
        """Step through the task's writes until `stop(statement)` holds while it waits; the
        waiting backend and its statement. None when the job ended without stopping."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = wait_for(
                lambda: self.waiting() or self.db.job_state(job_id) in JOB_TERMINAL,
                timeout,
                interval=0.002,
                what="the task to write its job row",
            )
            if waiting is True:
                return None
            if stop(waiting[1]):
                return waiting
            self.step()
        raise AssertionError(f"the task did not reach the kill point in {timeout}s")

    def release(self) -> None:
        for conn in self.conns:
            if not conn.closed:
                conn.rollback()
                conn.close()


def _statement(query: str) -> str:
    """What a blocked statement of the task is, in words (for the trial log)."""
    q = " ".join(query.split())
    if "UPDATE job SET progress" in q:
        return "progress write"
    if "WITH l AS MATERIALIZED" in q:
        if "result = CAST" in q:
            return "success record"
        if "attempts = attempts + 1" in q:
            return "start record"
        return "job transition"
    if "FROM resource" in q and "FOR UPDATE" in q:
        return "resource row lock"
    if "pg_advisory_xact_lock" in q:
        return "download request lock"
    if "INSERT INTO resource" in q:
        return "resource insert"
    return q[:60]


def _mode(modes: tuple[str, ...], i: int) -> str:
    """Trial i's kill mode: the modes in turn (NLPHUB_FAULT_MODES=a,b keeps only those)."""
    keep = [m for m in os.environ.get("NLPHUB_FAULT_MODES", "").split(",") if m in modes]
    chosen = keep or list(modes)
    return chosen[i % len(chosen)]


@dataclass
class Trial:
    index: int
    mode: str
    job_id: uuid.UUID | None = None
    stopped_at: str = ""
    attempts: int = 0
    noticed: float | None = None


class Rig:
    """One test's worker, database observer and trial log."""

    def __init__(self, env: dict[str, Any], spawn: Callable[..., Any], tmp: Path, queues: str):
        self.home: Path = env["home"]
        self.db = Db(env["database_url"])
        self.worker = PoolWorker(spawn, tmp / "worker.log", queues)
        self.trials: list[Trial] = []
        self.last_kill: tuple[int, datetime] | None = None
        self.locks: list[RowGate | Hold] = []  # released at the end, whatever happened

    def trial(self, modes: tuple[str, ...], i: int) -> tuple[random.Random, Trial]:
        """Start trial i (logged): its seeded random source and its kill mode."""
        trial = Trial(i, _mode(modes, i))
        self.trials.append(trial)
        return random.Random(i), trial

    def gate(self, table: str = "job") -> RowGate:
        gate = RowGate(self.db, table)
        self.locks.append(gate)
        return gate

    def hold(self, hold: Hold) -> Hold:
        self.locks.append(hold)
        return hold

    def kill(
        self,
        backend: int | None = None,
        *,
        stuck: bool = False,
        release: Callable[[], None] | None = None,
    ) -> None:
        """SIGKILL the pool process. A `backend` stopped at a lock ends with it, or (`stuck`)
        outlives it until a new pool process has taken the redelivered job up; then
        `release` lets the stopped statement go on."""
        before = self.backends()
        self.last_kill = self.worker.kill()
        if backend is not None and not stuck:
            self.db.terminate(backend)
        elif backend is not None:
            # the new pool process connects afresh: wait for one of its backends to start it
            wait_for(
                lambda: self.db.value(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> ALL(%s) AND query ILIKE '%%job%%'",
                    (before,),
                ),
                90,
                interval=0.01,
                what="the redelivered message to start the job",
            )
        if release is not None:
            release()

    def outcome_next(self, job_id: uuid.UUID) -> Callable[[str], bool]:
        """For a task that writes no progress: its next write of its started job's row is its
        outcome (the work is committed, its success not yet recorded)."""
        return lambda _statement: self.db.job_state(job_id) == "started"

    def backends(self) -> list[int]:
        rows = self.db.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        return [int(r[0]) for r in rows]

    def wait_started(self, job_id: uuid.UUID) -> None:
        wait_for(
            lambda: self.db.job_state(job_id) in ("started", *JOB_TERMINAL),
            60,
            interval=0.005,
            what=f"job {job_id} to start",
        )

    def finish(self, job_id: uuid.UUID, timeout: float = 120.0) -> Any:
        """Wait for the job to end. A job still queued after 15 s is republished the way
        beat's outbox reconciler would (a process killed between commit and publish)."""
        start = time.monotonic()
        reconciled = False

        def done() -> Any:
            nonlocal reconciled
            state = self.db.job_state(job_id)
            if state == "queued" and not reconciled and time.monotonic() - start > 15:
                reconciled = True
                with session_scope() as session:
                    log.warning("job %s still queued: reconciling the outbox", job_id)
                    reconcile_outbox(session, grace_seconds=1, republish_after=10)
            return state in JOB_TERMINAL

        wait_for(done, timeout, interval=0.02, what=f"job {job_id} to finish")
        return self.job(job_id)

    def job(self, job_id: uuid.UUID) -> Any:
        from schemas.models import Job

        with Session(get_engine()) as session:
            job = session.get(Job, job_id)
            assert job is not None
            session.expunge(job)
            return job

    def actions(self, job_id: uuid.UUID | None = None, target: str | None = None) -> list[str]:
        sql = "SELECT action FROM audit_event WHERE true"
        params: list[Any] = []
        if job_id is not None:
            sql += " AND job_id = %s"
            params.append(job_id)
        if target is not None:
            sql += " AND target = %s"
            params.append(target)
        rows = self.db.conn.execute(sql + " ORDER BY seq", params).fetchall()
        return [r[0] for r in rows]

    def completed_once(self, trial: Trial) -> Any:
        """The trial's job succeeded, and its success was recorded exactly once."""
        assert trial.job_id is not None
        job = self.finish(trial.job_id)
        trial.attempts = job.attempts
        if self.last_kill is not None:
            trial.noticed = self.worker.noticed_after(*self.last_kill)
            self.last_kill = None
        context = f"trial {trial.index} ({trial.mode}, stopped at {trial.stopped_at or '?'})"
        assert job.state == JobState.SUCCEEDED, (
            f"{context}: {job.state}: {job.error}\n{self.worker.tail()}"
        )
        actions = self.actions(trial.job_id)
        assert actions.count("job.succeeded") == 1, (context, actions)
        assert "job.failed" not in actions, (context, actions)
        return job

    def resource(self, name: str, version: str | None = None) -> Resource:
        with Session(get_engine()) as session:
            query = select(Resource).where(Resource.name == name)
            if version is not None:
                query = query.where(Resource.version == version)
            rows = session.exec(query).all()
            assert len(rows) == 1, [(r.name, r.version, r.state) for r in rows]
            session.expunge(rows[0])
            return rows[0]

    def check_installed(self, name: str, version: str | None = None) -> Resource:
        row = self.resource(name, version)
        assert row.state == ResourceState.INSTALLED, (row.label, row.state, row.error)
        path = Path(row.install_path or "")
        assert (path / "metadata").is_dir(), path
        assert tree_checksum(path)[0] == row.checksum, f"{row.label}: files differ from record"
        assert self.actions(target=row.label).count("resource.installed") <= 1
        return row

    def check_end(self) -> None:
        """After the trials: nothing half-written on disk, no duplicate resources, the audit
        chain intact, the worker alive; log what the trials went through."""
        assert self.worker.proc.poll() is None, self.worker.tail()
        assert _leftovers(self.home) == []
        dupes = self.db.conn.execute(
            "SELECT name, language, version, count(*) FROM resource "
            "GROUP BY name, language, version HAVING count(*) > 1"
        ).fetchall()
        assert dupes == []
        with Session(get_engine()) as session:
            report = verify_chain(session)
        assert report.ok, report
        modes = Counter(t.mode for t in self.trials)
        points = Counter(f"{t.mode}: {t.stopped_at}" for t in self.trials)
        attempts = Counter(t.attempts for t in self.trials)
        noticed = sorted(t.noticed for t in self.trials if t.noticed is not None)
        log.info(
            "%d trials; modes %s; attempts %s; stopped at %s; the worker noticed a killed pool "
            "process after %s s (median), %s s (max), %d times after more than 1 s",
            len(self.trials),
            dict(modes),
            dict(sorted(attempts.items())),
            dict(sorted(points.items())),
            round(noticed[len(noticed) // 2], 2) if noticed else None,
            round(noticed[-1], 2) if noticed else None,
            sum(1 for n in noticed if n > 1),
        )

    def close(self) -> None:
        for lock in self.locks:
            lock.release()
        self.db.close()


@pytest.fixture
def rig_factory(
    env: dict[str, Any], spawn: Callable[..., Any], tmp_path: Path
) -> Iterator[Callable[[str], Rig]]:
    made: list[Rig] = []

    def make(queues: str) -> Rig:
        rig = Rig(env, spawn, tmp_path, queues)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def _leftovers(home: Path) -> list[str]:
    """Partial downloads, staging, trash and temp files anywhere under NLPHUB_HOME."""
    found = []
    for path in home.rglob("*"):
        if path.name.endswith(".partial") or path.name.startswith((".staging-", ".trash-")):
            found.append(str(path))
    for folder in ("downloads", "tmp"):
        if (home / folder).is_dir():
            found += [str(p) for p in (home / folder).iterdir()]
    return found


def enqueue_held(make: Callable[[Session], uuid.UUID], hold: Callable[[uuid.UUID], None]) -> Any:
    """Create a job in a transaction; `hold(job_id)` runs after the commit, before the job's
    message is published (so the test holds its lock before any worker can start it)."""
    box: list[uuid.UUID] = []
    with Session(get_engine()) as session:

        @event.listens_for(session, "after_commit", once=True)
        def _hold(_s: Session) -> None:
            hold(box[0])

        box.append(make(session))
        session.commit()
    return box[0]


def _kill_after_start(
    rig: Rig, trial: Trial, task: str, payload: dict[str, Any], seconds: float
) -> None:
    """Enqueue, and kill the pool process `seconds` after the job started."""
    trial.job_id = nlphub.enqueue(task, payload)
    rig.wait_started(trial.job_id)
    time.sleep(seconds)  # the trial's kill moment (from its seeded schedule), not a wait
    trial.stopped_at = f"{seconds * 1000:.0f} ms after start"
    rig.kill()


def _kill_when_blocked(
    rig: Rig,
    trial: Trial,
    task: str,
    payload: dict[str, Any],
    hold: Hold,
    what: str,
    note: str = "",
) -> None:
    """Enqueue, and kill the pool process once its statement waits behind `hold` (a "-stuck"
    mode leaves that statement running until the redelivered job has started)."""
    trial.job_id = nlphub.enqueue(task, payload)
    waiting = wait_for(lambda: rig.db.blocked_by(hold.pid), 60, interval=0.005, what=what)
    trial.stopped_at = _statement(waiting[0][1]) + note
    rig.kill(waiting[0][0], stuck=trial.mode.endswith("-stuck"), release=hold.release)


# -- download ------------------------------------------------------------------------------------

DL_MODES = ("transfer", "gate-transfer", "gate-stuck", "downloaded", "installed")


def _request(session: Session, name: str) -> uuid.UUID:
    return request_download(session, get_settings(), name=name, requested_by="t").job_id


def _partial_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "downloads").glob("*.partial"))


def _download_trial(rig: Rig, hub: MirrorServer, i: int) -> None:
    rng, trial = rig.trial(DL_MODES, i)
    home = rig.home
    name = _dl(i)
    size = _archive_size(hub, name)
    threshold = int(size * rng.uniform(0.05, 0.95))
    hub.faults.delay_per_chunk = 0.0 if trial.mode == "installed" else CHUNK_DELAY
    if trial.mode == "transfer":
        trial.job_id = nlphub.enqueue("nlphub.download", {"name": name})
        wait_for(
            lambda: _partial_bytes(home) >= threshold,
            60,
            interval=0.002,
            what="the transfer to pass the threshold",
        )
        rig.kill()
        trial.stopped_at = f"transfer at {_partial_bytes(home)} bytes"
    elif trial.mode in ("gate-transfer", "gate-stuck"):
        # progress is written at most every 0.5 s: at the start, mid-way, at the end
        at = int(size * rng.choice([0.0, 0.3, 1.0]))
        gate = rig.gate()
        trial.job_id = enqueue_held(lambda s: _request(s, name), gate.hold)
        stop = gate.until(trial.job_id, lambda _q: _partial_bytes(home) >= at)
        assert stop is not None
        trial.stopped_at = f"{_statement(stop[1])} at {_partial_bytes(home)} bytes"
        rig.kill(stop[0], stuck=trial.mode == "gate-stuck", release=gate.release)
    elif trial.mode == "downloaded":
        # The resource row's lock: the task waits at its claim, then (let through) once the
        # whole archive is on disk, at its step to `verifying`.
        gate = rig.gate("resource")
        made: list[uuid.UUID] = []

        def make(s: Session) -> uuid.UUID:
            req = request_download(s, get_settings(), name=name, requested_by="t")
            made.append(req.resource_id)
            return req.job_id

        def archive_done(_q: str) -> bool:
            return any(not p.name.endswith(".partial") for p in (home / "downloads").iterdir())

        trial.job_id = enqueue_held(make, lambda _j: gate.hold(made[0]))
        stop = gate.until(trial.job_id, archive_done)
        assert stop is not None
        trial.stopped_at = f"{_statement(stop[1])}, archive complete"
        rig.kill(stop[0], release=gate.release)
    else:  # installed: files in place and recorded, the success not yet recorded
        gate = rig.gate()

        def installed(_q: str) -> bool:
            state = rig.db.value("SELECT state FROM resource WHERE name = %s", (name,))
            return bool(state == "installed")

        trial.job_id = enqueue_held(
            lambda s: nlphub.enqueue("nlphub.download", {"name": name}, session=s), gate.hold
        )
        stop = gate.until(trial.job_id, installed)
        assert stop is not None
        trial.stopped_at = f"{_statement(stop[1])} after install"
        rig.kill(stop[0], release=gate.release)
    rig.completed_once(trial)
    row = rig.check_installed(name, "5.4.0")
    assert rig.actions(target=row.label).count("resource.installed") == 1
    assert rig.actions(target=row.label).count("resource.download_requested") == 1
    downloads = rig.db.value(
        "SELECT count(*) FROM job WHERE task = 'nlphub.download' AND "
        "(payload ->> 'name' = %s OR payload ->> 'resource_id' = %s)",
        (name, str(row.id)),
    )
    assert downloads == 1
    if trial.mode == "transfer":
        gets = [r for r in hub.faults.requests if r[0] == "GET" and f"/{name}_" in r[1]]
        assert gets[-1][2] is not None, gets  # resumed with Range
    assert _leftovers(home) == [], trial


@pytest.mark.timeout(900)
def test_download_killed_mid_run_installs_once(hub, rig_factory) -> None:
    rig = rig_factory("downloads")
    for i in range(TRIALS):
        _download_trial(rig, hub, i)
    hub.faults.delay_per_chunk = 0.0
    rig.check_end()


# -- dependency fetch ----------------------------------------------------------------------------

DEP_MODES = ("delay", "gate-done", "identity", "identity-stuck")


def _upload_model(tmp: Path, i: int) -> Resource:
    """An uploaded NER model whose embeddings (kill_dep_NN) are not installed."""
    name = f"kill_ner_{i:02d}"
    folder = write_resource_dir(
        res(name, "NerDLModel", storage_ref=_dep(i), labels=["PER", "LOC"]), tmp / name
    )
    with session_scope() as session:
        out = accept_upload(
            session,
            get_settings(),
            UploadRequest(path=folder, kind="model", name=name, labels=["PER", "LOC"]),
        )
    assert out.missing == [_dep(i)], out
    with Session(get_engine()) as session:
        row = session.get(Resource, out.resource_id)
        assert row is not None
        session.expunge(row)
        return row


def _dependency_trial(rig: Rig, tmp: Path, i: int) -> None:
    rng, trial = rig.trial(DEP_MODES, i)
    model = _upload_model(tmp, i)
    task, payload = "nlphub.fetch_dependencies", {"resource_id": str(model.id)}
    if trial.mode == "delay":
        _kill_after_start(rig, trial, task, payload, rng.uniform(0.0, 0.03))
    elif trial.mode == "gate-done":
        gate = rig.gate()
        trial.job_id = enqueue_held(lambda s: nlphub.enqueue(task, payload, session=s), gate.hold)
        stop = gate.until(trial.job_id, rig.outcome_next(trial.job_id))
        assert stop is not None
        trial.stopped_at = _statement(stop[1])
        rig.kill(stop[0], release=gate.release)
    else:
        hold = rig.hold(identity_hold(_dep(i), "5.4.0"))
        _kill_when_blocked(rig, trial, task, payload, hold, "lock")
    rig.completed_once(trial)
    dep = rig.resource(_dep(i))
    assert dep.job_id is not None
    assert rig.finish(dep.job_id).state == JobState.SUCCEEDED
    dep = rig.check_installed(_dep(i))
    assert rig.actions(target=dep.label).count("resource.download_requested") == 1
    assert rig.actions(target=dep.label).count("resource.installed") == 1
    downloads = rig.db.value(
        "SELECT count(*) FROM job WHERE task = 'nlphub.download' "
        "AND payload ->> 'resource_id' = %s",
        (str(dep.id),),
    )
    assert downloads == 1
    wait_for(
        lambda: rig.resource(model.name).state == ResourceState.INSTALLED,
        30,
        what="the model to be released",
    )
    assert rig.actions(target=model.label).count("resource.dependencies_installed") == 1


@pytest.mark.timeout(900)
def test_dependency_fetch_killed_mid_run_downloads_once(hub, rig_factory, tmp_path) -> None:
    rig = rig_factory("default,downloads")
    for i in range(TRIALS):
        _dependency_trial(rig, tmp_path / "models", i)
    rig.check_end()


# -- upload validation ---------------------------------------------------------------------------

UPLOAD_MODES = ("delay", "staged", "staged-stuck", "committed", "renamed")
UPLOAD_BYTES = 3_000_000


def _zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def _upload_trial(rig: Rig, incoming: Path, i: int) -> None:
    rng, trial = rig.trial(UPLOAD_MODES, i)
    name = f"kill_up_{i:02d}"
    source = write_resource_dir(
        res(name, "WordEmbeddingsModel", payload_bytes=UPLOAD_BYTES), incoming / name
    )
    if i % 2:
        source = _zip(source, incoming / f"{name}.zip")
    task = "nlphub.validate_upload"
    payload = {"path": str(source), "kind": "embeddings", "name": name}
    if trial.mode == "delay":
        _kill_after_start(rig, trial, task, payload, rng.uniform(0.0, 0.06))
    elif trial.mode in ("staged", "staged-stuck"):
        hold = rig.hold(conflicting_row_hold(name, "upload"))
        _kill_when_blocked(rig, trial, task, payload, hold, "insert", ", staged")
    elif trial.mode == "committed":  # installed and recorded, the success not yet recorded
        gate = rig.gate()
        trial.job_id = enqueue_held(lambda s: nlphub.enqueue(task, payload, session=s), gate.hold)
        stop = gate.until(trial.job_id, rig.outcome_next(trial.job_id))
        assert stop is not None
        trial.stopped_at = _statement(stop[1])
        rig.kill(stop[0], release=gate.release)
    else:  # renamed: the folder is in place, its row not yet committed (a window of ~1 ms)
        target = install_dir(get_settings().resources_dir, "embeddings", name, "en", "upload")
        trial.job_id = nlphub.enqueue(task, payload)
        wait_for(target.exists, 60, interval=0, what="the install folder to appear")
        rig.worker.stop()  # SIGSTOP at once; a statement it had sent still runs: wait for it
        wait_for(
            lambda: (
                not rig.db.value(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'active' AND pid <> pg_backend_pid()"
                )
            ),
            30,
            interval=0.005,
            what="the stopped process's statements to end",
        )
        row = rig.db.value("SELECT state FROM resource WHERE name = %s", (name,))
        trial.stopped_at = f"folder renamed, row {'committed' if row else 'not committed'}"
        rig.kill()
    job = rig.completed_once(trial)
    row = rig.check_installed(name, "upload")
    assert row.source == ResourceSource.UPLOAD and row.job_id == trial.job_id
    assert job.result["resource_id"] == str(row.id)
    assert rig.actions(target=row.label).count("resource.uploaded") == 1
    assert "upload.rejected" not in rig.actions(trial.job_id)
    assert _leftovers(rig.home) == [], trial


@pytest.mark.timeout(900)
def test_upload_validation_killed_mid_run_installs_once(
    env, rig_factory, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
    get_settings.cache_clear()
    rig = rig_factory("default")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for i in range(TRIALS):
        _upload_trial(rig, incoming, i)
    kinds = get_settings().resources_dir / ResourceKind.EMBEDDINGS.value
    expected = [f"kill_up_{i:02d}_en_upload" for i in range(TRIALS)]
    assert sorted(p.name for p in kinds.iterdir()) == expected  # no orphan folders
    rig.check_end()


# -- embeddings ----------------------------------------------------------------------------------

EMB_MODES = ("vectors", "gate-mid", "gate-stuck", "finished", "early")


def _records(n: int) -> list[dict[str, Any]]:
    words = (
        "team won football match goal final minute striker league fans club recipe tomato "
        "soup basil bake bread oven pasta garlic olive chef curry laptop processor software "
        "update phone battery bug database server"
    ).split()
    rng = random.Random(7)
    return [{"id": f"r{i:05d}", "text": " ".join(rng.choices(words, k=12))} for i in range(n)]


def _embedding_of(db: Db, job_id: uuid.UUID) -> Any:
    return db.value("SELECT id FROM embedding WHERE job_id = %s", (job_id,))


def _vectors(db: Db, emb_id: Any) -> int:
    if emb_id is None:
        return 0
    return int(db.value("SELECT count(*) FROM embedding_vector WHERE embedding_id = %s", (emb_id,)))


def _embedding_trial(rig: Rig, i: int) -> None:
    rng, trial = rig.trial(EMB_MODES, i)
    db = rig.db
    task = "nlphub.compute_embeddings"
    payload = {
        "dataset": "kill",
        "attribute": "text",
        "platform": "bow",
        "model": "tfidf" if i % 2 else "count",
        "dims": 16,
    }
    threshold = rng.randint(1, RECORDS - 1)
    if trial.mode == "vectors":
        job_id = trial.job_id = nlphub.enqueue(task, payload)
        wait_for(
            lambda: _vectors(db, _embedding_of(db, job_id)) >= threshold,
            120,
            interval=0.005,
            what="vectors to be stored",
        )
        rig.kill()
        trial.stopped_at = f"{_vectors(db, _embedding_of(db, job_id))} vectors"
    elif trial.mode in ("gate-mid", "gate-stuck", "finished"):
        gate = rig.gate()
        job_id = trial.job_id = enqueue_held(
            lambda s: nlphub.enqueue(task, payload, session=s), gate.hold
        )

        def stop_at(_q: str) -> bool:
            emb = _embedding_of(db, job_id)
            if trial.mode == "finished":
                state = db.value("SELECT state FROM embedding WHERE id = %s", (emb,))
                return bool(state == "finished")
            return _vectors(db, emb) >= threshold

        stop = gate.until(job_id, stop_at, timeout=120)
        assert stop is not None
        trial.stopped_at = (
            f"{_statement(stop[1])} at {_vectors(db, _embedding_of(db, job_id))} vectors"
        )
        rig.kill(stop[0], stuck=trial.mode == "gate-stuck", release=gate.release)
    else:  # early: as soon as the embedding exists, plus a random delay
        delay = rng.uniform(0.0, 0.05)
        job_id = trial.job_id = nlphub.enqueue(task, payload)
        wait_for(lambda: _embedding_of(db, job_id), 60, interval=0.002, what="the embedding")
        time.sleep(delay)  # the trial's kill moment, not a wait
        trial.stopped_at = f"{delay * 1000:.0f} ms after creation"
        rig.kill()
    rig.completed_once(trial)
    rows = db.conn.execute(
        "SELECT id, state FROM embedding WHERE job_id = %s", (job_id,)
    ).fetchall()
    assert len(rows) == 1 and rows[0][1] == "finished", rows
    emb_id = rows[0][0]
    assert _vectors(db, emb_id) == RECORDS
    per_record = db.value(
        "SELECT count(DISTINCT record_id) FROM embedding_vector WHERE embedding_id = %s",
        (emb_id,),
    )
    assert per_record == RECORDS
    assert rig.actions(target=str(emb_id)).count("embedding.finished") == 1
    created = db.value(
        "SELECT count(*) FROM audit_event WHERE action = 'embedding.created' "
        "AND details ->> 'embedding' = %s",
        (str(emb_id),),
    )
    assert created == 1


@pytest.mark.timeout(900)
def test_embeddings_killed_mid_run_store_each_vector_once(env, rig_factory, tmp_path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(RECORDS)))
    with session_scope() as session:
        import_records(session, path, dataset="kill", actor="test")
    rig = rig_factory("embeddings")
    for i in range(TRIALS):
        _embedding_trial(rig, i)
    assert rig.db.value("SELECT count(*) FROM embedding") == TRIALS
    rig.check_end()


# -- update apply --------------------------------------------------------------------------------

UPDATE_MODES = ("delay", "identity", "identity-stuck", "confirmed", "download")


def _old_versions() -> None:
    """Installed 5.4.0 rows of every kill_upd_NN (the mirror has 5.5.0), and their notices."""
    settings = get_settings()
    with session_scope() as session:
        for i in range(TRIALS):
            folder = install_dir(settings.resources_dir, "embeddings", _upd(i), "en", "5.4.0")
            write_resource_dir(res(_upd(i), "WordEmbeddingsModel"), folder)
            checksum, size = tree_checksum(folder)
            session.add(
                Resource(
                    name=_upd(i),
                    version="5.4.0",
                    kind=ResourceKind.EMBEDDINGS,
                    source=ResourceSource.HUB,
                    lib_version="5.4.0",
                    spark_version="3.4",
                    state=ResourceState.INSTALLED,
                    install_path=str(folder),
                    checksum=checksum,
                    bytes_on_disk=size,
                )
            )
        session.flush()
        out = check_updates(session, settings, actor="test", reason="test")
    assert len(out["new"]) == TRIALS, out


def _notice(name: str) -> UpdateNotice:
    with Session(get_engine()) as session:
        row = session.exec(select(UpdateNotice).where(UpdateNotice.name == name)).one()
        session.expunge(row)
        return row


def _update_trial(rig: Rig, hub: MirrorServer, i: int) -> None:
    rng, trial = rig.trial(UPDATE_MODES, i)
    home = rig.home
    name = _upd(i)
    task = "nlphub.apply_update"
    payload = {"notice_id": str(_notice(name).id), "confirmed_by": "dora"}
    hub.faults.delay_per_chunk = CHUNK_DELAY if trial.mode == "download" else 0.0
    if trial.mode == "delay":
        _kill_after_start(rig, trial, task, payload, rng.uniform(0.0, 0.03))
    elif trial.mode in ("identity", "identity-stuck"):
        hold = rig.hold(identity_hold(name, "5.5.0"))
        _kill_when_blocked(rig, trial, task, payload, hold, "lock")
    elif trial.mode == "confirmed":
        gate = rig.gate()
        trial.job_id = enqueue_held(lambda s: nlphub.enqueue(task, payload, session=s), gate.hold)
        stop = gate.until(trial.job_id, rig.outcome_next(trial.job_id))
        assert stop is not None
        trial.stopped_at = _statement(stop[1])
        rig.kill(stop[0], release=gate.release)
    else:  # download: the update's download, killed mid-transfer
        trial.job_id = nlphub.enqueue(task, payload)
        threshold = int(_archive_size(hub, name, "5.5.0") * rng.uniform(0.1, 0.9))
        wait_for(
            lambda: _partial_bytes(home) >= threshold,
            60,
            interval=0.002,
            what="the update's transfer to pass the threshold",
        )
        trial.stopped_at = "the update's download"
        rig.kill()
    job = rig.completed_once(trial)
    notice = _notice(name)
    assert notice.job_id is not None and job.result["job_id"] == str(notice.job_id)
    download = rig.finish(notice.job_id)
    assert download.state == JobState.SUCCEEDED, download.error
    new = rig.check_installed(name, "5.5.0")
    old = rig.check_installed(name, "5.4.0")  # stayed in use
    assert new.job_id == notice.job_id
    notice = _notice(name)
    assert notice.state == "applied" and notice.decided_by == "dora"
    target = f"{name}/en"
    assert rig.actions(target=target).count("update.confirmed") == 1
    assert rig.actions(target=target).count("update.applied") == 1
    assert rig.actions(target=new.label).count("resource.download_requested") == 1
    assert rig.actions(target=new.label).count("resource.installed") == 1
    assert old.state == ResourceState.INSTALLED
    downloads = rig.db.value(
        "SELECT count(*) FROM job WHERE task = 'nlphub.download' "
        "AND payload ->> 'resource_id' = %s",
        (str(new.id),),
    )
    assert downloads == 1
    assert _leftovers(home) == [], trial


@pytest.mark.timeout(900)
def test_update_apply_killed_mid_run_switches_once(hub, rig_factory) -> None:
    _old_versions()
    rig = rig_factory("default,downloads")
    for i in range(TRIALS):
        _update_trial(rig, hub, i)
    hub.faults.delay_per_chunk = 0.0
    rig.check_end()

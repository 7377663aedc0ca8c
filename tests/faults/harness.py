"""The worker-kill harness (tests/faults/test_worker_kills.py): one real prefork worker whose
pool process a trial SIGKILLs (`PoolWorker`), the trials and their kill modes (`Trial`,
`trial_mode`), and the test's rig (`Rig`: the worker, the database observer, the locks it holds,
and the checks that a killed job finished exactly once), with the ways to stop a task before the
kill (`kill_after_start`, `kill_when_blocked`, `kill_at_outcome`, `enqueue_held`).

The database locks are in tests/faults/locks.py; the `rig_factory` fixture in
tests/faults/conftest.py.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlmodel import Session, select

import nlphub
from nlphub.audit import verify_chain
from nlphub.jobs import reconcile_outbox
from nlphub.resources import tree_checksum
from schemas.db import get_engine, session_scope
from schemas.models import Resource
from schemas.states import JOB_TERMINAL, JobState, ResourceState
from tests.conftest import wait_for
from tests.faults.locks import Db, Hold, RowGate, describe_statement
from tests.procs import alive, children, prefork_worker_cmd, tail

log = logging.getLogger(__name__)


#: The worker notices a killed pool process by its sentinel pipe, but when it wakes up before
#: the kernel has made the child a zombie it finds nothing to reap, and then only notices at
#: the pool's maintenance timer: Celery's 5 s made 60 % of the kills here 3 s late on average
#: (two thirds of test_worker_kills' time). nlphub/messaging/app.py sets it to 0.5 s
#: (POOL_MAINTAIN_INTERVAL); `noticed_after` reports the delay per trial.


class PoolWorker:
    """`celery worker -P prefork -c 1`: its one pool process is what a trial kills."""

    def __init__(self, spawn: Callable[..., Any], log_path: Path, queues: str) -> None:
        self.log_path = log_path
        self.proc = spawn(
            prefork_worker_cmd(
                "kill", queues=queues, extra=("--without-mingle", "--without-gossip")
            ),
            log=log_path,
        )
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
                at = datetime.strptime(line.lstrip("[")[:23], "%Y-%m-%d %H:%M:%S,%f")
                return (at - killed).total_seconds()
        return None

    def stop(self) -> None:
        """SIGSTOP the pool process: it stays where it is until it is killed."""
        os.kill(self.child(), signal.SIGSTOP)

    def tail(self, size: int = 4000) -> str:
        return tail(self.log_path, size)


def trial_mode(modes: tuple[str, ...], i: int) -> str:
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
        trial = Trial(i, trial_mode(modes, i))
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

    def downloads(self, resource_id: uuid.UUID, name: str | None = None) -> int:
        """How many download jobs were sent for a resource: by its id (or its name, given)."""
        return int(
            self.db.value(
                "SELECT count(*) FROM job WHERE task = 'nlphub.download' AND "
                "(payload ->> 'resource_id' = %s OR payload ->> 'name' = %s)",
                (str(resource_id), name),
            )
        )

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
        assert leftovers(self.home) == []
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


def leftovers(home: Path) -> list[str]:
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


def kill_after_start(
    rig: Rig, trial: Trial, task: str, payload: dict[str, Any], seconds: float
) -> None:
    """Enqueue, and kill the pool process `seconds` after the job started."""
    trial.job_id = nlphub.enqueue(task, payload)
    rig.wait_started(trial.job_id)
    time.sleep(seconds)  # the trial's kill moment (from its seeded schedule), not a wait
    trial.stopped_at = f"{seconds * 1000:.0f} ms after start"
    rig.kill()


def kill_when_blocked(
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
    trial.stopped_at = describe_statement(waiting[0][1]) + note
    rig.kill(waiting[0][0], stuck=trial.mode.endswith("-stuck"), release=hold.release)


def kill_at_outcome(rig: Rig, trial: Trial, task: str, payload: dict[str, Any]) -> None:
    """Enqueue, and kill the pool process at the task's write of its outcome (the work is
    committed, its success not yet recorded): for a task that writes no progress."""
    gate = rig.gate()
    trial.job_id = enqueue_held(lambda s: nlphub.enqueue(task, payload, session=s), gate.hold)
    stop = gate.until(trial.job_id, rig.outcome_next(trial.job_id))
    assert stop is not None
    trial.stopped_at = describe_statement(stop[1])
    rig.kill(stop[0], release=gate.release)

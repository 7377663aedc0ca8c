"""The database side of the fault harness: the test's own observing connection (`Db`), locks the
test holds so that a task stops at a chosen statement (`Hold`, `RowGate`), and what a stopped
statement is, in words.

A task stopped at a lock has a Postgres backend in the middle of a statement; the kill trials
(tests/faults/harness.py) SIGKILL its process there.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import text
from sqlmodel import Session

from schemas.db import get_engine
from schemas.models import Resource, ResourceKind, ResourceSource
from schemas.states import JOB_TERMINAL, ResourceState
from tests.conftest import wait_for


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


def describe_statement(query: str) -> str:
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

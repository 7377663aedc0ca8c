"""Job state changes as single SQL statements: the row update and its audit event together.

Each change is one round trip — an UPDATE guarded by the state machine (only from states that
may legally move to the target) and the audit INSERT in the same statement — so recording
every transition stays cheap enough to do for every job.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
import psycopg.errors
from psycopg import pq
from psycopg.rows import dict_row
from sqlalchemy import Connection
from sqlmodel import Session

from nlphub.audit import audit_params, canonical
from nlphub.redact import redact
from schemas.db import driver_connection
from schemas.states import JobState, job_predecessors

#: Extra SET clauses per target state.
_SETS: dict[JobState, str] = {
    JobState.RECEIVED: "",
    JobState.STARTED: (
        ", attempts = attempts + 1, started_at = coalesce(started_at, now()), "
        "worker = :worker, error = NULL"
    ),
    JobState.RETRYING: ", error = :error",
    JobState.SUCCEEDED: (
        ", progress = 1, result = CAST(:result AS jsonb), error = NULL, finished_at = now()"
    ),
    JobState.FAILED: ", error = :error, finished_at = now()",
    JobState.REVOKED: ", error = :error, finished_at = now()",
}


@dataclass(frozen=True)
class Outcome:
    #: The job's attempts after the change; None when nothing changed (job missing, finished,
    #: or not in a state that may move to the target).
    attempts: int | None
    #: With lock="take": whether this session got the job's run lock.
    locked: bool = False


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def _connection(conn: Connection | Session) -> Connection:
    return conn.connection() if isinstance(conn, Session) else conn


#: Server-side types of the per-job statements' parameters; any other is text.
_PARAM_TYPES = {"id": 2950, "k": 20, "allowed": 1009, "published": 16}  # uuid, int8, text[], bool
_TEXT = 25
#: Names of the statements prepared on each psycopg connection (gone with the connection).
_PREPARED: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Prepared:
    name: bytes
    sql: bytes  # with $1, $2, ... (one per distinct name, in order of first use)
    names: tuple[str, ...]
    types: tuple[int, ...]
    psycopg_sql: str  # with %(name)s, for psycopg inside a transaction


@functools.cache
def _prepared(sql: str) -> _Prepared:
    assert "%" not in sql, "a literal % would need escaping for psycopg"
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    numbered = _NAMED.sub(number, sql)
    digest = hashlib.blake2b(numbered.encode(), digest_size=8).hexdigest()
    return _Prepared(
        f"nlphub_{digest}".encode(),
        numbered.encode(),
        tuple(names),
        tuple(_PARAM_TYPES.get(name, _TEXT) for name in names),
        _NAMED.sub(r"%(\1)s", sql),
    )


def _text(value: Any) -> bytes | None:
    """A parameter in Postgres' text format."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, list | tuple):
        quoted = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value)
        return ("{" + ",".join(quoted) + "}").encode()
    return str(value).encode()


def _as_text(value: Any) -> str:
    """A value psycopg returned, as Postgres' text format writes it (bools as t/f)."""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def _one_row(conn: Connection | Session, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run `sql` (``:name`` parameters) on the connection beneath `conn`, in its transaction
    if it has one, and return its one row (column name -> text value, or None).

    These statements run for every job: they go to libpq as statements prepared once per
    connection, without SQLAlchemy's or psycopg's per-call machinery (which cost the worker
    more CPU than the database round trip). Errors still arrive as SQLAlchemy's exceptions,
    and a lost connection is invalidated in the pool, as `Connection.execute` would do."""
    sa_conn = _connection(conn)
    statement = _prepared(sql)
    with driver_connection(sa_conn, statement.sql.decode(), params) as dbapi:
        if not dbapi.autocommit:
            # In a transaction (a Session's): psycopg opens it with its first statement.
            with dbapi.cursor(row_factory=dict_row) as cur:
                cur.execute(statement.psycopg_sql, params)
                row = cur.fetchone()
            return {k: None if v is None else _as_text(v) for k, v in row.items()}
        result = _execute(dbapi, statement, [_text(params[name]) for name in statement.names])
    return {
        result.fname(i).decode(): (None if (v := result.get_value(0, i)) is None else v.decode())
        for i in range(result.nfields)
    }


def _execute(dbapi: Any, statement: _Prepared, values: list[bytes | None]) -> Any:
    pgconn = dbapi.pgconn
    done = _PREPARED.setdefault(dbapi, set())
    for attempt in range(2):
        if statement.name not in done:
            _check(dbapi, pgconn.prepare(statement.name, statement.sql, statement.types))
            done.add(statement.name)
        result = pgconn.exec_prepared(statement.name, values)
        if result.status == pq.ExecStatus.TUPLES_OK and result.ntuples == 1:
            return result
        if attempt == 0 and result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000":
            done.discard(statement.name)  # deallocated behind our back (DISCARD ALL): again
            continue
        _check(dbapi, result)
        raise psycopg.ProgrammingError(f"expected one row, got {result.ntuples}")
    raise AssertionError("unreachable")  # pragma: no cover


def _check(dbapi: Any, result: Any) -> None:
    if result.status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE):
        raise psycopg.errors.error_from_result(result, encoding=dbapi.info.encoding)


def transition(
    conn: Connection | Session,
    job_id: uuid.UUID,
    target: JobState,
    *,
    actor: str,
    action: str,
    task: str,
    details: dict[str, Any] | None = None,
    worker: str | None = None,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    lock_key: int | None = None,
    lock: Literal["take", "release"] | None = None,
    flush: bool = True,
) -> Outcome:
    """Move the job to `target` and audit it, in one statement.

    `lock="take"` first tries the session advisory lock `lock_key` and changes nothing if it
    is held elsewhere; `lock="release"` releases it in the same statement (after the change is
    made, which concurrent takers then see once this statement commits).

    `flush=False` commits the transaction without waiting for its WAL to reach the disk
    (``synchronous_commit`` off for that transaction only). Only for a change that may be
    lost in a database crash: a crash loses the newest asynchronous commits and nothing
    committed after them (any later synchronous commit flushes the WAL before it), so the
    audit chain stays whole."""
    params = audit_params(actor=actor, action=action, target=task, job_id=job_id, details=details)
    params.update(
        id=job_id,
        state=target.value,
        allowed=job_predecessors(target),
        worker=worker,
        error=error,
        result=canonical(redact(result)) if result is not None else None,
        k=lock_key,
    )
    take = lock == "take"
    row = _one_row(conn, _transition_sql(target, lock, flush), params)
    attempts = None if row["attempts"] is None else int(row["attempts"])
    return Outcome(attempts, row["got"] == "t" if take else False)


@functools.cache
def _transition_sql(
    target: JobState, lock: Literal["take", "release"] | None, flush: bool = True
) -> str:
    """The statement for one (target, lock, flush), built once."""
    take = lock == "take"
    no_wait = "" if flush else ", set_config('synchronous_commit', 'off', true) AS no_wait"
    return f"""
            WITH l AS MATERIALIZED (
                SELECT {"pg_try_advisory_lock(:k)" if take else "true"} AS got {no_wait}
            ), o AS (
                -- the state before this statement (all CTEs share one snapshot; no FOR UPDATE:
                -- a row updated by this same statement could not be locked again)
                SELECT state AS old_state FROM job WHERE id = :id
            ), j AS (
                UPDATE job SET state = :state, updated_at = now() {_SETS[target]}
                WHERE id = :id AND state = ANY(:allowed) AND (SELECT got FROM l)
                RETURNING id, attempts
            ), r AS (
                -- starting a job that was waiting also records that a worker received it
                INSERT INTO audit_event (actor, action, target, job_id, details, prev_hash, hash)
                SELECT 'worker', 'job.received', :target, j.id,
                       jsonb_build_object('worker', CAST(:worker AS text)), '', ''
                FROM j, o
                WHERE :state = 'started' AND o.old_state IN ('queued', 'retrying')
                RETURNING seq
            ), a AS (
                INSERT INTO audit_event (actor, action, target, job_id, details, prev_hash, hash)
                SELECT :actor, :action, :target, j.id,
                       CAST(:details AS jsonb) || jsonb_build_object('attempt', j.attempts),
                       '', ''
                FROM j CROSS JOIN (SELECT count(*) FROM r) AS received_first
                RETURNING seq
            )
            SELECT (SELECT attempts FROM j) AS attempts, (SELECT got FROM l) AS got,
                   (SELECT count(*) FROM a) + (SELECT count(*) FROM r) AS audited
                   {", pg_advisory_unlock(:k) AS released" if lock == "release" else ""}
            """


_INSERT_JOB = """
            WITH j AS (
                INSERT INTO job (id, task, queue, payload, state, progress, attempts,
                                 requested_by, created_at, updated_at, published_at)
                VALUES (:id, :task, :queue, CAST(:payload AS jsonb), :state, 0, 0, :by,
                        now(), now(), CASE WHEN :published THEN now() END)
                ON CONFLICT (id) DO NOTHING
                RETURNING id
            ), a AS (
                INSERT INTO audit_event (actor, action, target, job_id, details, prev_hash, hash)
                SELECT :actor, :action, :target, j.id, CAST(:details AS jsonb), '', '' FROM j
                RETURNING seq
            )
            SELECT (SELECT count(*) FROM j) AS inserted, (SELECT count(*) FROM a) AS audited
            """


def insert_job(
    conn: Connection | Session,
    job_id: uuid.UUID,
    *,
    task: str,
    queue: str,
    payload: dict[str, Any],
    requested_by: str,
    state: JobState = JobState.QUEUED,
    action: str = "job.enqueued",
    published: bool = False,
) -> bool:
    """Insert the job row and its audit event in one statement; False if the id exists."""
    clean = redact(payload)
    params = audit_params(
        actor=requested_by,
        action=action,
        target=task,
        job_id=job_id,
        details={"payload": clean, "queue": queue},
    )
    params.update(
        id=job_id,
        task=task,
        queue=queue,
        payload=canonical(clean),
        state=state.value,
        by=requested_by[:255],
        published=published,
    )
    row = _one_row(conn, _INSERT_JOB, params)
    return int(row["inserted"]) > 0

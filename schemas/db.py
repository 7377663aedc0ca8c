"""One engine per database URL, sessions, and the migration gate."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlmodel import Session

from schemas.settings import get_settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class DatabaseNotMigrated(RuntimeError):
    """The database schema is not at the revision this code needs."""


_ENGINES: dict[str, Engine] = {}
_AUTOCOMMIT: dict[Engine, Engine] = {}
#: Seconds a pooled connection is used before it is replaced (SQLAlchemy's pool_recycle).
POOL_RECYCLE = 1800


def engine_for(url: str) -> Engine:
    """The process's engine for `url` (created once, pooled)."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = create_engine(
            url,
            pool_size=5,
            max_overflow=5,
            pool_recycle=POOL_RECYCLE,
            connect_args={"application_name": "nlphub", "connect_timeout": 10},
        )
        event.listen(engine, "connect", _on_connect)
        event.listen(engine, "checkout", _ping)
        _ENGINES[url] = engine
    return engine


def _looks_alive(dbapi_connection: object) -> bool:
    """Whether a pooled psycopg connection is usable, judged without a round trip: open, idle,
    and nothing to read on its socket. A server that dropped it (restart, crash,
    ``pg_terminate_backend``) leaves an error message or end-of-file there."""
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None or getattr(dbapi_connection, "closed", True):
        return False
    if getattr(dbapi_connection, "broken", False) or pgconn.transaction_status != 0:  # IDLE
        return False
    try:
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
    except Exception:  # no socket any more (psycopg raises), or not one select takes
        return False
    return not readable


def _ping(dbapi_connection, _record, _proxy):
    """Pessimistic disconnect handling at each checkout (SQLAlchemy's ``pool_pre_ping`` sends
    ``SELECT 1`` every time: a round trip per job state change). Only a connection that does
    not look alive is pinged; a failed ping makes the pool replace the connection."""
    if _looks_alive(dbapi_connection):
        return
    try:
        with dbapi_connection.cursor() as cur:
            cur.execute("SELECT 1")
        dbapi_connection.rollback()  # the ping's implicit transaction, if one was opened
    except Exception as exc:
        raise DisconnectionError(f"the pooled connection is gone: {exc}") from exc


def _on_connect(dbapi_connection, _record):
    with dbapi_connection.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def get_engine() -> Engine:
    return engine_for(get_settings().require_database_url())


def autocommit_engine() -> Engine:
    """The same pool, each statement its own transaction: one round trip per state change.

    Made once per engine: `execution_options` builds a new engine object (and registers an
    event listener) each time (see docs/decisions.md, Autocommit engine made once per
    engine)."""
    engine = get_engine()
    options = _AUTOCOMMIT.get(engine)
    if options is None:
        options = _AUTOCOMMIT[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return options


@dataclass
class _Held:
    conn: Connection
    engine: Engine
    pid: int
    since: float
    in_use: bool = False


#: The main thread's kept autocommit connection (see `held_connection`).
_HELD: _Held | None = None
#: Kept connections a forked child inherited: never used, closed or garbage collected (that
#: would end the parent's session on the socket they share).
_INHERITED: list[Connection] = []


@contextmanager
def held_connection() -> Iterator[Connection]:
    """An autocommit connection (as `autocommit_engine().connect()`) that the process' main
    thread keeps between uses instead of returning it to the pool.

    For the statements every job makes: in a worker's pool process, which runs its tasks in
    its main thread one at a time, and in an enqueueing process' main thread: it saves a pool
    checkout and checkin, with their isolation-level switches, per use (see
    docs/decisions.md, A kept connection per process' main thread). The kept connection gets
    the same checks as a checkout: alive (judged without a round trip, else pinged), not
    invalidated, replaced after POOL_RECYCLE seconds, and dropped with its engine
    (`dispose_engines`). Other threads, and
    a use inside a use (a task body that enqueues a job), get a pooled connection for each
    use, so a thread pool cannot hold on to more connections than the pool has and a nested
    use never replaces the connection under the outer one."""
    global _HELD
    held = _HELD
    if threading.current_thread() is not threading.main_thread() or (held and held.in_use):
        # another thread, or a use inside a use (a task body enqueueing a job): from the pool
        with autocommit_engine().connect() as conn:
            yield conn
        return
    engine = autocommit_engine()
    if held is not None and not _usable(held, engine):
        _HELD = None
        _let_go(held, close=True)
        held = None
    if held is None:
        held = _HELD = _Held(engine.connect(), engine, os.getpid(), time.monotonic())
    held.in_use = True
    try:
        yield held.conn
    finally:
        held.in_use = False
        if held.conn.in_transaction() and not held.conn.invalidated:
            held.conn.rollback()  # SQLAlchemy's autobegun bookkeeping (autocommit: no-op)


def _let_go(held: _Held, *, close: bool) -> None:
    if close and held.pid == os.getpid():
        held.conn.close()  # back to its pool, which replaces an invalidated one
    else:
        _INHERITED.append(held.conn)


def _usable(held: _Held, engine: Engine) -> bool:
    conn = held.conn
    if held.pid != os.getpid() or held.engine is not engine:
        return False
    if conn.closed or conn.invalidated:
        return False
    if time.monotonic() - held.since > POOL_RECYCLE:
        return False
    try:
        _ping(conn.connection.dbapi_connection, None, None)
    except DisconnectionError as exc:
        conn.invalidate(exc)
        return False
    return True


def connection_lost(conn: Connection) -> bool:
    """Whether `conn` lost its server session (closed, invalidated, or ended by the server: a
    restart, ``pg_terminate_backend``), judged as at a checkout: from its socket, pinged only
    when that looks wrong. Its session's advisory locks went with it."""
    if conn.closed or conn.invalidated:
        return True
    try:
        _ping(conn.connection.dbapi_connection, None, None)
    except DisconnectionError:
        return True
    return False


@contextmanager
def driver_connection(conn: Connection, statement: str, params: Any = None) -> Iterator[Any]:
    """The psycopg connection beneath `conn`, for what SQLAlchemy's API can't send (libpq
    prepared statements, a pipeline). A psycopg error raised inside comes out as SQLAlchemy's
    `DBAPIError` for `statement`, and a lost connection is invalidated in the pool, as
    `Connection.execute` would do: callers and `tasks.base.is_temporary` see one kind of
    error whichever way a statement went."""
    dbapi: Any = conn.connection.dbapi_connection
    try:
        yield dbapi
    except psycopg.Error as exc:
        lost = bool(dbapi.closed or dbapi.broken) or conn.dialect.is_disconnect(
            exc,  # type: ignore[arg-type]
            dbapi,
            None,
        )
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            statement, params, exc, psycopg.Error, connection_invalidated=lost
        ) from exc


def dispose_engines(*, close: bool = True) -> None:
    """Forget the engines and their pooled connections (at test teardown; in a forked child).

    `close=False` is for a forked child: the pooled connections are its parent's (the same
    sockets), so the child only drops them. Closing them would tell the server to end the
    parent's sessions (libpq's Terminate message)."""
    global _HELD
    held, _HELD = _HELD, None
    if held is not None:
        _let_go(held, close=close)
    _AUTOCOMMIT.clear()
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        engine.dispose(close=close)


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option(
        "sqlalchemy.url", (url or get_settings().require_database_url()).replace("%", "%%")
    )
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://unused")).get_heads()
    return heads[0]


def current_revision(engine: Engine | None = None) -> str | None:
    with (engine or get_engine()).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str | None = None) -> str:
    """Migrate to head; returns the revision now in place."""
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    return head_revision()


def require_migrated(engine: Engine | None = None) -> None:
    """Refuse to run on a database that is not at the head revision."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        where = "an empty database" if current is None else f"revision {current}"
        raise DatabaseNotMigrated(
            f"the database is at {where} but nlphub needs revision {head}: "
            "run `nlphub db upgrade` first"
        )

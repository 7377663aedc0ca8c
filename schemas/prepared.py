"""Single-row statements prepared once per connection, run beneath SQLAlchemy.

The per-job statements (`nlphub.jobstate`) run for every job: they go to libpq as statements
prepared once per connection, without SQLAlchemy's or psycopg's per-call machinery (which cost
the worker more CPU than the database round trip; see docs/decisions.md, "Per-job statements
as prepared libpq statements"). Errors still arrive as SQLAlchemy's exceptions, and a lost
connection is invalidated in the pool, as `Connection.execute` would do.
"""

from __future__ import annotations

import functools
import hashlib
import re
import weakref
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors
from psycopg import pq
from psycopg.rows import dict_row
from sqlalchemy import Connection
from sqlmodel import Session

from schemas.db import driver_connection

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


def one_row(conn: Connection | Session, sql: str, params: dict[str, Any]) -> dict[str, Any]:
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

"""Who is a beat: the lock the active beat holds, the name every beat's lock session carries,
and the query that lists the beats connected to this database.

Every `scheduler.locked.LockedScheduler`, active or standby, keeps one Postgres session open for
its lock and names it ``nlphub-beat <host>:<pid>`` (``application_name``). So the beats running
are the sessions with that name (plus any session holding the lock), and the active one is the
session holding the lock: no table, no heartbeat row, and a beat that dies leaves nothing behind
(Postgres ends its session). `nlphub doctor` reads them to say "no beat" or "two beats".
See docs/decisions.md, "Doctor: telling two beats apart".
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

__all__ = ["BEAT_APPLICATION", "BEAT_LOCK", "BeatSession", "beat_application_name", "beat_sessions"]

#: The advisory lock key the active beat holds (one per database).
BEAT_LOCK = 0x62656174  # "beat"
#: The ``application_name`` prefix of a beat's lock session.
BEAT_APPLICATION = "nlphub-beat"
#: Postgres keeps at most this many characters of an ``application_name`` (NAMEDATALEN - 1).
_NAME_LIMIT = 63


def beat_application_name(host: str | None = None, pid: int | None = None) -> str:
    """``nlphub-beat <host>:<pid>`` for this process (the host shortened to fit Postgres' limit)."""
    host = host if host is not None else socket.gethostname()
    pid = pid if pid is not None else os.getpid()
    tail = f":{pid}"
    room = _NAME_LIMIT - len(BEAT_APPLICATION) - 1 - len(tail)
    return f"{BEAT_APPLICATION} {host[:room]}{tail}"


@dataclass(frozen=True)
class BeatSession:
    """One beat's lock session: who (``host:pid`` as it named itself), from where, since when,
    and whether it holds the lock (the active beat)."""

    pid: int
    name: str
    client: str | None
    since: datetime | None
    active: bool

    @property
    def who(self) -> str:
        """``host:pid`` of the beat process (or the session's pid when it did not name itself)."""
        prefix = f"{BEAT_APPLICATION} "
        if self.name.startswith(prefix):
            return self.name[len(prefix) :]
        return f"unnamed session {self.pid}"


# The lock as `pg_try_advisory_lock(bigint)` takes it: high half in classid, low half in objid,
# objsubid 1. Sessions of this database only (another database is another installation).
_SESSIONS = text(
    """
    SELECT a.pid, a.application_name, host(a.client_addr) AS client, a.backend_start,
           bool_or(l.granted) IS TRUE AS active
    FROM pg_stat_activity a
    LEFT JOIN pg_locks l
      ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
      AND (a.application_name LIKE :prefix OR l.pid IS NOT NULL)
    GROUP BY a.pid, a.application_name, a.client_addr, a.backend_start
    ORDER BY active DESC, a.backend_start
    """
)


def beat_sessions(conn: Connection) -> list[BeatSession]:
    """The beats connected to this database, the active one first."""
    rows = conn.execute(
        _SESSIONS,
        {
            "hi": (BEAT_LOCK >> 32) & 0xFFFFFFFF,
            "lo": BEAT_LOCK & 0xFFFFFFFF,
            "prefix": f"{BEAT_APPLICATION} %",
        },
    ).all()
    return [
        BeatSession(
            pid=int(row.pid),
            name=str(row.application_name or ""),
            client=row.client,
            since=row.backend_start,
            active=bool(row.active),
        )
        for row in rows
    ]

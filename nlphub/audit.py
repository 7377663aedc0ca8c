"""The append-only, hash-chained audit log.

Each event's `hash` is sha256 over the previous event's hash and the event's body (seq, time,
actor, action, target, job, details), so a changed row — or a row removed from the middle —
breaks the chain at that row. The database computes the chain on insert (trigger
`audit_event_chain`, under a transaction-scoped advisory lock so the chain never forks and seq
order is commit order); `verify_chain` recomputes every hash here, independently. Every
statement that writes events bounds its lock waits (`lock_timeout`): a transaction that keeps
the chain lock too long makes other writers fail (temporary, retried), not freeze.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.errors import LockNotAvailable
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from nlphub.redact import redact
from schemas.models import AuditEvent
from schemas.settings import get_settings

log = logging.getLogger(__name__)

GENESIS = "0" * 64
SEP = "\x1f"

#: Bounds the lock waits of the statement (and of the rest of its transaction) that writes
#: audit events: `SET LOCAL lock_timeout` in that statement itself, no round trip of its own.
#: Part of every statement that inserts into audit_event, evaluated before the row reaches the
#: chain trigger's lock (see `lock_timeout`).
BOUND_LOCK_WAITS = "SELECT set_config('lock_timeout', :lock_timeout, true) AS bounded"

INSERT_SQL = (
    "INSERT INTO audit_event (actor, action, target, job_id, details, prev_hash, hash) "
    "SELECT :actor, :action, :target, :job_id, CAST(:details AS jsonb), '', '' "
    f"FROM ({BOUND_LOCK_WAITS}) AS bounded RETURNING seq"
)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_body(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str | None,
    job_id: uuid.UUID | str | None,
    details_text: str,
) -> str:
    """The hashed text of one event; `details_text` is Postgres' `details::text`."""
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return SEP.join(
        [str(seq), stamp, actor, action, target or "", str(job_id) if job_id else "", details_text]
    )


def event_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def lock_timeout() -> str:
    """How long a statement writing audit events waits for a lock, as Postgres'
    `lock_timeout` (NLPHUB_AUDIT_LOCK_TIMEOUT, 5 s; '0ms' waits forever).

    The chain trigger takes a transaction-level advisory lock (the chain lock) that its
    transaction keeps until it commits. A transaction that holds it while it waits for
    something else (file or network I/O, or an audit write on a second connection, which
    waits for the first: a deadlock Postgres cannot see) would freeze every audit write, job
    inserts and starts included. Bounded, such a mistake fails loudly instead: Postgres raises
    lock_not_available (SQLSTATE 55P03), an OperationalError, which tasks retry as
    temporary."""
    return f"{round(get_settings().audit_lock_timeout * 1000)}ms"


#: How many characters of oversized details a truncation marker keeps as a preview.
PREVIEW_CHARS = 256


def _marker(text: str, size: int) -> dict[str, Any]:
    return {
        "truncated": True,
        "bytes": size,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "preview": text[:PREVIEW_CHARS],
    }


def bounded_details(details: dict[str, Any]) -> str:
    """The canonical JSON of `details` (already redacted), bounded: details over
    NLPHUB_AUDIT_DETAILS_MAX_BYTES serialized have their largest values, one by one, replaced by
    a marker (`truncated`, `bytes`, the value's `sha256`, a `preview`) until they fit, or, with
    too many keys, the whole object. Rule contents and rejected payloads never go in whole; the
    chain hashes what is stored. Cheap for the usual small details: one length check."""
    text = canonical(details)
    cap = get_settings().audit_details_max_bytes
    # Postgres' jsonb text (what the chain hashes) adds a space after each ':' and ',' and a
    # UTF-8 character takes at most 4 bytes: at most 8 bytes per character here.
    if len(text) * 8 <= cap:
        return text

    def stored(value: Any) -> int:
        return len(
            json.dumps(
                value, sort_keys=True, separators=(", ", ": "), ensure_ascii=False, default=str
            ).encode()
        )

    if stored(details) <= cap:
        return text
    kept = dict(details)
    sizes = {key: len(canonical(value)) for key, value in kept.items()}
    for key in sorted(sizes, key=lambda k: -sizes[k]):
        if sizes[key] <= 4 * PREVIEW_CHARS:
            break  # no smaller as a marker: the whole object becomes one
        value = canonical(kept[key])
        kept[key] = _marker(value, len(value.encode()))
        if stored(kept) <= cap:
            return canonical(kept)
    return canonical(_marker(text, len(text.encode())))


def audit_params(
    *,
    actor: str,
    action: str,
    target: str | None = None,
    job_id: uuid.UUID | str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Bind parameters for INSERT_SQL (details redacted: no secret ever reaches the log), and
    for BOUND_LOCK_WAITS."""
    return {
        "actor": actor[:255],
        "action": action,
        "target": target[:512] if target else None,
        "job_id": uuid.UUID(str(job_id)) if job_id else None,
        "details": bounded_details(redact(details or {})),
        "lock_timeout": lock_timeout(),
    }


_INSERT = text(INSERT_SQL)


def record(
    session: Session | Connection,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    job_id: uuid.UUID | str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one event in the caller's transaction (kept only if that commits); its seq.

    From this statement to its commit the transaction holds the audit chain's lock: keep it
    short, with no file or network I/O and no other connection's audit write before the
    commit; its lock waits are bounded from here on (`lock_timeout`)."""
    params = audit_params(actor=actor, action=action, target=target, job_id=job_id, details=details)
    try:
        seq = session.execute(_INSERT, params).scalar_one()
    except OperationalError as exc:
        if isinstance(exc.orig, LockNotAvailable):
            log.error(
                "audit %s %s: no lock within %s (the audit chain's lock? see pg_locks): %s",
                action,
                target or "-",
                params["lock_timeout"],
                exc.orig,
            )
        raise
    log.info("audit %s %s by %s", action, target or "-", actor)
    return int(seq)


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken_at: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def latest_events(session: Session, *, limit: int, action: str | None = None) -> list[AuditEvent]:
    """The `limit` latest events (of one action, if given), the newest first."""
    query = select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(session.exec(query).all())


def head_seq(conn: Connection) -> int:
    """The newest event's seq (0 for an empty log): where a follower starts."""
    return int(conn.execute(text("SELECT coalesce(max(seq), 0) FROM audit_event")).scalar_one())


def events_after(
    conn: Connection, seq: int, actions: tuple[str, ...], *, limit: int = 500
) -> list[Any]:
    """The events of `actions` after `seq`, oldest first, at most `limit`: a follower's next
    batch. Seq order is commit order (the chain trigger assigns seq under the chain lock), so
    an event committed later never gets a smaller seq and following by seq misses none."""
    return list(
        conn.execute(
            text(
                "SELECT seq, at, actor, action, target, job_id, details FROM audit_event "
                "WHERE seq > :seq AND action = ANY(:actions) ORDER BY seq LIMIT :limit"
            ),
            {"seq": seq, "actions": list(actions), "limit": limit},
        ).all()
    )


def _rows(session: Session, batch: int = 5000) -> Iterator[Any]:
    last = -1
    while True:
        rows = session.execute(
            text(
                "SELECT seq, at, actor, action, target, job_id, details::text AS details_text, "
                "prev_hash, hash FROM audit_event WHERE seq > :last ORDER BY seq LIMIT :n"
            ),
            {"last": last, "n": batch},
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify_chain(session: Session) -> ChainReport:
    """Walk the whole log; report the first event whose link or content does not verify."""
    prev = GENESIS
    checked = 0
    for row in _rows(session):
        if row.prev_hash != prev:
            return ChainReport(checked, row.seq, "its prev_hash does not match the previous event")
        body = event_body(
            seq=row.seq,
            at=row.at,
            actor=row.actor,
            action=row.action,
            target=row.target,
            job_id=row.job_id,
            details_text=row.details_text,
        )
        if row.hash != event_hash(prev, body):
            return ChainReport(checked, row.seq, "its content does not match its hash")
        prev = row.hash
        checked += 1
    return ChainReport(checked)

"""The append-only, hash-chained audit log.

Each event's `hash` is sha256 over the previous event's hash and the event's body (seq, time,
actor, action, target, job, details), so a changed row — or a row removed from the middle —
breaks the chain at that row. The database computes the chain on insert (trigger
`audit_event_chain`, under a transaction-scoped advisory lock so the chain never forks and seq
order is commit order); `verify_chain` recomputes every hash here, independently.
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

from sqlalchemy import Connection, text
from sqlmodel import Session, col, select

from nlphub.redact import redact
from schemas.models import AuditEvent

log = logging.getLogger(__name__)

GENESIS = "0" * 64
SEP = "\x1f"

INSERT_SQL = (
    "INSERT INTO audit_event (actor, action, target, job_id, details, prev_hash, hash) "
    "VALUES (:actor, :action, :target, :job_id, CAST(:details AS jsonb), '', '') RETURNING seq"
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


def audit_params(
    *,
    actor: str,
    action: str,
    target: str | None = None,
    job_id: uuid.UUID | str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Bind parameters for INSERT_SQL (details redacted: no secret ever reaches the log)."""
    return {
        "actor": actor[:255],
        "action": action,
        "target": target[:512] if target else None,
        "job_id": uuid.UUID(str(job_id)) if job_id else None,
        "details": canonical(redact(details or {})),
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
    """Append one event in the caller's transaction (kept only if that commits); its seq."""
    params = audit_params(actor=actor, action=action, target=target, job_id=job_id, details=details)
    seq = session.execute(_INSERT, params).scalar_one()
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

"""The append-only, hash-chained audit log.

Each event's `hash` is sha256 over the previous event's hash and the event's canonical content,
so any change to a stored row (or a row removed from the middle) breaks the chain at that row.
Appends are serialised by a transaction-scoped advisory lock, so the chain never forks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from nlphub.redact import redact
from schemas.models import AuditEvent, utcnow

log = logging.getLogger(__name__)

GENESIS = "0" * 64
_CHAIN_LOCK = 0x6E6C7068  # "nlph"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(
    prev_hash: str,
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str | None,
    job_id: uuid.UUID | str | None,
    details: dict[str, Any],
) -> str:
    body = canonical(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "target": target,
            "job_id": str(job_id) if job_id else None,
            "details": details,
        }
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    job_id: uuid.UUID | str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (it is kept only if that commits)."""
    clean = json.loads(canonical(redact(details or {})))
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK})
    last = session.execute(
        text("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1")
    ).first()
    prev_hash = last.hash if last else GENESIS
    seq = session.execute(
        text("SELECT nextval(pg_get_serial_sequence('audit_event', 'seq'))")
    ).scalar_one()
    at = utcnow()
    jid = uuid.UUID(str(job_id)) if job_id else None
    event = AuditEvent(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        job_id=jid,
        details=clean,
        prev_hash=prev_hash,
        hash=event_hash(
            prev_hash,
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            target=target,
            job_id=jid,
            details=clean,
        ),
    )
    session.add(event)
    session.flush()
    log.info("audit %s %s by %s", action, target or "-", actor)
    return event


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken_at: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def iter_events(session: Session, batch: int = 5000) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = session.exec(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)  # type: ignore[arg-type, operator]
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq or last


def verify_chain(session: Session) -> ChainReport:
    """Walk the whole log; report the first event whose link or content does not verify."""
    prev = GENESIS
    checked = 0
    for ev in iter_events(session):
        assert ev.seq is not None
        if ev.prev_hash != prev:
            return ChainReport(checked, ev.seq, "its prev_hash does not match the previous event")
        expected = event_hash(
            prev,
            seq=ev.seq,
            at=ev.at,
            actor=ev.actor,
            action=ev.action,
            target=ev.target,
            job_id=ev.job_id,
            details=ev.details,
        )
        if ev.hash != expected:
            return ChainReport(checked, ev.seq, "its content does not match its hash")
        prev = ev.hash
        checked += 1
    return ChainReport(checked)

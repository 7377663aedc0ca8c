"""Audit chain anchors: the chain's head written outside the database.

The hash chain shows a changed or removed row in the middle of the log, but not the newest
rows deleted, nor the whole chain recomputed by someone who can write the table. An anchor is
the head (seq, hash, its time) appended as one JSON line to `anchors.jsonl` under
NLPHUB_AUDIT_ANCHOR_DIR (default ``NLPHUB_HOME/audit-anchors``; folder 0700, file 0600), by
`nlphub audit anchor` and by beat (`nlphub.audit_anchor`). `check_anchors` compares the log
with every anchor of this database: an anchored event that is gone, or a head below it, is a
truncation; an anchored event whose hash differs is a rewrite. Anchors prove what they prove
only where the database's owner cannot rewrite them too: put the folder on other storage
(another host, a write-once mount) for that. `verify_log` runs both checks and records the
outcome (`audit_verification`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from sqlmodel import Session

from nlphub.audit import ChainReport, verify_chain
from schemas.db import session_scope
from schemas.models import AuditVerification
from schemas.settings import Settings, get_settings

log = logging.getLogger(__name__)

ANCHOR_FILE = "anchors.jsonl"


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    at: str
    anchored_at: str
    database: str


def anchor_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.audit_anchor_dir or settings.home / "audit-anchors"


def _head(session: Session | Connection) -> Any:
    return session.execute(
        text(
            "SELECT current_database() AS db, seq, hash, at FROM (SELECT 1) AS one "
            "LEFT JOIN LATERAL (SELECT seq, hash, at FROM audit_event ORDER BY seq DESC LIMIT 1) "
            "AS head ON true"
        )
    ).one()


def write_anchor(session: Session | Connection, folder: Path | None = None) -> Anchor | None:
    """Append the chain's head to the anchor file (None: the log is empty, nothing written).
    Reads the head in the caller's transaction (no audit write: no chain lock held while the
    file is written)."""
    row = _head(session)
    if row.seq is None:
        return None
    anchor = Anchor(
        seq=int(row.seq),
        hash=str(row.hash),
        at=row.at.astimezone(UTC).isoformat(),
        anchored_at=datetime.now(UTC).isoformat(),
        database=str(row.db),
    )
    folder = folder or anchor_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    line = json.dumps(anchor.__dict__, sort_keys=True) + "\n"
    fd = os.open(folder / ANCHOR_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, line.encode())  # one short write to an O_APPEND file: never interleaved
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("audit chain anchored at event %s (%s) in %s", anchor.seq, anchor.hash, folder)
    return anchor


def read_anchors(folder: Path | None = None) -> Iterator[Anchor | str]:
    """The anchors in the file, oldest first; a line that does not parse comes as a message."""
    path = (folder or anchor_dir()) / ANCHOR_FILE
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                yield Anchor(
                    seq=int(data["seq"]),
                    hash=str(data["hash"]),
                    at=str(data["at"]),
                    anchored_at=str(data["anchored_at"]),
                    database=str(data["database"]),
                )
            except (ValueError, KeyError, TypeError):
                yield f"{path}:{number}: not an anchor line, skipped"


@dataclass(frozen=True)
class AnchorReport:
    anchors: int
    #: Problems that fail verification: truncation or rewrite, one line each.
    problems: list[str]
    #: Lines that could not be read (reported, not failing).
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_anchors(session: Session, folder: Path | None = None) -> AnchorReport:
    """Compare the log with every anchor of this database (see the module docstring)."""
    database = str(session.execute(text("SELECT current_database()")).scalar_one())
    anchors: dict[int, Anchor] = {}
    warnings: list[str] = []
    count = 0
    for item in read_anchors(folder):
        if isinstance(item, str):
            warnings.append(item)
        elif item.database == database:
            anchors.setdefault(item.seq, item)
            count += 1
    if not anchors:
        return AnchorReport(0, [], warnings)
    seqs = sorted(anchors)
    found: dict[int, str] = {}
    for start in range(0, len(seqs), 5000):
        rows = session.execute(
            text("SELECT seq, hash FROM audit_event WHERE seq = ANY(:seqs)"),
            {"seqs": seqs[start : start + 5000]},
        ).all()
        found.update({int(r.seq): str(r.hash) for r in rows})
    head = session.execute(text("SELECT max(seq) FROM audit_event")).scalar_one()
    head = int(head) if head is not None else 0
    problems: list[str] = []
    newest = anchors[seqs[-1]]
    if head < newest.seq:
        problems.append(
            f"TRUNCATED: the log ends at event {head}, but the anchor written at "
            f"{newest.anchored_at} recorded event {newest.seq} (hash {newest.hash[:16]}…): "
            "the newest events were deleted"
        )
    for seq in seqs:
        anchor = anchors[seq]
        stored = found.get(seq)
        if stored is None:
            if seq <= head:
                problems.append(
                    f"TRUNCATED: event {seq}, anchored at {anchor.anchored_at} (hash "
                    f"{anchor.hash[:16]}…), is gone from the log (its head is {head}): events "
                    "were deleted"
                )
        elif stored != anchor.hash:
            problems.append(
                f"REWRITTEN: event {seq}'s hash is {stored[:16]}…, but the anchor written at "
                f"{anchor.anchored_at} recorded {anchor.hash[:16]}…: the chain was rewritten "
                "(or truncated and appended to again)"
            )
    return AnchorReport(count, problems, warnings)


@dataclass(frozen=True)
class Verification:
    """One check of the whole log: the hash chain, then the anchors."""

    chain: ChainReport
    anchors: AnchorReport

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.anchors.ok

    @property
    def problems(self) -> list[str]:
        found = (
            []
            if self.chain.ok
            else [f"BROKEN at event {self.chain.broken_at}: {self.chain.reason}"]
        )
        return found + self.anchors.problems


def verify_log(*, actor: str, folder: Path | None = None) -> Verification:
    """Check the chain and the anchors (`verify_chain`, `check_anchors`) and record the
    outcome in `audit_verification` (its time and result are what the metrics report)."""
    with session_scope() as session:
        outcome = Verification(verify_chain(session), check_anchors(session, folder))
    with session_scope() as session:
        session.add(
            AuditVerification(
                actor=actor[:255],
                ok=outcome.ok,
                events=outcome.chain.checked,
                anchors=outcome.anchors.anchors,
                problems="\n".join(outcome.problems) or None,
            )
        )
    if outcome.ok:
        log.info(
            "audit log verified: %s events, %s anchors",
            outcome.chain.checked,
            outcome.anchors.anchors,
        )
    else:
        log.error("audit log verification failed: %s", "; ".join(outcome.problems))
    return outcome

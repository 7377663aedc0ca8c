"""Running totals in the `counter` table, which the metrics read instead of counting rows.

A total is added to in the transaction that records what it counts, so the two commit
together. Add after that transaction's audit event: every writer then takes the audit chain's
lock before a counter row's (one lock order, no deadlock), and the chain lock already
serializes those transactions, so a counter row adds no wait of its own. Finished jobs are
counted by `nlphub.jobstate` in the statement that finishes them.
"""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlmodel import Session

#: Hub archive bytes downloaded (each archive once, when it is complete and verified).
DOWNLOAD_BYTES = "download.bytes"
#: Records embedded (label: the platform), by finished computations and `embed_records`.
EMBEDDING_RECORDS = "embedding.records"

_ADD = text(
    "INSERT INTO counter AS c (name, label, value, updated_at) VALUES (:name, :label, :n, now()) "
    "ON CONFLICT (name, label) DO UPDATE SET value = c.value + :n, updated_at = now()"
)


def add(session: Session | Connection, name: str, amount: int, label: str = "") -> None:
    """Add `amount` to the total `name` (`label`) in the caller's transaction."""
    if amount:
        session.execute(_ADD, {"name": name, "label": label[:128], "n": int(amount)})

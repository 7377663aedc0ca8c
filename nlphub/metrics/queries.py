"""Every statement the metrics run: bounded reads, one read-only transaction per scrape.

No statement reads a table that grows with every job (`job`, `audit_event`) whole:
- jobs now in progress come from `ix_job_state_created` (the rows in `queued`, `received`,
  `started`, `retrying`: a backlog, never the history);
- finished jobs, bytes downloaded and records embedded are running totals (`counter`, a few
  dozen rows) that the writers keep (`nlphub.counters`);
- the audit log is read at its first row only (primary key).
The tables read whole (`resource`, `counter`) grow with what operators install, not with
jobs. Times are the database's (`now()`), so the scraper's clock does not matter. See
docs/decisions.md, Metrics: totals kept, not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from schemas.states import JOB_ACTIVE, RESOURCE_IN_PROGRESS, ResourceState

#: Resource states of a download still to come (its archive not yet all on disk).
PENDING_DOWNLOAD = tuple(s for s in RESOURCE_IN_PROGRESS if s != ResourceState.VERIFYING)
#: Most a scrape's statements may take together before the database cancels them.
STATEMENT_TIMEOUT_MS = 5000

_JOBS = text(
    """
    SELECT task, state, count(*) AS jobs,
           extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'queued'))
               AS oldest_queued,
           extract(epoch FROM now() - min(started_at) FILTER (WHERE state = 'started'))
               AS oldest_started,
           count(*) FILTER (WHERE state = 'queued' AND published_at IS NULL) AS unpublished,
           extract(epoch FROM now() - min(created_at)
                   FILTER (WHERE state = 'queued' AND published_at IS NULL))
               AS oldest_unpublished
    FROM job WHERE state = ANY(:active)
    GROUP BY task, state
    """
)

_COUNTERS = text("SELECT name, label, value FROM counter")

_RESOURCES = text(
    """
    SELECT state, kind, edition, count(*) AS resources,
           coalesce(sum(bytes_on_disk), 0) AS bytes,
           coalesce(max(size_bytes) FILTER (WHERE state = ANY(:pending)), 0) AS largest_pending
    FROM resource GROUP BY state, kind, edition
    """
)

_SINGLES = text(
    """
    SELECT (SELECT count(*) FROM update_notice WHERE state = 'pending') AS notices,
           (SELECT count(*) FROM redeploy WHERE state = 'pending') AS redeploys,
           (SELECT count(*) FROM redeploy WHERE state = 'pending' AND last_error IS NOT NULL)
               AS redeploys_failed,
           (SELECT extract(epoch FROM at) FROM audit_event ORDER BY seq LIMIT 1) AS log_start,
           v.at AS verified_at, v.ok AS verified_ok
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT extract(epoch FROM at) AS at, ok FROM audit_verification ORDER BY id DESC LIMIT 1
    ) AS v ON true
    """
)


@dataclass(frozen=True)
class ActiveJobs:
    """Jobs of one task in one waiting or running state."""

    task: str
    state: str
    jobs: int
    #: Seconds since the oldest was created (`queued`) or first started (`started`).
    oldest_queued: float | None
    oldest_started: float | None
    unpublished: int
    oldest_unpublished: float | None


@dataclass(frozen=True)
class Resources:
    state: str
    kind: str
    edition: str
    resources: int
    bytes: int
    largest_pending: int


@dataclass
class Snapshot:
    """What one scrape read from the database."""

    active: list[ActiveJobs] = field(default_factory=list)
    #: (name, label) → value, from `counter`.
    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    resources: list[Resources] = field(default_factory=list)
    update_notices: int = 0
    redeploys: int = 0
    redeploys_failed: int = 0
    #: The first audit event's time (epoch seconds); None for an empty log.
    log_start: float | None = None
    #: The latest audit verification's time (epoch seconds) and result; None before the first.
    verified_at: float | None = None
    verified_ok: bool | None = None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def read_snapshot(conn: Connection) -> Snapshot:
    """Run every metrics statement in one read-only transaction on `conn` (its own: the
    caller's connection must have none open), each bounded by STATEMENT_TIMEOUT_MS."""
    with conn.begin():
        conn.execute(text("SET TRANSACTION READ ONLY"))
        conn.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        active = [
            ActiveJobs(
                task=row.task,
                state=row.state,
                jobs=int(row.jobs),
                oldest_queued=_float(row.oldest_queued),
                oldest_started=_float(row.oldest_started),
                unpublished=int(row.unpublished),
                oldest_unpublished=_float(row.oldest_unpublished),
            )
            for row in conn.execute(_JOBS, {"active": [s.value for s in JOB_ACTIVE]})
        ]
        counters = {(row.name, row.label): int(row.value) for row in conn.execute(_COUNTERS)}
        resources = [
            Resources(
                state=row.state,
                kind=row.kind,
                edition=row.edition,
                resources=int(row.resources),
                bytes=int(row.bytes),
                largest_pending=int(row.largest_pending),
            )
            for row in conn.execute(_RESOURCES, {"pending": [s.value for s in PENDING_DOWNLOAD]})
        ]
        one = conn.execute(_SINGLES).one()
    return Snapshot(
        active=active,
        counters=counters,
        resources=resources,
        update_notices=int(one.notices),
        redeploys=int(one.redeploys),
        redeploys_failed=int(one.redeploys_failed),
        log_start=_float(one.log_start),
        verified_at=_float(one.verified_at),
        verified_ok=one.verified_ok,
    )


#: Every statement above, for the plan checks (benchmark, tests): name → (SQL, parameters).
STATEMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "jobs": (_JOBS.text, {"active": [s.value for s in JOB_ACTIVE]}),
    "counters": (_COUNTERS.text, {}),
    "resources": (_RESOURCES.text, {"pending": [s.value for s in PENDING_DOWNLOAD]}),
    "singles": (_SINGLES.text, {}),
}

"""metrics counters: running totals and audit verifications, so a scrape reads rows, not scans

- `counter` (name, label) → value: finished jobs per task and outcome (`job.succeeded`,
  `job.failed`, `job.revoked`; added to by the statement that finishes a job), hub bytes
  downloaded (`download.bytes`) and records embedded per platform (`embedding.records`).
  Counting them from `job` / `audit_event` at each scrape would read every row ever written.
  Filled here from what is already recorded: finished jobs, `resource.downloaded` and
  `embedding.finished` events, and succeeded `nlphub.embed_records` jobs.
- `audit_verification`: each check of the audit log (when, by whom, what it found); the
  metrics read the latest (see docs/decisions.md, Metrics: totals kept, not counted).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = [
    # finished jobs per task and outcome
    """
    INSERT INTO counter (name, label, value, updated_at)
    SELECT 'job.' || state, task, count(*), now() FROM job
    WHERE state IN ('succeeded', 'failed', 'revoked') GROUP BY state, task
    """,
    # hub archive bytes downloaded, once per archive (`resource.downloaded`)
    """
    INSERT INTO counter (name, label, value, updated_at)
    SELECT 'download.bytes', '', sum((details ->> 'bytes')::bigint), now() FROM audit_event
    WHERE action = 'resource.downloaded' AND jsonb_typeof(details -> 'bytes') = 'number'
    HAVING count(*) > 0
    """,
    # records embedded per platform: finished computations, then embed_records jobs
    """
    INSERT INTO counter (name, label, value, updated_at)
    SELECT 'embedding.records', platform, sum(records), now() FROM (
        SELECT e.platform, (a.details ->> 'records')::bigint AS records
        FROM audit_event a JOIN embedding e ON a.target = e.id::text
        WHERE a.action = 'embedding.finished' AND jsonb_typeof(a.details -> 'records') = 'number'
        UNION ALL
        SELECT e.platform, (j.result ->> 'records')::bigint
        FROM job j JOIN embedding e ON j.payload ->> 'embedding_id' = e.id::text
        WHERE j.task = 'nlphub.embed_records' AND j.state = 'succeeded'
          AND jsonb_typeof(j.result -> 'records') = 'number'
    ) AS embedded
    GROUP BY platform
    """,
]


def upgrade() -> None:
    op.create_table(
        "counter",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "label"),
    )
    op.create_table(
        "audit_verification",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("anchors", sa.Integer(), nullable=False),
        sa.Column("problems", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("audit_verification")
    op.drop_table("counter")

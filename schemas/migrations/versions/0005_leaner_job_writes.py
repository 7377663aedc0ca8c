"""leaner job writes: drop two indexes every job paid for and nothing reads

Every job writes one `job` row (updated twice) and four `audit_event` rows. Two of the
indexes those writes maintained are never used by a query:
- the UNIQUE constraint on `audit_event.hash`: the chain is verified by recomputing each
  hash from its predecessor (`nlphub audit verify`), not by looking hashes up; a sha256
  collision is not a case a constraint needs to catch;
- `ix_job_task`: jobs are listed by state and time (`ix_job_state_created`), never by task.
Together they cost the database CPU on every job (see docs/decisions.md, Job writes without
unused indexes).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 08:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("audit_event_hash_key", "audit_event", type_="unique")
    op.drop_index("ix_job_task", table_name="job")


def downgrade() -> None:
    op.create_index("ix_job_task", "job", ["task"], unique=False)
    op.create_unique_constraint("audit_event_hash_key", "audit_event", ["hash"])

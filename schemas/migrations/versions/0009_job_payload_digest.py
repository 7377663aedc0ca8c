"""job payload digest: what a delivery under a job's id must match

`job.payload` is stored redacted (URL passwords, values under secret-looking keys as `***`),
so two payloads that differ only in a secret look the same there. `job.payload_sha256` is the
SHA-256 of the payload as enqueued, unredacted (`nlphub.jobstate.payload_digest`): a delivery
starts the job only if its payload has this digest, and the reconciler does not republish a
payload that redaction changed. Rows from before this revision have none: they are compared
as before (redacted).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("job", sa.Column("payload_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("job", "payload_sha256")

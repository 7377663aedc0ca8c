"""embedding endpoint: the base_url an HTTP platform's key was allowed to go to

`embedding.api_key_ref` names a credential the operator declared (`NLPHUB_CREDENTIALS`, see
`nlphub.credentials`); `embedding.base_url` is the endpoint that credential was allowed to be
sent to when the embedding was created. Every later use of the embedding (`embed_records`,
query embedding for search, a redelivered compute) sends the key there, never to an endpoint a
later payload names. Rows from before this revision have none: they use the platform's default
endpoint, which must be allowed for their credential.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("embedding", sa.Column("base_url", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    op.drop_column("embedding", "base_url")

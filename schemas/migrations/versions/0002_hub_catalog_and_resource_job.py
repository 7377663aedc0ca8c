"""hub catalog and resource job

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 22:58:03.672308
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hub_entry",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("folder_url", sa.Text(), nullable=False),
        sa.Column("archive_url", sa.Text(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("lib_version", sa.String(length=64), nullable=True),
        sa.Column("spark_version", sa.String(length=64), nullable=True),
        sa.Column("edition", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("embedding_type", sa.Text(), nullable=True),
        sa.Column("annotator", sa.String(length=255), nullable=True),
        sa.Column("category", sa.String(length=8), nullable=True),
        sa.Column("engine", sa.String(length=64), nullable=True),
        sa.Column("ready_to_use", sa.Boolean(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checksum", sa.String(length=32), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("archive_url", name="uq_hub_entry_archive"),
    )
    op.create_index("ix_hub_entry_name_lang", "hub_entry", ["name", "language"], unique=False)
    op.add_column("resource", sa.Column("job_id", sa.Uuid(), nullable=True))
    op.add_column("resource", sa.Column("source_url", sa.Text(), nullable=True))
    op.add_column("resource", sa.Column("archive_md5", sa.String(length=32), nullable=True))
    op.add_column("resource", sa.Column("hub_time", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("resource", "hub_time")
    op.drop_column("resource", "archive_md5")
    op.drop_column("resource", "source_url")
    op.drop_column("resource", "job_id")
    op.drop_index("ix_hub_entry_name_lang", table_name="hub_entry")
    op.drop_table("hub_entry")

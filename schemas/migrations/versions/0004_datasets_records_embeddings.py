"""datasets records embeddings

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 23:32:08.649263
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "embedding",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("attribute", sa.String(length=255), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("granularity", sa.String(length=16), nullable=False),
        sa.Column("target_dims", sa.Integer(), nullable=False),
        sa.Column("output_dims", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("api_key_ref", sa.String(length=255), nullable=True),
        sa.Column("encoder_state", sa.LargeBinary(), nullable=True),
        sa.Column("reducer_state", sa.LargeBinary(), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_embedding_dataset_id"), "embedding", ["dataset_id"], unique=False)
    op.create_index(op.f("ix_embedding_state"), "embedding", ["state"], unique=False)
    op.create_table(
        "record",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "external_id", name="uq_record_external"),
    )
    op.create_index(op.f("ix_record_dataset_id"), "record", ["dataset_id"], unique=False)
    # Vectors (pgvector). Dimensions vary per embedding, so the column has none; each finished
    # embedding gets its own partial HNSW cosine index on `vector::vector(<dims>)`.
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """
        CREATE TABLE embedding_vector (
            embedding_id uuid NOT NULL REFERENCES embedding(id) ON DELETE CASCADE,
            record_id uuid NOT NULL REFERENCES record(id) ON DELETE CASCADE,
            vector vector NOT NULL,
            PRIMARY KEY (embedding_id, record_id)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE token_vector (
            embedding_id uuid NOT NULL REFERENCES embedding(id) ON DELETE CASCADE,
            record_id uuid NOT NULL REFERENCES record(id) ON DELETE CASCADE,
            token_index integer NOT NULL,
            start_offset integer NOT NULL,
            end_offset integer NOT NULL,
            vector vector NOT NULL,
            PRIMARY KEY (embedding_id, record_id, token_index)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE token_vector")
    op.execute("DROP TABLE embedding_vector")
    op.drop_index(op.f("ix_record_dataset_id"), table_name="record")
    op.drop_table("record")
    op.drop_index(op.f("ix_embedding_state"), table_name="embedding")
    op.drop_index(op.f("ix_embedding_dataset_id"), table_name="embedding")
    op.drop_table("embedding")
    op.drop_table("dataset")

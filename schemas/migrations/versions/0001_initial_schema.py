"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 22:27:46.861841
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the state names at this revision (later revisions alter the checks).
RESOURCE_STATES = (
    "available",
    "queued",
    "downloading",
    "verifying",
    "installed",
    "missing_dependencies",
    "failed",
    "invalid",
    "deleting",
    "deleted",
)
AUDIT_CHAIN_LOCK = 1852796008  # "nlph"
JOB_STATES = ("queued", "received", "started", "retrying", "succeeded", "failed", "revoked")


# One long function: an applied migration is history, kept as it ran rather than refactored.
def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("hash"),
    )
    op.create_index(op.f("ix_audit_event_action"), "audit_event", ["action"], unique=False)
    op.create_index(op.f("ix_audit_event_job_id"), "audit_event", ["job_id"], unique=False)
    op.create_index(op.f("ix_audit_event_target"), "audit_event", ["target"], unique=False)
    op.create_table(
        "job",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("progress_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_state_created", "job", ["state", "created_at"], unique=False)
    op.create_index(op.f("ix_job_task"), "job", ["task"], unique=False)
    op.create_table(
        "resource",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("embedding_type", sa.Text(), nullable=True),
        sa.Column("edition", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("lib_version", sa.String(length=64), nullable=True),
        sa.Column("spark_version", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("labels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dependencies", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("bytes_on_disk", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(length=128), nullable=True),
        sa.Column("install_path", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "language", "version", name="uq_resource_nlv"),
    )
    op.create_index(op.f("ix_resource_name"), "resource", ["name"], unique=False)
    op.create_index(op.f("ix_resource_state"), "resource", ["state"], unique=False)
    # Each event is chained to the previous one by a BEFORE INSERT trigger: under a
    # transaction-scoped advisory lock it takes the next seq, the previous event's hash, and
    # hashes the previous hash with the event's body (see nlphub.audit.event_body, which
    # `nlphub audit verify` uses to recompute every hash independently of this function).
    op.get_bind().exec_driver_sql(
        f"""
        CREATE FUNCTION audit_event_chain() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            prev text;
        BEGIN
            PERFORM pg_advisory_xact_lock({AUDIT_CHAIN_LOCK});
            NEW.seq := nextval(pg_get_serial_sequence('audit_event', 'seq'));
            NEW.at := coalesce(NEW.at, clock_timestamp());
            NEW.details := coalesce(NEW.details, '{{}}'::jsonb);
            SELECT hash INTO prev FROM audit_event ORDER BY seq DESC LIMIT 1;
            NEW.prev_hash := coalesce(prev, repeat('0', 64));
            NEW.hash := encode(sha256(convert_to(
                NEW.prev_hash || E'\\n' || concat_ws(E'\\x1f',
                    NEW.seq::text,
                    to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
                    NEW.actor, NEW.action, coalesce(NEW.target, ''),
                    coalesce(NEW.job_id::text, ''), NEW.details::text),
                'UTF8')), 'hex');
            RETURN NEW;
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER audit_event_chain BEFORE INSERT ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_chain()"
    )
    # The audit log is append-only: refuse UPDATE, DELETE and TRUNCATE at the database level.
    op.execute(
        """
        CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
    )
    states = ", ".join(f"'{s}'" for s in RESOURCE_STATES)
    op.create_check_constraint("ck_resource_state", "resource", f"state IN ({states})")
    job_states = ", ".join(f"'{s}'" for s in JOB_STATES)
    op.create_check_constraint("ck_job_state", "job", f"state IN ({job_states})")
    op.create_check_constraint("ck_job_progress", "job", "progress >= 0 AND progress <= 1")


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_event_no_truncate ON audit_event")
    op.execute("DROP TRIGGER audit_event_no_change ON audit_event")
    op.execute("DROP FUNCTION audit_event_append_only()")
    op.execute("DROP TRIGGER audit_event_chain ON audit_event")
    op.execute("DROP FUNCTION audit_event_chain()")
    op.drop_index(op.f("ix_resource_state"), table_name="resource")
    op.drop_index(op.f("ix_resource_name"), table_name="resource")
    op.drop_table("resource")
    op.drop_index(op.f("ix_job_task"), table_name="job")
    op.drop_index("ix_job_state_created", table_name="job")
    op.drop_table("job")
    op.drop_index(op.f("ix_audit_event_target"), table_name="audit_event")
    op.drop_index(op.f("ix_audit_event_job_id"), table_name="audit_event")
    op.drop_index(op.f("ix_audit_event_action"), table_name="audit_event")
    op.drop_table("audit_event")

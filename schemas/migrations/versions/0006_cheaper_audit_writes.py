"""cheaper audit writes: the chain trigger's sequence resolved once; drop ix_audit_event_target

Every job writes four `audit_event` rows, each through the `audit_event_chain()` trigger:
- the trigger looked its sequence up by name on every row (`pg_get_serial_sequence`, a
  catalogue search); it now names the sequence itself, resolved once here. Everything else
  in the function (lock, previous hash, the hash itself) is left exactly as it was (see
  docs/decisions.md, Audit chain trigger: its sequence resolved once);
- no query filters audit events on `target` (the CLI filters on `action`, the update checks
  on `action` and `details`, `nlphub audit verify` walks `seq`), so its index was written
  four times per job for nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 08:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOOKUP = "nextval(pg_get_serial_sequence('audit_event', 'seq'))"


def _replace_in_chain(old: str, new: str) -> None:
    """Recreate audit_event_chain() with `old` replaced by `new` in its body (once)."""
    bind = op.get_bind()
    body = bind.exec_driver_sql(
        "SELECT prosrc FROM pg_proc WHERE oid = 'audit_event_chain()'::regprocedure"
    ).scalar_one()
    if body.count(old) != 1:
        raise RuntimeError(
            f"audit_event_chain() is not the function this migration expects: {old!r} "
            f"appears {body.count(old)} times in its body instead of once"
        )
    if "$chain$" in body:
        raise RuntimeError("audit_event_chain()'s body contains $chain$, its quoting tag")
    bind.exec_driver_sql(
        "CREATE OR REPLACE FUNCTION audit_event_chain() RETURNS trigger LANGUAGE plpgsql "
        f"AS $chain${body.replace(old, new)}$chain$"
    )


def _resolved() -> str:
    sequence = (
        op.get_bind()
        .exec_driver_sql("SELECT pg_get_serial_sequence('audit_event', 'seq')")
        .scalar_one()
    )
    quoted = sequence.replace("'", "''")
    return f"nextval('{quoted}'::regclass)"


def upgrade() -> None:
    _replace_in_chain(LOOKUP, _resolved())
    op.drop_index("ix_audit_event_target", table_name="audit_event")


def downgrade() -> None:
    op.create_index("ix_audit_event_target", "audit_event", ["target"], unique=False)
    _replace_in_chain(_resolved(), LOOKUP)

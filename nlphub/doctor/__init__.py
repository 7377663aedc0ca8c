"""`nlphub doctor`: check the whole installation and say what to fix.

One check per part (`CHECKS`, in report order): the database (reachable, migrated), the broker,
a worker on every queue, one active beat, Flower, disk headroom, the Spark NLP runtime, the
licence, the hub folders, the audit chain. Each is bounded by a time budget and runs as soon as
what it needs has run (`core.run_checks`); a check whose prerequisite failed is skipped, saying
so, instead of failing again for the same cause. The doctor passes (exit 0) when nothing
failed; warnings are for optional or soon-to-matter parts. Modules: `core` (findings, running),
`services`, `storage`, `runtime`, `hubs`, `integrity`.
"""

from __future__ import annotations

from collections.abc import Sequence

from nlphub.doctor.core import Check, Context, Finding, Status, exit_code, run_checks, summary
from nlphub.doctor.hubs import hubs_check
from nlphub.doctor.integrity import audit_budget, audit_check
from nlphub.doctor.runtime import licence_check, spark_budget, spark_check
from nlphub.doctor.services import (
    beat_check,
    broker_check,
    database_check,
    flower_check,
    workers_check,
)
from nlphub.doctor.storage import disk_check, parse_size

__all__ = [
    "CHECKS",
    "CHECK_NAMES",
    "Check",
    "Context",
    "Finding",
    "Status",
    "diagnose",
    "exit_code",
    "parse_size",
    "summary",
]

CHECKS: tuple[Check, ...] = (
    Check("database", database_check),
    Check("broker", broker_check),
    Check("workers", workers_check, needs=("broker",)),
    Check("beat", beat_check, needs=("database",)),
    Check("flower", flower_check),
    Check("disk", disk_check, after=("database",)),
    Check("spark", spark_check, budget=spark_budget),
    Check("licence", licence_check),
    Check("hubs", hubs_check),
    Check(
        "audit",
        audit_check,
        needs=("database",),
        budget=audit_budget,
        on_timeout=Status.WARN,
        timeout_fix="run `nlphub audit verify` (no time limit), or a larger --timeout",
    ),
)
CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in CHECKS)


def diagnose(ctx: Context, *, skip: Sequence[str] = ()) -> list[Finding]:
    """Run every check (but those in `skip`) and return their findings in report order."""
    unknown = sorted(set(skip) - set(CHECK_NAMES))
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r} (checks: {', '.join(CHECK_NAMES)})")
    return run_checks(CHECKS, ctx, skip_names=list(dict.fromkeys(skip)))

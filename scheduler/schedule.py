"""The whole beat schedule, in one place. Every entry has a one-line comment and an expiry, so
a backlog after downtime never runs the same periodic job twice."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab


def beat_schedule() -> dict[str, dict[str, Any]]:
    return {
        # Republish jobs committed to Postgres that the broker never got (or lost): the outbox.
        "reconcile-outbox": {
            "task": "nlphub.reconcile_outbox",
            "schedule": 60.0,
            "kwargs": {"requested_by": "beat"},
            "options": {"expires": 55},
        },
        # Reconcile resource rows with the files and verify checksums; report disk usage.
        "inventory": {
            "task": "nlphub.inventory",
            "schedule": crontab(minute=17),
            "kwargs": {"requested_by": "beat", "verify_checksums": True},
            "options": {"expires": 3000},
        },
    }

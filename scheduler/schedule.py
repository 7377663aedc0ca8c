"""The whole beat schedule, in one place. Every entry has a one-line comment and an expiry, so
a backlog after downtime never runs the same periodic job twice."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from schemas.settings import Settings


def _crontab(spec: str) -> crontab:
    minute, hour, day_of_month, month_of_year, day_of_week = spec.split()
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    beat = {"requested_by": "beat"}
    return {
        # Republish jobs committed to Postgres that the broker never got (or lost): the outbox.
        "reconcile-outbox": {
            "task": "nlphub.reconcile_outbox",
            "schedule": 60.0,
            "kwargs": beat,
            "options": {"expires": 55},
        },
        # Reconcile resource rows with the files and verify checksums; report disk usage.
        "inventory": {
            "task": "nlphub.inventory",
            "schedule": crontab(minute=17),
            "kwargs": {**beat, "verify_checksums": True},
            "options": {"expires": 3000},
        },
        # Newer compatible versions of installed resources (NLPHUB_UPDATE_CHECK_CRONTAB).
        "check-updates": {
            "task": "nlphub.check_updates",
            "schedule": _crontab(settings.update_check_crontab),
            "kwargs": {**beat, "reason": "schedule"},
            "options": {"expires": 3600},
        },
        # Coalesce pending pre-annotation redeploys and call the servers (debounced).
        "redeploy-preannotation": {
            "task": "nlphub.redeploy_preannotation",
            "schedule": max(5.0, settings.redeploy_debounce_seconds / 2),
            "kwargs": beat,
            "options": {"expires": max(5.0, settings.redeploy_debounce_seconds / 2)},
        },
        # Remove leftovers of interrupted work (results in Redis expire by result_expires).
        "cleanup": {
            "task": "nlphub.cleanup",
            "schedule": crontab(minute=41, hour=4),
            "kwargs": {**beat, "older_than": 86400.0},
            "options": {"expires": 3600},
        },
        # Write the audit chain's head outside the database (NLPHUB_AUDIT_ANCHOR_INTERVAL).
        "audit-anchor": {
            "task": "nlphub.audit_anchor",
            "schedule": settings.audit_anchor_interval,
            "kwargs": beat,
            "options": {"expires": settings.audit_anchor_interval},
        },
        # Check the audit chain and its anchors; the metrics report when, and the outcome.
        "audit-verify": {
            "task": "nlphub.audit_verify",
            "schedule": settings.audit_verify_interval,
            "kwargs": beat,
            "options": {"expires": settings.audit_verify_interval},
        },
        # A no-op job through the whole path: proves beat → broker → worker → Postgres works.
        "heartbeat": {
            "task": "nlphub.ping",
            "schedule": settings.heartbeat_seconds,
            "kwargs": beat,
            "options": {"expires": settings.heartbeat_seconds},
        },
    }

"""A beat scheduler that only sends while it holds a Postgres advisory lock.

Start two beats by accident and one of them is active, the other standby: the lock belongs to
the active beat's database session, so Postgres releases it when that beat dies and the standby
takes over at its next tick. Each scheduled run is sent once.

Its lock session is named ``nlphub-beat <host>:<pid>`` whether it is active or standby, so
`nlphub doctor` sees every beat and which one is active (`nlphub.beat`).

Use: `celery -A workers.app beat -S scheduler.locked:LockedScheduler` (what `nlphub beat` and
`nlphub up` run).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.beat import PersistentScheduler
from sqlalchemy import Connection, text

from nlphub.beat import BEAT_LOCK, beat_application_name

__all__ = ["BEAT_LOCK", "STANDBY_RETRY", "LockedScheduler"]

log = logging.getLogger(__name__)

STANDBY_RETRY = 5.0


class LockedScheduler(PersistentScheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conn: Connection | None = None
        self._active = False
        super().__init__(*args, **kwargs)

    def _hold_lock(self) -> bool:
        from schemas.db import get_engine

        try:
            if self._conn is None or self._conn.closed or self._conn.invalidated:
                self._conn = get_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
                self._active = False
                # this session is never handed back to the pool (`_drop` invalidates it)
                self._conn.execute(
                    text("SELECT set_config('application_name', :n, false)"),
                    {"n": beat_application_name()},
                )
            if self._active:
                self._conn.execute(text("SELECT 1"))  # still connected, so still held
                return True
            got = bool(
                self._conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": BEAT_LOCK}
                ).scalar()
            )
        except Exception as exc:  # database away: stand by, never double-send
            log.warning("beat lock check failed (%s); standing by", exc)
            self._drop()
            return False
        if got and not self._active:
            self._active = True
            log.info("this beat holds the lock: active")
            self._on_active()
        return got

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:  # already gone
                log.debug("closing the beat lock connection", exc_info=True)
        self._conn = None
        self._active = False

    def _on_active(self) -> None:
        """Becoming the active beat = the stack (re)started: one update check, collapsed with
        any other recent start-up check by its minimum interval."""
        try:
            import nlphub

            nlphub.enqueue(
                "nlphub.check_updates",
                {"reason": "startup", "min_interval": 600.0},
                requested_by="beat",
            )
        except Exception as exc:  # the scheduled check will run later anyway
            log.warning("could not queue the start-up update check: %s", exc)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold_lock():
            log.debug("another beat is active; standing by")
            return STANDBY_RETRY
        return float(super().tick(*args, **kwargs))

    def close(self) -> None:
        self._drop()
        super().close()

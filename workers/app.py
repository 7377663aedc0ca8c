"""Entry point of the Celery app (`celery -A workers.app`): the app with every task registered.

The worker, beat, Flower (`/api/task/async-apply/<name>`) and every process that imports this
module know the same task names. The app itself (configuration, queues, routing) is
`nlphub.messaging.app`, below the tasks, so that sending a task by name needs no task module;
this module adds what only a worker or beat needs: the tasks, the beat schedule and the
prefork pool's check interval.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

import tasks.embeddings
import tasks.hub
import tasks.maintenance
import tasks.preannotation
import tasks.resources
import tasks.rules
import tasks.uploads  # noqa: F401
from nlphub.messaging.app import LONG_QUEUES, Queue, app, build_config
from nlphub.messaging.app import configure as configure_messaging
from scheduler.schedule import beat_schedule
from schemas.settings import Settings, get_settings
from workers.logs import configure_named_process, on_celery_setup_logging

__all__ = ["LONG_QUEUES", "POOL_MAINTAIN_INTERVAL", "Queue", "app", "build_config", "configure"]

#: Seconds between the prefork pool's checks for dead pool processes (Celery: 5). A pool
#: process killed mid-task (OOM killer, SIGKILL) is noticed this fast, so its job is failed
#: over to redelivery (WorkerLostError, reject_on_worker_lost) without a 5 s stall; the check
#: itself is cheap. tests/faults/test_worker_kills.py measures the delay.
POOL_MAINTAIN_INTERVAL = 0.5


def _check_pool_often() -> None:
    from celery.concurrency import asynpool

    def timers(pool: Any) -> dict[Any, float]:
        return {pool.maintain_pool: POOL_MAINTAIN_INTERVAL}

    asynpool.AsynPool.timers = property(timers)


_check_pool_often()


# Workers and beat log in the nlphub format (NLPHUB_LOG_FORMAT) instead of Celery's; a process
# that `nlphub up` named does from its first record (Flower included, which Celery never asks).
setup_logging.connect(on_celery_setup_logging, weak=False)
configure_named_process()


def _set_beat_schedule(sender: Celery, **_: Any) -> None:
    sender.conf.beat_schedule = beat_schedule(get_settings())


# When the configuration is first needed, or now if registering the tasks already needed it.
app.on_configure.connect(_set_beat_schedule, weak=False)
if app.configured:
    _set_beat_schedule(app)


def configure(settings: Settings) -> Celery:
    """Re-point the app at other servers (tests, `nlphub up` after starting embedded ones)."""
    configure_messaging(settings)
    app.conf.beat_schedule = beat_schedule(settings)
    return app

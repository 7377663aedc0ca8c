"""The one Celery app: JSON only, queues, routing, reliability settings.

It is defined here, below the tasks, so that anything may send a task by name (`nlphub.enqueue`,
the reconciler) without importing a task module. `workers.app` is the entry point that
registers every task and the beat schedule (`celery -A workers.app`)."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from celery import Celery
from kombu import Exchange
from kombu import Queue as KombuQueue

from nlphub.messaging import transport as redis_transport
from nlphub.messaging.results import BACKEND_OVERRIDES
from schemas.payloads import TASKS
from schemas.settings import Settings, get_settings

log = logging.getLogger(__name__)


class Queue(StrEnum):
    DOWNLOADS = "downloads"
    EMBEDDINGS = "embeddings"
    DEFAULT = "default"


#: Queues whose tasks run for minutes: fetch one message at a time.
LONG_QUEUES = frozenset({Queue.DOWNLOADS, Queue.EMBEDDINGS})


def build_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration derived from nlphub settings (pure: unit-tested)."""
    redis_url = settings.require_redis_url()
    visibility = settings.visibility_timeout
    transport = {"visibility_timeout": visibility}
    exchange = Exchange("nlphub", type="direct")
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        # The visibility timeout must agree in all three places and outlast the longest task.
        "broker_transport_options": dict(transport),
        "result_backend_transport_options": dict(transport),
        "visibility_timeout": visibility,
        "task_time_limit": settings.effective_time_limit,
        "task_soft_time_limit": max(1, settings.effective_time_limit - 30),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "result_accept_content": ["json"],
        "task_queues": [KombuQueue(q.value, exchange, routing_key=q.value) for q in Queue],
        "task_default_queue": Queue.DEFAULT.value,
        "task_default_exchange": "nlphub",
        "task_default_routing_key": Queue.DEFAULT.value,
        "task_routes": {
            name: {"queue": spec.queue, "routing_key": spec.queue} for name, spec in TASKS.items()
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_prefetch_multiplier": 1,
        # Only nlphub.* task messages are run; Celery's built-ins (celery.*) and unknown names
        # are refused before anything runs (nlphub.messaging.consumer).
        "worker_consumer": "nlphub.messaging.consumer:Consumer",
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # Redis keeps a fetched message unacknowledged (in Redis) until the visibility timeout;
        # cancelling the running task when the connection drops would throw its work away and
        # leave its job `started`, with nothing to run it, for hours. It goes on instead: its
        # outcome is recorded in Postgres, and a later redelivery finds the job finished.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        "result_expires": 7 * 24 * 3600,
        "result_extended": True,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_scheduler": "scheduler.locked:LockedScheduler",
    }


# redis:// brokers through kombu's Redis transport, safe to close after a connection loss
redis_transport.install()
app = Celery("nlphub")
# Celery's `override_backends` setting (read by the loader): redis:// results through
# nlphub.messaging.results, which does not subscribe to a task's result when sending it.
app.loader.override_backends = dict(BACKEND_OVERRIDES)


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    # Runs once, when the configuration is first needed (not at import: `--help` needs no URLs).
    # Without REDIS_URL the broker stays unset here; every entry point (CLI commands, the
    # worker's start-up check) demands it with a clear message.
    settings = get_settings()
    if settings.redis_url or settings.runtime_urls().get("redis_url"):
        sender.conf.update(build_config(settings))


def configure(settings: Settings) -> Celery:
    """Re-point the app at other servers (tests, `nlphub up` after starting embedded ones)."""
    before = (app.conf.broker_url, app.conf.result_backend)
    app.conf.update(build_config(settings))
    if (app.conf.broker_url, app.conf.result_backend) != before:
        drop_connections()
    return app


def drop_connections() -> None:
    """Forget the broker connection pools and the result backend made for the old URLs.

    Celery makes them once, on first use, and would keep talking to the old servers."""
    pools = [app._pool, getattr(app.amqp, "_producer_pool", None)]
    for pool in pools:
        if pool is not None:
            try:
                pool.force_close_all()
            except Exception:  # the old server may be gone
                log.debug("closing an old broker pool", exc_info=True)
    app._pool = None
    app.amqp._producer_pool = None
    # The producer pools are also kept in kombu's process-wide registry, keyed by connection
    # parameters: a closed one would be handed out again for the same URL.
    from kombu import pools as kombu_pools

    kombu_pools.reset()
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)

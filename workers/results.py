"""The result backend: Celery's Redis backend, without the subscription made at send time.

Celery's Redis backend subscribes the sending process to each task's result channel as it
sends the task, so that a later `AsyncResult.get()` hears the result at once. nlphub's senders
(`nlphub.enqueue`, the reconciler, beat, Flower's REST API) never wait on a Celery result — the
job row is the record — so that subscription only cost two Redis round trips per job and, with
Redis down, a reconnect loop of 20 one-second retries inside every `enqueue()` before its
publish could even fail over to the outbox. `AsyncResult.get()` still works: it subscribes
when it is called, then reads the stored result (so nothing published before is missed).
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend as _CeleryRedisBackend

#: Celery's `override_backends`: the URL schemes of `result_backend` served by this backend
#: (redis+socket:// is "redis" to Celery).
BACKEND_OVERRIDES = {
    "redis": "workers.results:RedisBackend",
    "rediss": "workers.results:RedisBackend",
}


class RedisBackend(_CeleryRedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Sending a task subscribes to nothing (see the module docstring)."""

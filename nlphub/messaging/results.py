"""The result backend: Celery's Redis backend, without round trips nlphub does not need.

- No subscription at send time. Celery's Redis backend subscribes the sending process to each
  task's result channel as it sends the task, so that a later `AsyncResult.get()` hears the
  result at once. nlphub's senders (`nlphub.enqueue`, the reconciler, beat, Flower's REST API)
  never wait on a Celery result — the job row is the record — so that subscription only cost
  Redis round trips per job and, with Redis down, a reconnect loop inside every `enqueue()`
  before its publish could fail over to the outbox (see docs/decisions.md, Result backend: no
  subscription when a task is sent).
  `AsyncResult.get()` still works: it subscribes when it is called, then reads the stored
  result (so nothing published before is missed).
- No read before storing a STARTED or SUCCESS state of an nlphub task. Celery reads a task's
  stored state before each write and skips the write when the task already succeeded, so that
  a duplicate delivery (a lost worker, a network partition) cannot overwrite a success. An
  nlphub task does not need it: a delivery of a job that already finished does not run again
  and returns the result recorded in its job row (`tasks.base`), so the writes it makes are
  STARTED for the few milliseconds that check takes, then the same SUCCESS again (or, if the
  database is down at that moment, RETRY until the retry finds the job finished), and the
  read costs Redis round trips per job (see docs/decisions.md, Result backend: no read before
  storing STARTED or SUCCESS). Other states (RETRY, FAILURE), and every other task, keep
  Celery's check.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend as _CeleryRedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

#: Celery's `override_backends`: the URL schemes of `result_backend` served by this backend
#: (redis+socket:// is "redis" to Celery).
BACKEND_OVERRIDES = {
    "redis": "nlphub.messaging.results:RedisBackend",
    "rediss": "nlphub.messaging.results:RedisBackend",
}

#: States an nlphub task's result is stored in without reading the stored one first.
UNCHECKED_STATES = frozenset({states.STARTED, states.SUCCESS})


class RedisBackend(_CeleryRedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Sending a task subscribes to nothing (see the module docstring)."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if state not in UNCHECKED_STATES or not self._runs_once_per_job(request):
            return super()._store_result(
                task_id, result, state, traceback=traceback, request=request, **kwargs
            )
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as ex:
            raise BackendStoreError(str(ex), state=state, task_id=task_id) from ex
        return result

    def _runs_once_per_job(self, request: Any) -> bool:
        """Whether the request's task is an nlphub task (see the module docstring)."""
        task = self.app.tasks.get(getattr(request, "task", None) or "")
        return bool(getattr(task, "runs_once_per_job", False))

"""The worker's consumer: only nlphub's own tasks are accepted from the broker.

Anyone who can publish to the queues (Flower's REST API, `send_task`, a Redis client) names the
task a message runs. Celery registers its built-in tasks (`celery.chord_unlock`,
`celery.backend_cleanup`, `celery.group`, ...) in every app, so a worker would run them too.
nlphub sends none of them (no canvas, and Redis expires results itself: no cleanup task), so
a worker accepts `nlphub.*` tasks only (and what code in its own process names with `accept`:
the benchmarks' bare task).

The check sits where Celery decides what a message runs: the consumer's table of task
strategies, one per registered task name, looked up for every message before anything is
executed. Celery's built-ins are taken out of it after each (re)build, so their messages take
the path of an unknown task name, which is refused here: the message is discarded (not run, not
requeued) with one error line in the worker's log, a `task-rejected` event and the
`task_rejected` signal — and nothing stored in the result backend, where Celery would store a
NotRegistered failure under the message's task id (which a sender may have set to a job's).
It costs nothing per accepted message. `worker_consumer` (nlphub.messaging.app) selects it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)

#: The task names a worker accepts from the broker: nlphub's ...
ACCEPTED_PREFIX = "nlphub."
#: ... and those that code in the worker's own process accepts too (`accept`).
_ALSO_ACCEPTED: set[str] = set()


def accept(*names: str) -> None:
    """Let this process' worker run these registered tasks too (benchmarks' bare task, run by
    a worker started with `--include`); never Celery's built-ins."""
    _ALSO_ACCEPTED.update(name for name in names if not name.startswith("celery."))


def accepted(name: str) -> bool:
    return name.startswith(ACCEPTED_PREFIX) or name in _ALSO_ACCEPTED


class Consumer(CeleryConsumer):
    """Celery's consumer, with only nlphub tasks in its strategies (see the module docstring)."""

    def update_strategies(self) -> None:
        super().update_strategies()
        for name in [name for name in self.strategies if not accepted(name)]:
            del self.strategies[name]

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = message.headers or {}
        name, task_id = headers.get("task"), headers.get("id")
        if name is None or task_id is None:  # task message protocol 1
            try:
                payload = message.decode() if body is None else body
                name, task_id = payload["task"], payload["id"]
            except Exception:  # not even a task message: Celery's own refusal
                return self.on_unknown_message(body, message)
        refusal = InvalidTaskError(
            f"task {str(name)[:200]!r} refused: not one of this worker's nlphub tasks"
        )
        log.error("message %s refused and discarded: %s", str(task_id)[:64], refusal)
        message.reject_log_error(log, self.connection_errors)
        if self.event_dispatcher:
            self.event_dispatcher.send("task-rejected", uuid=task_id, requeue=False)
        signals.task_rejected.send(sender=self, message=message, exc=refusal)

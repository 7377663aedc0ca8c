"""Flower as nlphub runs it (`celery -A workers.flower flower`; `nlphub flower`, `nlphub up`).

The app is `workers.app`'s. Importing this module wraps Flower's `BaseTaskHandler.get_task_args`,
which every enqueuing endpoint (`/api/task/apply`, `async-apply`, `send-task`) calls after
authentication, so that:
- only the options in ALLOWED_OPTIONS go to `apply_async`/`send_task`; any other top-level
  property of the body (`headers`, `queue`, `link`, `retries`, ...) is refused with HTTP 400
  naming it, as is a `task_id` that is not a UUID;
- the message gets the `nlphub_caller` header: the authenticated Flower user, signed for this
  message's id, task and arguments (`nlphub.callers`), so a worker records who sent it.
See docs/decisions.md, "Flower callers: a signed header, options allow-listed".
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import uuid
from typing import Any

from flower.api.tasks import BaseTaskHandler
from tornado.web import HTTPError

from nlphub.callers import CALLER_HEADER, caller_key, signed_caller
from schemas.settings import get_settings
from workers.app import app

__all__ = ["ALLOWED_OPTIONS", "app", "checked_options", "flower_user"]

log = logging.getLogger(__name__)

#: Body properties passed on besides `args`/`kwargs`: when the job runs (`countdown`, `eta`),
#: until when it may start (`expires`), its `priority`, its id (`task_id`, a UUID; a queued
#: job's id is refused by the worker) and how long `/api/task/apply` waits (`timeout`).
#: Nothing that changes the message's headers, routing, callbacks or retry count.
ALLOWED_OPTIONS = frozenset({"countdown", "eta", "expires", "priority", "task_id", "timeout"})

#: Flower's own method (found again under ours if this module is imported twice).
_FLOWER_GET_TASK_ARGS = getattr(
    BaseTaskHandler.get_task_args, "flower_original", BaseTaskHandler.get_task_args
)


def checked_options(options: dict[str, Any]) -> str:
    """Refuse (HTTP 400) an option not in ALLOWED_OPTIONS or a `task_id` that is not a UUID;
    the message's task id: the given one (normalized) or a new one."""
    refused = sorted(str(name) for name in options if name not in ALLOWED_OPTIONS)
    if refused:
        raise HTTPError(
            400,
            "%s",
            f"option {refused[0][:64]!r} is not accepted (accepted besides args and kwargs: "
            f"{', '.join(sorted(ALLOWED_OPTIONS))})",
        )
    given = options.get("task_id")
    if given is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(given))
    except (TypeError, ValueError, AttributeError):
        raise HTTPError(400, "task_id must be a UUID") from None


def flower_user(handler: Any) -> str | None:
    """The user Flower authenticated for this request: the OAuth user, else the basic-auth
    user whose credentials the request carries (never the password); None without auth."""
    options = handler.application.options
    if options.auth:
        user = handler.current_user
        return user if isinstance(user, str) else None
    if not options.basic_auth:
        return None
    scheme, _, encoded = handler.request.headers.get("Authorization", "").partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    for stored in options.basic_auth:
        if scheme == "Basic" and hmac.compare_digest(stored.encode(), given):
            return str(stored.split(":", 1)[0])
    return None


def _signed_task_args(self: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Flower's args, kwargs and options, the options checked and the signed caller added."""
    args, kwargs, options = _FLOWER_GET_TASK_ARGS(self)
    if not isinstance(kwargs, dict):
        raise HTTPError(400, "kwargs must be an object")
    task_id = checked_options(options)
    if not self.path_args:  # pragma: no cover - every enqueuing route names the task
        raise HTTPError(400, "no task name")
    task = str(self.path_args[0])
    user = flower_user(self)
    if user is None and (self.application.options.auth or self.application.options.basic_auth):
        raise HTTPError(401)  # authenticated, yet no user found: refuse rather than guess
    caller = {"via": "flower", "user": user}
    header = signed_caller(
        caller_key(get_settings()),
        task_id=task_id,
        task=task,
        caller=caller,
        args=args,
        kwargs=kwargs,
    )
    options["task_id"] = task_id
    options["headers"] = {CALLER_HEADER: header}
    log.info("flower user %r sends %s [%s]", user, task, task_id)
    return args, kwargs, options


def install() -> None:
    """Wrap Flower's handler (once)."""
    _signed_task_args.flower_original = _FLOWER_GET_TASK_ARGS  # type: ignore[attr-defined]
    BaseTaskHandler.get_task_args = _signed_task_args


install()

"""Flower as nlphub runs it (`celery -A workers.flower flower`; `nlphub flower`, `nlphub up`).

The app is `workers.app`'s. Flower's users other than the operator are tenants (README,
Security). Importing this module:
- wraps Flower's `BaseTaskHandler.get_task_args`, which every enqueuing endpoint
  (`/api/task/apply`, `async-apply`, `send-task`) calls after authentication, so that only the
  options in ALLOWED_OPTIONS go to `apply_async`/`send_task` (any other top-level property of
  the body, `headers`, `queue`, `link`, ..., is refused with HTTP 400 naming it, as is a
  `task_id` that is not a UUID, one given to `apply`, a `countdown`/`eta` past
  `delay_limit`, or a `timeout` past APPLY_TIMEOUT_LIMIT, which is also `apply`'s wait when
  none is given), and the message gets the `nlphub_caller` header: the authenticated Flower
  user, signed for this message's id, task and arguments (`nlphub.callers`);
- answers a tenant (an NLPHUB_FLOWER_TENANTS account) 403 on every route but SERVED_HANDLERS
  (worker and task control, results, listings, the web pages): they act on or show other
  tenants' jobs and the servers; the operator (NLPHUB_FLOWER_USER) keeps all of Flower;
- cuts `/api/task/info/<id>` down to the job's state and times (TASK_INFO_FIELDS) for tenants.
See docs/decisions.md, "Flower callers: a signed header, options allow-listed", "Flower:
enqueue and job state only", "Flower: countdown and eta bounded" and "Flower: apply's wait
bounded".
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import flower.urls
from flower.api.tasks import BaseTaskHandler, TaskApply, TaskAsyncApply, TaskInfo, TaskSend
from flower.views.auth import LoginHandler, LogoutHandler
from flower.views.error import NotFoundErrorHandler
from flower.views.monitor import Healthcheck, Metrics
from tornado.web import HTTPError, RequestHandler, StaticFileHandler

from nlphub.callers import CALLER_HEADER, caller_key, signed_caller
from schemas.settings import get_settings
from workers.app import app

__all__ = [
    "ALLOWED_OPTIONS",
    "APPLY_TIMEOUT_LIMIT",
    "REFUSED_ROUTE",
    "SERVED_HANDLERS",
    "TASK_INFO_FIELDS",
    "app",
    "checked_options",
    "delay_limit",
    "flower_user",
    "is_operator",
]

log = logging.getLogger(__name__)

#: Body properties passed on besides `args`/`kwargs`: when the job runs (`countdown`, `eta`),
#: until when it may start (`expires`), its `priority`, its id (`task_id`, a UUID; a queued
#: job's id is refused by the worker) and how long `/api/task/apply` waits (`timeout`).
#: Nothing that changes the message's headers, routing, callbacks or retry count.
ALLOWED_OPTIONS = frozenset({"countdown", "eta", "expires", "priority", "task_id", "timeout"})

#: Seconds `/api/task/apply` may wait for a job's result (its `timeout`; without one, Flower
#: would wait until the job ends): each wait holds one of Flower's executor threads.
APPLY_TIMEOUT_LIMIT = 300

#: The Flower handlers nlphub's Flower serves: enqueuing (checked and signed), a job's state
#: (TASK_INFO_FIELDS), the health check and metrics, login/logout, static files and the 404
#: page. Any other route answers 403 with REFUSED_ROUTE, Flower's future routes included.
SERVED_HANDLERS: frozenset[type[RequestHandler]] = frozenset(
    {
        TaskApply,
        TaskAsyncApply,
        TaskSend,
        TaskInfo,
        Healthcheck,
        Metrics,
        LoginHandler,
        LogoutHandler,
        StaticFileHandler,
        NotFoundErrorHandler,
    }
)

#: The answer of every other route (worker shutdown, pool and queue control, revoke, abort,
#: rate limits, results, task and worker listings, the web pages).
REFUSED_ROUTE = (
    "disabled by nlphub: this Flower enqueues jobs (POST /api/task/async-apply/<task>, "
    "send-task/<task> or apply/<task>) and shows a job's state (GET /api/task/info/<job id>); "
    "controlling workers and jobs, and reading results, is for the operator on the server "
    "(`celery -A workers.app control ...`, `nlphub jobs`)"
)

#: What `/api/task/info/<id>` shows of a job: its name, state and times. Not its arguments,
#: result, exception or traceback (another tenant's data, server paths) nor its worker.
TASK_INFO_FIELDS = frozenset(
    {
        "uuid",
        "name",
        "state",
        "sent",
        "received",
        "started",
        "succeeded",
        "failed",
        "retried",
        "revoked",
        "rejected",
        "retries",
        "eta",
        "expires",
        "timestamp",
        "runtime",
    }
)

#: Flower's own method (found again under ours if this module is imported twice).
_FLOWER_GET_TASK_ARGS = getattr(
    BaseTaskHandler.get_task_args, "flower_original", BaseTaskHandler.get_task_args
)


def delay_limit() -> int:
    """Seconds a job may be put off (`countdown`, `eta`): the visibility timeout less the hard
    time limit, so the message is acknowledged (its run over) before Redis would deliver it
    again. See docs/decisions.md, "Flower: countdown and eta bounded"."""
    settings = get_settings()
    return max(0, settings.visibility_timeout - settings.effective_time_limit)


def _checked_delay(options: dict[str, Any]) -> None:
    """Refuse (HTTP 400) a `countdown` or `eta` that is not a time, or more than delay_limit()
    seconds away."""
    limit = delay_limit()
    if "countdown" in options:
        try:
            countdown = float(options["countdown"])
        except (TypeError, ValueError):
            countdown = math.nan
        if not math.isfinite(countdown):
            raise HTTPError(400, "countdown must be a number of seconds")
        if countdown > limit:
            raise HTTPError(400, "%s", f"countdown must be at most {limit} seconds")
    if "eta" in options:
        try:
            # Flower's format; Celery (timezone UTC) takes a naive eta as UTC.
            eta = datetime.strptime(options["eta"], BaseTaskHandler.DATE_FORMAT)
        except (TypeError, ValueError):
            raise HTTPError(400, "eta must be a UTC time as YYYY-MM-DD HH:MM:SS.ffffff") from None
        if (eta.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds() > limit:
            raise HTTPError(400, "%s", f"eta must be at most {limit} seconds from now")


def _checked_timeout(options: dict[str, Any]) -> None:
    """Refuse (HTTP 400) a `timeout` that is not a number of seconds from 0 to
    APPLY_TIMEOUT_LIMIT."""
    if "timeout" not in options:
        return
    try:
        timeout = float(options["timeout"])
    except (TypeError, ValueError):
        timeout = math.nan
    if not 0 <= timeout <= APPLY_TIMEOUT_LIMIT:  # NaN too
        raise HTTPError(
            400, "%s", f"timeout must be a number of seconds from 0 to {APPLY_TIMEOUT_LIMIT}"
        )


def checked_options(options: dict[str, Any]) -> str:
    """Refuse (HTTP 400) an option not in ALLOWED_OPTIONS, a `task_id` that is not a UUID, a
    `countdown`/`eta` past delay_limit(), or a `timeout` past APPLY_TIMEOUT_LIMIT; the
    message's task id: the given one (normalized) or a new one."""
    refused = sorted(str(name) for name in options if name not in ALLOWED_OPTIONS)
    if refused:
        raise HTTPError(
            400,
            "%s",
            f"option {refused[0][:64]!r} is not accepted (accepted besides args and kwargs: "
            f"{', '.join(sorted(ALLOWED_OPTIONS))})",
        )
    _checked_delay(options)
    _checked_timeout(options)
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
    if "task_id" in options and isinstance(self, TaskApply):
        # apply answers the result stored under the id: another job's, for another job's id.
        raise HTTPError(
            400, "task_id is not accepted by /api/task/apply (use async-apply or send-task)"
        )
    task_id = checked_options(options)
    if isinstance(self, TaskApply):
        options.setdefault("timeout", APPLY_TIMEOUT_LIMIT)  # Flower's default: no limit
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


def is_operator(handler: Any) -> bool:
    """Whether the request is the operator's (NLPHUB_FLOWER_USER), who sees and controls all;
    the other accounts (NLPHUB_FLOWER_TENANTS) are tenants'."""
    user = flower_user(handler)
    return user is not None and user == get_settings().flower_user


def _operator_only(flowers: Callable[[RequestHandler], Any]) -> Callable[[RequestHandler], Any]:
    """`prepare` of a handler not in SERVED_HANDLERS, around Flower's own (`flowers`): the
    operator's request goes on, as does one without valid credentials (Flower answers 401
    then, saying nothing of the route); a tenant's gets 403, REFUSED_ROUTE."""

    def prepare(self: RequestHandler) -> Any:
        options = self.application.options  # type: ignore[attr-defined]
        if is_operator(self) or (
            flower_user(self) is None and (options.auth or options.basic_auth)
        ):
            return flowers(self)
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(REFUSED_ROUTE)
        return None

    prepare.nlphub_operator_only = True  # type: ignore[attr-defined]
    return prepare


def _task_state_only(self: RequestHandler, chunk: Any) -> None:
    """`write` of TaskInfo: a job's TASK_INFO_FIELDS only, unless the operator asks."""
    if isinstance(chunk, dict) and not is_operator(self):
        chunk = {key: value for key, value in chunk.items() if key in TASK_INFO_FIELDS}
    RequestHandler.write(self, chunk)


def _flower_handlers() -> set[type[RequestHandler]]:
    """The handler class of each of Flower's routes."""
    found: set[type[RequestHandler]] = set()
    for route in flower.urls.handlers:
        handler = route.handler_class if hasattr(route, "handler_class") else route[1]
        found.add(handler)
    return found


def install() -> None:
    """Wrap Flower's handler, refuse the routes not served and cut task info down (once)."""
    _signed_task_args.flower_original = _FLOWER_GET_TASK_ARGS  # type: ignore[attr-defined]
    BaseTaskHandler.get_task_args = _signed_task_args
    for handler in _flower_handlers() - SERVED_HANDLERS:
        if not getattr(handler.prepare, "nlphub_operator_only", False):
            handler.prepare = _operator_only(handler.prepare)  # type: ignore[method-assign,assignment]
    TaskInfo.write = _task_state_only


install()

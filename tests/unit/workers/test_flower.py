"""nlphub's Flower (`workers.flower`): the options it passes on and the caller it signs."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import flower.urls
import pytest
from flower.api.tasks import BaseTaskHandler, TaskApply, TaskInfo
from tornado.web import HTTPError

from nlphub.callers import CALLER_HEADER, caller_key, verified_caller
from schemas.settings import get_settings
from workers.flower import (
    ALLOWED_OPTIONS,
    APPLY_TIMEOUT_LIMIT,
    REFUSED_ROUTE,
    SERVED_HANDLERS,
    TASK_INFO_FIELDS,
    checked_options,
    delay_limit,
    flower_user,
)


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path))
    monkeypatch.setenv("NLPHUB_CALLER_KEY", "unit-test-caller-key")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _handler(
    body: Any,
    *,
    user: str = "alice",
    password: str = "pw",
    basic_auth: list[str] | None = None,
    auth: str = "",
    current_user: Any = True,
) -> Any:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return SimpleNamespace(
        request=SimpleNamespace(
            body=json.dumps(body).encode(), headers={"Authorization": f"Basic {token}"}
        ),
        application=SimpleNamespace(
            options=SimpleNamespace(
                auth=auth,
                basic_auth=["admin:secret", "alice:pw"] if basic_auth is None else basic_auth,
            )
        ),
        path_args=["nlphub.ping"],
        current_user=current_user,
    )


def _refusal(options: dict[str, Any]) -> HTTPError:
    with pytest.raises(HTTPError) as caught:
        checked_options(options)
    assert caught.value.status_code == 400
    return caught.value


def test_allowed_options_pass_and_a_task_id_is_made() -> None:
    options = {
        "countdown": 5,
        "eta": "2020-01-01 00:00:00.000000",
        "expires": 60,
        "priority": 3,
        "timeout": 2,
    }
    assert uuid.UUID(checked_options(options))
    given = uuid.uuid4()
    assert checked_options({"task_id": str(given).upper()}) == str(given)


@pytest.mark.parametrize("option", ["headers", "queue", "link", "retries", "shadow", "x%sy"])
def test_any_other_option_is_refused_by_name(option: str) -> None:
    message = _refusal({option: {}, "countdown": 1}).get_message() or ""
    assert f"option {option!r} is not accepted" in message
    assert "countdown" in message  # names what is accepted
    assert option not in ALLOWED_OPTIONS


@pytest.mark.parametrize("task_id", ["not-a-uuid", 5, ["x"]])
def test_a_task_id_that_is_not_a_uuid_is_refused(task_id: Any) -> None:
    assert _refusal({"task_id": task_id}).get_message() == "task_id must be a UUID"


def test_the_user_is_the_basic_auth_user_never_the_password() -> None:
    assert flower_user(_handler({})) == "alice"
    assert flower_user(_handler({}, user="admin", password="secret")) == "admin"
    assert flower_user(_handler({}, password="wrong")) is None
    assert flower_user(_handler({}, basic_auth=[])) is None  # no authentication configured


def test_with_oauth_the_user_is_flowers_current_user() -> None:
    handler = _handler({}, basic_auth=[], auth=".*@lab", current_user="bob@lab")
    assert flower_user(handler) == "bob@lab"


def test_the_message_gets_a_signed_caller_and_its_task_id() -> None:
    kwargs = {"requested_by": "erp"}
    args, got_kwargs, options = BaseTaskHandler.get_task_args(
        _handler({"kwargs": kwargs, "countdown": 1})
    )
    assert (args, got_kwargs) == ([], kwargs)
    task_id = options["task_id"]
    header = options["headers"][CALLER_HEADER]
    assert set(options["headers"]) == {CALLER_HEADER}
    assert "pw" not in json.dumps(header)
    key = caller_key(get_settings())
    verified = verified_caller(
        key, header, task_id=task_id, task="nlphub.ping", args=args, kwargs=kwargs
    )
    assert verified == {"via": "flower", "user": "alice"}


def test_client_headers_are_refused_before_anything_is_sent() -> None:
    forged = {"nlphub_caller": {"via": "flower", "user": "root", "sig": "0" * 64}}
    with pytest.raises(HTTPError) as caught:
        BaseTaskHandler.get_task_args(_handler({"kwargs": {}, "headers": forged}))
    assert caught.value.status_code == 400
    assert "'headers' is not accepted" in (caught.value.get_message() or "")


def test_kwargs_must_be_an_object() -> None:
    with pytest.raises(HTTPError, match="kwargs must be an object"):
        BaseTaskHandler.get_task_args(_handler({"kwargs": [1]}))


def test_an_authenticated_request_without_a_user_is_refused() -> None:
    with pytest.raises(HTTPError) as caught:
        BaseTaskHandler.get_task_args(_handler({"kwargs": {}}, auth=".*", current_user=True))
    assert caught.value.status_code == 401


def test_the_delay_limit_is_the_visibility_timeout_less_the_time_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NLPHUB_VISIBILITY_TIMEOUT", "3600")
    monkeypatch.setenv("NLPHUB_TASK_TIME_LIMIT", "3000")
    get_settings.cache_clear()
    assert delay_limit() == 600
    checked_options({"countdown": 600})
    checked_options({"countdown": "-5"})  # past: runs now
    assert _refusal({"countdown": 600.5}).get_message() == "countdown must be at most 600 seconds"
    assert _refusal({"countdown": "1e9"}).get_message() == "countdown must be at most 600 seconds"
    for bad in ("nan", "-inf", None, [1], "soon"):
        assert _refusal({"countdown": bad}).get_message() == "countdown must be a number of seconds"
    soon = (datetime.now(UTC) + timedelta(seconds=500)).strftime(BaseTaskHandler.DATE_FORMAT)
    late = (datetime.now(UTC) + timedelta(seconds=700)).strftime(BaseTaskHandler.DATE_FORMAT)
    checked_options({"eta": soon})
    assert _refusal({"eta": late}).get_message() == "eta must be at most 600 seconds from now"
    bad_etas: list[Any] = ["tomorrow", 5, "2999-01-01T00:00:00Z"]
    for bad_eta in bad_etas:
        assert "eta must be a UTC time" in (_refusal({"eta": bad_eta}).get_message() or "")


def test_apply_waits_at_most_the_timeout_limit() -> None:
    """`timeout` (how long /api/task/apply holds a Flower thread waiting) is bounded, and is
    the limit when not given."""
    assert APPLY_TIMEOUT_LIMIT == 300
    checked_options({"timeout": 300})
    checked_options({"timeout": "0.5"})
    refusal = "timeout must be a number of seconds from 0 to 300"
    for bad in (300.5, "1e9", -1, "nan", "inf", None, [1], "soon"):
        assert _refusal({"timeout": bad}).get_message() == refusal
    apply = object.__new__(TaskApply)
    apply.__dict__.update(vars(_handler({"kwargs": {}})))
    assert BaseTaskHandler.get_task_args(apply)[2]["timeout"] == APPLY_TIMEOUT_LIMIT
    apply.__dict__.update(vars(_handler({"kwargs": {}, "timeout": 5})))
    assert BaseTaskHandler.get_task_args(apply)[2]["timeout"] == 5


def test_apply_takes_no_task_id() -> None:
    apply = object.__new__(TaskApply)  # the handler of /api/task/apply, without a request
    apply.__dict__.update(vars(_handler({"kwargs": {}, "task_id": str(uuid.uuid4())})))
    with pytest.raises(HTTPError) as caught:
        BaseTaskHandler.get_task_args(apply)
    assert caught.value.status_code == 400
    assert "task_id is not accepted by /api/task/apply" in (caught.value.get_message() or "")


def _route_handlers() -> set[Any]:
    return {
        route.handler_class if hasattr(route, "handler_class") else route[1]
        for route in flower.urls.handlers
    }


def test_only_the_served_routes_keep_their_handlers() -> None:
    routes = _route_handlers()
    assert SERVED_HANDLERS <= routes  # every one served is a Flower route
    refused = routes - SERVED_HANDLERS
    assert {h.__name__ for h in refused} >= {
        "TaskRevoke",
        "TaskAbort",
        "TaskResult",
        "WorkerShutDown",
        "WorkerPoolGrow",
        "WorkerQueueAddConsumer",
        "ListTasks",
        "ListWorkers",
        "TasksDataTable",
    }
    options = SimpleNamespace(auth=None, basic_auth=["admin:op", "carol:pw"])
    for handler in refused:
        page = SimpleNamespace(status=0, headers={}, body="")
        page.application = SimpleNamespace(options=options)
        page.set_status = lambda code, page=page: setattr(page, "status", code)
        page.set_header = lambda name, value, page=page: page.headers.update({name: value})
        page.finish = lambda body, page=page: setattr(page, "body", body)
        with pytest.MonkeyPatch.context() as patch:  # a tenant's request
            patch.setattr("workers.flower.flower_user", lambda _handler: "carol")
            patch.setattr("workers.flower.is_operator", lambda _handler: False)
            handler.prepare(page)
        assert (page.status, page.body) == (403, REFUSED_ROUTE), handler
        page.status, page.body = 0, ""
        with pytest.MonkeyPatch.context() as patch:  # the operator's: Flower's own prepare
            patch.setattr("workers.flower.is_operator", lambda _handler: True)
            handler.prepare(page)
        assert (page.status, page.body) == (0, ""), handler
    for handler in SERVED_HANDLERS:
        assert handler.prepare.__name__ != "_refuse_route", handler


def test_task_info_writes_the_state_only() -> None:
    written: list[Any] = []
    info = SimpleNamespace()
    full = {"uuid": "u", "state": "SUCCESS", "args": "[1]", "result": "'/srv'"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tornado.web.RequestHandler.write", lambda self, chunk: written.append(chunk))
        patch.setattr("workers.flower.is_operator", lambda _handler: False)
        TaskInfo.write(info, full)
        TaskInfo.write(info, "Unknown task")
        patch.setattr("workers.flower.is_operator", lambda _handler: True)
        TaskInfo.write(info, full)
    assert written == [{"uuid": "u", "state": "SUCCESS"}, "Unknown task", full]
    assert not {"args", "kwargs", "result", "exception", "traceback", "worker"} & TASK_INFO_FIELDS

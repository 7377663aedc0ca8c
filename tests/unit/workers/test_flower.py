"""nlphub's Flower (`workers.flower`): the options it passes on and the caller it signs."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flower.api.tasks import BaseTaskHandler
from tornado.web import HTTPError

from nlphub.callers import CALLER_HEADER, caller_key, verified_caller
from schemas.settings import get_settings
from workers.flower import ALLOWED_OPTIONS, checked_options, flower_user


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
    options = {"countdown": 5, "eta": "x", "expires": 60, "priority": 3, "timeout": 2}
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

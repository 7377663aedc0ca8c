"""Security: Flower's users other than the operator are tenants (NLPHUB_FLOWER_TENANTS);
nlphub's Flower lets them enqueue and see a job's state, and the operator (NLPHUB_FLOWER_USER)
keep all of Flower.

A real `nlphub flower` and a real worker. Worker and task control (revoke with terminate,
shutdown, pool, queue consumers, rate limits, abort), results, listings and the web pages
answer 403 saying so, and the worker and its jobs go on as before; `/api/task/info/<id>` shows
a job's state and times only; `countdown` and `eta` further off than the delay limit (the
visibility timeout less the hard time limit) are refused with 400 naming the option and the
limit, and `apply` (which answers the stored result) takes no `task_id`.

Each test fails with its fix removed (checked by undoing each in turn in `workers.flower`: the
route refusal in `install`, `_task_state_only`, `_checked_delay`, the `apply` task_id check).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from schemas.settings import get_settings
from schemas.states import JobState
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

PING = {"kwargs": {"requested_by": "tenant"}}


def _auth(flower: dict[str, Any]) -> tuple[str, str]:
    return (flower["user"], flower["password"])


def _send(flower: dict[str, Any], body: dict[str, Any], endpoint: str = "async-apply") -> Any:
    return httpx.post(
        f"{flower['url']}/api/task/{endpoint}/nlphub.ping",
        json=body,
        auth=_auth(flower),
        timeout=60,
    )


def _refused(reply: httpx.Response) -> None:
    assert reply.status_code == 403, (reply.request.url, reply.status_code, reply.text[:300])
    assert reply.text.startswith("disabled by nlphub:"), reply.text[:300]
    assert "celery -A workers.app control" in reply.text


def test_control_is_refused_and_the_worker_and_its_job_go_on(
    worker, flower, wait_job: Callable[..., Any]
) -> None:
    # a job held by the worker until its countdown is over: what revoke would cancel
    reply = _send(flower, {**PING, "countdown": 4})
    assert reply.status_code == 200, reply.text
    job_id = reply.json()["task-id"]
    url, auth = flower["url"], _auth(flower)
    name = worker.hostname
    posts = [
        f"/api/task/revoke/{job_id}?terminate=true&signal=SIGKILL",
        f"/api/task/abort/{job_id}",
        f"/api/worker/shutdown/{name}",
        f"/api/worker/pool/restart/{name}",
        f"/api/worker/pool/grow/{name}?n=8",
        f"/api/worker/pool/shrink/{name}?n=1",
        f"/api/worker/pool/autoscale/{name}?min=1&max=9",
        f"/api/worker/queue/add-consumer/{name}?queue=victims",
        f"/api/worker/queue/cancel-consumer/{name}?queue=default",
        "/api/task/timeout/nlphub.ping?workername=x&hard=1&soft=1",
        "/api/task/rate-limit/nlphub.ping?workername=x&ratelimit=1/h",
    ]
    for path in posts:
        _refused(httpx.post(f"{url}{path}", auth=auth, timeout=30))
    gets = [
        f"/api/task/result/{job_id}",
        "/api/tasks",
        "/api/workers?refresh=1",
        "/api/task/types",
        "/api/queues/length",
        "/",
        "/workers",
        f"/worker/{name}",
        f"/task/{job_id}",
        "/tasks",
        "/tasks/datatable",
        "/broker",
    ]
    for path in gets:
        _refused(httpx.get(f"{url}{path}", auth=auth, timeout=30))
    # the job was not revoked: it runs when its countdown is over, on the same worker
    job = wait_job(uuid.UUID(job_id))
    assert job.state == JobState.SUCCEEDED, job.error
    after = wait_job(uuid.UUID(_send(flower, PING).json()["task-id"]))
    assert after.state == JobState.SUCCEEDED, after.error
    from workers.app import app

    assert app.control.ping([name], timeout=5), "the worker no longer answers"
    # Flower itself still answers
    assert httpx.get(f"{url}/healthcheck", timeout=10).status_code == 200


def test_the_operator_keeps_all_of_flower(worker, flower, wait_job: Callable[..., Any]) -> None:
    """NLPHUB_FLOWER_USER is the operator: the pages, listings, results and full task info
    that tenants are refused are the operator's tools, as Flower's; bad credentials get 401."""
    url, operator = flower["url"], flower["operator"]
    job_id = _send(flower, PING).json()["task-id"]
    assert wait_job(uuid.UUID(job_id)).state == JobState.SUCCEEDED
    for path in ("/api/workers?refresh=1", "/api/tasks", "/workers", "/tasks", "/broker"):
        reply = httpx.get(f"{url}{path}", auth=operator, timeout=30)
        assert reply.status_code == 200, (path, reply.status_code, reply.text[:300])

    def info() -> dict[str, Any] | None:
        got = httpx.get(f"{url}/api/task/info/{job_id}", auth=operator, timeout=10)
        return got.json() if got.status_code == 200 and got.json().get("succeeded") else None

    assert "kwargs" in wait_for(info, 30, what="Flower to know the job")
    for auth in ((operator[0], "wrong"), (flower["user"], "wrong")):
        assert httpx.get(f"{url}/api/workers", auth=auth, timeout=10).status_code == 401
    assert httpx.get(f"{url}/api/workers", timeout=10).status_code == 401


def test_task_info_shows_the_state_only(worker, flower, wait_job: Callable[..., Any]) -> None:
    secret = f"marker-{uuid.uuid4().hex}"
    reply = _send(flower, {"kwargs": {"requested_by": secret}})
    job_id = reply.json()["task-id"]
    assert wait_job(uuid.UUID(job_id)).state == JobState.SUCCEEDED
    url = f"{flower['url']}/api/task/info/{job_id}"

    def info() -> dict[str, Any] | None:
        got = httpx.get(url, auth=_auth(flower), timeout=10)
        return got.json() if got.status_code == 200 and got.json().get("succeeded") else None

    shown = wait_for(info, 30, what="Flower to know the job")
    assert shown["state"] == "SUCCESS" and shown["name"] == "nlphub.ping"
    for hidden in ("args", "kwargs", "result", "exception", "traceback", "worker", "client"):
        assert hidden not in shown, hidden
    assert secret not in str(shown) and worker.hostname not in str(shown)


def test_countdown_and_eta_past_the_limit_are_refused(worker, flower) -> None:
    settings = get_settings()
    limit = settings.visibility_timeout - settings.effective_time_limit
    reply = _send(flower, {**PING, "countdown": 1e9})
    assert reply.status_code == 400, reply.text
    assert reply.text == f"countdown must be at most {limit} seconds"
    reply = _send(flower, {**PING, "eta": "2999-01-01 00:00:00.000000"}, "send-task")
    assert reply.status_code == 400, reply.text
    assert reply.text == f"eta must be at most {limit} seconds from now"
    for bad in ("nan", "inf", "soon"):
        reply = _send(flower, {**PING, "countdown": bad})
        assert reply.status_code == 400 and "countdown" in reply.text, reply.text
    # within the limit: accepted
    assert _send(flower, {**PING, "countdown": 1}).status_code == 200


def test_apply_takes_no_task_id(worker, flower, wait_job: Callable[..., Any]) -> None:
    """`apply` answers the result stored under the id: another job's, for another job's id."""
    victim = uuid.UUID(_send(flower, PING).json()["task-id"])
    assert wait_job(victim).state == JobState.SUCCEEDED
    reply = _send(flower, {**PING, "task_id": str(victim), "timeout": 10}, "apply")
    assert reply.status_code == 400, reply.text
    assert "task_id is not accepted by /api/task/apply" in reply.text
    assert "pong" not in reply.text

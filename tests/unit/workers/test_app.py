from __future__ import annotations

import pytest

from schemas.payloads import TASKS
from schemas.settings import load_settings
from workers.app import LONG_QUEUES, Queue, build_config


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("NLPHUB_VISIBILITY_TIMEOUT", "7200")
    return build_config(load_settings())


def test_visibility_timeout_agrees_everywhere_and_outlasts_tasks(config: dict) -> None:
    assert config["broker_transport_options"]["visibility_timeout"] == 7200
    assert config["result_backend_transport_options"]["visibility_timeout"] == 7200
    assert config["visibility_timeout"] == 7200
    assert config["task_time_limit"] < 7200
    assert config["task_soft_time_limit"] < config["task_time_limit"]


def test_json_only(config: dict) -> None:
    assert config["task_serializer"] == config["result_serializer"] == "json"
    assert config["accept_content"] == ["json"]


def test_every_task_routes_to_a_declared_queue(config: dict) -> None:
    names = {q.name for q in config["task_queues"]}
    assert names == {q.value for q in Queue}
    for task, spec in TASKS.items():
        assert config["task_routes"][task]["queue"] == spec.queue in names


def test_reliability_flags(config: dict) -> None:
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert {Queue.DOWNLOADS, Queue.EMBEDDINGS} == LONG_QUEUES


def test_registered_tasks_are_the_contract() -> None:
    from workers.app import app

    registered = {name for name in app.tasks if name.startswith("nlphub.")}
    assert registered == set(TASKS)
    for name in TASKS:
        assert app.tasks[name].acks_late is TASKS[name].idempotent
        assert app.tasks[name].__doc__ and "twice" in app.tasks[name].__doc__


def test_the_prefork_pool_looks_for_dead_processes_every_half_second() -> None:
    """Celery's 5 s would leave a killed pool process's job stalled for seconds."""
    from types import SimpleNamespace

    from celery.concurrency import asynpool

    import workers.app as celery_app

    pool = SimpleNamespace(maintain_pool=object())
    timers = asynpool.AsynPool.timers.fget(pool)
    assert timers == {pool.maintain_pool: celery_app.POOL_MAINTAIN_INTERVAL}
    assert celery_app.POOL_MAINTAIN_INTERVAL <= 1.0


def _fresh_python(code: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_beat_gets_its_schedule_when_the_entry_point_is_imported() -> None:
    """`celery -A workers.app beat` imports this module first: registering the tasks reads
    the configuration, and the schedule must be set even so (it was once left empty)."""
    names = _fresh_python(
        "import workers.app as w; print(','.join(sorted(w.app.conf.beat_schedule)))"
    )
    assert set(names.split(",")) >= {"heartbeat", "reconcile-outbox", "check-updates"}


def test_sending_a_task_by_name_imports_no_task_module() -> None:
    imported = _fresh_python(
        "import sys, nlphub.jobs, nlphub.messaging.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tasks', 'workers')))"
    )
    assert imported == "[]"

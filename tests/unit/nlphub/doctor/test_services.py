"""Unit tests for the verdicts of nlphub.doctor.services: database, broker, workers, beat,
Flower."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nlphub.beat import BeatSession
from nlphub.doctor.core import Context, Status
from nlphub.doctor.services import (
    flower_url,
    judge_beats,
    judge_broker,
    judge_database,
    judge_flower,
    judge_workers,
    one_line,
)
from schemas.settings import Settings


def test_database_verdicts() -> None:
    down = judge_database(where="db:5432/nlphub", error="connection refused", head="0008")
    assert down.status == Status.FAIL
    assert down.summary == "unreachable at db:5432/nlphub: connection refused"
    assert "start Postgres" in down.fix
    unset = judge_database(where=None, setting_error="DATABASE_URL is not set")
    assert unset.status == Status.FAIL and "DATABASE_URL" in unset.fix
    empty = judge_database(where="db/x", current=None, head="0008")
    assert empty.status == Status.FAIL
    assert "empty (no schema)" in empty.summary and empty.fix == "run `nlphub db upgrade`"
    old = judge_database(where="db/x", current="0006", head="0008")
    assert "at revision 0006; this code needs revision 0008" in old.summary
    good = judge_database(where="db/x", current="0008", head="0008")
    assert good.status == Status.OK and "migrated (revision 0008)" in good.summary


def test_broker_verdicts() -> None:
    assert judge_broker(where="r:6379/0").status == Status.OK
    down = judge_broker(where="r:6379/0", error="Connection refused")
    assert down.status == Status.FAIL
    assert down.summary == "Redis unreachable at r:6379/0: Connection refused"
    assert judge_broker(where=None, setting_error="REDIS_URL is not set").status == Status.FAIL


def test_one_line_keeps_the_first_line_and_hides_url_passwords() -> None:
    exc = RuntimeError("cannot reach redis://:hunter2@host:6379/0\nmore detail")
    assert one_line(exc) == "cannot reach redis://:***@host:6379/0"


def test_a_queue_without_a_worker_fails_with_the_command_that_fixes_it() -> None:
    replies: dict[str, list[dict[str, str]]] = {
        "default@a": [{"name": "default"}, {"name": "celery"}],
        "emb@a": [{"name": "embeddings"}],
        "emb@b": [{"name": "embeddings"}],
    }
    found = {f.name: f for f in judge_workers(["downloads", "embeddings", "default"], replies)}
    assert list(found) == ["worker: downloads", "worker: embeddings", "worker: default"]
    assert found["worker: downloads"].status == Status.FAIL
    assert "no worker consumes queue 'downloads'" in found["worker: downloads"].summary
    assert "nlphub worker -Q downloads" in found["worker: downloads"].fix
    assert found["worker: embeddings"].status == Status.OK
    assert found["worker: embeddings"].summary == "answered by emb@a, emb@b"
    assert found["worker: default"].status == Status.OK


def test_no_worker_answering_fails_every_queue() -> None:
    nothing: list[dict[str, list[dict[str, str]]] | None] = [None, {}]
    for replies in nothing:
        found = judge_workers(["downloads", "default"], replies)
        assert [f.status for f in found] == [Status.FAIL, Status.FAIL]


def beat(pid: int, *, active: bool, name: str | None = None) -> BeatSession:
    return BeatSession(
        pid=pid,
        name=name if name is not None else f"nlphub-beat host{pid}:{pid * 10}",
        client="127.0.0.1",
        since=datetime(2025, 1, 1, tzinfo=UTC),
        active=active,
    )


def test_beat_verdicts() -> None:
    none = judge_beats([])
    assert none.status == Status.FAIL and "no beat is running" in none.summary
    assert "nlphub beat" in none.fix
    one = judge_beats([beat(1, active=True)])
    assert one.status == Status.OK and one.summary == "one beat, active: host1:10"
    two = judge_beats([beat(1, active=True), beat(2, active=False)])
    assert two.status == Status.FAIL
    assert two.summary == "2 beats are running: host1:10 (active), host2:20 (standby)"
    assert "stop all but one" in two.fix
    waiting = judge_beats([beat(3, active=False)])
    assert waiting.status == Status.FAIL and "does not hold the beat lock" in waiting.summary
    # a session holding the lock without the beat's name (an older beat) still counts
    legacy = judge_beats([beat(4, active=True, name="nlphub"), beat(5, active=False)])
    assert legacy.status == Status.FAIL
    assert "unnamed session 4 (active)" in legacy.summary


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:5555/healthcheck"),
        ("0.0.0.0", "http://127.0.0.1:5555/healthcheck"),
        ("::", "http://[::1]:5555/healthcheck"),
        ("flower.internal", "http://flower.internal:5555/healthcheck"),
    ],
)
def test_flower_is_probed_where_it_is_configured(tmp_path: Path, address: str, url: str) -> None:
    settings = Settings(home=tmp_path, flower_address=address)
    assert flower_url(Context(settings)) == url


def test_flower_verdicts() -> None:
    url = "http://127.0.0.1:5555/healthcheck"
    assert judge_flower(url, status=200, body="OK").status == Status.OK
    down = judge_flower(url, error="Connection refused")
    assert down.status == Status.FAIL
    assert "--skip flower" in down.fix
    odd = judge_flower(url, status=404)
    assert odd.status == Status.FAIL and "answered HTTP 404" in odd.summary

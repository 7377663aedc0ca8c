# mypy: disable-error-code="attr-defined,arg-type,unused-ignore"
"""Sessions: a running one is reused and never stopped; one started for encoders is stopped
when the last encoder using it is closed."""

from __future__ import annotations

from typing import Any

import pytest

from nlphub.embeddings.spark import session as sp
from nlphub.embeddings.spark.encoder import SparkEncoder
from nlphub.embeddings.spark.session import get_spark

pytestmark = pytest.mark.slow


def test_running_session_is_reused_and_never_stopped(spark: Any) -> None:
    assert get_spark("local[2]").sparkContext is spark.sparkContext
    encoder = SparkEncoder("count")  # no session given: it finds the running one
    encoder.fit(["alpha beta", "beta gamma"])
    assert encoder.spark.sparkContext is spark.sparkContext
    encoder.close()
    assert spark.range(3).count() == 3


class FakeSession:
    def __init__(self) -> None:
        self.sparkContext = type("Ctx", (), {"_jsc": object()})()
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1
        self.sparkContext._jsc = None


def test_only_a_session_started_for_encoders_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    state: dict[str, Any] = {"session": None}

    def start_or_reuse(master: Any, conf: Any) -> tuple[FakeSession, bool]:
        current = state["session"]
        if current is not None and current.sparkContext._jsc is not None:
            return current, False
        state["session"] = FakeSession()
        return state["session"], True

    monkeypatch.setattr(sp, "_start_or_reuse", start_or_reuse)
    monkeypatch.setattr(sp, "_encoder_session", None)
    monkeypatch.setattr(sp, "_users", 0)
    first, second = SparkEncoder("count"), SparkEncoder("count")
    session = first.spark
    assert second.spark is session
    first.close()
    assert session.stopped == 0  # the second encoder still uses it
    second.close()
    assert session.stopped == 1  # started for encoders, last one closed
    # A session a get_spark caller holds (or one passed in) is never stopped by encoders.
    third = SparkEncoder("count")
    held = third.spark
    assert get_spark() is held
    third.close()
    given = FakeSession()
    fourth = SparkEncoder("count", spark=given)  # type: ignore[arg-type]
    assert fourth.spark is given
    fourth.close()
    assert (held.stopped, given.stopped) == (0, 0)

"""Spark sessions for the encoders, and Spark's errors as one line of text.

`get_spark` reuses the running session if there is one, else starts one (master from the
``master`` option, else ``NLPHUB_SPARK_MASTER``, else ``local[*]``; the web UI off). A session an
encoder did not start is never stopped by it; one started for encoders (`_SessionHandle`) is
stopped when the last encoder using it is closed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from nlphub.embeddings.platforms.base import EmbeddingError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["DEFAULT_MASTER", "MASTER_ENV", "get_spark"]

log = logging.getLogger(__name__)

MASTER_ENV = "NLPHUB_SPARK_MASTER"
DEFAULT_MASTER = "local[*]"

_LOCK = threading.RLock()
#: A session started for encoders (not by a `get_spark` caller): stopped when the last encoder
#: using it is closed.
_encoder_session: SparkSession | None = None
#: Encoders holding `_encoder_session`.
_users = 0


def _alive(session: SparkSession | None) -> bool:
    return session is not None and getattr(session.sparkContext, "_jsc", None) is not None


def _same(a: SparkSession | None, b: SparkSession | None) -> bool:
    return a is not None and b is not None and a.sparkContext is b.sparkContext


def _running_session() -> SparkSession | None:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is None:
        return None
    return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()


def get_spark(master: str | None = None, *, conf: Mapping[str, str] | None = None) -> SparkSession:
    """The running Spark session, or a new one; encoders never stop a session returned here.

    `master` (else ``$NLPHUB_SPARK_MASTER``, else ``local[*]``) and `conf` (e.g.
    ``{"spark.jars": ".../spark-nlp.jar"}``) only apply when a session is started here: a running
    session is reused as it is (with a warning when its master differs from the one asked for).
    A worker that calls `get_spark` once at start keeps one warm session for all its jobs.
    """
    global _encoder_session
    with _LOCK:
        session, _ = _start_or_reuse(master, conf)
        _encoder_session = None  # the caller has it now
        return session


def _start_or_reuse(
    master: str | None, conf: Mapping[str, str] | None
) -> tuple[SparkSession, bool]:
    """(the running session or a new one, whether it was started now)."""
    wanted = master or os.environ.get(MASTER_ENV) or DEFAULT_MASTER
    running = _running_session()
    if running is not None:
        current = running.sparkContext.master
        if (master or os.environ.get(MASTER_ENV)) and current != wanted:
            log.warning("reusing the running Spark session (%s), not %s", current, wanted)
        if conf:
            log.warning("a Spark session is running: ignoring conf %s", sorted(conf))
        return running, False
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(wanted)
        .appName("nlphub")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, str(value))
    try:
        session = builder.getOrCreate()
    except Exception as exc:
        raise EmbeddingError(f"cannot start Spark (master {wanted}): {exc}") from None
    log.info("started Spark %s (master %s)", session.version, wanted)
    return session, True


class _SessionHandle:
    """The session one encoder uses: one passed in (never stopped), else the running one, else
    one started for encoders (stopped when the last encoder using it releases it)."""

    def __init__(
        self,
        spark: SparkSession | None,
        master: str | None,
        conf: Mapping[str, str] | None,
    ) -> None:
        self._given = spark
        self._master = master
        self._conf = dict(conf) if conf else None
        self._session: SparkSession | None = None
        self._counted = False

    def get(self) -> SparkSession:
        global _encoder_session, _users
        if self._given is not None:
            return self._given
        with _LOCK:
            if self._session is not None and _alive(self._session):
                return self._session
            self.release()
            session, started = _start_or_reuse(self._master, self._conf)
            if started:
                _encoder_session, _users = session, 0
            if _same(session, _encoder_session):
                _users += 1
                self._counted = True
            self._session = session
            return session

    def release(self) -> None:
        """Forget the session; stop it if it was started for encoders and this was the last."""
        global _encoder_session, _users
        with _LOCK:
            session, self._session = self._session, None
            if not self._counted:
                return
            self._counted = False
            if not _same(session, _encoder_session):
                return  # a get_spark caller took it over, or it was replaced
            _users = max(0, _users - 1)
            if _users == 0:
                _encoder_session = None
                if session is not None and _alive(session):
                    log.info("stopping the Spark session started for encoders")
                    session.stop()


def _spark_error(exc: Exception) -> str:
    """The first line of a Spark/Py4J error, without the Java stack trace."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("requirement failed: ")
    return type(exc).__name__


def _is_spark_error(exc: Exception) -> bool:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return isinstance(exc, PySparkException | Py4JError)

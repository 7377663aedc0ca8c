"""One local Spark session (``get_spark("local[2]")``, or the one already running) serves the
whole package; fitted encoders are module-scoped to keep the number of Spark jobs small."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nlphub.embeddings.spark.encoder import SparkEncoder
from nlphub.embeddings.spark.session import get_spark
from tests.unit.nlphub.embeddings.spark.common import CORPUS


@pytest.fixture(scope="package")
def spark() -> Iterator[Any]:
    """The running session when another module started one, else one for this package (with a
    JVM tuned for short jobs: C1 only, serial GC), stopped after it."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        yield get_spark()
        return
    session = get_spark(
        "local[2]",
        conf={
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            "spark.sql.shuffle.partitions": "2",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def tfidf(spark: Any) -> Iterator[SparkEncoder]:
    encoder = SparkEncoder("tfidf", spark=spark)
    encoder.fit(CORPUS)
    yield encoder
    encoder.close()


@pytest.fixture(scope="module")
def counts(spark: Any) -> Iterator[SparkEncoder]:
    encoder = SparkEncoder("count", spark=spark)
    encoder.fit(CORPUS)
    yield encoder
    encoder.close()

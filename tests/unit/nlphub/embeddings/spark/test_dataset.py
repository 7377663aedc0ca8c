# mypy: disable-error-code="attr-defined,arg-type,unused-ignore"
"""The whole DataFrame in Spark: `spark_embed_dataframe`; `spark_embeddings` (the fit's cache)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nlphub.embeddings.platforms.base import EmbeddingError
from nlphub.embeddings.spark.dataset import spark_embed_dataframe, spark_embeddings
from nlphub.embeddings.spark.encoder import SparkEncoder
from tests.unit.nlphub.embeddings.spark.common import CORPUS, gram

pytestmark = pytest.mark.slow


def test_embed_dataframe_skips_pca_for_tiny_data(spark: Any, tfidf: SparkEncoder) -> None:
    frame = spark.createDataFrame([(t,) for t in CORPUS[:3]], "text string")
    out = spark_embed_dataframe(frame, text_col="text", model="tfidf", n_components=8)
    vectors = np.array([r.vector for r in out.collect()])
    small = SparkEncoder("tfidf", spark=spark)
    small.fit(CORPUS[:3])
    assert vectors.shape == (3, small.dimension) and (small.dimension or 0) > 3
    np.testing.assert_allclose(gram(vectors), gram(small.encode(CORPUS[:3])), atol=1e-6)
    with pytest.raises(EmbeddingError, match="no column 'body'"):
        spark_embed_dataframe(frame, text_col="body", model="tfidf", n_components=8)
    numbers = spark.createDataFrame([(1,)], "text long")
    with pytest.raises(EmbeddingError, match="is bigint, not string"):
        spark_embed_dataframe(numbers, text_col="text", model="tfidf", n_components=8)
    with pytest.raises(EmbeddingError, match="already has a column 'vector'"):
        spark_embed_dataframe(out, text_col="text", model="tfidf", n_components=8)
    with pytest.raises(EmbeddingError, match="n_components"):
        spark_embed_dataframe(frame, text_col="text", model="tfidf", n_components=0)


def _uses_cache(frame: Any) -> bool:
    """Whether a new query over `frame` would read a cached (persisted) relation."""
    return "InMemoryRelation" in frame.select("*")._jdf.queryExecution().withCachedData().toString()


def test_spark_embeddings_reads_the_texts_once(spark: Any) -> None:
    """The fit's cached term frequencies (with the DataFrame's columns) give the vectors: the
    same vectors as fitting, then transforming from the texts; the cache goes with the block."""
    texts = [f"{text} {extra}" for extra in ("one", "two", "three") for text in CORPUS]
    frame = spark.createDataFrame(
        [(i, t, i % 2 == 0) for i, t in enumerate(texts)] + [(len(texts), None, True)],
        "id long, body string, even boolean",
    )
    with spark_embeddings(frame, text_col="body", model="tfidf", n_components=4) as (out, fitted):
        assert out.columns == ["id", "body", "even", "vector"]
        assert _uses_cache(out)
        rows = sorted(out.collect(), key=lambda r: r.id)
    assert not _uses_cache(out)
    assert fitted.reduced and fitted.output_dim == 4
    assert [(r.id, r.body, r.even) for r in rows] == sorted(frame.collect())
    ours = np.array([r.vector for r in rows])
    again = sorted(fitted.transform(frame, text_col="body").collect(), key=lambda r: r.id)
    np.testing.assert_allclose(ours, np.array([r.vector for r in again]), atol=1e-6)
    np.testing.assert_allclose(ours.mean(axis=0), 0.0, atol=1e-6)
    # Too few rows for the PCA: the features themselves, still from the cache.
    small = frame.limit(3)
    with spark_embeddings(small, text_col="body", model="count", n_components=8) as (out, fitted):
        assert not fitted.reduced and _uses_cache(out)
        assert {len(r.vector) for r in out.collect()} == {fitted.input_dim}
    with pytest.raises(RuntimeError, match="while writing"):  # released on an error too
        with spark_embeddings(small, text_col="body", model="count", n_components=8) as (
            out,
            _,
        ):
            assert _uses_cache(out)
            raise RuntimeError("while writing")
    assert not _uses_cache(out)
    with pytest.raises(EmbeddingError, match="already has a column 'vector'"):
        with spark_embeddings(out, text_col="body", model="tfidf", n_components=4):
            pass
    with pytest.raises(EmbeddingError, match="no column 'text'"):
        with spark_embeddings(frame, text_col="text", model="tfidf", n_components=4):
            pass
    assert not _uses_cache(frame)

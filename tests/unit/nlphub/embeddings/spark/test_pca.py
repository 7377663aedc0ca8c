# mypy: disable-error-code="attr-defined,arg-type,unused-ignore"
"""Spark's PCA (moments in the JVM, driver's eigh, ``PCAModel`` stages): scikit-learn's vectors,
and a pipeline that saves and loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nlphub.embeddings.reduce import Reducer
from nlphub.embeddings.spark import dataset as sp
from nlphub.embeddings.spark.dataset import fit_spark_embedding
from nlphub.embeddings.spark.encoder import SparkEncoder
from tests.unit.nlphub.embeddings.spark.common import CORPUS

pytestmark = pytest.mark.slow


def test_embed_dataframe_with_pca(spark: Any) -> None:
    texts = [f"{text} {extra}" for extra in ("one", "two", "three", "four") for text in CORPUS]
    frame = spark.createDataFrame(
        [(i, t) for i, t in enumerate(texts)] + [(len(texts), None)], "id long, body string"
    )
    fitted = fit_spark_embedding(frame, text_col="body", model="tfidf", n_components=4)
    assert fitted.reduced and fitted.output_dim == 4
    out = fitted.transform(frame, text_col="body")
    assert out.columns == ["id", "body", "vector"]
    assert out.schema["vector"].dataType.simpleString() == "array<float>"
    rows = sorted(out.collect(), key=lambda r: r.id)
    assert len(rows) == len(texts) + 1 and {len(r.vector) for r in rows} == {4}
    ours = np.array([r.vector for r in rows], dtype=np.float64)
    # The batch path (SparkEncoder, then the sklearn Reducer) gives the same vectors up to the
    # sign of each component, so the same dot products.
    encoder = SparkEncoder("tfidf", spark=spark)
    encoder.fit_dataframe(frame, text_col="body")  # the null text counts as ""
    assert encoder.dimension == fitted.input_dim
    reference = Reducer(4).fit_transform(encoder.encode([*texts, ""])).astype(np.float64)
    np.testing.assert_allclose(ours @ ours.T, reference @ reference.T, atol=1e-5)
    # Centred like sklearn (Spark's PCAModel alone is not): coordinates average to zero.
    np.testing.assert_allclose(ours.mean(axis=0), 0.0, atol=1e-6)


def test_embedding_pipeline_saves_and_loads(spark: Any, tmp_path: Path) -> None:
    """The fitted pipeline is plain Spark ML stages (PCAModel and StandardScalerModel built
    from the driver's eigenvectors): PipelineModel saves and loads it, same vectors after."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import PCAModel, StandardScalerModel

    texts = [f"{text} {extra}" for extra in ("red", "green", "blue") for text in CORPUS]
    frame = spark.createDataFrame([(t,) for t in texts], "text string")
    fitted = fit_spark_embedding(frame, text_col="text", model="tfidf:64", n_components=3)
    assert fitted.reduced and fitted.input_dim == 64
    pca, centre = fitted.pipeline.stages[-2:]
    assert isinstance(pca, PCAModel) and isinstance(centre, StandardScalerModel)
    assert pca.pc.numRows == 64 and pca.pc.numCols == 3
    ratios = pca.explainedVariance.toArray()
    assert np.all(np.diff(ratios) <= 1e-12) and 0 < ratios.sum() <= 1 + 1e-9
    assert centre.getWithMean() and not centre.getWithStd()
    fitted.pipeline.write().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert [type(s).__name__ for s in loaded.stages] == [
        type(s).__name__ for s in fitted.pipeline.stages
    ]
    again = sp.SparkEmbeddingModel(loaded, fitted.model, 64, 3, True)
    before = np.array([r.vector for r in fitted.transform(frame, text_col="text").collect()])
    after = np.array([r.vector for r in again.transform(frame, text_col="text").collect()])
    assert before.shape == (len(texts), 3)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(before.mean(axis=0), 0.0, atol=1e-6)

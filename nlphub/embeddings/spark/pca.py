"""Spark's PCA without densifying the features: the moments summed in the JVM, the covariance
on the driver, and the fitted components as plain Spark ML stages.

The top eigenvectors themselves are `nlphub.embeddings.spark.eigh`'s; the whole fit is
`nlphub.embeddings.spark.dataset.fit_spark_embedding`'s.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from nlphub.embeddings.spark.features import _AUGMENTED, _FEATURES, _PCA, _PREFIX, _PROJECTED
from nlphub.embeddings.spark.session import _is_spark_error

if TYPE_CHECKING:
    from pyspark.ml import Transformer
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["MAX_PCA_FEATURES"]

log = logging.getLogger(__name__)

#: Widest features Spark's PCA is fitted on: it builds a dense covariance matrix on the driver
#: (8192² doubles = 512 MiB); Spark itself refuses 65536 columns or more.
MAX_PCA_FEATURES = 8192


def _moments(
    features: DataFrame, width: int
) -> tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(rows, Σ x, Σ x xᵀ) of the `_FEATURES` vectors, summed in the JVM in one pass.

    A constant 1 is appended to each (sparse) vector and mllib's ``RowMatrix`` sums the outer
    products (``computeGramianMatrix``: the nonzeros' pairs only, into a packed triangle); its
    last row holds Σ x and the row count. Only the (width + 1)² result reaches Python
    (`_jvm_doubles`).
    """
    from pyspark.ml.feature import VectorAssembler
    from pyspark.mllib.common import _java2py
    from pyspark.mllib.linalg.distributed import RowMatrix
    from pyspark.mllib.util import MLUtils
    from pyspark.sql import functions as F

    one = f"{_PREFIX}one"
    augmented = VectorAssembler(inputCols=[_FEATURES, one], outputCol=_AUGMENTED).transform(
        features.select(_FEATURES).withColumn(one, F.lit(1.0))
    )
    rows = MLUtils.convertVectorColumnsFromML(augmented.select(_AUGMENTED), _AUGMENTED)
    matrix = RowMatrix(rows, numCols=width + 1)
    jgram = matrix._java_matrix_wrapper._java_model.computeGramianMatrix()
    full = _jvm_doubles(features.sparkSession, jgram.values(), width + 1)
    if full is None:  # the JVM cannot write where Python reads: through Py4J (slow)
        full = np.asarray(_java2py(features.sparkSession.sparkContext, jgram).toArray())
    return float(full[width, width]), full[width, :width].copy(), full[:width, :width]


def _covariance(
    rows: float, total: npt.NDArray[np.float64], gram: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(mean, covariance) from `_moments`' sums: ``(gram - rows * mean meanᵀ) / (rows - 1)``,
    computed in place on one new array (docs/decisions.md, "Spark PCA: the covariance in
    place")."""
    mean = total / rows
    covariance = np.outer(mean, -rows * mean)
    covariance += gram
    covariance /= max(rows - 1.0, 1.0)
    return mean, covariance


#: Doubles copied per write when `_jvm_doubles` moves a JVM array (32 MiB).
_CHUNK = 1 << 22


def _jvm_doubles(spark: SparkSession, values: Any, side: int) -> npt.NDArray[np.float64] | None:
    """A JVM ``double[]`` of side² values as a (side, side) array, through a temporary file
    (Py4J passes bytes slowly: docs/decisions.md, "Spark PCA: the Gramian through a file");
    None when the JVM cannot write it."""
    import tempfile

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    count = side * side
    fd, path = tempfile.mkstemp(prefix="nlphub-spark-", suffix=".f64")
    os.close(fd)
    try:
        buffer = jvm.java.nio.ByteBuffer.allocate(8 * min(count, _CHUNK))
        buffer.order(jvm.java.nio.ByteOrder.LITTLE_ENDIAN)
        stream = jvm.java.io.FileOutputStream(path)
        try:
            channel = stream.getChannel()
            for start in range(0, count, _CHUNK):
                size = min(_CHUNK, count - start)
                buffer.clear()
                buffer.asDoubleBuffer().put(values, start, size)
                buffer.limit(8 * size)
                while buffer.hasRemaining():
                    channel.write(buffer)
        finally:
            stream.close()
        data = np.fromfile(path, dtype="<f8")
    except Exception as exc:
        if not _is_spark_error(exc):
            raise
        log.warning("the JVM cannot write %s (%s): fetching through Py4J", path, exc)
        return None
    finally:
        os.unlink(path)
    if data.size != count:
        log.warning("%s holds %d values, not %d: fetching through Py4J", path, data.size, count)
        return None
    return data.reshape(side, side)


def _pca_stages(
    spark: SparkSession,
    components: npt.NDArray[np.float64],
    ratio: npt.NDArray[np.float64],
    shift: npt.NDArray[np.float64],
) -> tuple[Transformer, Transformer]:
    """Spark's own ``PCAModel`` (`_FEATURES` -> `_PROJECTED`) for `components`, then a
    ``StandardScalerModel`` subtracting `shift` (`_PROJECTED` -> `_PCA`), built through their
    JVM constructors: plain stages that a ``PipelineModel`` saves and loads."""
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCAModel, StandardScalerModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    sc = spark.sparkContext
    jvm = sc._jvm
    assert jvm is not None
    width, k = components.shape
    ml = jvm.org.apache.spark.ml
    uid = ml.util.Identifiable.randomUID
    pc = DenseMatrix(width, k, np.asfortranarray(components).ravel(order="F").tolist())
    jpca = ml.feature.PCAModel(
        uid("pca"), _py2java(sc, pc), _py2java(sc, DenseVector(ratio.tolist()))
    )
    jpca.setInputCol(_FEATURES).setOutputCol(_PROJECTED)
    jpca.set(jpca.k(), k)
    jscaler = ml.feature.StandardScalerModel(
        uid("stdScal"),
        _py2java(sc, DenseVector(np.ones(k).tolist())),
        _py2java(sc, DenseVector(np.asarray(shift, dtype=np.float64).tolist())),
    )
    jscaler.setInputCol(_PROJECTED).setOutputCol(_PCA)
    jscaler.set(jscaler.withMean(), True)
    jscaler.set(jscaler.withStd(), False)
    return PCAModel._from_java(jpca), StandardScalerModel._from_java(jscaler)

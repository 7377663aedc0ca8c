"""The whole dataset in Spark: features, then a centred ``PCA`` to `n_components`, end to end.

`spark_embeddings` / `spark_embed_dataframe` / `fit_spark_embedding` add an ``array<float>``
column so the vectors can be written from the executors without collecting them on the
driver. `spark_embeddings` (a context manager) tokenizes the texts once for the fit and the
vectors.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nlphub.embeddings.platforms.base import EmbeddingError
from nlphub.embeddings.spark.eigh import _top_components
from nlphub.embeddings.spark.features import (
    _FEATURES,
    _PCA,
    _check_common,
    _feature_estimators,
    _Features,
    _front_stages,
    _parse_model,
    _stop_words,
    _with_text,
    _with_vectors,
)
from nlphub.embeddings.spark.pca import MAX_PCA_FEATURES, _covariance, _moments, _pca_stages
from nlphub.embeddings.spark.session import _is_spark_error, _spark_error

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel, Transformer
    from pyspark.sql import DataFrame

__all__ = [
    "SparkEmbeddingModel",
    "fit_spark_embedding",
    "spark_embed_dataframe",
    "spark_embeddings",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparkEmbeddingModel:
    """A fitted features (+ PCA) pipeline; `transform` adds the ``array<float>`` vectors.

    `pipeline` holds plain Spark ML stages: save it with ``pipeline.write().save(path)`` and
    load it with ``PipelineModel.load`` to embed new records later exactly the same way.
    """

    pipeline: PipelineModel
    model: str
    input_dim: int
    n_components: int
    reduced: bool

    @property
    def output_dim(self) -> int:
        return self.n_components if self.reduced else self.input_dim

    def transform(self, df: DataFrame, *, text_col: str, output_col: str = "vector") -> DataFrame:
        if output_col in df.columns:
            raise EmbeddingError(f"the DataFrame already has a column {output_col!r}")
        out = self.pipeline.transform(_with_text(df, text_col))
        return _with_vectors(out, self._vectors_col, output_col)

    @property
    def _vectors_col(self) -> str:
        """The (temporary) column of the pipeline's output holding the vectors."""
        return _PCA if self.reduced else _FEATURES


def fit_spark_embedding(
    df: DataFrame,
    *,
    text_col: str,
    model: str,
    n_components: int,
    max_features: int = 4096,
    min_df: int = 1,
    lowercase: bool = True,
    stop_words: str | Sequence[str] | None = None,
) -> SparkEmbeddingModel:
    """Fit the features of `model` (as `SparkEncoder`) and a PCA to `n_components` on `df`.

    PCA is skipped (the vectors keep the feature width, ``reduced=False``) when `df` has fewer
    rows than `n_components` or the features are not wider than `n_components` — the same
    rule as `nlphub.embeddings.reduce.Reducer`. The PCA is the one scikit-learn fits (centred, signs
    as its ``svd_flip``), without densifying the sparse features: the JVM sums ``x xᵀ`` and
    ``x`` over the rows (one pass, `_moments`), the driver turns them into the covariance and
    takes its top eigenvectors with scipy. The pipeline ends in a Spark ``PCAModel`` built
    from them and a ``StandardScalerModel(withMean=True, withStd=False)`` subtracting
    ``mean @ components``: ``(x - mean) @ components`` as with scikit-learn.

    `df` is read once while fitting (plus a few rows to count): the tokens (hashed features:
    the term frequencies) are cached (memory, then disk) while the rest is fitted on them.
    To embed the same `df` right after, `spark_embeddings` reuses that cache instead of
    reading and tokenizing the texts again.
    """
    with _fitted(
        df,
        keep=(),
        text_col=text_col,
        model=model,
        n_components=n_components,
        max_features=max_features,
        min_df=min_df,
        lowercase=lowercase,
        stop_words=stop_words,
    ) as fit:
        return fit.model


def spark_embed_dataframe(
    df: DataFrame,
    *,
    text_col: str,
    model: str,
    n_components: int,
    **options: Any,
) -> DataFrame:
    """`df` plus a ``vector`` column (``array<float>``), computed in Spark end to end.

    Features as `SparkEncoder` (`model` ``tfidf``/``count``/``tfidf:<n>``; `options`:
    max_features, min_df, lowercase, stop_words), then PCA to `n_components` — skipped for
    fewer rows than `n_components` (the vectors then keep the feature width; see
    `fit_spark_embedding`, which also returns the fitted pipeline to reuse). The vectors are
    computed from the texts again when the result is read; `spark_embeddings` computes them
    from the fit's cached term frequencies instead.
    """
    if "vector" in df.columns:
        raise EmbeddingError("the DataFrame already has a column 'vector'")
    fitted = fit_spark_embedding(
        df, text_col=text_col, model=model, n_components=n_components, **options
    )
    return fitted.transform(df, text_col=text_col)


@contextlib.contextmanager
def spark_embeddings(
    df: DataFrame,
    *,
    text_col: str,
    model: str,
    n_components: int,
    **options: Any,
) -> Iterator[tuple[DataFrame, SparkEmbeddingModel]]:
    """(`df` plus a ``vector`` column, the fitted model) as `spark_embed_dataframe`, reading
    and tokenizing the texts once for both the fit and the vectors.

    `df`'s columns and the term frequencies stay cached (memory, then disk) until the block
    ends (select only the columns you need first): write the vectors inside it. The DataFrame
    stays valid after the block, but then computes from the texts again. Save
    ``model.pipeline`` to embed new records the same way.
    """
    if "vector" in df.columns:
        raise EmbeddingError("the DataFrame already has a column 'vector'")
    with _fitted(
        df,
        keep=df.columns,
        text_col=text_col,
        model=model,
        n_components=n_components,
        **options,
    ) as fit:
        out = fit.tail.transform(fit.cached)
        yield _with_vectors(out, fit.model._vectors_col, "vector"), fit.model


@dataclass(frozen=True)
class _Fit:
    """`_fitted`'s result: the model, the cached leading columns and the stages after them."""

    model: SparkEmbeddingModel
    cached: DataFrame  # the kept columns plus the leading stages' output (persisted)
    tail: PipelineModel  # the model's stages after the cached column


@contextlib.contextmanager
def _fitted(
    df: DataFrame,
    *,
    keep: Sequence[str],
    text_col: str,
    model: str,
    n_components: int,
    max_features: int = 4096,
    min_df: int = 1,
    lowercase: bool = True,
    stop_words: str | Sequence[str] | None = None,
) -> Iterator[_Fit]:
    """Fit as `fit_spark_embedding`; the leading stages' output (and `df`'s columns `keep`)
    stays cached until the block ends."""
    from pyspark import StorageLevel
    from pyspark.ml import PipelineModel

    features = _parse_model(model)
    _check_common(max_features, min_df)
    if n_components < 1:
        raise EmbeddingError("n_components must be at least 1")
    prepared = _with_text(df, text_col)
    words = _stop_words(stop_words)
    front, tokens_col = _front_stages(lowercase, words)
    stages = [
        *front,
        *_feature_estimators(
            features, tokens_col=tokens_col, max_features=max_features, min_df=min_df
        ),
    ]
    # The leading stages only transform (tokens, hashed term frequencies): run them once and
    # cache their output column, then fit (and compute the features) from the cache.
    transformers, estimators = _split_leading(stages)
    leading = PipelineModel(stages=transformers)
    cached_col = transformers[-1].getOutputCol()
    cached = (
        leading.transform(prepared).select(*keep, cached_col).persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        yield _fit_from_cache(
            cached, leading, estimators, features, n_components, keep_cache=bool(keep)
        )
    finally:
        cached.unpersist()


def _split_leading(stages: list[Any]) -> tuple[list[Any], list[Any]]:
    """(the leading stages that are already transformers, the stages from the first estimator
    on)."""
    from pyspark.ml import Transformer

    lead = next(i for i, stage in enumerate([*stages, None]) if not isinstance(stage, Transformer))
    return stages[:lead], stages[lead:]


def _fit_from_cache(
    cached: DataFrame,
    leading: PipelineModel,
    estimators: list[Any],
    features: _Features,
    n_components: int,
    *,
    keep_cache: bool,
) -> _Fit:
    """`_fitted`'s result from the leading stages' cached output: the estimators fitted on it,
    then the PCA when there are enough rows and features (`keep_cache`: whether anything reads
    `cached` again after the fit)."""
    from pyspark.ml import PipelineModel

    rest = _fit_estimators(estimators, cached, features)
    featurizer = PipelineModel(stages=[*leading.stages, *rest.stages])
    if features.num_features is not None:
        input_dim = features.num_features
    else:
        vectorizer = next(s for s in rest.stages if hasattr(s, "vocabulary"))
        input_dim = len(vectorizer.vocabulary)
    enough_rows = cached.limit(n_components).count() >= n_components
    if not enough_rows or input_dim <= n_components:
        log.info("not reducing: fewer than %d rows or only %d features", n_components, input_dim)
        plain = SparkEmbeddingModel(featurizer, features.spec, input_dim, n_components, False)
        return _Fit(plain, cached, PipelineModel(stages=rest.stages))
    if input_dim > MAX_PCA_FEATURES:
        raise EmbeddingError(
            f"PCA in Spark is limited to {MAX_PCA_FEATURES} features, not {input_dim}: "
            "lower max_features or numFeatures"
        )
    # nothing reads the cache again: free it before the driver's eigh
    spent = None if keep_cache else cached
    pca, centre = _fit_pca(rest.transform(cached), input_dim, n_components, spent=spent)
    pipeline = PipelineModel(stages=[*featurizer.stages, pca, centre])
    reduced = SparkEmbeddingModel(pipeline, features.spec, input_dim, n_components, True)
    return _Fit(reduced, cached, PipelineModel(stages=[*rest.stages, pca, centre]))


def _fit_estimators(estimators: list[Any], cached: DataFrame, features: _Features) -> PipelineModel:
    """The stages from the first estimator on, fitted on `cached`; EmbeddingError for what
    Spark refuses."""
    from pyspark.ml import Pipeline

    try:
        return Pipeline(stages=estimators).fit(cached)
    except Exception as exc:
        if _is_spark_error(exc):
            raise EmbeddingError(
                f"spark:{features.spec} cannot be fitted on these texts: {_spark_error(exc)}"
            ) from None
        raise


def _fit_pca(
    features: DataFrame, width: int, k: int, *, spent: DataFrame | None
) -> tuple[Transformer, Transformer]:
    """Spark's PCA stages (`_pca_stages`) for the top `k` components of the `width`-wide
    `_FEATURES` vectors of `features`; `spent` (a cache nothing reads again) is freed once the
    moments are summed, before the driver's eigh."""
    rows, total, gram = _moments(features, width)
    if spent is not None:
        spent.unpersist()
    mean, covariance = _covariance(rows, total, gram)
    del gram  # its base holds Σ x xᵀ: free it before the eigh
    components, ratio = _top_components(covariance, k)
    return _pca_stages(features.sparkSession, components, ratio, mean @ components)

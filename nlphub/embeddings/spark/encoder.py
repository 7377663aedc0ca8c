"""`SparkEncoder` (platform ``spark``, models ``tfidf``, ``count``, ``tfidf:<numFeatures>``,
``count:<numFeatures>``): the `Encoder` interface over the Spark ML feature pipeline.

`fit` learns on a Spark DataFrame of the texts (`fit_dataframe` takes one you already have,
without passing the texts through the driver); `encode` transforms one batch in Spark and
returns dense float32 rows. The fitted vocabulary and idf weights are kept as bytes
(`SparkEncoder.to_bytes`, an ``.npz`` archive, no pickle, no Spark files), so new records embed
the same way later, on any cluster.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from nlphub.embeddings.platforms.base import EmbeddingError, Vectors, check_texts
from nlphub.embeddings.spark.features import (
    _FEATURES,
    _INDEX,
    _TEXT,
    _TF,
    _TFIDF,
    TOKEN_PATTERN,
    _check_common,
    _feature_estimators,
    _front_stages,
    _parse_model,
    _stop_words,
    _with_text,
    _with_vectors,
)
from nlphub.embeddings.spark.session import _is_spark_error, _SessionHandle, _spark_error

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkEncoder"]

_STATE_FORMAT = 1


class SparkEncoder:
    """Counts or tf-idf with Spark ML, fitted on the corpus, encoding batches into dense rows.

    `model`: ``tfidf`` / ``count`` (a vocabulary of the `max_features` most frequent terms seen
    in at least `min_df` texts) or ``tfidf:<n>`` / ``count:<n>`` (terms hashed into `n` columns,
    no vocabulary). tf-idf rows are l2-normalised, count rows are raw counts. `stop_words`: none,
    a language for Spark's default lists (``"english"``) or a list of words.
    Session: `spark` when given (never stopped), else `get_spark(master, conf=conf)`.
    """

    platform = "spark"
    requires_fit = True
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"master", "spark", "conf", "max_features", "min_df", "lowercase", "stop_words", "state"}
    )

    def __init__(
        self,
        model: str = "tfidf",
        *,
        master: str | None = None,
        spark: SparkSession | None = None,
        conf: Mapping[str, str] | None = None,
        max_features: int = 4096,
        min_df: int = 1,
        lowercase: bool = True,
        stop_words: str | Sequence[str] | None = None,
        state: bytes | None = None,
    ) -> None:
        self._features = _parse_model(model)
        _check_common(max_features, min_df)
        self.model = self._features.spec
        self.name = f"spark:{self.model}"
        self.max_features = max_features
        self.min_df = min_df
        self.lowercase = lowercase
        self._stop_option = stop_words
        self._session = _SessionHandle(spark, master, conf)
        # The fitted state: plain arrays, turned into Spark transformers when first needed.
        self._stop_words: list[str] = []
        self._terms: list[str] | None = None
        self._idf: npt.NDArray[np.float64] | None = None
        self._fitted = False
        self._transformer: PipelineModel | None = None
        if state is not None:
            self._load(state)

    def __repr__(self) -> str:
        return f"SparkEncoder({self.model!r}, dimension={self.dimension})"

    @property
    def hashed(self) -> bool:
        return self._features.num_features is not None

    @property
    def dimension(self) -> int | None:
        if not self._fitted:
            return None
        if self._features.num_features is not None:
            return self._features.num_features
        return len(self._terms or [])

    @property
    def vocabulary(self) -> list[str] | None:
        """The fitted terms in column order (most frequent first); None when hashed or unfitted."""
        return None if self._terms is None else list(self._terms)

    @property
    def idf(self) -> npt.NDArray[np.float64] | None:
        """Spark's idf weight per column (tf-idf only, once fitted)."""
        return None if self._idf is None else self._idf.copy()

    @property
    def spark(self) -> SparkSession:
        """The session this encoder runs on (started on first use)."""
        return self._session.get()

    # -- fitting

    def fit(self, texts: Iterable[str]) -> None:
        """Fit on the corpus: the texts become a Spark DataFrame (through the driver)."""
        items: list[tuple[str]] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise EmbeddingError(f"text #{i} is {type(text).__name__}, not str")
            items.append((text,))
        if not items:
            raise EmbeddingError(f"{self.name} cannot be fitted on no texts")
        frame = self.spark.createDataFrame(items, "text string")
        self.fit_dataframe(frame, text_col="text")

    def fit_dataframe(self, df: DataFrame, *, text_col: str = "text") -> None:
        """Fit on a DataFrame's text column where it lies (nothing is collected but the
        vocabulary and idf weights). Nulls count as empty texts."""
        from pyspark.ml import Pipeline

        self._session.get()  # stop words and stages need a running SparkContext
        stop_words = _stop_words(self._stop_option)
        front, tokens_col = _front_stages(self.lowercase, stop_words)
        estimators = _feature_estimators(
            self._features,
            tokens_col=tokens_col,
            max_features=self.max_features,
            min_df=self.min_df,
        )
        prepared = _with_text(df, text_col)
        try:
            fitted = Pipeline(stages=[*front, *estimators]).fit(prepared)
        except Exception as exc:
            if _is_spark_error(exc):
                raise EmbeddingError(
                    f"{self.name} cannot be fitted on these texts: {_spark_error(exc)}"
                ) from None
            raise
        terms: list[str] | None = None
        idf: npt.NDArray[np.float64] | None = None
        for stage in fitted.stages:
            if hasattr(stage, "vocabulary"):
                terms = [str(t) for t in stage.vocabulary]
            if hasattr(stage, "idf"):
                idf = np.asarray(stage.idf.toArray(), dtype=np.float64)
        self._set(stop_words, terms, idf)

    def _set(
        self,
        stop_words: list[str],
        terms: list[str] | None,
        idf: npt.NDArray[np.float64] | None,
    ) -> None:
        if self._features.num_features is None:
            if not terms:
                raise EmbeddingError(f"{self.name} has an empty vocabulary")
            width = len(terms)
        else:
            terms = None
            width = self._features.num_features
        if self._features.kind == "tfidf":
            if idf is None or idf.shape != (width,):
                shape = None if idf is None else idf.shape
                raise EmbeddingError(f"{self.name}: idf has shape {shape}, expected ({width},)")
        else:
            idf = None
        self._stop_words = stop_words
        self._terms = terms
        self._idf = idf
        self._fitted = True
        self._transformer = None

    def _pipeline(self) -> PipelineModel:
        """The fitted transformation, rebuilt from the stored arrays (same arithmetic after
        `from_bytes`): counts, then ``ElementwiseProduct(idf)`` and l2 rows for tf-idf."""
        if self._transformer is not None:
            return self._transformer
        from pyspark.ml import PipelineModel
        from pyspark.ml.feature import (
            CountVectorizerModel,
            ElementwiseProduct,
            HashingTF,
            Normalizer,
        )
        from pyspark.ml.linalg import Vectors as SparkVectors

        self._session.get()  # the transformers below need a running SparkContext
        stages, tokens_col = _front_stages(self.lowercase, self._stop_words)
        tf_out = _TF if self._idf is not None else _FEATURES
        hashed_width = self._features.num_features
        if hashed_width is not None:
            stages.append(
                HashingTF(inputCol=tokens_col, outputCol=tf_out, numFeatures=hashed_width)
            )
        else:
            stages.append(
                CountVectorizerModel.from_vocabulary(
                    self._terms or [], inputCol=tokens_col, outputCol=tf_out
                )
            )
        if self._idf is not None:
            stages.append(
                ElementwiseProduct(
                    inputCol=_TF,
                    outputCol=_TFIDF,
                    scalingVec=SparkVectors.dense(self._idf.tolist()),
                )
            )
            stages.append(Normalizer(inputCol=_TFIDF, outputCol=_FEATURES, p=2.0))
        self._transformer = PipelineModel(stages=stages)
        return self._transformer

    # -- encoding

    def encode(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if not self._fitted:
            raise EmbeddingError(f"{self.name} must be fitted on the corpus before encoding")
        width = self.dimension or 0
        out = np.zeros((len(items), width), dtype=np.float32)
        if not items:
            return out
        frame = self.spark.createDataFrame(list(enumerate(items)), f"{_INDEX} long, {_TEXT} string")
        rows = self._pipeline().transform(frame).select(_INDEX, _FEATURES).collect()
        for index, vector in rows:
            _fill_row(out, int(index), vector)
        return out

    def transform_dataframe(self, df: DataFrame, *, text_col: str = "text") -> DataFrame:
        """`df` plus a ``vector`` column (``array<float>``) from the fitted encoder, in Spark."""
        if not self._fitted:
            raise EmbeddingError(f"{self.name} must be fitted on the corpus before encoding")
        out = self._pipeline().transform(_with_text(df, text_col))
        return _with_vectors(out, _FEATURES, "vector")

    # -- state

    def to_bytes(self) -> bytes:
        """The fitted vocabulary, idf weights and settings as an ``.npz`` archive (no pickle)."""
        if not self._fitted:
            raise EmbeddingError(f"{self.name} is not fitted: nothing to store")
        meta = {
            "format": _STATE_FORMAT,
            "model": self.model,
            "lowercase": self.lowercase,
            "max_features": self.max_features,
            "min_df": self.min_df,
            "pattern": TOKEN_PATTERN,
        }
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            meta=np.array(json.dumps(meta)),
            terms=np.array(self._terms or [], dtype=np.str_),
            idf=self._idf if self._idf is not None else np.zeros(0, dtype=np.float64),
            stop_words=np.array(self._stop_words, dtype=np.str_),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        master: str | None = None,
        spark: SparkSession | None = None,
        conf: Mapping[str, str] | None = None,
    ) -> SparkEncoder:
        """An encoder that embeds exactly as the one whose `to_bytes` gave `data`."""
        meta = _read_state(data)[0]
        return cls(
            str(meta["model"]),
            master=master,
            spark=spark,
            conf=conf,
            max_features=int(meta["max_features"]),
            min_df=int(meta["min_df"]),
            lowercase=bool(meta["lowercase"]),
            state=data,
        )

    def _load(self, data: bytes) -> None:
        meta, terms, idf, stop_words = _read_state(data)
        if _parse_model(str(meta["model"])) != self._features:
            raise EmbeddingError(f"stored spark state is {meta['model']!r}, not {self.model!r}")
        if meta.get("pattern") != TOKEN_PATTERN:
            raise EmbeddingError("stored spark state was tokenized with another pattern")
        self.lowercase = bool(meta["lowercase"])
        self._stop_option = stop_words or None  # a refit removes the same words
        self._set(stop_words, terms or None, idf if idf.size else None)

    def close(self) -> None:
        """Drop the Spark transformers; stop the session only if nlphub started it for encoders
        and no other encoder still uses it."""
        self._transformer = None
        self._session.release()


def _fill_row(out: npt.NDArray[np.float32], index: int, vector: Any) -> None:
    from pyspark.ml.linalg import SparseVector

    if isinstance(vector, SparseVector):
        out[index, vector.indices] = vector.values
    else:
        out[index] = vector.toArray()


def _read_state(
    data: bytes,
) -> tuple[dict[str, Any], list[str], npt.NDArray[np.float64], list[str]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"].item()))
            terms = [str(t) for t in archive["terms"].tolist()]
            idf = np.asarray(archive["idf"], dtype=np.float64)
            stop_words = [str(t) for t in archive["stop_words"].tolist()]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddingError(f"stored spark state is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != _STATE_FORMAT:
        raise EmbeddingError("stored spark state has an unknown format")
    return meta, terms, idf, stop_words

"""Embeddings computed with Apache Spark, for datasets past one machine.

Three ways in:

- `SparkEncoder` (platform ``spark``, models ``tfidf``, ``count``, ``tfidf:<numFeatures>``,
  ``count:<numFeatures>``): the `Encoder` interface over a Spark ML feature pipeline —
  ``RegexTokenizer`` → optional ``StopWordsRemover`` → ``CountVectorizer`` (a vocabulary of the
  `max_features` most frequent terms) or ``HashingTF`` (``:<numFeatures>``: no vocabulary, any
  corpus size) → ``IDF`` (tf-idf only, rows then l2-normalised like the ``bow`` platform).
  `fit` learns on a Spark DataFrame of the texts (`fit_dataframe` takes one you already have,
  without passing the texts through the driver); `encode` transforms one batch in Spark and
  returns dense float32 rows. The fitted vocabulary and idf weights are kept as bytes
  (`SparkEncoder.to_bytes`, an ``.npz`` archive, no pickle, no Spark files), so new records
  embed the same way later, on any cluster.
- `spark_embeddings` / `spark_embed_dataframe` / `fit_spark_embedding`: the whole dataset in
  Spark, end to end (features, then a centred ``PCA`` to `n_components`), adding an
  ``array<float>`` column so the vectors can be written from the executors without collecting
  them on the driver. `spark_embeddings` (a context manager) tokenizes the texts once for the
  fit and the vectors.
- Spark NLP embeddings (`SparkNLPEncoder`, model ``sparknlp:<install path>``): a word or sentence
  embeddings resource installed by nlphub, run through `sparknlp_pipeline`. Spark NLP needs its
  JVM jar on the Spark classpath (it is not on PyPI); `sparknlp_available` says why it cannot run
  when it cannot.

Spark sessions: `get_spark` reuses the running session if there is one, else starts one (master
from the ``master`` option, else ``NLPHUB_SPARK_MASTER``, else ``local[*]``; the web UI off). A
session an encoder did not start is never stopped by it; one that `get_spark` started for
encoders is stopped when the last encoder using it is closed.

Tokens: ``(?U)\\b\\w\\w+\\b`` on lower-cased text, the same tokens as scikit-learn's default
(the ``bow`` platform). Spark's idf is ``log((n + 1) / (df + 1))`` (scikit-learn adds 1 to it),
so tf-idf weights differ from ``bow``'s while the vocabulary and counts are the same.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from nlphub.embeddings.platforms import EmbeddingError, Encoder, Vectors

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel, Transformer
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "DEFAULT_MASTER",
    "MASTER_ENV",
    "MAX_DENSE_FEATURES",
    "MAX_PCA_FEATURES",
    "SPARKNLP_CHECK_CLASS",
    "TOKEN_PATTERN",
    "SparkEmbeddingModel",
    "SparkEncoder",
    "SparkNLPEncoder",
    "fit_spark_embedding",
    "get_spark",
    "make_spark_encoder",
    "spark_embed_dataframe",
    "spark_embeddings",
    "sparknlp_available",
    "sparknlp_pipeline",
]

log = logging.getLogger(__name__)

MASTER_ENV = "NLPHUB_SPARK_MASTER"
DEFAULT_MASTER = "local[*]"
#: scikit-learn's default token pattern; ``(?U)`` makes Java's ``\\w`` and ``\\b`` Unicode-aware.
TOKEN_PATTERN = r"(?U)\b\w\w+\b"
#: Longest rows `SparkEncoder.encode` returns densely (``tfidf:<numFeatures>``).
MAX_DENSE_FEATURES = 1 << 16
#: Widest features Spark's PCA is fitted on: it builds a dense covariance matrix on the driver
#: (8192² doubles = 512 MiB); Spark itself refuses 65536 columns or more.
MAX_PCA_FEATURES = 8192
#: The class `sparknlp_available` looks for on the JVM classpath.
SPARKNLP_CHECK_CLASS = "com.johnsnowlabs.nlp.DocumentAssembler"

_STATE_FORMAT = 1
_PREFIX = "__nlphub_"
_TEXT, _TOKENS, _WORDS, _TF, _TFIDF, _FEATURES = (
    f"{_PREFIX}{name}" for name in ("text", "tokens", "words", "tf", "tfidf", "features")
)
_PROJECTED, _PCA, _INDEX = f"{_PREFIX}projected", f"{_PREFIX}pca", f"{_PREFIX}index"
_AUGMENTED = f"{_PREFIX}augmented"


# -- sessions -------------------------------------------------------------------------------------

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


# -- the feature pipeline -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Features:
    """What a model string asks for: ``tfidf`` / ``count``, vocabulary or hashed."""

    kind: Literal["tfidf", "count"]
    num_features: int | None  # hashed (HashingTF) when set, else a CountVectorizer vocabulary

    @property
    def spec(self) -> str:
        return self.kind if self.num_features is None else f"{self.kind}:{self.num_features}"


_KIND_ALIASES = {
    "tf-idf": "tfidf",
    "tfidfvectorizer": "tfidf",
    "bow": "count",
    "bag-of-words": "count",
    "countvectorizer": "count",
}


def _parse_model(model: str) -> _Features:
    text = model.strip().lower()
    head, sep, tail = text.partition(":")
    kind = _KIND_ALIASES.get(head, head)
    if kind not in ("tfidf", "count"):
        raise EmbeddingError(
            f"spark model must be 'tfidf', 'count', 'tfidf:<numFeatures>' or "
            f"'count:<numFeatures>' (or 'sparknlp:<install path>'), not {model!r}"
        )
    if not sep:
        return _Features(kind, None)  # type: ignore[arg-type]
    try:
        num = int(tail)
    except ValueError:
        raise EmbeddingError(f"{model!r}: numFeatures {tail!r} is not a whole number") from None
    if not 1 <= num <= MAX_DENSE_FEATURES:
        raise EmbeddingError(
            f"{model!r}: numFeatures must be between 1 and {MAX_DENSE_FEATURES} "
            "(vectors are returned dense)"
        )
    return _Features(kind, num)  # type: ignore[arg-type]


def _check_common(max_features: int, min_df: int) -> None:
    if max_features < 1:
        raise EmbeddingError("max_features must be at least 1")
    if max_features > MAX_DENSE_FEATURES:
        raise EmbeddingError(f"max_features must be at most {MAX_DENSE_FEATURES}")
    if min_df < 1:
        raise EmbeddingError("min_df must be at least 1")


def _stop_words(option: str | Sequence[str] | None) -> list[str]:
    """The stop words to remove: none, a language's defaults (needs the JVM) or a list."""
    if option is None:
        return []
    if isinstance(option, str):
        from pyspark.ml.feature import StopWordsRemover

        try:
            return list(StopWordsRemover.loadDefaultStopWords(option.strip().lower()))
        except Exception as exc:
            raise EmbeddingError(
                f"no default stop words for {option!r}: {_spark_error(exc)}"
            ) from None
    words = list(option)
    if not all(isinstance(w, str) for w in words):
        raise EmbeddingError("stop_words must be a language name or a list of words")
    return words


def _front_stages(lowercase: bool, stop_words: list[str]) -> tuple[list[Transformer], str]:
    """Tokenizer (+ stop words remover) from `_TEXT`; and the name of the tokens column."""
    from pyspark.ml.feature import RegexTokenizer, StopWordsRemover

    stages: list[Transformer] = [
        RegexTokenizer(
            inputCol=_TEXT,
            outputCol=_TOKENS,
            pattern=TOKEN_PATTERN,
            gaps=False,
            toLowercase=lowercase,
            minTokenLength=1,
        )
    ]
    if not stop_words:
        return stages, _TOKENS
    stages.append(
        StopWordsRemover(
            inputCol=_TOKENS, outputCol=_WORDS, stopWords=stop_words, caseSensitive=False
        )
    )
    return stages, _WORDS


def _feature_estimators(
    features: _Features, *, tokens_col: str, max_features: int, min_df: int
) -> list[Any]:
    """Term frequencies (+ idf and l2 rows for tf-idf) from `tokens_col` to `_FEATURES`."""
    from pyspark.ml.feature import IDF, CountVectorizer, HashingTF, Normalizer

    tf_out = _TF if features.kind == "tfidf" else _FEATURES
    stages: list[Any] = []
    if features.num_features is None:
        stages.append(
            CountVectorizer(
                inputCol=tokens_col,
                outputCol=tf_out,
                vocabSize=max_features,
                minDF=float(min_df),
            )
        )
    else:
        stages.append(
            HashingTF(inputCol=tokens_col, outputCol=tf_out, numFeatures=features.num_features)
        )
    if features.kind == "tfidf":
        stages.append(IDF(inputCol=_TF, outputCol=_TFIDF, minDocFreq=min_df))
        stages.append(Normalizer(inputCol=_TFIDF, outputCol=_FEATURES, p=2.0))
    return stages


def _with_text(df: DataFrame, text_col: str) -> DataFrame:
    """`df` plus `_TEXT` (the text column, null as ""); EmbeddingError for a bad column."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    fields = {f.name: f for f in df.schema.fields}
    if text_col not in fields:
        raise EmbeddingError(f"the DataFrame has no column {text_col!r} (it has {sorted(fields)})")
    if not isinstance(fields[text_col].dataType, StringType):
        raise EmbeddingError(
            f"column {text_col!r} is {fields[text_col].dataType.simpleString()}, not string"
        )
    return df.withColumn(_TEXT, F.coalesce(F.col(text_col), F.lit("")))


def _drop_temporary(df: DataFrame) -> DataFrame:
    return df.drop(*[c for c in df.columns if c.startswith(_PREFIX)])


def _with_vectors(transformed: DataFrame, source: str, output_col: str) -> DataFrame:
    """`transformed` with its vector column `source` as an ``array<float>`` `output_col`, and
    without the temporary columns."""
    from pyspark.ml.functions import vector_to_array

    out = transformed.withColumn(output_col, vector_to_array(transformed[source], "float32"))
    return _drop_temporary(out)


# -- SparkEncoder ---------------------------------------------------------------------------------


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
        from nlphub.embeddings.platforms import _check_texts

        items = _check_texts(texts)
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


def _is_spark_error(exc: Exception) -> bool:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return isinstance(exc, PySparkException | Py4JError)


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


# -- the whole dataset in Spark -------------------------------------------------------------------


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
    from pyspark.ml import Pipeline, PipelineModel, Transformer

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
    lead = next(i for i, stage in enumerate([*stages, None]) if not isinstance(stage, Transformer))
    cached_col = stages[lead - 1].getOutputCol()
    leading = PipelineModel(stages=stages[:lead])
    cached = (
        leading.transform(prepared).select(*keep, cached_col).persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        try:
            rest = Pipeline(stages=stages[lead:]).fit(cached)
        except Exception as exc:
            if _is_spark_error(exc):
                raise EmbeddingError(
                    f"spark:{features.spec} cannot be fitted on these texts: {_spark_error(exc)}"
                ) from None
            raise
        featurizer = PipelineModel(stages=[*leading.stages, *rest.stages])
        if features.num_features is not None:
            input_dim = features.num_features
        else:
            vectorizer = next(s for s in rest.stages if hasattr(s, "vocabulary"))
            input_dim = len(vectorizer.vocabulary)
        enough_rows = cached.limit(n_components).count() >= n_components
        if not enough_rows or input_dim <= n_components:
            log.info(
                "not reducing: fewer than %d rows or only %d features", n_components, input_dim
            )
            plain = SparkEmbeddingModel(featurizer, features.spec, input_dim, n_components, False)
            yield _Fit(plain, cached, PipelineModel(stages=rest.stages))
            return
        if input_dim > MAX_PCA_FEATURES:
            raise EmbeddingError(
                f"PCA in Spark is limited to {MAX_PCA_FEATURES} features, not {input_dim}: "
                "lower max_features or numFeatures"
            )
        rows, total, gram = _moments(rest.transform(cached), input_dim)
        if not keep:  # nothing reads the cache again: free it before the driver's eigh
            cached.unpersist()
        mean = total / rows
        # (gram - rows * mean meanᵀ) / (rows - 1) in place on one new array: at 4096 features
        # the old expression made four (128 MiB each, two alive at once) and four passes
        covariance = np.outer(mean, -rows * mean)
        covariance += gram
        covariance /= max(rows - 1.0, 1.0)
        del gram  # its base holds Σ x xᵀ: free it before the eigh
        components, ratio = _top_components(covariance, n_components)
        pca, centre = _pca_stages(cached.sparkSession, components, ratio, mean @ components)
        pipeline = PipelineModel(stages=[*featurizer.stages, pca, centre])
        reduced = SparkEmbeddingModel(pipeline, features.spec, input_dim, n_components, True)
        yield _Fit(reduced, cached, PipelineModel(stages=[*rest.stages, pca, centre]))
    finally:
        cached.unpersist()


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


#: Doubles copied per write when `_jvm_doubles` moves a JVM array (32 MiB).
_CHUNK = 1 << 22


def _jvm_doubles(spark: SparkSession, values: Any, side: int) -> npt.NDArray[np.float64] | None:
    """A JVM ``double[]`` of side² values as a (side, side) array, through a temporary file
    (Py4J passes bytes slowly: minutes for 8192²); None when the JVM cannot write it."""
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


#: From this width on, `_top_components` solves in float32 first (see there).
FAST_EIGH_MIN_WIDTH = 1024
#: Extra eigenpairs the float32 solves keep, so the k-th is resolved from its neighbours.
FAST_EIGH_OVERSAMPLE = 16
#: Largest accepted residual ||C v - λ v|| of a component, relative to the largest eigenvalue;
#: above it the next solve runs instead (the vectors are stored as float32: 1e-7).
FAST_EIGH_TOLERANCE = 1e-6
#: From this width on, `_top_components` tries a block Krylov solve first (see there); below
#: it the float32 ``syevx`` is as fast (2048 wide: 0.36 s against 0.39 s).
KRYLOV_MIN_WIDTH = 2560
#: Blocks of the Krylov basis (k + FAST_EIGH_OVERSAMPLE columns each). 10 leave a 4096-wide
#: tf-idf covariance's top 64 at a 2.6e-7 residual; 8 left 1.6e-5, past the tolerance.
KRYLOV_BLOCKS = 10


def _top_components(
    covariance: npt.NDArray[np.float64], k: int, *, tolerance: float = FAST_EIGH_TOLERANCE
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(width x k components, their share of the total variance), largest first.

    Only the top `k` eigenpairs are computed, by the first of these that is accurate enough:
    1. from KRYLOV_MIN_WIDTH on (and a basis at most half the width): a block Krylov solve in
       float32 (`_top_eigh_krylov`: matrix products only, 4096 wide ~1 s, where the
       tridiagonal reduction below takes 2-4 s);
    2. from FAST_EIGH_MIN_WIDTH on: LAPACK ``syevx`` on a subset, in float32, for the top
       k + FAST_EIGH_OVERSAMPLE;
    3. ``syevx`` in float64 (``scipy.linalg.eigh``), which is exact to float64.
    The float32 solves are refined in float64 (`_refined`: one step of subspace iteration and
    a Rayleigh-Ritz projection), which brings the eigenvalues to float64 accuracy and the
    vectors to ~1e-7, and each component's residual is checked against `tolerance` (relative
    to the largest eigenvalue) before a result is taken. Signs as scikit-learn's
    ``svd_flip(u_based_decision=False)``: each component's largest absolute entry is positive.
    """
    width = covariance.shape[0]
    total = float(np.trace(covariance))
    found = None
    if width >= FAST_EIGH_MIN_WIDTH and k + FAST_EIGH_OVERSAMPLE < width:
        single = _single(covariance)  # one float32 copy for both float32 solves
        if width >= KRYLOV_MIN_WIDTH:
            found = _top_eigh_krylov(covariance, single, k, tolerance)
        if found is None:
            found = _top_eigh_float32(covariance, single, k, tolerance)  # overwrites `single`
        del single
    if found is None:
        from scipy.linalg import eigh

        values, vectors = eigh(
            covariance,
            subset_by_index=[width - k, width - 1],
            driver="evx",
            overwrite_a=True,
            check_finite=False,
        )
        values, vectors = values[::-1], vectors[:, ::-1]
    else:
        values, vectors = found
    values = np.clip(values, 0.0, None)
    biggest = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[biggest, np.arange(k)])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    return vectors, values / total if total > 0 else np.zeros_like(values)


def _single(covariance: npt.NDArray[np.float64]) -> npt.NDArray[np.float32] | None:
    """`covariance` in float32; None when float32 cannot hold it."""
    with np.errstate(over="ignore"):
        single = covariance.astype(np.float32)
    return single if np.isfinite(single).all() else None


def _top_eigh_float32(
    covariance: npt.NDArray[np.float64],
    single: npt.NDArray[np.float32] | None,
    k: int,
    tolerance: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The top `k` (eigenvalues, eigenvectors) of `covariance`, largest first, from a float32
    ``syevx`` on `single` (its float32 copy, overwritten) refined in float64; None when a
    residual is past `tolerance` (or `single` is None: float32 cannot hold the matrix)."""
    from scipy.linalg import eigh

    width = covariance.shape[0]
    if single is None:
        return None
    _, rough = eigh(
        single,
        subset_by_index=[width - k - FAST_EIGH_OVERSAMPLE, width - 1],
        driver="evx",
        overwrite_a=True,
        check_finite=False,
    )
    return _refined(covariance, rough, k, tolerance, "float32 eigh", "solving in float64")


def _top_eigh_krylov(
    covariance: npt.NDArray[np.float64],
    single: npt.NDArray[np.float32] | None,
    k: int,
    tolerance: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The top `k` (eigenvalues, eigenvectors) of `covariance`, largest first, from a block
    Krylov solve on `single` (its float32 copy, only read) refined in float64; None when a
    residual is past `tolerance`, the basis would be wider than half the matrix, or `single`
    is None (float32 cannot hold the matrix).

    The basis spans ``C Ω, C² Ω, …, C^KRYLOV_BLOCKS Ω`` for a fixed-seed Gaussian block Ω of
    k + FAST_EIGH_OVERSAMPLE columns (the same input gives the same components), each block
    orthogonalized against the ones before (twice: "twice is enough") and the basis' Rayleigh-
    Ritz projection gives the rough vectors. The cost is matrix products: KRYLOV_BLOCKS + 1
    products of the matrix with one block, against the ~n³ of a tridiagonal reduction. How
    fast the top k converge depends on the gap between the k-th and the (k + oversample + 1)-th
    eigenvalue (not the k-th and the next), which is why the block is wider than k; the
    residual check in `_refined` decides whether the result is taken.
    """
    width = covariance.shape[0]
    block_width = k + FAST_EIGH_OVERSAMPLE
    if single is None or block_width * KRYLOV_BLOCKS > width // 2:
        return None
    rng = np.random.default_rng(0)
    basis = np.empty((width, block_width * KRYLOV_BLOCKS), dtype=np.float32)
    image = np.empty_like(basis)  # single @ basis, block by block
    block, _ = np.linalg.qr(single @ rng.standard_normal((width, block_width), dtype=np.float32))
    for i in range(KRYLOV_BLOCKS):
        columns = slice(i * block_width, (i + 1) * block_width)
        basis[:, columns] = block
        image[:, columns] = single @ block
        if i + 1 < KRYLOV_BLOCKS:
            before = basis[:, : (i + 1) * block_width]
            nxt = image[:, columns].copy()
            for _ in range(2):
                nxt -= before @ (before.T @ nxt)
            block, _ = np.linalg.qr(nxt)
    small = (basis.T @ image).astype(np.float64)
    _, rotation = np.linalg.eigh((small + small.T) / 2)
    rough = basis @ rotation[:, ::-1][:, :block_width].astype(np.float32)
    del basis, image
    return _refined(covariance, rough, k, tolerance, "Krylov solve", "solving with syevx")


def _refined(
    covariance: npt.NDArray[np.float64],
    rough: npt.NDArray[Any],
    k: int,
    tolerance: float,
    solve: str,
    instead: str,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The top `k` eigenpairs of `covariance` from `rough` vectors spanning about its top
    subspace (columns: k plus a few), largest first: one step of subspace iteration and a
    Rayleigh-Ritz projection in float64. None (logged, naming `solve` and what runs `instead`)
    when a component's residual is past `tolerance`."""
    basis, _ = np.linalg.qr(covariance @ rough.astype(np.float64))
    image = covariance @ basis
    small = basis.T @ image
    values, rotation = np.linalg.eigh((small + small.T) / 2)
    values, rotation = values[::-1][:k], rotation[:, ::-1][:, :k]
    vectors = basis @ rotation
    residual = np.linalg.norm(image @ rotation - vectors * values, axis=0)
    scale = max(float(np.abs(values).max()), np.finfo(np.float64).tiny)
    if not np.isfinite(residual).all() or residual.max() > tolerance * scale:
        log.info(
            "%s not accurate enough (residual %.1e of the largest eigenvalue): %s",
            solve,
            float(residual.max()) / scale,
            instead,
        )
        return None
    return values, vectors


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


# -- Spark NLP ------------------------------------------------------------------------------------

#: Spark NLP annotators giving one vector per text (input: the document), by simple class name.
_SENTENCE_HINTS = ("Sentence", "UniversalSentenceEncoder", "Doc2Vec")
_SENTENCE_CLASSES = frozenset(
    {"E5Embeddings", "InstructorEmbeddings", "MPNetEmbeddings", "BGEEmbeddings", "UAEEmbeddings"}
)
EmbeddingKind = Literal["word", "sentence"]


def _embedding_kind(class_name: str) -> EmbeddingKind:
    simple = class_name.rsplit(".", 1)[-1]
    if simple in _SENTENCE_CLASSES or any(hint in simple for hint in _SENTENCE_HINTS):
        return "sentence"
    return "word"


def sparknlp_available(spark: SparkSession | None = None) -> str | None:
    """None when Spark NLP can run here, else why not.

    Checks the ``sparknlp`` Python package first (no JVM needed), then that the Spark NLP jar
    is on the classpath of `spark` (else of the running session, else of one started for the
    check and stopped after it).
    """
    if importlib.util.find_spec("sparknlp") is None:
        return "python package spark-nlp is not installed"
    handle = _SessionHandle(spark, None, None)
    try:
        session = handle.get()
        return _jar_missing(session)
    except EmbeddingError as exc:
        return str(exc)
    finally:
        handle.release()


def _jar_missing(session: SparkSession) -> str | None:
    jvm = getattr(session, "_jvm", None) or getattr(session.sparkContext, "_jvm", None)
    if jvm is None:
        return "this Spark session has no local JVM (Spark Connect?): Spark NLP cannot be loaded"
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(SPARKNLP_CHECK_CLASS, False, loader)
    except Exception:
        return f"the Spark NLP jar is not on the classpath ({SPARKNLP_CHECK_CLASS} not found)"
    return None


def _resource(path: str | os.PathLike[str]) -> tuple[str, str | None, dict[str, Any]]:
    """(class name, first storageRef, paramMap) of an installed embeddings resource."""
    from nlphub.uploads.sparknlp import ResourceProblem, validate_resource

    root = Path(path)
    if not root.is_dir():
        raise EmbeddingError(f"{root} is not an installed resource folder")
    try:
        info = validate_resource(root, kind="embeddings", require_labels=False)
    except ResourceProblem as exc:
        raise EmbeddingError(
            f"{root} is not a usable Spark NLP embeddings resource: {exc}"
        ) from None
    ref = info.storage_refs[0] if info.storage_refs else None
    return info.class_name, ref, dict(info.param_map)


def sparknlp_pipeline(
    spark: SparkSession,
    *,
    embeddings_path: str,
    kind: EmbeddingKind,
    storage_ref: str | None = None,
) -> PipelineModel:
    """DocumentAssembler → Tokenizer (word kind) → the embeddings at `embeddings_path` →
    EmbeddingsFinisher, fitted (nothing to learn) on an empty frame.

    Input column ``text``; output ``finished_embeddings``: one vector per token (``word``) or
    per document (``sentence``). The annotator is the one the resource's metadata names
    (``WordEmbeddingsModel``, ``BertSentenceEmbeddings``, ``UniversalSentenceEncoder``, ...),
    else ``WordEmbeddingsModel`` / ``BertSentenceEmbeddings`` by `kind`. `storage_ref`
    overrides the name later annotators look the embeddings up by.
    """
    from pyspark.ml import Pipeline

    if kind not in ("word", "sentence"):
        raise EmbeddingError(f"kind must be 'word' or 'sentence', not {kind!r}")
    try:
        base = importlib.import_module("sparknlp.base")
        annotator = importlib.import_module("sparknlp.annotator")
    except ImportError as exc:
        raise EmbeddingError(f"Spark NLP cannot be used: {exc}") from None
    class_name = _read_class_name(embeddings_path)
    simple = class_name.rsplit(".", 1)[-1] if class_name else ""
    loader = getattr(annotator, simple, None) if simple else None
    if loader is None:
        loader = getattr(
            annotator, "WordEmbeddingsModel" if kind == "word" else "BertSentenceEmbeddings"
        )
    document = base.DocumentAssembler().setInputCol("text").setOutputCol("document")
    stages: list[Any] = [document]
    if kind == "word":
        stages.append(annotator.Tokenizer().setInputCols(["document"]).setOutputCol("token"))
        inputs = ["document", "token"]
    else:
        inputs = ["document"]
    embeddings = loader.load(str(embeddings_path)).setInputCols(inputs).setOutputCol("embeddings")
    if storage_ref:
        if not hasattr(embeddings, "setStorageRef"):
            raise EmbeddingError(f"{simple or loader.__name__} has no storageRef to set")
        embeddings = embeddings.setStorageRef(storage_ref)
    stages.append(embeddings)
    stages.append(
        base.EmbeddingsFinisher()
        .setInputCols(["embeddings"])
        .setOutputCols(["finished_embeddings"])
        .setOutputAsVector(True)
        .setCleanAnnotations(False)
    )
    empty = spark.createDataFrame([("",)], "text string")
    return Pipeline(stages=stages).fit(empty)


def _read_class_name(path: str | os.PathLike[str]) -> str | None:
    """The ``class`` in a Spark ML folder's metadata JSON, None when unreadable."""
    meta_dir = Path(path) / "metadata"
    try:
        part = next(p for p in sorted(meta_dir.iterdir()) if p.name.startswith("part-"))
        value = json.loads(part.read_text(encoding="utf-8")).get("class")
    except (OSError, StopIteration, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _pool(rows: Sequence[Sequence[Any]], kind: EmbeddingKind, dimension: int | None) -> Vectors:
    """One float32 row per text from Spark NLP's per-annotation vectors: the mean of the token
    vectors (word), the first vector (sentence); zeros for a text with none."""
    width = dimension
    if width is None:
        width = next((len(v) for vectors in rows for v in vectors), 0)
    out = np.zeros((len(rows), width), dtype=np.float32)
    for i, vectors in enumerate(rows):
        if not vectors:
            continue
        matrix = np.asarray([np.asarray(v, dtype=np.float64) for v in vectors])
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise EmbeddingError(
                f"Spark NLP returned vectors of shape {matrix.shape} for text #{i}"
            )
        out[i] = matrix.mean(axis=0) if kind == "word" else matrix[0]
    return out


class SparkNLPEncoder:
    """Pre-trained Spark NLP word or sentence embeddings installed by nlphub (`install_path`).

    Word embeddings are averaged over a text's tokens. Refuses (EmbeddingError, with the reason
    of `sparknlp_available`) when Spark NLP cannot run here.
    """

    platform = "spark"
    requires_fit = False
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"master", "spark", "conf", "kind", "storage_ref"}
    )

    def __init__(
        self,
        install_path: str | os.PathLike[str],
        *,
        master: str | None = None,
        spark: SparkSession | None = None,
        conf: Mapping[str, str] | None = None,
        kind: EmbeddingKind | None = None,
        storage_ref: str | None = None,
    ) -> None:
        self.install_path = Path(install_path)
        self.model = f"sparknlp:{install_path}"
        self.name = f"spark:{self.model}"
        if kind is not None and kind not in ("word", "sentence"):
            raise EmbeddingError(f"kind must be 'word' or 'sentence', not {kind!r}")
        if importlib.util.find_spec("sparknlp") is None:  # no JVM needed to know that
            raise EmbeddingError(
                f"{self.name} cannot run: python package spark-nlp is not installed"
            )
        self._session = _SessionHandle(spark, master, conf)
        try:
            session = self._session.get()
            reason = _jar_missing(session)
            if reason is not None:
                raise EmbeddingError(f"{self.name} cannot run: {reason}")
            class_name, ref, params = _resource(self.install_path)
            self.kind: EmbeddingKind = kind or _embedding_kind(class_name)
            self.storage_ref = storage_ref or ref
            dim = params.get("dimension")
            self._dimension = int(dim) if isinstance(dim, int) and dim > 0 else None
            self._pipeline: PipelineModel | None = sparknlp_pipeline(
                session,
                embeddings_path=str(self.install_path),
                kind=self.kind,
                storage_ref=storage_ref,
            )
        except BaseException:
            self._session.release()
            raise

    def __repr__(self) -> str:
        return f"SparkNLPEncoder({str(self.install_path)!r}, kind={self.kind!r})"

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def fit(self, texts: Iterable[str]) -> None:
        return None

    def encode(self, texts: Sequence[str]) -> Vectors:
        from nlphub.embeddings.platforms import _check_texts

        items = _check_texts(texts)
        if self._pipeline is None:
            raise EmbeddingError(f"{self.name} is closed")
        if not items:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        frame = self._session.get().createDataFrame(
            list(enumerate(items)), f"{_INDEX} long, text string"
        )
        rows = self._pipeline.transform(frame).select(_INDEX, "finished_embeddings").collect()
        ordered: list[Sequence[Any]] = [[] for _ in items]
        for index, vectors in rows:
            ordered[int(index)] = [v.toArray() for v in (vectors or [])]
        out = _pool(ordered, self.kind, self._dimension)
        if self._dimension is None and out.shape[1]:
            self._dimension = int(out.shape[1])
        return out

    def close(self) -> None:
        self._pipeline = None
        self._session.release()


# -- the factory ----------------------------------------------------------------------------------


def make_spark_encoder(model: str, **options: Any) -> Encoder:
    """`SparkEncoder` for ``tfidf``/``count``/``tfidf:<n>``/``count:<n>``, `SparkNLPEncoder` for
    ``sparknlp:<install path>``; unknown options are refused."""
    text = model.strip()
    if text.lower().startswith("sparknlp:"):
        cls: Any = SparkNLPEncoder
        target = text[len("sparknlp:") :]
        if not target:
            raise EmbeddingError("'sparknlp:' needs the install path of an embeddings resource")
    else:
        cls = SparkEncoder
        target = text
    unknown = sorted(set(options) - cls.OPTIONS)
    if unknown:
        raise EmbeddingError(
            f"unknown option(s) for spark ({cls.__name__}): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(cls.OPTIONS))}"
        )
    encoder: Encoder = cls(target, **options)
    return encoder

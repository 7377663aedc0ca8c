"""The Spark ML feature stages behind the ``spark`` platform's models, and their columns.

``RegexTokenizer`` → optional ``StopWordsRemover`` → ``CountVectorizer`` (a vocabulary of the
`max_features` most frequent terms) or ``HashingTF`` (``:<numFeatures>``: no vocabulary, any
corpus size) → ``IDF`` (tf-idf only, rows then l2-normalised like the ``bow`` platform).

Tokens: ``(?U)\\b\\w\\w+\\b`` on lower-cased text, the same tokens as scikit-learn's default
(the ``bow`` platform). Spark's idf is ``log((n + 1) / (df + 1))`` (scikit-learn adds 1 to it),
so tf-idf weights differ from ``bow``'s while the vocabulary and counts are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from nlphub.embeddings.platforms.base import EmbeddingError
from nlphub.embeddings.spark.session import _spark_error

if TYPE_CHECKING:
    from pyspark.ml import Transformer
    from pyspark.sql import DataFrame

__all__ = ["MAX_DENSE_FEATURES", "TOKEN_PATTERN"]

#: scikit-learn's default token pattern; ``(?U)`` makes Java's ``\\w`` and ``\\b`` Unicode-aware.
TOKEN_PATTERN = r"(?U)\b\w\w+\b"
#: Longest rows `SparkEncoder.encode` returns densely (``tfidf:<numFeatures>``).
MAX_DENSE_FEATURES = 1 << 16

#: The temporary columns nlphub adds to a DataFrame (all start with `_PREFIX`).
_PREFIX = "__nlphub_"
_TEXT, _TOKENS, _WORDS, _TF, _TFIDF, _FEATURES = (
    f"{_PREFIX}{name}" for name in ("text", "tokens", "words", "tf", "tfidf", "features")
)
_PROJECTED, _PCA, _INDEX = f"{_PREFIX}projected", f"{_PREFIX}pca", f"{_PREFIX}index"
_AUGMENTED = f"{_PREFIX}augmented"


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
            f"'count:<numFeatures>' (or 'sparknlp:<installed resource>'), not {model!r}"
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

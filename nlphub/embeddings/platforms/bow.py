"""The ``bow`` platform: bag-of-words (``model="count"``) or tf-idf (``model="tfidf"``) with
scikit-learn.

Corpus-fitted, so the caller streams the corpus through `Encoder.fit` first. The fitted
vocabulary is kept as bytes (`BowEncoder.to_bytes`) so new records embed the same way later.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from nlphub.embeddings.platforms.base import EmbeddingError, Vectors, check_texts, empty_vectors


class BowEncoder:
    """Bag-of-words counts or tf-idf (l2-normalised) over a vocabulary fitted on the corpus.

    `fit` keeps the `max_features` most frequent terms; scikit-learn builds the sparse
    document-term matrix of the corpus once while fitting. `encode` returns dense float32 rows.
    """

    platform = "bow"
    requires_fit = True
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"max_features", "ngram_range", "lowercase", "min_df", "state"}
    )

    def __init__(
        self,
        model: str = "tfidf",
        *,
        max_features: int = 4096,
        ngram_range: tuple[int, int] | list[int] = (1, 1),
        lowercase: bool = True,
        min_df: int = 1,
        state: bytes | None = None,
    ) -> None:
        kind = model.strip().lower()
        if kind in {"bag-of-words", "bow", "countvectorizer"}:
            kind = "count"
        if kind in {"tf-idf", "tfidfvectorizer"}:
            kind = "tfidf"
        if kind not in {"count", "tfidf"}:
            raise EmbeddingError(f"bow model must be 'count' or 'tfidf', not {model!r}")
        if max_features < 1:
            raise EmbeddingError("max_features must be at least 1")
        low, high = (int(n) for n in ngram_range)
        if not 1 <= low <= high:
            raise EmbeddingError(
                f"ngram_range must be (min, max) with 1 <= min <= max: {ngram_range}"
            )
        self.model = kind
        self.name = f"bow:{kind}"
        self.max_features = max_features
        self.ngram_range = (low, high)
        self.lowercase = lowercase
        self.min_df = min_df
        self._terms: list[str] | None = None
        self._idf: npt.NDArray[np.float64] | None = None
        self._vectorizer: Any = None
        if state is not None:
            self._load(state)

    def __repr__(self) -> str:
        return f"BowEncoder({self.model!r}, dimension={self.dimension})"

    @property
    def dimension(self) -> int | None:
        return None if self._terms is None else len(self._terms)

    @property
    def vocabulary(self) -> list[str]:
        return list(self._terms or [])

    def _analyzer_params(self) -> dict[str, Any]:
        return {"ngram_range": self.ngram_range, "lowercase": self.lowercase}

    def fit(self, texts: Iterable[str]) -> None:
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

        cls = TfidfVectorizer if self.model == "tfidf" else CountVectorizer
        vectorizer = cls(
            max_features=self.max_features,
            min_df=self.min_df,
            dtype=np.float64,
            **self._analyzer_params(),
        )

        def checked() -> Iterator[str]:
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise EmbeddingError(f"text #{i} is {type(text).__name__}, not str")
                yield text

        try:
            vectorizer.fit(checked())
        except ValueError as exc:
            if isinstance(exc, EmbeddingError):
                raise
            raise EmbeddingError(f"{self.name} cannot be fitted on these texts: {exc}") from None
        vocabulary: dict[str, int] = vectorizer.vocabulary_
        terms = sorted(vocabulary, key=vocabulary.__getitem__)
        idf = np.asarray(vectorizer.idf_, dtype=np.float64) if self.model == "tfidf" else None
        self._set(terms, idf)

    def _set(self, terms: list[str], idf: npt.NDArray[np.float64] | None) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        if not terms:
            raise EmbeddingError(f"{self.name} has an empty vocabulary")
        if idf is not None and idf.shape != (len(terms),):
            raise EmbeddingError(f"{self.name}: idf has {idf.shape} weights for {len(terms)} terms")
        self._terms = terms
        self._idf = idf
        self._vectorizer = CountVectorizer(
            vocabulary=terms, dtype=np.float64, **self._analyzer_params()
        )

    def encode(self, texts: Sequence[str]) -> Vectors:
        from sklearn.preprocessing import normalize

        items = check_texts(texts)
        if self._vectorizer is None:
            raise EmbeddingError(f"{self.name} must be fitted on the corpus before encoding")
        if not items:
            return empty_vectors(self.dimension)
        counts = self._vectorizer.transform(items).tocsr()
        if self._idf is not None:
            # What TfidfTransformer.transform does: idf weights, then l2 rows.
            counts.data *= self._idf[counts.indices]
            counts = normalize(counts, norm="l2", copy=False)
        return np.ascontiguousarray(counts.toarray(), dtype=np.float32)

    def to_bytes(self) -> bytes:
        """The fitted vocabulary (and idf weights) as an ``.npz`` archive, no pickle."""
        if self._terms is None:
            raise EmbeddingError(f"{self.name} is not fitted: nothing to store")
        meta = {
            "format": 1,
            "model": self.model,
            "ngram_range": list(self.ngram_range),
            "lowercase": self.lowercase,
            "max_features": self.max_features,
            "min_df": self.min_df,
        }
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            meta=np.array(json.dumps(meta)),
            terms=np.array(self._terms, dtype=np.str_),
            idf=self._idf if self._idf is not None else np.zeros(0, dtype=np.float64),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> BowEncoder:
        meta, _, _ = _read_bow_state(data)
        encoder = cls(
            meta["model"],
            max_features=int(meta["max_features"]),
            ngram_range=tuple(meta["ngram_range"]),
            lowercase=bool(meta["lowercase"]),
            min_df=int(meta["min_df"]),
        )
        encoder._load(data)
        return encoder

    def _load(self, data: bytes) -> None:
        meta, terms, idf = _read_bow_state(data)
        if meta["model"] != self.model:
            raise EmbeddingError(f"stored bow state is {meta['model']!r}, not {self.model!r}")
        self.ngram_range = (int(meta["ngram_range"][0]), int(meta["ngram_range"][1]))
        self.lowercase = bool(meta["lowercase"])
        self._set(terms, idf if self.model == "tfidf" else None)

    def close(self) -> None:
        return None


def _read_bow_state(data: bytes) -> tuple[dict[str, Any], list[str], npt.NDArray[np.float64]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"].item()))
            terms = [str(t) for t in archive["terms"].tolist()]
            idf = np.asarray(archive["idf"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddingError(f"stored bow state is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != 1:
        raise EmbeddingError("stored bow state has an unknown format")
    return meta, terms, idf

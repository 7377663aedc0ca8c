# mypy: disable-error-code="attr-defined,arg-type,unused-ignore"
"""`SparkEncoder`: model strings and the factory, encoding against scikit-learn, fitted state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from nlphub.embeddings.platforms.base import EmbeddingError, Encoder
from nlphub.embeddings.spark import features
from nlphub.embeddings.spark.encoder import SparkEncoder
from nlphub.embeddings.spark.sparknlp import make_spark_encoder
from tests.unit.nlphub.embeddings.spark.common import CORPUS, gram, unit_rows

pytestmark = pytest.mark.slow


# -- model strings and the factory (no Spark job) -------------------------------------------------


def test_model_strings_and_factory() -> None:
    assert SparkEncoder("TF-IDF").model == "tfidf"
    assert SparkEncoder("count").name == "spark:count"
    hashed = SparkEncoder("tfidf:1024")
    assert (hashed.model, hashed.hashed, hashed.dimension) == ("tfidf:1024", True, None)
    encoder = make_spark_encoder("count:64", max_features=10)
    assert isinstance(encoder, SparkEncoder) and isinstance(encoder, Encoder)
    assert (encoder.platform, encoder.requires_fit, encoder.model) == ("spark", True, "count:64")
    for bad in ("word2vec", "tfidf:x", "tfidf:0", f"tfidf:{features.MAX_DENSE_FEATURES + 1}"):
        with pytest.raises(EmbeddingError):
            SparkEncoder(bad)
    with pytest.raises(EmbeddingError, match=r"unknown option.*api_key"):
        make_spark_encoder("tfidf", api_key="x")
    with pytest.raises(EmbeddingError, match=r"unknown option.*max_features"):
        make_spark_encoder("sparknlp:/nowhere", max_features=3)
    with pytest.raises(EmbeddingError, match="name or id of an installed embeddings"):
        make_spark_encoder("sparknlp:")
    with pytest.raises(EmbeddingError, match="max_features"):
        SparkEncoder("tfidf", max_features=0)


# -- SparkEncoder ---------------------------------------------------------------------------------


def test_encode_shapes_dtype_and_norms(tfidf: SparkEncoder) -> None:
    vectors = tfidf.encode(CORPUS)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(CORPUS), tfidf.dimension)
    assert tfidf.dimension == len(tfidf.vocabulary or [])
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms[:-1], 1.0, rtol=1e-5)  # tf-idf rows are l2-normalised
    assert norms[-1] == 0.0  # the empty text
    assert tfidf.encode([]).shape == (0, tfidf.dimension)
    with pytest.raises(EmbeddingError, match="not a single string"):
        tfidf.encode("a text")  # type: ignore[arg-type]


def test_unfitted_and_unfittable(spark: Any) -> None:
    encoder = SparkEncoder("tfidf", spark=spark)
    assert encoder.dimension is None
    with pytest.raises(EmbeddingError, match="must be fitted"):
        encoder.encode(["x"])
    with pytest.raises(EmbeddingError, match="not fitted"):
        encoder.to_bytes()
    with pytest.raises(EmbeddingError, match="no texts"):
        encoder.fit([])
    with pytest.raises(EmbeddingError, match="not str"):
        encoder.fit(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(EmbeddingError, match="empty vocabulary"):
        encoder.fit(["", "! ?", "a"])  # no token of two or more word characters


def test_counts_equal_sklearn_on_the_same_tokens(counts: SparkEncoder) -> None:
    sk = CountVectorizer().fit(CORPUS)  # the default token pattern, lower-cased
    vocabulary = counts.vocabulary or []
    assert set(vocabulary) == set(sk.vocabulary_)  # café, naïve, école, 2024 included
    expected = sk.transform(CORPUS).toarray()[:, [sk.vocabulary_[t] for t in vocabulary]]
    np.testing.assert_array_equal(counts.encode(CORPUS), expected.astype(np.float32))


def test_tfidf_is_spark_idf_on_sklearn_counts_and_ranks_like_sklearn(
    tfidf: SparkEncoder,
) -> None:
    sk = CountVectorizer().fit(CORPUS)
    vocabulary = tfidf.vocabulary or []
    tf = sk.transform(CORPUS).toarray()[:, [sk.vocabulary_[t] for t in vocabulary]]
    df = (tf > 0).sum(axis=0)
    idf = np.log((len(CORPUS) + 1) / (df + 1))  # Spark's formula
    np.testing.assert_allclose(tfidf.idf, idf, rtol=1e-12)
    expected = unit_rows(tf * idf)
    vectors = tfidf.encode(CORPUS)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    # Nearest neighbours agree with scikit-learn's tf-idf (its idf adds 1) on the topical texts.
    topical = slice(0, 6)
    ours = gram(vectors[topical])
    theirs = gram(TfidfVectorizer().fit_transform(CORPUS).toarray()[topical])
    np.fill_diagonal(ours, -1)
    np.fill_diagonal(theirs, -1)
    assert ours.argmax(axis=1).tolist() == theirs.argmax(axis=1).tolist()
    assert ours.argmax(axis=1).tolist() == [4, 0, 3, 5, 0, 3]


def test_deterministic_and_independent_of_batching(spark: Any, tfidf: SparkEncoder) -> None:
    full = tfidf.encode(CORPUS)
    np.testing.assert_array_equal(tfidf.encode(CORPUS), full)
    np.testing.assert_array_equal(tfidf.encode(CORPUS[::-1]), full[::-1])
    np.testing.assert_array_equal(tfidf.encode(CORPUS[2:4]), full[2:4])
    frame = spark.createDataFrame([(i, t) for i, t in enumerate(CORPUS)], "id long, text string")
    rows = tfidf.transform_dataframe(frame).orderBy("id").collect()
    np.testing.assert_array_equal(np.array([r.vector for r in rows], dtype=np.float32), full)
    again = SparkEncoder("tfidf", spark=spark)
    again.fit(CORPUS)
    assert set(again.vocabulary or []) == set(tfidf.vocabulary or [])
    np.testing.assert_allclose(gram(again.encode(CORPUS)), gram(full), atol=1e-6)


def test_state_round_trip(spark: Any, tfidf: SparkEncoder, counts: SparkEncoder) -> None:
    for fitted in (tfidf, counts):
        restored = SparkEncoder.from_bytes(fitted.to_bytes(), spark=spark)
        assert (restored.model, restored.dimension) == (fitted.model, fitted.dimension)
        assert restored.vocabulary == fitted.vocabulary
        texts = ["the cat and the markets", "unseen words only", *CORPUS[:2]]
        np.testing.assert_array_equal(restored.encode(texts), fitted.encode(texts))
    via_factory = make_spark_encoder("tfidf", spark=spark, state=tfidf.to_bytes())
    assert via_factory.dimension == tfidf.dimension
    with pytest.raises(EmbeddingError, match="unreadable"):
        SparkEncoder.from_bytes(b"not an npz")
    with pytest.raises(EmbeddingError, match="stored spark state is 'count'"):
        SparkEncoder("tfidf", state=counts.to_bytes())


def test_hashed_counts_and_stop_words(spark: Any) -> None:
    hashed = SparkEncoder("count:16", spark=spark)
    hashed.fit(CORPUS)
    assert hashed.vocabulary is None and hashed.dimension == 16
    vectors = hashed.encode(CORPUS)
    assert vectors.shape == (len(CORPUS), 16)
    analyzer = CountVectorizer().build_analyzer()
    assert vectors.sum(axis=1).tolist() == [float(len(analyzer(t))) for t in CORPUS]
    filtered = SparkEncoder("count", spark=spark, stop_words="english")
    filtered.fit(CORPUS)
    terms = set(filtered.vocabulary or [])
    assert {"cat", "markets"} <= terms and not {"the", "on", "as"} & terms
    restored = SparkEncoder.from_bytes(filtered.to_bytes(), spark=spark)
    np.testing.assert_array_equal(restored.encode(["the cat"]), filtered.encode(["the cat"]))

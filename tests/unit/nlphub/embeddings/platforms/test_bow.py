"""The bow platform: bag-of-words / tf-idf against scikit-learn, and its stored state."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from nlphub.embeddings import BowEncoder, EmbeddingError, make_encoder
from tests.unit.nlphub.embeddings.platforms.conftest import CORPUS


def test_tfidf_matches_scikit_learn() -> None:
    enc = make_encoder("bow", "tfidf")
    assert enc.requires_fit and enc.dimension is None
    enc.fit(iter(CORPUS))  # a one-pass stream is enough
    vectors = enc.encode(CORPUS)
    expected = TfidfVectorizer(max_features=4096).fit_transform(CORPUS).toarray()
    assert vectors.dtype == np.float32
    assert vectors.shape == expected.shape == (5, enc.dimension)
    np.testing.assert_allclose(vectors, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(vectors, enc.encode(CORPUS))


def test_count_matches_scikit_learn_and_caps_features() -> None:
    enc = make_encoder("bow", "count", max_features=5)
    enc.fit(CORPUS)
    expected = CountVectorizer(max_features=5).fit_transform(CORPUS).toarray()
    assert enc.dimension == 5
    np.testing.assert_array_equal(enc.encode(CORPUS), expected.astype(np.float32))


def test_bow_encodes_unseen_words_as_nothing() -> None:
    enc = make_encoder("bow", "tfidf")
    enc.fit(CORPUS)
    vectors = enc.encode(["cat cat", "zebra quokka"])
    assert vectors[0].max() == pytest.approx(1.0)  # l2-normalised, one known term
    assert not vectors[1].any()


def test_bow_must_be_fitted_first() -> None:
    enc = make_encoder("bow", "count")
    with pytest.raises(EmbeddingError, match="must be fitted on the corpus"):
        enc.encode(["x"])


def test_bow_empty_vocabulary() -> None:
    enc = make_encoder("bow", "tfidf")
    with pytest.raises(EmbeddingError, match="cannot be fitted"):
        enc.fit(["", "  ", "!"])


def test_bow_unknown_model() -> None:
    with pytest.raises(EmbeddingError, match="'count' or 'tfidf'"):
        make_encoder("bow", "word2vec")


@pytest.mark.parametrize("model", ["count", "tfidf"])
def test_bow_state_round_trip(model: str) -> None:
    enc = make_encoder("bow", model)
    enc.fit(CORPUS)
    assert isinstance(enc, BowEncoder)
    data = enc.to_bytes()
    assert b"pickle" not in data
    new = ["The cat chased the markets.", "garden rug"]
    for restored in (BowEncoder.from_bytes(data), make_encoder("bow", model, state=data)):
        assert restored.dimension == enc.dimension
        np.testing.assert_array_equal(restored.encode(new), enc.encode(new))


def test_bow_state_garbage() -> None:
    with pytest.raises(EmbeddingError, match="unreadable"):
        BowEncoder.from_bytes(b"not an npz")

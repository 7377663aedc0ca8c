"""Bag-of-words / tf-idf and Hugging Face (offline, the bundled all-MiniLM-L6-v2) encoders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from nlphub.embeddings import (
    PLATFORMS,
    BowEncoder,
    EmbeddingError,
    Encoder,
    HuggingFaceEncoder,
    bundled_model_path,
    make_encoder,
    models_cache_path,
    resolve_model_path,
)

CORPUS = [
    "The cat sat on the mat.",
    "A dog chased the cat around the garden.",
    "Stock markets fell sharply on Monday.",
    "Investors sold shares as markets tumbled.",
    "The kitten slept on a warm rug.",
]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


# -- the factory ----------------------------------------------------------------------------------


def test_unknown_platform_lists_the_known_ones() -> None:
    with pytest.raises(EmbeddingError) as info:
        make_encoder("word2vec", "x")
    message = str(info.value)
    assert "unknown embedding platform 'word2vec'" in message
    for name in PLATFORMS:
        assert name in message


def test_unknown_option_is_refused() -> None:
    with pytest.raises(EmbeddingError, match=r"unknown option.*colour"):
        make_encoder("bow", "tfidf", colour="blue")


# -- bag-of-words / tf-idf ------------------------------------------------------------------------


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


# -- Hugging Face ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Iterator[Encoder]:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        yield make_encoder("huggingface", "sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    finally:
        mp.undo()


def test_bundled_minilm_is_found() -> None:
    path = bundled_model_path("all-MiniLM-L6-v2")
    assert path is not None and (path / "model.safetensors").is_file()
    assert bundled_model_path("Sentence-Transformers/all-MiniLM-L6-v2") == path
    assert bundled_model_path("bert-base-uncased") is None
    assert resolve_model_path("all-MiniLM-L6-v2") == path


def test_huggingface_matches_bare_sentence_transformers(minilm: Encoder) -> None:
    from sentence_transformers import SentenceTransformer

    path = bundled_model_path("all-MiniLM-L6-v2")
    bare = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    expected = bare.encode(CORPUS)
    vectors = minilm.encode(CORPUS)
    assert vectors.shape == (5, 384) and minilm.dimension == 384
    assert vectors.dtype == np.float32
    assert cosine(vectors, expected).min() >= 0.9999
    np.testing.assert_allclose(minilm.encode(CORPUS), vectors, atol=1e-6)  # deterministic
    assert minilm.encode([]).shape == (0, 384)


def test_huggingface_vectors_mean_something(minilm: Encoder) -> None:
    cat, _, stocks, investors, kitten = minilm.encode(CORPUS)
    assert cosine(cat, kitten) > cosine(cat, stocks) + 0.2
    assert cosine(stocks, investors) > cosine(stocks, kitten) + 0.2


def test_huggingface_small_batches_agree(minilm: Encoder) -> None:
    small = make_encoder("huggingface", "all-MiniLM-L6-v2", device="cpu", batch_size=2)
    assert cosine(small.encode(CORPUS), minilm.encode(CORPUS)).min() >= 0.9999


def test_huggingface_uses_the_shared_models_cache(
    minilm: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = models_cache_path(tmp_path, "acme/mini-model")
    assert folder == tmp_path / "acme__mini-model"
    bundled = bundled_model_path("all-MiniLM-L6-v2")
    assert bundled is not None
    folder.symlink_to(bundled, target_is_directory=True)
    enc = make_encoder("huggingface", "acme/mini-model", cache_dir=tmp_path, device="cpu")
    assert isinstance(enc, HuggingFaceEncoder)
    assert enc.source == str(folder)
    assert cosine(enc.encode(CORPUS[:2]), minilm.encode(CORPUS[:2])).min() >= 0.9999


def test_huggingface_unknown_model_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(EmbeddingError) as info:
        make_encoder("huggingface", "acme/no-such-model", cache_dir=tmp_path, device="cpu")
    assert str(info.value) == (
        "model acme/no-such-model is not in the local models cache "
        "(add it with `nlphub models add acme/no-such-model`)"
    )


@pytest.mark.parametrize("model", ["../outside", "a/b/c", "bad name", "/no/such/folder"])
def test_huggingface_bad_model_names(model: str, tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match=r"not a valid model name|does not exist"):
        make_encoder("huggingface", model, cache_dir=tmp_path, device="cpu", offline=True)


def test_huggingface_default_device_follows_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from nlphub.embeddings import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == "cpu"
    enc = make_encoder("huggingface", "all-MiniLM-L6-v2")
    assert isinstance(enc, HuggingFaceEncoder) and enc.device == "cpu"
    assert enc.batch_size == 32


def test_huggingface_batch_size_follows_the_device() -> None:
    from nlphub.embeddings.platforms import default_batch_size

    assert default_batch_size("cpu") == 32  # sentence-transformers' own default
    assert default_batch_size("cuda") == default_batch_size("cuda:1") == 128
    assert default_batch_size("mps") == 128
    small = make_encoder("huggingface", "all-MiniLM-L6-v2", device="cpu", batch_size=5)
    assert isinstance(small, HuggingFaceEncoder) and small.batch_size == 5
    with pytest.raises(EmbeddingError, match="batch_size must be at least 1"):
        make_encoder("huggingface", "all-MiniLM-L6-v2", device="cpu", batch_size=0)

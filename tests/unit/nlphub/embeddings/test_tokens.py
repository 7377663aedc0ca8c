"""Token offsets and token-level vectors."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlphub.embeddings import (
    EmbeddingError,
    Encoder,
    HuggingFaceEncoder,
    make_encoder,
    token_vectors,
    tokenize_with_offsets,
)


def test_tokenize_example() -> None:
    assert tokenize_with_offsets("Hello, world!  x2") == [
        ("Hello", 0, 5),
        (",", 5, 6),
        ("world", 7, 12),
        ("!", 12, 13),
        ("x2", 15, 17),
    ]
    assert tokenize_with_offsets("") == []
    assert tokenize_with_offsets(" \n\t ") == []


@settings(deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_offsets_point_into_the_text(text: str) -> None:
    tokens = tokenize_with_offsets(text)
    previous_end = 0
    for token, start, end in tokens:
        assert text[start:end] == token
        assert 0 <= previous_end <= start < end  # ordered, non-overlapping, non-empty
        assert not any(ch.isspace() for ch in token)
        assert re.fullmatch(r"\w+|[^\w\s]", token)
        previous_end = end
    # Nothing but whitespace is left between tokens.
    covered = [False] * len(text)
    for _, start, end in tokens:
        covered[start:end] = [True] * (end - start)
    assert all(c or ch.isspace() for ch, c in zip(text, covered, strict=True))


@pytest.fixture(scope="module")
def small_bow() -> Encoder:
    enc = make_encoder("bow", "count")
    enc.fit(["a b , . ab ba aa bb"])
    return enc


@settings(deadline=None)
@given(st.lists(st.text(alphabet="ab ,.", max_size=20), max_size=5))
def test_static_token_vectors_follow_the_offsets(small_bow: Encoder, texts: list[str]) -> None:
    result = token_vectors(small_bow, texts)
    assert len(result) == len(texts)
    for text, tokens in zip(texts, result, strict=True):
        assert [(s, e) for s, e, _ in tokens] == [(s, e) for _, s, e in tokenize_with_offsets(text)]


def test_static_token_vectors_are_per_token_text() -> None:
    enc = make_encoder("bow", "count")
    enc.fit(["the cat sat", "cat dog"])
    (first, second) = token_vectors(enc, ["cat sat", "the cat"])
    assert first[0].vector.dtype == np.float32
    np.testing.assert_array_equal(first[0].vector, second[1].vector)
    assert not np.array_equal(first[0].vector, first[1].vector)


def test_token_vectors_take_a_list() -> None:
    enc = make_encoder("bow", "count")
    with pytest.raises(EmbeddingError, match="not a single string"):
        token_vectors(enc, "a text")


@pytest.fixture(scope="module")
def minilm() -> Iterator[Encoder]:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        yield make_encoder("huggingface", "all-MiniLM-L6-v2", device="cpu")
    finally:
        mp.undo()


def test_contextual_token_vectors_align_with_the_model(minilm: Encoder) -> None:
    assert isinstance(minilm, HuggingFaceEncoder)
    text = "Hello world, you!"
    (tokens,) = token_vectors(minilm, [text])
    assert [(s, e) for s, e, _ in tokens] == [(s, e) for _, s, e in tokenize_with_offsets(text)]
    raw = minilm.st.encode([text], output_value="token_embeddings")[0].numpy()
    # [CLS] hello world , you ! [SEP]: one sub-word per token here.
    for i, (_, _, vector) in enumerate(tokens):
        assert vector.shape == (384,) and vector.dtype == np.float32
        np.testing.assert_allclose(vector, raw[i + 1], atol=1e-5)


def test_contextual_vectors_depend_on_context(minilm: Encoder) -> None:
    a, b = token_vectors(minilm, ["river bank", "bank account"])
    bank_a, bank_b = a[1].vector, b[0].vector
    cos = float(bank_a @ bank_b / np.linalg.norm(bank_a) / np.linalg.norm(bank_b))
    assert cos < 0.99


def test_words_split_into_sub_words_get_their_mean(minilm: Encoder) -> None:
    assert isinstance(minilm, HuggingFaceEncoder)
    text = "unbelievably"
    (tokens,) = token_vectors(minilm, [text])
    raw = minilm.st.encode([text], output_value="token_embeddings")[0].numpy()
    assert raw.shape[0] > 3  # [CLS] + several pieces + [SEP]
    np.testing.assert_allclose(tokens[0].vector, raw[1:-1].mean(axis=0), atol=1e-5)


def test_long_texts_are_windowed_not_truncated(minilm: Encoder) -> None:
    text = " ".join(f"word{i % 7} is here." for i in range(300))  # well over 256 sub-words
    empty, long = token_vectors(minilm, ["", text], batch_size=4)
    assert empty == []
    expected = tokenize_with_offsets(text)
    assert [(s, e) for s, e, _ in long] == [(s, e) for _, s, e in expected]
    assert all(np.isfinite(v.vector).all() and v.vector.any() for v in long)


def test_tokens_the_tokenizer_drops_have_no_vector(minilm: Encoder) -> None:
    (tokens,) = token_vectors(minilm, ["a \x00 b"])
    assert [(s, e) for s, e, _ in tokens] == [(0, 1), (4, 5)]

"""`make_encoder`: platform names and options it refuses."""

from __future__ import annotations

import pytest

from nlphub.embeddings import PLATFORMS, EmbeddingError, make_encoder


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

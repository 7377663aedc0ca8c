"""The encoders' shared interface: errors, input checks, empty results."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from nlphub.embeddings.platforms.base import (
    EmbeddingError,
    TemporaryEmbeddingError,
    check_texts,
    empty_vectors,
)
from nlphub.errors import NlphubError


def test_error_types() -> None:
    assert issubclass(EmbeddingError, ValueError)
    assert issubclass(EmbeddingError, NlphubError)
    assert not issubclass(TemporaryEmbeddingError, EmbeddingError)
    err = pickle.loads(pickle.dumps(TemporaryEmbeddingError("busy", retry_after=2.5)))
    assert isinstance(err, TemporaryEmbeddingError)
    assert (str(err), err.retry_after) == ("busy", 2.5)


def test_check_texts_and_empty_vectors() -> None:
    assert check_texts(("a", "b")) == ["a", "b"]
    with pytest.raises(EmbeddingError, match="not a single string"):
        check_texts("ab")
    with pytest.raises(EmbeddingError, match="text #1 is int, not str"):
        check_texts(["a", 1])  # type: ignore[list-item]
    assert empty_vectors(None).shape == (0, 0)
    assert empty_vectors(8).shape == (0, 8) and empty_vectors(8).dtype == np.float32

"""The cohere platform's wire format, against the local fake API (conftest)."""

from __future__ import annotations

import numpy as np
import pytest

from nlphub.embeddings import EmbeddingError, make_encoder
from tests.unit.nlphub.embeddings.platforms.conftest import DIM, KEY, FakeAPI, fake_vector


def test_cohere_wire_format_and_batches_of_96(api: FakeAPI) -> None:
    enc = make_encoder("cohere", "embed-english-v3.0", api_key=KEY, base_url=f"{api.url}/v1")
    texts = [f"text {i}" for i in range(200)]
    vectors = enc.encode(texts)
    assert vectors.shape == (200, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[199], np.asarray(fake_vector("text 199"), np.float32))
    assert [len(s.body["texts"]) for s in api.seen] == [96, 96, 8]
    first = api.seen[0]
    assert first.path == "/v1/embed"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body["model"] == "embed-english-v3.0"
    assert first.body["input_type"] == "search_document"


def test_cohere_batch_size_cannot_exceed_96() -> None:
    with pytest.raises(EmbeddingError, match=r"batch_size must be 1\.\.96"):
        make_encoder("cohere", "m", api_key=KEY, batch_size=97)


def test_400_shows_the_cohere_message(api: FakeAPI) -> None:
    api.script.append((400, {}, {"message": "invalid request: model 'nope' not found"}))
    enc = make_encoder("cohere", "nope", api_key=KEY, base_url=f"{api.url}/v1")
    with pytest.raises(EmbeddingError, match="HTTP 400: invalid request: model 'nope' not found"):
        enc.encode(["x"])
    assert len(api.seen) == 1

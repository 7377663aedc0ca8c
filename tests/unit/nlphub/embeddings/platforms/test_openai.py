"""The openai and azure platforms' wire formats, against the local fake API (conftest)."""

from __future__ import annotations

import numpy as np
import pytest

from nlphub.embeddings import EmbeddingError, make_encoder
from tests.unit.nlphub.embeddings.platforms.conftest import DIM, KEY, TEXTS, FakeAPI, fake_vector


def test_openai_end_to_end(api: FakeAPI) -> None:
    enc = make_encoder("openai", "text-embedding-3-small", api_key=KEY, base_url=f"{api.url}/v1")
    try:
        vectors = enc.encode(TEXTS)
        again = enc.encode(TEXTS)
    finally:
        enc.close()
    assert vectors.shape == (5, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, np.asarray([fake_vector(t) for t in TEXTS], np.float32))
    np.testing.assert_array_equal(vectors, again)
    assert enc.dimension == DIM
    assert len(api.seen) == 2
    first = api.seen[0]
    assert first.path == "/v1/embeddings"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body == {"model": "text-embedding-3-small", "input": TEXTS}


def test_openai_batches_at_most_2048_inputs(api: FakeAPI) -> None:
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1")
    texts = [f"t{i}" for i in range(2049)]
    vectors = enc.encode(texts)
    assert vectors.shape == (2049, DIM)
    assert [len(s.body["input"]) for s in api.seen] == [2048, 1]
    np.testing.assert_array_equal(vectors[2048], np.asarray(fake_vector("t2048"), np.float32))


def test_openai_batch_size_option_and_empty_texts(api: FakeAPI) -> None:
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1", batch_size=2)
    vectors = enc.encode(["a", "", "b", "c", "d"])
    assert vectors.shape == (5, DIM)
    assert [s.body["input"] for s in api.seen] == [["a", " "], ["b", "c"], ["d"]]
    assert enc.encode([]).shape == (0, DIM)
    assert len(api.seen) == 3  # no request for nothing


def test_malformed_answer_is_an_error(api: FakeAPI) -> None:
    api.script.append((200, {}, {"data": [{"index": 0, "embedding": [1.0, 2.0]}]}))
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1")
    with pytest.raises(EmbeddingError, match="without 2 embeddings"):
        enc.encode(["x", "y"])


def test_azure_wire_format(api: FakeAPI) -> None:
    enc = make_encoder("azure", "my-deployment", api_key=KEY, base_url=api.url)
    vectors = enc.encode(TEXTS[:2])
    assert vectors.shape == (2, DIM)
    np.testing.assert_array_equal(vectors[1], np.asarray(fake_vector(TEXTS[1]), np.float32))
    (seen,) = api.seen
    assert seen.path == "/openai/deployments/my-deployment/embeddings"
    assert seen.query == {"api-version": ["2024-02-01"]}
    assert seen.headers["api-key"] == KEY
    assert "authorization" not in seen.headers
    assert seen.body == {"input": TEXTS[:2]}


def test_azure_needs_an_endpoint() -> None:
    with pytest.raises(EmbeddingError, match="azure needs base_url"):
        make_encoder("azure", "my-deployment", api_key=KEY)


def test_azure_401_names_status_and_message(api: FakeAPI) -> None:
    enc = make_encoder("azure", "dep", api_key="0123456789abcdef0123", base_url=api.url)
    with pytest.raises(EmbeddingError, match="azure refused the request: HTTP 401: Access denied"):
        enc.encode(["x"])

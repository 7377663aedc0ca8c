"""PCA reduction: shapes, skipping when there is too little data, storage and streaming."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.decomposition import PCA

from nlphub.embeddings import (
    ATTRIBUTE_BATCH_SIZE,
    ATTRIBUTE_COMPONENTS,
    EmbeddingError,
    Reducer,
    stream_reduce,
    stream_reduce_keyed,
)


def low_rank(rows: int, dim: int = 384, rank: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, dim))
    weights = rng.normal(size=(rows, rank)) * np.linspace(3, 0.1, rank)
    return (weights @ basis + 0.01 * rng.normal(size=(rows, dim))).astype(np.float32)


def test_reduces_to_64_dimensions() -> None:
    data = low_rank(640)
    reducer = Reducer().fit(data)
    assert reducer.reduced and reducer.fitted
    assert (reducer.input_dim, reducer.output_dim) == (384, ATTRIBUTE_COMPONENTS)
    out = reducer.transform(data[:10])
    assert out.shape == (10, 64) and out.dtype == np.float32
    variance = reducer.explained_variance_
    assert variance is not None and np.all(np.diff(variance) <= 0)
    exact = data.astype(np.float64)
    # The exact SVD (components 62-64 have nearly equal variances here: a randomized SVD
    # differs from it there by ~1e-3).
    expected = PCA(n_components=64, svd_solver="full").fit(exact).transform(exact[:10])
    np.testing.assert_allclose(np.abs(out), np.abs(expected), rtol=1e-4, atol=1e-4)


def test_token_level_uses_16_components() -> None:
    reducer = Reducer(16).fit(low_rank(300))
    assert reducer.transform(low_rank(5, seed=1)).shape == (5, 16)


def test_skips_reduction_with_fewer_rows_than_components() -> None:
    data = low_rank(30)
    reducer = Reducer(64).fit(data)
    assert reducer.fitted and not reducer.reduced
    assert reducer.output_dim == 384
    out = reducer.transform(data)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data)


def test_skips_reduction_of_short_vectors() -> None:
    data = np.random.default_rng(0).normal(size=(200, 48))
    reducer = Reducer(64).fit(data)
    assert not reducer.reduced and reducer.output_dim == 48


def test_exactly_as_many_rows_as_components_reduces() -> None:
    reducer = Reducer(64).fit(low_rank(64))
    assert reducer.reduced and reducer.output_dim == 64


def test_bytes_round_trip_projects_identically() -> None:
    reducer = Reducer().fit(low_rank(640))
    data = reducer.to_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert "components.npy" in archive.namelist()
    restored = Reducer.from_bytes(data)
    assert (restored.reduced, restored.input_dim, restored.output_dim) == (True, 384, 64)
    assert restored.n_samples_seen == 640
    later = low_rank(20, seed=5)  # new or edited records
    np.testing.assert_array_equal(restored.transform(later), reducer.transform(later))
    np.testing.assert_array_equal(restored.explained_variance_, reducer.explained_variance_)


def test_identity_round_trip() -> None:
    data = low_rank(10)
    restored = Reducer().from_bytes(Reducer().fit(data).to_bytes())
    assert not restored.reduced and restored.output_dim == 384
    np.testing.assert_array_equal(restored.transform(data), data)


def test_errors() -> None:
    with pytest.raises(EmbeddingError, match="not fitted"):
        Reducer().transform(low_rank(2))
    with pytest.raises(EmbeddingError, match="not fitted"):
        Reducer().to_bytes()
    reducer = Reducer().fit(low_rank(100))
    with pytest.raises(EmbeddingError, match="fitted on 384"):
        reducer.transform(np.zeros((2, 10)))
    with pytest.raises(EmbeddingError, match="2-D"):
        reducer.transform(np.zeros(384))
    with pytest.raises(EmbeddingError, match="NaN"):
        Reducer().fit(np.full((100, 384), np.nan))
    with pytest.raises(EmbeddingError, match="unreadable"):
        Reducer.from_bytes(b"garbage")
    with pytest.raises(EmbeddingError):
        Reducer(0)


def test_constant_vectors_fit_without_warnings() -> None:
    reducer = Reducer(4).fit(np.ones((50, 10)))
    assert reducer.reduced
    np.testing.assert_allclose(reducer.transform(np.ones((3, 10))), 0.0, atol=1e-6)


def test_stream_reduce_fits_on_the_first_batches_then_streams() -> None:
    batches = [low_rank(ATTRIBUTE_BATCH_SIZE, seed=i) for i in range(12)]
    read: list[int] = []

    def source() -> Iterator[np.ndarray]:
        for i, batch in enumerate(batches):
            read.append(i)
            yield batch

    reducer, stream = stream_reduce(source(), n_components=64, fit_batches=5)
    assert read == [0, 1, 2, 3, 4]  # only the fit buffer is held
    assert reducer.reduced and reducer.n_samples_seen == 5 * 128
    first = next(stream)
    assert read == [0, 1, 2, 3, 4]
    rest = list(stream)
    assert read == list(range(12))
    outputs = [first, *rest]
    assert len(outputs) == 12 and all(o.shape == (128, 64) for o in outputs)
    alone = Reducer(64).fit(np.concatenate(batches[:5]))
    for batch, out in zip(batches, outputs, strict=True):
        np.testing.assert_array_equal(out, alone.transform(batch))


def test_stream_reduce_small_corpus_is_not_reduced() -> None:
    reducer, stream = stream_reduce([low_rank(20), low_rank(20, seed=1)], n_components=64)
    outs = list(stream)
    assert not reducer.reduced
    assert [o.shape for o in outs] == [(20, 384), (20, 384)]


def test_stream_reduce_keyed_keeps_keys_in_order() -> None:
    items = [([f"r{i}-{j}" for j in range(50)], low_rank(50, seed=i)) for i in range(4)]
    reducer, stream = stream_reduce_keyed(items, n_components=16, fit_batches=2)
    out = list(stream)
    assert [keys for keys, _ in out] == [keys for keys, _ in items]
    assert reducer.n_samples_seen == 100
    assert all(vectors.shape == (50, 16) for _, vectors in out)


def test_stream_reduce_empty() -> None:
    reducer, stream = stream_reduce(iter([]), n_components=64)
    assert list(stream) == [] and not reducer.fitted


def test_stream_reduce_rejects_mixed_dimensions() -> None:
    with pytest.raises(EmbeddingError, match="different dimensions"):
        stream_reduce([np.zeros((3, 4)), np.zeros((3, 5))], n_components=2)

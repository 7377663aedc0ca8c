"""PCA to a few dimensions, fitted once on the first batches and kept to re-project later.

Refinery's scheme: attribute-level vectors go to 64 dimensions, token-level ones to 16, with a
PCA fitted on the first few batches (about 640 texts) and then applied to the rest as they
stream by. When there are fewer rows to fit on than components (or the vectors are already that
short) there is nothing to reduce: the `Reducer` is the identity and says so (`reduced=False`).

A fitted `Reducer` is stored as an ``.npz`` archive (`to_bytes`; never pickle), so new or edited
records are projected later exactly as the first ones were: a fitted reducer and one read back
from its bytes run the same arithmetic on the same arrays.
"""

from __future__ import annotations

import io
import itertools
import logging
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from nlphub.embeddings.platforms import EmbeddingError, Vectors

log = logging.getLogger(__name__)

#: Refinery's sizes: attribute-level batches of 128 to 64 dimensions, token-level 32 to 16.
ATTRIBUTE_BATCH_SIZE = 128
ATTRIBUTE_COMPONENTS = 64
TOKEN_BATCH_SIZE = 32
TOKEN_COMPONENTS = 16
#: Batches buffered to fit the PCA before streaming.
FIT_BATCHES = 5

_FORMAT = 1
K = TypeVar("K")


def _as_matrix(x: Any, what: str = "vectors") -> npt.NDArray[np.float64]:
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise EmbeddingError(f"{what} are not a numeric matrix") from None
    if array.ndim != 2:
        raise EmbeddingError(f"{what} must be a 2-D matrix (rows x dimensions), not {array.shape}")
    if not np.isfinite(array).all():
        raise EmbeddingError(f"{what} contain NaN or infinity")
    return array


#: Up to this many input dimensions (model outputs), PCA is the exact LAPACK SVD, the same on
#: every machine; wider inputs (bag-of-words) keep "auto" (see docs/decisions.md, PCA solver
#: by input width).
FULL_SVD_MAX_DIM = 1024


def _solver(dim: int) -> str:
    return "full" if dim <= FULL_SVD_MAX_DIM else "auto"


class Reducer:
    """PCA to `n_components` dimensions, or the identity when there is too little to fit on."""

    def __init__(self, n_components: int = ATTRIBUTE_COMPONENTS) -> None:
        if n_components < 1:
            raise EmbeddingError("n_components must be at least 1")
        self.n_components = n_components
        self.input_dim: int | None = None
        self.n_samples_seen = 0
        #: (n_components, input_dim) float32; None when not reduced.
        self.components_: npt.NDArray[np.float32] | None = None
        self.mean_: npt.NDArray[np.float32] | None = None
        self.explained_variance_: npt.NDArray[np.float64] | None = None
        self.explained_variance_ratio_: npt.NDArray[np.float64] | None = None

    def __repr__(self) -> str:
        return (
            f"Reducer(n_components={self.n_components}, input_dim={self.input_dim}, "
            f"reduced={self.reduced})"
        )

    @property
    def fitted(self) -> bool:
        return self.input_dim is not None

    @property
    def reduced(self) -> bool:
        """False when fitted as the identity (fewer rows than components, or short vectors)."""
        return self.components_ is not None

    @property
    def output_dim(self) -> int | None:
        if not self.fitted:
            return None
        return self.n_components if self.reduced else self.input_dim

    def fit(self, x: Any) -> Reducer:
        """Fit on the first batches (rows x dimensions); returns self."""
        from sklearn.decomposition import PCA

        data = _as_matrix(x)
        rows, dim = data.shape
        self.input_dim = dim
        self.n_samples_seen = rows
        self.components_ = self.mean_ = None
        self.explained_variance_ = self.explained_variance_ratio_ = None
        if rows < self.n_components or dim <= self.n_components:
            log.info(
                "not reducing: %d rows of %d dimensions for %d components",
                rows,
                dim,
                self.n_components,
            )
            return self
        pca = PCA(n_components=self.n_components, svd_solver=_solver(dim), random_state=0)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            # Degenerate data (all rows equal) has zero variance; the ratios are then NaN.
            warnings.simplefilter("ignore", RuntimeWarning)
            pca.fit(data)
        self.components_ = np.ascontiguousarray(pca.components_, dtype=np.float32)
        self.mean_ = np.ascontiguousarray(pca.mean_, dtype=np.float32)
        self.explained_variance_ = np.asarray(pca.explained_variance_, dtype=np.float64)
        self.explained_variance_ratio_ = np.nan_to_num(
            np.asarray(pca.explained_variance_ratio_, dtype=np.float64)
        )
        return self

    def transform(self, x: Any) -> Vectors:
        """Project rows (rows x input_dim) to float32 rows x output_dim."""
        if self.input_dim is None:
            raise EmbeddingError("the reducer is not fitted")
        data = _as_matrix(x)
        if data.shape[1] != self.input_dim:
            raise EmbeddingError(
                f"vectors have {data.shape[1]} dimensions; the reducer was fitted on "
                f"{self.input_dim}"
            )
        if self.components_ is None or self.mean_ is None:
            return np.ascontiguousarray(data, dtype=np.float32)
        centred = data - self.mean_.astype(np.float64)
        projected = centred @ self.components_.astype(np.float64).T
        return np.ascontiguousarray(projected, dtype=np.float32)

    def fit_transform(self, x: Any) -> Vectors:
        return self.fit(x).transform(x)

    def to_bytes(self) -> bytes:
        """An ``.npz`` archive of components_, mean_ and explained_variance_ (no pickle)."""
        if self.input_dim is None:
            raise EmbeddingError("the reducer is not fitted: nothing to store")
        empty = np.zeros(0, dtype=np.float32)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            format=np.array(_FORMAT),
            n_components=np.array(self.n_components),
            input_dim=np.array(self.input_dim),
            n_samples_seen=np.array(self.n_samples_seen),
            reduced=np.array(self.reduced),
            components=self.components_ if self.components_ is not None else empty,
            mean=self.mean_ if self.mean_ is not None else empty,
            explained_variance=(
                self.explained_variance_ if self.explained_variance_ is not None else empty
            ),
            explained_variance_ratio=(
                self.explained_variance_ratio_
                if self.explained_variance_ratio_ is not None
                else empty
            ),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Reducer:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                if int(archive["format"]) != _FORMAT:
                    raise EmbeddingError(f"stored reducer has format {int(archive['format'])}")
                reducer = cls(int(archive["n_components"]))
                reducer.input_dim = int(archive["input_dim"])
                reducer.n_samples_seen = int(archive["n_samples_seen"])
                if bool(archive["reduced"]):
                    components = np.asarray(archive["components"], dtype=np.float32)
                    mean = np.asarray(archive["mean"], dtype=np.float32)
                    shape = (reducer.n_components, reducer.input_dim)
                    if components.shape != shape or mean.shape != (reducer.input_dim,):
                        raise EmbeddingError("stored reducer has arrays of the wrong shape")
                    reducer.components_ = np.ascontiguousarray(components)
                    reducer.mean_ = np.ascontiguousarray(mean)
                    reducer.explained_variance_ = np.asarray(
                        archive["explained_variance"], dtype=np.float64
                    )
                    reducer.explained_variance_ratio_ = np.asarray(
                        archive["explained_variance_ratio"], dtype=np.float64
                    )
        except EmbeddingError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"stored reducer is unreadable: {exc}") from None
        return reducer


def stream_reduce_keyed(
    items: Iterable[tuple[K, Any]],
    *,
    n_components: int,
    fit_batches: int = FIT_BATCHES,
) -> tuple[Reducer, Iterator[tuple[K, Vectors]]]:
    """Like `stream_reduce`, for (key, batch) pairs: keys (e.g. record ids) ride along."""
    if fit_batches < 1:
        raise EmbeddingError("fit_batches must be at least 1")
    source = iter(items)
    buffered = list(itertools.islice(source, fit_batches))
    reducer = Reducer(n_components)
    if buffered:
        matrices = [_as_matrix(batch) for _, batch in buffered]
        if len({m.shape[1] for m in matrices}) > 1:
            raise EmbeddingError("batches have different dimensions")
        reducer.fit(np.concatenate(matrices))
        del matrices

    def stream() -> Iterator[tuple[K, Vectors]]:
        pending = buffered
        while pending:
            key, batch = pending.pop(0)  # let the fit buffer go as it is sent on
            yield key, reducer.transform(batch)
        for key, batch in source:
            yield key, reducer.transform(batch)

    return reducer, stream()


def stream_reduce(
    batches: Iterable[Any],
    *,
    n_components: int,
    fit_batches: int = FIT_BATCHES,
) -> tuple[Reducer, Iterator[Vectors]]:
    """Fit a `Reducer` on the first `fit_batches` batches, then reduce every batch in order.

    The first batches are read (and held) now to fit; the rest are read one at a time as the
    returned iterator is consumed, so memory stays at the fit buffer plus one batch. An empty
    input gives an unfitted reducer and an empty iterator.
    """
    reducer, stream = stream_reduce_keyed(
        ((None, batch) for batch in batches), n_components=n_components, fit_batches=fit_batches
    )
    return reducer, (vectors for _, vectors in stream)

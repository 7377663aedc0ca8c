"""The top eigenpairs of a covariance on the driver, for Spark's PCA (numpy and scipy only).

`_top_components` takes the first accurate enough of: a block Krylov solve in float32, LAPACK
``syevx`` on a subset in float32, ``syevx`` in float64. The float32 solves are refined in
float64 and checked by their residuals. Why this order and these thresholds:
docs/decisions.md, "Spark PCA: the driver's eigh".
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "FAST_EIGH_MIN_WIDTH",
    "FAST_EIGH_OVERSAMPLE",
    "FAST_EIGH_TOLERANCE",
    "KRYLOV_BLOCKS",
    "KRYLOV_MIN_WIDTH",
]

log = logging.getLogger(__name__)

#: From this width on, `_top_components` solves in float32 first (see there).
FAST_EIGH_MIN_WIDTH = 1024
#: Extra eigenpairs the float32 solves keep, so the k-th is resolved from its neighbours.
FAST_EIGH_OVERSAMPLE = 16
#: Largest accepted residual ||C v - λ v|| of a component, relative to the largest eigenvalue;
#: above it the next solve runs instead (the vectors are stored as float32: 1e-7).
FAST_EIGH_TOLERANCE = 1e-6
#: From this width on, `_top_components` tries a block Krylov solve first; below it the float32
#: ``syevx`` is as fast (docs/decisions.md, "Spark PCA: the driver's eigh").
KRYLOV_MIN_WIDTH = 2560
#: Blocks of the Krylov basis (k + FAST_EIGH_OVERSAMPLE columns each): enough for tf-idf
#: covariances to pass FAST_EIGH_TOLERANCE (docs/decisions.md, "Spark PCA: Krylov blocks").
KRYLOV_BLOCKS = 10


def _top_components(
    covariance: npt.NDArray[np.float64], k: int, *, tolerance: float = FAST_EIGH_TOLERANCE
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(width x k components, their share of the total variance), largest first.

    Only the top `k` eigenpairs are computed, by the first of these that is accurate enough:
    1. from KRYLOV_MIN_WIDTH on (and a basis at most half the width): a block Krylov solve in
       float32 (`_top_eigh_krylov`: matrix products only, faster there than the tridiagonal
       reduction below; docs/decisions.md);
    2. from FAST_EIGH_MIN_WIDTH on: LAPACK ``syevx`` on a subset, in float32, for the top
       k + FAST_EIGH_OVERSAMPLE;
    3. ``syevx`` in float64 (``scipy.linalg.eigh``), which is exact to float64.
    The float32 solves are refined in float64 (`_refined`: one step of subspace iteration and
    a Rayleigh-Ritz projection), which brings the eigenvalues to float64 accuracy and the
    vectors to ~1e-7, and each component's residual is checked against `tolerance` (relative
    to the largest eigenvalue) before a result is taken. Signs as scikit-learn's
    ``svd_flip(u_based_decision=False)``: each component's largest absolute entry is positive.
    """
    width = covariance.shape[0]
    total = float(np.trace(covariance))
    found = None
    if width >= FAST_EIGH_MIN_WIDTH and k + FAST_EIGH_OVERSAMPLE < width:
        single = _single(covariance)  # one float32 copy for both float32 solves
        if width >= KRYLOV_MIN_WIDTH:
            found = _top_eigh_krylov(covariance, single, k, tolerance)
        if found is None:
            found = _top_eigh_float32(covariance, single, k, tolerance)  # overwrites `single`
        del single
    if found is None:
        from scipy.linalg import eigh

        values, vectors = eigh(
            covariance,
            subset_by_index=[width - k, width - 1],
            driver="evx",
            overwrite_a=True,
            check_finite=False,
        )
        values, vectors = values[::-1], vectors[:, ::-1]
    else:
        values, vectors = found
    values = np.clip(values, 0.0, None)
    biggest = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[biggest, np.arange(k)])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    return vectors, values / total if total > 0 else np.zeros_like(values)


def _single(covariance: npt.NDArray[np.float64]) -> npt.NDArray[np.float32] | None:
    """`covariance` in float32; None when float32 cannot hold it."""
    with np.errstate(over="ignore"):
        single = covariance.astype(np.float32)
    return single if np.isfinite(single).all() else None


def _top_eigh_float32(
    covariance: npt.NDArray[np.float64],
    single: npt.NDArray[np.float32] | None,
    k: int,
    tolerance: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The top `k` (eigenvalues, eigenvectors) of `covariance`, largest first, from a float32
    ``syevx`` on `single` (its float32 copy, overwritten) refined in float64; None when a
    residual is past `tolerance` (or `single` is None: float32 cannot hold the matrix)."""
    from scipy.linalg import eigh

    width = covariance.shape[0]
    if single is None:
        return None
    _, rough = eigh(
        single,
        subset_by_index=[width - k - FAST_EIGH_OVERSAMPLE, width - 1],
        driver="evx",
        overwrite_a=True,
        check_finite=False,
    )
    return _refined(covariance, rough, k, tolerance, "float32 eigh", "solving in float64")


def _top_eigh_krylov(
    covariance: npt.NDArray[np.float64],
    single: npt.NDArray[np.float32] | None,
    k: int,
    tolerance: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The top `k` (eigenvalues, eigenvectors) of `covariance`, largest first, from a block
    Krylov solve on `single` (its float32 copy, only read) refined in float64; None when a
    residual is past `tolerance`, the basis would be wider than half the matrix, or `single`
    is None (float32 cannot hold the matrix).

    The basis spans ``C Ω, C² Ω, …, C^KRYLOV_BLOCKS Ω`` for a fixed-seed Gaussian block Ω of
    k + FAST_EIGH_OVERSAMPLE columns (the same input gives the same components), each block
    orthogonalized against the ones before (twice: "twice is enough") and the basis' Rayleigh-
    Ritz projection gives the rough vectors. The cost is matrix products: KRYLOV_BLOCKS + 1
    products of the matrix with one block, against the ~n³ of a tridiagonal reduction. How
    fast the top k converge depends on the gap between the k-th and the (k + oversample + 1)-th
    eigenvalue (not the k-th and the next), which is why the block is wider than k; the
    residual check in `_refined` decides whether the result is taken.
    """
    width = covariance.shape[0]
    block_width = k + FAST_EIGH_OVERSAMPLE
    if single is None or block_width * KRYLOV_BLOCKS > width // 2:
        return None
    rng = np.random.default_rng(0)
    basis = np.empty((width, block_width * KRYLOV_BLOCKS), dtype=np.float32)
    image = np.empty_like(basis)  # single @ basis, block by block
    block, _ = np.linalg.qr(single @ rng.standard_normal((width, block_width), dtype=np.float32))
    for i in range(KRYLOV_BLOCKS):
        columns = slice(i * block_width, (i + 1) * block_width)
        basis[:, columns] = block
        image[:, columns] = single @ block
        if i + 1 < KRYLOV_BLOCKS:
            before = basis[:, : (i + 1) * block_width]
            nxt = image[:, columns].copy()
            for _ in range(2):
                nxt -= before @ (before.T @ nxt)
            block, _ = np.linalg.qr(nxt)
    small = (basis.T @ image).astype(np.float64)
    _, rotation = np.linalg.eigh((small + small.T) / 2)
    rough = basis @ rotation[:, ::-1][:, :block_width].astype(np.float32)
    del basis, image
    return _refined(covariance, rough, k, tolerance, "Krylov solve", "solving with syevx")


def _refined(
    covariance: npt.NDArray[np.float64],
    rough: npt.NDArray[Any],
    k: int,
    tolerance: float,
    solve: str,
    instead: str,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The top `k` eigenpairs of `covariance` from `rough` vectors spanning about its top
    subspace (columns: k plus a few), largest first: one step of subspace iteration and a
    Rayleigh-Ritz projection in float64. None (logged, naming `solve` and what runs `instead`)
    when a component's residual is past `tolerance`."""
    basis, _ = np.linalg.qr(covariance @ rough.astype(np.float64))
    image = covariance @ basis
    small = basis.T @ image
    values, rotation = np.linalg.eigh((small + small.T) / 2)
    values, rotation = values[::-1][:k], rotation[:, ::-1][:, :k]
    vectors = basis @ rotation
    residual = np.linalg.norm(image @ rotation - vectors * values, axis=0)
    scale = max(float(np.abs(values).max()), np.finfo(np.float64).tiny)
    if not np.isfinite(residual).all() or residual.max() > tolerance * scale:
        log.info(
            "%s not accurate enough (residual %.1e of the largest eigenvalue): %s",
            solve,
            float(residual.max()) / scale,
            instead,
        )
        return None
    return values, vectors

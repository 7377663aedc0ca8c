"""`spark.eigh._top_components`: the driver's eigh for Spark's PCA (numpy only, no JVM).

From KRYLOV_MIN_WIDTH on it tries a block Krylov solve, from FAST_EIGH_MIN_WIDTH on a float32
``syevx``, each refined in float64; the result must be the float64 solve's, and a failed
residual check must fall back to the next solve.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.linalg import eigh

from nlphub.embeddings.spark import eigh as sp

K = 64


def covariance(width: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A covariance with a decaying spectrum whose k-th and (k+1)-th eigenvalues are 0.5 %
    apart (as on tf-idf texts: the hardest boundary for a subset solve), and its spectrum."""
    rng = np.random.default_rng(seed)
    values = 1.0 / (1.0 + np.arange(width)) ** 0.8
    values[K] = values[K - 1] / 1.005
    basis, _ = np.linalg.qr(rng.standard_normal((width, width)))
    return (basis * values) @ basis.T, values


def reference(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 syevx, largest first, signs as scikit-learn's svd_flip."""
    width = matrix.shape[0]
    values, vectors = eigh(matrix, subset_by_index=[width - k, width - 1], driver="evx")
    values, vectors = values[::-1], vectors[:, ::-1]
    biggest = np.argmax(np.abs(vectors), axis=0)
    return values, vectors * np.sign(vectors[biggest, np.arange(k)])


def spy_fast_path(monkeypatch: pytest.MonkeyPatch, name: str = "_top_eigh_float32") -> list[bool]:
    """Records, per call of the float32 solve `name`, whether it returned a result."""
    calls: list[bool] = []
    original = getattr(sp, name)

    def spy(*args: object) -> object:
        found = original(*args)
        calls.append(found is not None)
        return found

    monkeypatch.setattr(sp, name, spy)
    return calls


def test_float32_solve_gives_the_float64_components(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix, _ = covariance(sp.FAST_EIGH_MIN_WIDTH + 100)
    values, expected = reference(matrix, K)
    calls = spy_fast_path(monkeypatch)
    components, ratio = sp._top_components(matrix.copy(), K)
    assert calls == [True]
    assert components.shape == (matrix.shape[0], K)
    np.testing.assert_allclose(components, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ratio, values / np.trace(matrix), rtol=1e-10)
    # signs: each component's largest absolute entry is positive
    biggest = np.argmax(np.abs(components), axis=0)
    assert (components[biggest, np.arange(K)] > 0).all()


def test_a_residual_past_the_tolerance_falls_back_to_float64(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    matrix, _ = covariance(sp.FAST_EIGH_MIN_WIDTH + 100, seed=5)
    values, expected = reference(matrix, K)
    calls = spy_fast_path(monkeypatch)
    with caplog.at_level(logging.INFO, logger="nlphub.embeddings.spark.eigh"):
        components, ratio = sp._top_components(matrix.copy(), K, tolerance=0.0)
    assert calls == [False]
    assert "solving in float64" in caplog.text
    np.testing.assert_allclose(components, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ratio, values / np.trace(matrix), rtol=1e-12)


def test_a_matrix_float32_cannot_hold_is_solved_in_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    matrix, _ = covariance(sp.FAST_EIGH_MIN_WIDTH, seed=7)
    matrix *= 1e42  # entries past float32's largest value (3.4e38)
    calls = spy_fast_path(monkeypatch)
    components, _ = sp._top_components(matrix.copy(), K)
    assert calls == [False]
    np.testing.assert_allclose(components, reference(matrix, K)[1], rtol=0, atol=1e-12)


def test_narrow_matrices_are_solved_in_float64_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix, _ = covariance(300)
    calls = spy_fast_path(monkeypatch)
    components, _ = sp._top_components(matrix.copy(), K)
    assert calls == []
    np.testing.assert_allclose(components, reference(matrix, K)[1], rtol=0, atol=1e-12)


def test_a_rank_deficient_covariance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Few rows (fewer than k + the oversampling): zero eigenvalues inside the float32 subset."""
    rng = np.random.default_rng(11)
    rows = rng.standard_normal((K + 6, sp.FAST_EIGH_MIN_WIDTH)) * np.linspace(3, 1, K + 6)[:, None]
    centred = rows - rows.mean(axis=0)
    matrix = centred.T @ centred / (len(rows) - 1)  # rank K + 5
    values, expected = reference(matrix, K)
    calls = spy_fast_path(monkeypatch)
    components, ratio = sp._top_components(matrix.copy(), K)
    assert calls == [True]
    np.testing.assert_allclose(components, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ratio, values / np.trace(matrix), rtol=1e-9)


# -- the block Krylov solve (from KRYLOV_MIN_WIDTH on) ---------------------------------------------

WIDE = sp.KRYLOV_MIN_WIDTH + 40


@pytest.fixture(scope="module")
def wide() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(covariance, its top K values, their vectors) at WIDE, solved once for the module."""
    matrix, _ = covariance(WIDE, seed=13)
    values, vectors = reference(matrix, K)
    return matrix, values, vectors


def test_krylov_solve_gives_the_float64_components(
    monkeypatch: pytest.MonkeyPatch, wide: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    matrix, values, expected = wide
    krylov = spy_fast_path(monkeypatch, "_top_eigh_krylov")
    syevx = spy_fast_path(monkeypatch)
    components, ratio = sp._top_components(matrix.copy(), K)
    assert (krylov, syevx) == ([True], [])
    np.testing.assert_allclose(components, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ratio, values / np.trace(matrix), rtol=1e-10)
    # a fixed start block: the same matrix gives the same components, bit for bit
    again, _ = sp._top_components(matrix.copy(), K)
    np.testing.assert_array_equal(again, components)


def test_a_krylov_residual_past_the_tolerance_falls_back_to_syevx_then_float64(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    wide: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    matrix, values, expected = wide
    krylov = spy_fast_path(monkeypatch, "_top_eigh_krylov")
    syevx = spy_fast_path(monkeypatch)
    with caplog.at_level(logging.INFO, logger="nlphub.embeddings.spark.eigh"):
        components, ratio = sp._top_components(matrix.copy(), K, tolerance=0.0)
    assert (krylov, syevx) == ([False], [False])
    assert "Krylov solve not accurate enough" in caplog.text
    assert "solving with syevx" in caplog.text
    assert "solving in float64" in caplog.text
    np.testing.assert_allclose(components, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ratio, values / np.trace(matrix), rtol=1e-12)


@pytest.mark.parametrize(
    ("blocks", "k"),
    [
        (2, K),  # too few blocks to converge: the residual check fails
        # one column too many: the basis would be wider than half the matrix (not tried)
        (sp.KRYLOV_BLOCKS, WIDE // (2 * sp.KRYLOV_BLOCKS) - sp.FAST_EIGH_OVERSAMPLE + 1),
    ],
    ids=["residual-past-tolerance", "basis-too-wide"],
)
def test_syevx_solves_what_the_krylov_solve_cannot(
    monkeypatch: pytest.MonkeyPatch,
    wide: tuple[np.ndarray, np.ndarray, np.ndarray],
    blocks: int,
    k: int,
) -> None:
    matrix, _, top = wide
    monkeypatch.setattr(sp, "KRYLOV_BLOCKS", blocks)
    krylov = spy_fast_path(monkeypatch, "_top_eigh_krylov")
    syevx = spy_fast_path(monkeypatch)
    components, _ = sp._top_components(matrix.copy(), k)
    assert (krylov, syevx) == ([False], [True])
    expected = top if k == K else reference(matrix, k)[1]
    np.testing.assert_allclose(components, expected, rtol=0, atol=1e-6)


def test_krylov_on_a_rank_deficient_covariance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank K + 5, below the block width: later blocks hold only rounding noise."""
    rng = np.random.default_rng(17)
    rows = rng.standard_normal((K + 6, WIDE)) * np.linspace(3, 1, K + 6)[:, None]
    centred = rows - rows.mean(axis=0)
    matrix = centred.T @ centred / (len(rows) - 1)
    values, expected = reference(matrix, K)
    krylov = spy_fast_path(monkeypatch, "_top_eigh_krylov")
    components, ratio = sp._top_components(matrix.copy(), K)
    assert krylov == [True]
    np.testing.assert_allclose(components, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ratio, values / np.trace(matrix), rtol=1e-9)


def test_a_wide_matrix_float32_cannot_hold_is_solved_in_float64(
    monkeypatch: pytest.MonkeyPatch, wide: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    matrix, _, _ = wide
    huge = matrix * 1e42
    krylov = spy_fast_path(monkeypatch, "_top_eigh_krylov")
    syevx = spy_fast_path(monkeypatch)
    components, _ = sp._top_components(huge.copy(), K)
    assert (krylov, syevx) == ([False], [False])
    np.testing.assert_allclose(components, reference(huge, K)[1], rtol=0, atol=1e-12)

"""What the Spark tests share: a small corpus, and row comparisons blind to column order."""

from __future__ import annotations

import numpy as np

CORPUS = [
    "The cat sat on the mat.",
    "A dog chased the cat around the garden.",
    "Stock markets fell sharply; investors sold.",
    "Investors sold shares as markets tumbled.",
    "The kitten slept on a warm rug near the cat.",
    "Markets rallied as investors bought shares.",
    "Café au lait, naïve résumé — über 2024 l'école!",
    "",
]


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def gram(x: np.ndarray) -> np.ndarray:
    """Cosine similarities between rows: invariant to column order and to PCA sign flips."""
    u = unit_rows(np.asarray(x, dtype=np.float64))
    return u @ u.T

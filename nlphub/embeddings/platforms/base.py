"""What every encoder shares: the `Encoder` interface, its errors and the checks on its input.

Imports no platform module (and no factory), so any encoder module, here or beside this
package (`nlphub.embeddings.onnx`, `nlphub.embeddings.spark`), can build on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from nlphub.errors import NlphubError, TemporaryError

Vectors = npt.NDArray[np.float32]


class EmbeddingError(NlphubError, ValueError):
    """A permanent failure (bad model, bad key, refused request): retrying will not help."""


class TemporaryEmbeddingError(TemporaryError):
    """Rate limits, server errors or network trouble that outlasted the retries.

    `retry_after` is the wait (seconds) the provider asked for, when it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (str(self),), {"retry_after": self.retry_after})


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into float32 vectors of one fixed dimension."""

    #: "platform:model", for logs and job details.
    name: str
    platform: str
    model: str
    #: True when `fit` must see the corpus before `encode` (bag-of-words / tf-idf).
    requires_fit: bool

    @property
    def dimension(self) -> int | None:
        """Vector length; None until known (bow before `fit`, HTTP before the first answer)."""

    def fit(self, texts: Iterable[str]) -> None:
        """Learn from the whole corpus (streamed once); a no-op for pre-trained encoders."""

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Shape (len(texts), dimension), dtype float32, rows in the order of `texts`."""

    def close(self) -> None:
        """Release clients this encoder opened (never ones passed in)."""


def empty_vectors(dimension: int | None) -> Vectors:
    """No rows: shape (0, dimension), or (0, 0) while the dimension is not known."""
    return np.zeros((0, dimension or 0), dtype=np.float32)


def check_texts(texts: Sequence[str]) -> list[str]:
    """`texts` as a list, or EmbeddingError for a lone string or an item that is not a str."""
    if isinstance(texts, str):
        raise EmbeddingError("encode() takes a list of texts, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise EmbeddingError(f"text #{i} is {type(text).__name__}, not str")
    return out

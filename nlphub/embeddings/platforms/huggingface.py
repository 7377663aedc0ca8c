"""The ``huggingface`` platform: a local sentence-transformers model run by PyTorch.

Models are found as `nlphub.embeddings.platforms.models` describes, and kept loaded per
process (`MAX_LOADED_MODELS`) so a worker does not reload one for every task. ``backend=onnx``
is `nlphub.embeddings.onnx.OnnxEncoder`, a subclass of `HuggingFaceEncoder`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from nlphub.embeddings.platforms.base import EmbeddingError, Vectors, check_texts, empty_vectors
from nlphub.embeddings.platforms.models import (
    check_model_name,
    default_device,
    hub_offline,
    lru_get,
    resolve_model_path,
)

log = logging.getLogger(__name__)

_MODELS: OrderedDict[tuple[str, str, str, bool], Any] = OrderedDict()
_MODELS_LOCK = threading.Lock()
#: Loaded models kept per process, so a worker does not reload one for every task.
MAX_LOADED_MODELS = 2


def clear_model_cache() -> None:
    """Forget the models loaded in this process."""
    with _MODELS_LOCK:
        _MODELS.clear()


def _load_sentence_transformer(source: str, device: str, cache_dir: str | None, local: bool) -> Any:
    def load() -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(
            source, device=device, cache_folder=cache_dir, local_files_only=local
        )

    key = (source, device, cache_dir or "", local)
    return lru_get(_MODELS, _MODELS_LOCK, key, MAX_LOADED_MODELS, load)


#: Texts per forward pass by default: sentence-transformers' own default on the CPU; on a GPU,
#: a small model's batches of 32 are bound by kernel launches and the host, not arithmetic
#: (measurements: docs/decisions.md, "Hugging Face batch sizes").
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 128


def default_batch_size(device: str) -> int:
    """`GPU_BATCH_SIZE` on an accelerator (``cuda``, ``cuda:1``, ``mps``), else `CPU_BATCH_SIZE`."""
    return CPU_BATCH_SIZE if device.split(":")[0] == "cpu" else GPU_BATCH_SIZE


class HuggingFaceEncoder:
    """A sentence-transformers model, on CUDA when available unless `device` says otherwise.

    `batch_size` defaults to `CPU_BATCH_SIZE` on the CPU and `GPU_BATCH_SIZE` on a GPU."""

    platform = "huggingface"
    backend = "torch"
    requires_fit = False
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"cache_dir", "batch_size", "normalize", "offline", "backend"}
    )

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int | None = None,
        normalize: bool = False,
        offline: bool | None = None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise EmbeddingError("batch_size must be at least 1")
        self.model = model
        self.name = f"huggingface:{model}"
        self.normalize = normalize
        local_only = hub_offline() if offline is None else offline
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        check_model_name(model)  # a name, never a path: refused before anything is read
        path = resolve_model_path(model, cache)
        self.device = device or default_device()
        self.batch_size = default_batch_size(self.device) if batch_size is None else batch_size
        self.source = str(path) if path is not None else model
        hint = f"add it with `nlphub models add {model}`"
        unavailable = (
            f"model {model} is not in the local models cache ({hint})"
            if local_only
            else f"model {model} could not be loaded ({hint})"
        )
        # sentence-transformers reads a model id that names a folder relative to the working
        # directory as that folder: such an id is refused like any model it cannot load.
        if path is None and os.path.lexists(model):
            raise EmbeddingError(unavailable)
        try:
            self.st: Any = _load_sentence_transformer(self.source, self.device, cache, local_only)
        except (OSError, ValueError) as exc:
            # The loader's reason (server paths, what exists) is for the server's log only.
            log.warning("huggingface model %s could not be loaded: %s", model, exc)
            raise EmbeddingError(unavailable) from None
        if hasattr(self.st, "get_embedding_dimension"):
            dim = self.st.get_embedding_dimension()
        else:  # sentence-transformers < 6
            dim = self.st.get_sentence_embedding_dimension()
        self._dimension: int | None = int(dim) if dim is not None else None

    def __repr__(self) -> str:
        return f"HuggingFaceEncoder({self.model!r}, device={self.device!r})"

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def fit(self, texts: Iterable[str]) -> None:
        return None

    def encode(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if not items:
            return empty_vectors(self._dimension)
        vectors = self.st.encode(
            items,
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        out = np.ascontiguousarray(vectors, dtype=np.float32)
        self._dimension = int(out.shape[1])
        return out

    def close(self) -> None:
        return None

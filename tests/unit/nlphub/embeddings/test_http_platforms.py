"""OpenAI, Azure OpenAI and Cohere encoders against a local server speaking their wire formats."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest

from nlphub.embeddings import (
    EmbeddingError,
    TemporaryEmbeddingError,
    make_encoder,
    parse_retry_after,
)
from nlphub.errors import NlphubError, TemporaryError

KEY = "sk-test-0123456789abcdefSECRET"
DIM = 8


def fake_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [(b - 128) / 128 for b in digest[:DIM]]


@dataclass
class Seen:
    at: float
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeAPI:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    #: Answers served first, in order: (status, headers, JSON body).
    script: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Seen) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.seen.append(request)
            if self.script:
                return self.script.pop(0)
        auth = request.headers.get("authorization", "")
        if request.path.startswith("/openai/deployments/"):
            if request.headers.get("api-key") != KEY or auth:
                return 401, {}, {"error": {"code": "401", "message": "Access denied"}}
        elif auth != f"Bearer {KEY}":
            # Like OpenAI, echo the key that was sent: the encoder must scrub it.
            message = f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"
            return 401, {}, {"error": {"message": message, "code": "invalid_api_key"}}
        if request.path.endswith("/embed"):
            texts = request.body["texts"]
            return 200, {}, {"id": "x", "embeddings": [fake_vector(t) for t in texts]}
        inputs = request.body["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(t)}
            for i, t in enumerate(inputs)
        ]
        data.reverse()  # clients must order by "index", not by position
        return 200, {}, {"object": "list", "data": data, "model": request.body.get("model")}


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            parts = urlsplit(self.path)
            seen = Seen(
                at=time.monotonic(),
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=json.loads(raw or b"null"),
            )
            status, headers, body = api.answer(seen)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAPI]:
    api = FakeAPI()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    api.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield api
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def api(server: FakeAPI) -> FakeAPI:
    server.seen.clear()
    server.script.clear()
    return server


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


TEXTS = ["alpha", "beta gamma", "delta", "epsilon zeta eta", "theta"]


# -- the three wire formats -----------------------------------------------------------------------


def test_openai_end_to_end(api: FakeAPI) -> None:
    enc = make_encoder("openai", "text-embedding-3-small", api_key=KEY, base_url=f"{api.url}/v1")
    try:
        vectors = enc.encode(TEXTS)
        again = enc.encode(TEXTS)
    finally:
        enc.close()
    assert vectors.shape == (5, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, np.asarray([fake_vector(t) for t in TEXTS], np.float32))
    np.testing.assert_array_equal(vectors, again)
    assert enc.dimension == DIM
    assert len(api.seen) == 2
    first = api.seen[0]
    assert first.path == "/v1/embeddings"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body == {"model": "text-embedding-3-small", "input": TEXTS}


def test_openai_batches_at_most_2048_inputs(api: FakeAPI) -> None:
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1")
    texts = [f"t{i}" for i in range(2049)]
    vectors = enc.encode(texts)
    assert vectors.shape == (2049, DIM)
    assert [len(s.body["input"]) for s in api.seen] == [2048, 1]
    np.testing.assert_array_equal(vectors[2048], np.asarray(fake_vector("t2048"), np.float32))


def test_openai_batch_size_option_and_empty_texts(api: FakeAPI) -> None:
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1", batch_size=2)
    vectors = enc.encode(["a", "", "b", "c", "d"])
    assert vectors.shape == (5, DIM)
    assert [s.body["input"] for s in api.seen] == [["a", " "], ["b", "c"], ["d"]]
    assert enc.encode([]).shape == (0, DIM)
    assert len(api.seen) == 3  # no request for nothing


def test_azure_wire_format(api: FakeAPI) -> None:
    enc = make_encoder("azure", "my-deployment", api_key=KEY, base_url=api.url)
    vectors = enc.encode(TEXTS[:2])
    assert vectors.shape == (2, DIM)
    np.testing.assert_array_equal(vectors[1], np.asarray(fake_vector(TEXTS[1]), np.float32))
    (seen,) = api.seen
    assert seen.path == "/openai/deployments/my-deployment/embeddings"
    assert seen.query == {"api-version": ["2024-02-01"]}
    assert seen.headers["api-key"] == KEY
    assert "authorization" not in seen.headers
    assert seen.body == {"input": TEXTS[:2]}


def test_azure_needs_an_endpoint() -> None:
    with pytest.raises(EmbeddingError, match="azure needs base_url"):
        make_encoder("azure", "my-deployment", api_key=KEY)


def test_cohere_wire_format_and_batches_of_96(api: FakeAPI) -> None:
    enc = make_encoder("cohere", "embed-english-v3.0", api_key=KEY, base_url=f"{api.url}/v1")
    texts = [f"text {i}" for i in range(200)]
    vectors = enc.encode(texts)
    assert vectors.shape == (200, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[199], np.asarray(fake_vector("text 199"), np.float32))
    assert [len(s.body["texts"]) for s in api.seen] == [96, 96, 8]
    first = api.seen[0]
    assert first.path == "/v1/embed"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body["model"] == "embed-english-v3.0"
    assert first.body["input_type"] == "search_document"


def test_cohere_batch_size_cannot_exceed_96() -> None:
    with pytest.raises(EmbeddingError, match=r"batch_size must be 1\.\.96"):
        make_encoder("cohere", "m", api_key=KEY, batch_size=97)


# -- retries --------------------------------------------------------------------------------------


def test_429_honours_retry_after(api: FakeAPI) -> None:
    api.script.append((429, {"Retry-After": "0.1"}, {"error": {"message": "Rate limit reached"}}))
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1")
    vectors = enc.encode(["x"])
    assert vectors.shape == (1, DIM)
    assert len(api.seen) == 2
    assert enc.requests_sent == 2  # type: ignore[attr-defined]
    assert api.seen[1].at - api.seen[0].at >= 0.1


def test_429_retry_after_uses_the_providers_wait_not_backoff(api: FakeAPI) -> None:
    api.script.append((429, {"retry-after": "0.25"}, {"message": "slow down"}))
    sleeps = Sleeps()
    enc = make_encoder("cohere", "m", api_key=KEY, base_url=f"{api.url}/v1", sleep=sleeps)
    enc.encode(["x"])
    assert sleeps.delays == [0.25]


def test_500_then_success_backs_off(api: FakeAPI, caplog: pytest.LogCaptureFixture) -> None:
    api.script.append((500, {}, {"error": {"message": "The server had an error"}}))
    sleeps = Sleeps()
    enc = make_encoder(
        "openai", "m", api_key=KEY, base_url=f"{api.url}/v1", sleep=sleeps, backoff_base=2.0
    )
    with caplog.at_level(logging.WARNING, logger="embeddings"):
        vectors = enc.encode(["x", "y"])
    assert vectors.shape == (2, DIM)
    assert len(api.seen) == 2
    assert len(sleeps.delays) == 1
    assert 1.0 <= sleeps.delays[0] <= 2.0  # base 2 s with jitter in [50 %, 100 %]
    assert "HTTP 500" in caplog.text
    assert KEY not in caplog.text


def test_5xx_exhausts_attempts_with_exponential_backoff(api: FakeAPI) -> None:
    api.script.extend([(503, {}, {"error": {"message": "overloaded"}})] * 3)
    sleeps = Sleeps()
    enc = make_encoder(
        "openai",
        "m",
        api_key=KEY,
        base_url=f"{api.url}/v1",
        sleep=sleeps,
        max_attempts=3,
        backoff_base=1.0,
        seed=7,
    )
    with pytest.raises(TemporaryEmbeddingError, match="HTTP 503: overloaded") as info:
        enc.encode(["x"])
    assert "gave up after 3 attempts" in str(info.value)
    assert len(api.seen) == 3
    assert len(sleeps.delays) == 2
    assert 0.5 <= sleeps.delays[0] <= 1.0
    assert 1.0 <= sleeps.delays[1] <= 2.0
    assert isinstance(info.value, TemporaryError)  # the task base retries these


def test_retry_after_longer_than_allowed_is_left_to_the_task(api: FakeAPI) -> None:
    api.script.append((429, {"Retry-After": "120"}, {"error": {"message": "Rate limit"}}))
    sleeps = Sleeps()
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1", sleep=sleeps)
    with pytest.raises(TemporaryEmbeddingError) as info:
        enc.encode(["x"])
    assert info.value.retry_after == 120.0
    assert sleeps.delays == []
    assert len(api.seen) == 1


def test_network_errors_become_temporary(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    sleeps = Sleeps()
    enc = make_encoder(
        "openai",
        "m",
        api_key=KEY,
        base_url=f"http://127.0.0.1:{port}/v1",
        sleep=sleeps,
        max_attempts=2,
    )
    with caplog.at_level(logging.WARNING), pytest.raises(TemporaryEmbeddingError) as info:
        enc.encode(["x"])
    assert "ConnectError" in str(info.value)
    assert len(sleeps.delays) == 1
    assert KEY not in str(info.value) and KEY not in caplog.text


def test_parse_retry_after_formats() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "3"}, now=now) == 3.0
    assert parse_retry_after({"retry-after": "0.1"}, now=now) == pytest.approx(0.1)
    http_date = "Wed, 01 Jan 2025 12:00:05 GMT"
    assert parse_retry_after({"Retry-After": http_date}, now=now) == pytest.approx(5.0)
    past = "Wed, 01 Jan 2025 11:00:00 GMT"
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == pytest.approx(0.25)
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "-1"}) is None
    assert parse_retry_after({}) is None


# -- permanent errors and keys --------------------------------------------------------------------


def test_401_is_permanent_and_never_shows_the_key(api: FakeAPI) -> None:
    wrong = "sk-wrong-key-9876543210zyxwvu"
    enc = make_encoder("openai", "m", api_key=wrong, base_url=f"{api.url}/v1")
    with pytest.raises(EmbeddingError) as info:
        enc.encode(["x"])
    message = str(info.value)
    assert "HTTP 401" in message
    assert "Incorrect API key provided" in message
    assert wrong not in message
    assert wrong not in repr(info.value)
    assert info.value.__cause__ is None
    assert len(api.seen) == 1  # not retried
    assert api.seen[0].headers["authorization"] == f"Bearer {wrong}"  # the key was sent
    assert wrong not in repr(enc)
    assert wrong not in repr(vars(enc))


def test_echoed_keys_of_any_shape_are_scrubbed(api: FakeAPI) -> None:
    azure_key = "0123456789abcdef0123456789abcdef"  # no "sk-" prefix to recognise
    api.script.append((403, {}, {"error": {"message": f"key {azure_key} is disabled"}}))
    enc = make_encoder("azure", "dep", api_key=azure_key, base_url=api.url)
    with pytest.raises(EmbeddingError, match="HTTP 403") as info:
        enc.encode(["x"])
    assert azure_key not in str(info.value)
    # A provider echoing part of a key (OpenAI masks the middle) is scrubbed too.
    api.script.append((401, {}, {"error": {"message": "Incorrect key: sk-test-012345****CRET"}}))
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1")
    with pytest.raises(EmbeddingError, match="HTTP 401") as info:
        enc.encode(["x"])
    assert "sk-test-012345" not in str(info.value)


def test_azure_401_names_status_and_message(api: FakeAPI) -> None:
    enc = make_encoder("azure", "dep", api_key="0123456789abcdef0123", base_url=api.url)
    with pytest.raises(EmbeddingError, match="azure refused the request: HTTP 401: Access denied"):
        enc.encode(["x"])


def test_400_shows_the_cohere_message(api: FakeAPI) -> None:
    api.script.append((400, {}, {"message": "invalid request: model 'nope' not found"}))
    enc = make_encoder("cohere", "nope", api_key=KEY, base_url=f"{api.url}/v1")
    with pytest.raises(EmbeddingError, match="HTTP 400: invalid request: model 'nope' not found"):
        enc.encode(["x"])
    assert len(api.seen) == 1


def test_quota_exhausted_429_is_permanent(api: FakeAPI) -> None:
    quota = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}
    api.script.append((429, {}, quota))
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1", sleep=Sleeps())
    with pytest.raises(EmbeddingError, match="exceeded your current quota"):
        enc.encode(["x"])
    assert len(api.seen) == 1


def test_malformed_answer_is_an_error(api: FakeAPI) -> None:
    api.script.append((200, {}, {"data": [{"index": 0, "embedding": [1.0, 2.0]}]}))
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1")
    with pytest.raises(EmbeddingError, match="without 2 embeddings"):
        enc.encode(["x", "y"])


@pytest.mark.parametrize("platform", ["openai", "azure", "cohere"])
@pytest.mark.parametrize("key", [None, ""])
def test_missing_key(platform: str, key: str | None) -> None:
    with pytest.raises(EmbeddingError) as info:
        make_encoder(platform, "m", api_key=key, base_url="https://example.invalid")
    message = str(info.value)
    assert message.startswith(f"no API key for {platform}: set it in ")
    assert "keys are passed by reference, never in task arguments" in message


def test_missing_key_message_names_the_source() -> None:
    with pytest.raises(EmbeddingError, match="set it in NLPHUB_OPENAI_API_KEY"):
        make_encoder("openai", "m", key_source="NLPHUB_OPENAI_API_KEY")


def test_injected_client_is_used_and_left_open(api: FakeAPI) -> None:
    client = httpx.Client(headers={"x-test": "injected"})
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1", client=client)
    enc.encode(["x"])
    enc.close()
    assert api.seen[0].headers["x-test"] == "injected"
    assert not client.is_closed
    client.close()


def test_error_types() -> None:
    assert issubclass(EmbeddingError, ValueError)
    assert issubclass(EmbeddingError, NlphubError)
    assert not issubclass(TemporaryEmbeddingError, EmbeddingError)
    err = pickle.loads(pickle.dumps(TemporaryEmbeddingError("busy", retry_after=2.5)))
    assert isinstance(err, TemporaryEmbeddingError)
    assert (str(err), err.retry_after) == ("busy", 2.5)

"""Shared by the platform tests: a small corpus, `cosine`, and a local server speaking the
OpenAI, Azure OpenAI and Cohere wire formats (`server`, `api`)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

CORPUS = [
    "The cat sat on the mat.",
    "A dog chased the cat around the garden.",
    "Stock markets fell sharply on Monday.",
    "Investors sold shares as markets tumbled.",
    "The kitten slept on a warm rug.",
]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


KEY = "sk-test-0123456789abcdefSECRET"
DIM = 8


TEXTS = ["alpha", "beta gamma", "delta", "epsilon zeta eta", "theta"]


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


def serve_fake_api() -> Iterator[FakeAPI]:
    """A `FakeAPI` served on 127.0.0.1 until the generator is closed."""
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


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAPI]:
    yield from serve_fake_api()


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

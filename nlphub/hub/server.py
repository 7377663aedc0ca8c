"""A small HTTP server for hub mirror folders, with fault injection for tests.

`MirrorServer` serves the files of a folder (such as one built by `nlphub.hub.mirror`) over HTTP/1.1
with what a downloader relies on: ``GET`` and ``HEAD``, ``Content-Length``, byte ranges
(``Range: bytes=a-b``, ``bytes=a-``, ``bytes=-n`` -> 206, unsatisfiable -> 416), ``ETag`` and
``Last-Modified`` validators (``If-None-Match`` / ``If-Modified-Since`` -> 304, ``If-Range``).
Files are streamed in chunks. Only regular files inside the folder are served: no directory
listings, no hidden (dot) files, no ``..``, no symbolic links leading out of the folder.

`Faults` lets tests make the server misbehave at runtime: cut a transfer short, answer with an
error status, fail a few times before recovering, send wrong bytes or another body, send a body
with no length and no end, or send slowly (always, or a few times before recovering); and it
records every request so tests can assert, e.g., that a resume used ``Range``.

Stdlib only (``http.server``).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal
from urllib.parse import unquote, urlsplit

__all__ = ["Faults", "MirrorServer", "RequestRecord", "serve_forever"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CONTENT_TYPES = {
    ".zip": "application/zip",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
_FLIP = bytes(255 - b for b in range(256))

RequestRecord = tuple[str, str, str | None]
"""``(method, path, Range header or None)`` of one request; ``path`` is URL-decoded."""


@dataclass
class Faults:
    """Faults to inject, settable at any time while the server runs.

    Paths are URL paths as requested, e.g. ``"/public/models/x.zip"`` (the leading ``/`` may
    be left out).

    - ``cut_after_bytes``: the next response body (of ``cut_path``, or of any file when
      ``cut_path`` is None) is cut after that many bytes and the connection closed, so the
      client sees an incomplete body. Applies once, then both reset to None.
    - ``status_for``: path -> status returned instead of the file (every time).
    - ``fail_times``: path -> N: the next N requests for the path get ``fail_status`` (500 by
      default, e.g. 503), then it is served.
    - ``corrupt``: paths whose bytes are sent flipped (same length, wrong content).
    - ``body_for``: path -> bytes sent instead of the file, with 200 (a proxy's HTML page, a
      garbage ``metadata.json``), every time. No ranges or validators.
    - ``endless_for``: path -> N: a 200 with no ``Content-Length`` whose body is N junk bytes,
      then the connection closed (a body with no end the client can know: N only keeps a test
      from hanging), every time. No ranges or validators.
    - ``delay_per_chunk``: seconds to sleep before each body chunk (a slow server).
    - ``slow_times``: path -> N: the next N bodies of the path are sent with ``slow_delay``
      seconds before each chunk (a server that stalls, then recovers).
    - ``bytes_per_second``: each body is paced to this rate (a network link), 0 for none.
    - ``requests``: every request received, in order (see `RequestRecord`).
    """

    cut_after_bytes: int | None = None
    cut_path: str | None = None
    status_for: dict[str, int] = field(default_factory=dict)
    fail_times: dict[str, int] = field(default_factory=dict)
    fail_status: int = int(HTTPStatus.INTERNAL_SERVER_ERROR)
    corrupt: set[str] = field(default_factory=set)
    body_for: dict[str, bytes] = field(default_factory=dict)
    endless_for: dict[str, int] = field(default_factory=dict)
    delay_per_chunk: float = 0.0
    slow_times: dict[str, int] = field(default_factory=dict)
    slow_delay: float = 5.0
    bytes_per_second: float = 0.0
    requests: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reset(self) -> None:
        """Clear every fault and the request log."""
        with self._lock:
            self.cut_after_bytes = None
            self.cut_path = None
            self.status_for.clear()
            self.fail_times.clear()
            self.fail_status = int(HTTPStatus.INTERNAL_SERVER_ERROR)
            self.corrupt.clear()
            self.body_for.clear()
            self.endless_for.clear()
            self.delay_per_chunk = 0.0
            self.slow_times.clear()
            self.slow_delay = 5.0
            self.bytes_per_second = 0.0
            self.requests.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    @staticmethod
    def _lookup(mapping: dict[str, Any] | set[str], path: str) -> str | None:
        for key in (path, path.lstrip("/")):
            if key in mapping:
                return key
        return None

    def _status(self, path: str) -> int | None:
        """The injected status for this request, consuming one of ``fail_times``."""
        with self._lock:
            key = self._lookup(self.status_for, path)
            if key is not None:
                return self.status_for[key]
            key = self._lookup(self.fail_times, path)
            if key is not None and self._consume(self.fail_times, key):
                return self.fail_status
        return None

    @staticmethod
    def _consume(counts: dict[str, int], key: str) -> bool:
        """Use one of the ``counts[key]`` remaining (lock held): True if there was one."""
        left = counts.pop(key, 0)
        if left > 1:
            counts[key] = left - 1
        return left > 0

    def _slow_delay(self, path: str) -> float:
        """``slow_delay`` if this body is one of the path's ``slow_times`` (consumed), else 0."""
        with self._lock:
            key = self._lookup(self.slow_times, path)
            if key is not None and self._consume(self.slow_times, key):
                return self.slow_delay
            return 0.0

    def _body(self, path: str) -> bytes | None:
        with self._lock:
            key = self._lookup(self.body_for, path)
            return None if key is None else self.body_for[key]

    def _endless(self, path: str) -> int | None:
        with self._lock:
            key = self._lookup(self.endless_for, path)
            return None if key is None else self.endless_for[key]

    def _take_cut(self, path: str) -> int | None:
        """The byte count to cut this body at (consumed), or None."""
        with self._lock:
            if self.cut_after_bytes is None:
                return None
            if self.cut_path is not None and self.cut_path.lstrip("/") != path.lstrip("/"):
                return None
            cut = self.cut_after_bytes
            self.cut_after_bytes = None
            self.cut_path = None
            return cut

    def _is_corrupt(self, path: str) -> bool:
        with self._lock:
            return self._lookup(self.corrupt, path) is not None


class _CutConnection(Exception):
    """The injected cut was reached: drop the connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nlphub-mirror/1"
    timeout = 30.0  # idle keep-alive connections end after this
    server: _HTTPServer

    # -- logging ----------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        logger.warning("%s %s", self.address_string(), format % args)

    # -- entry points -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    # -- helpers ----------------------------------------------------------------------------

    def _send_plain(self, status: int, text: str, send_body: bool, **headers: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _resolve(self, path: str) -> Path | None:
        """The regular file inside the served folder for this URL path, or None."""
        if not path.startswith("/") or "\x00" in path or "\\" in path:
            return None
        parts = path[1:].split("/")
        if any(not part or part in (".", "..") or part.startswith(".") for part in parts):
            return None
        root = self.server.root
        candidate = root.joinpath(*parts)
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(root) or not resolved.is_file():
            return None
        return resolved

    def _serve(self, *, send_body: bool) -> None:
        raw_path = urlsplit(self.path).path
        path = unquote(raw_path)
        faults = self.server.faults
        faults._record((self.command, path, self.headers.get("Range")))

        injected = faults._status(path)
        if injected is not None:
            self._send_plain(injected, f"{injected} (injected fault)\n", send_body)
            return
        body = faults._body(path)
        if body is not None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", _content_type(path))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)
            return
        endless = faults._endless(path)
        if endless is not None:
            self._send_endless(endless, path, send_body)
            return
        file = self._resolve(path)
        if file is None:
            self._send_plain(HTTPStatus.NOT_FOUND, "404 not found\n", send_body)
            return
        with file.open("rb") as fh:
            self._serve_file(fh, path, send_body)

    def _serve_file(self, fh: BinaryIO, path: str, send_body: bool) -> None:
        st = os.fstat(fh.fileno())
        size, mtime = st.st_size, st.st_mtime
        etag = f'"{size:x}-{st.st_mtime_ns:x}"'
        last_modified = email.utils.formatdate(mtime, usegmt=True)
        validators = {"ETag": etag, "Last_Modified": last_modified}

        if self._not_modified(etag, mtime):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.end_headers()
            return

        start, end = 0, size - 1
        status = HTTPStatus.OK
        range_header = self.headers.get("Range")
        if range_header is not None and self._if_range_holds(etag, last_modified):
            parsed = _parse_range(range_header, size)
            if parsed == "unsatisfiable":
                self._send_plain(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    "416 range not satisfiable\n",
                    send_body,
                    Content_Range=f"bytes */{size}",
                    Accept_Ranges="bytes",
                    **validators,
                )
                return
            if isinstance(parsed, tuple):
                start, end = parsed
                status = HTTPStatus.PARTIAL_CONTENT
        length = end - start + 1

        self.send_response(status)
        self.send_header("Content-Type", _content_type(path))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not send_body or length <= 0:
            return
        try:
            self._send_body(fh, path, start, length)
        except _CutConnection:
            logger.info("cut %s after the injected byte count; closing the connection", path)
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            logger.info("client went away during %s: %s", path, exc)
            self.close_connection = True

    def _send_endless(self, size: int, path: str, send_body: bool) -> None:
        """A 200 without ``Content-Length``: ``size`` junk bytes, then the connection closed."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", _content_type(path))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if not send_body:
            return
        chunk = _FLIP * (CHUNK_SIZE // len(_FLIP))
        sent = 0
        try:
            while sent < size:
                piece = chunk[: size - sent]
                self.wfile.write(piece)
                sent += len(piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            logger.info("client went away after %d bytes of endless %s: %s", sent, path, exc)

    def _send_body(self, fh: BinaryIO, path: str, start: int, length: int) -> None:
        faults = self.server.faults
        cut = faults._take_cut(path)
        corrupt = faults._is_corrupt(path)
        slow = faults._slow_delay(path)
        fh.seek(start)
        remaining = length
        sent = 0
        began = time.monotonic()
        while remaining > 0:
            delay = max(slow, faults.delay_per_chunk)
            if faults.bytes_per_second > 0:  # pace: this chunk leaves when the link allows
                delay = max(delay, began + sent / faults.bytes_per_second - time.monotonic())
            if delay > 0:
                time.sleep(delay)
            chunk = fh.read(min(CHUNK_SIZE, remaining))
            if not chunk:  # the file shrank under us: the client sees a short body
                self.close_connection = True
                return
            if corrupt:
                chunk = chunk.translate(_FLIP)
            if cut is not None and sent + len(chunk) >= cut:
                self.wfile.write(chunk[: cut - sent])
                self.wfile.flush()
                raise _CutConnection
            self.wfile.write(chunk)
            sent += len(chunk)
            remaining -= len(chunk)

    def _not_modified(self, etag: str, mtime: float) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
            return "*" in tags or etag in tags
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since is not None:
            since = _parse_http_date(if_modified_since)
            return since is not None and int(mtime) <= since.timestamp()
        return False

    def _if_range_holds(self, etag: str, last_modified: str) -> bool:
        """False when ``If-Range`` names another version of the file: send it all."""
        if_range = self.headers.get("If-Range")
        if if_range is None:
            return True
        value = if_range.strip()
        if value.startswith(('"', "W/")):
            return value == etag
        return value == last_modified


def _parse_http_date(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``(start, end)`` inclusive, ``"unsatisfiable"``, or None to ignore the header.

    Several ranges and malformed headers are ignored (the whole file is sent), as RFC 9110
    allows.
    """
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _content_type(path: str) -> str:
    for suffix, content_type in _CONTENT_TYPES.items():
        if path.endswith(suffix):
            return content_type
    return "application/octet-stream"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], root: Path, faults: Faults) -> None:
        self.root = root
        self.faults = faults
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they end."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            # A client that stopped reading (e.g. a download refused as too long) and hung up.
            logger.info("client %s went away: %s", client_address, error)
            return
        logger.exception("error while serving %s", client_address)


class MirrorServer:
    """Serve ``folder`` over HTTP on ``host:port`` (port 0: any free port) from a thread.

    Use as a context manager, or call `start` and `stop`. ``faults`` injects faults and logs
    requests (see `Faults`). Example::

        with MirrorServer(mirror) as server:
            httpx.get(f"{server.url}/metadata.json")
    """

    def __init__(
        self, folder: Path, *, host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None
    ) -> None:
        root = Path(folder).resolve()
        if not root.is_dir():
            raise NotADirectoryError(f"{folder}: not a folder")
        self.folder = root
        self.host = host
        self.port = port
        self.faults = faults if faults is not None else Faults()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started (no trailing slash)."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        host, port = self._httpd.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        if ":" in host_text:
            host_text = f"[{host_text}]"
        return f"http://{host_text}:{port}"

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, ``(method, path, Range header or None)`` each."""
        with self.faults._lock:
            return list(self.faults.requests)

    def count(self, method: str, path: str) -> int:
        """How many ``method`` requests for ``path`` were received."""
        return sum(1 for m, p, _ in self.requests if m == method and p == path)

    def _bind(self) -> _HTTPServer:
        if self._httpd is not None:
            raise RuntimeError("the server is already started")
        self._httpd = _HTTPServer((self.host, self.port), self.folder, self.faults)
        self.port = int(self._httpd.server_address[1])
        return self._httpd

    def start(self) -> MirrorServer:
        """Bind and serve from a background thread."""
        httpd = self._bind()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mirror-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("serving %s at %s", self.folder, self.url)
        return self

    def stop(self) -> None:
        """Stop serving, end open connections and release the port. Safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        if self._thread is not None:
            httpd.shutdown()
            self._thread.join()
            self._thread = None
        httpd.close_connections()
        httpd.server_close()  # joins the handler threads

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(folder: Path, host: str, port: int) -> None:
    """Serve ``folder`` in the foreground until interrupted (``nlphub hub serve DIR``).

    Each request is logged at INFO level through `logging`.
    """
    server = MirrorServer(folder, host=host, port=port)
    httpd = server._bind()
    logger.info("serving hub mirror %s at %s (Ctrl+C to stop)", server.folder, server.url)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        server.stop()

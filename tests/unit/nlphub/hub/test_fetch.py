"""Unit tests for nlphub.hub.fetch: streaming download, resume, verification, size limits."""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import os
import re
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from nlphub.hub import fetch as fetch_module
from nlphub.hub.fetch import DEFAULT_MAX_SIZE, fetch, head_size
from nlphub.hub.fetch_errors import (
    ChecksumMismatch,
    DownloadError,
    DownloadTooLarge,
    HubHTTPError,
    NotEnoughSpace,
    SizeMismatch,
    TemporaryDownloadError,
)
from nlphub.hub.partial import partial_path
from nlphub.hub.space import human_size
from tests.unit.nlphub.hub.payloads import DATA, md5_of, payload, sha256_of

GiB = 1 << 30
MiB = 1 << 20


# -- a tiny HTTP file server with faults -------------------------------------------------------


@dataclass
class Route:
    body: bytes | Path
    status: int = 200
    ignore_range: bool = False
    cut_after: int | None = None
    """Close the connection after sending this many body bytes (Content-Length stays full)."""
    range_start_shift: int = 0
    """Answer a Range request with a Content-Range starting this many bytes off."""
    no_length: bool = False
    """Send no Content-Length: the body ends when the connection closes."""

    @property
    def size(self) -> int:
        return self.body.stat().st_size if isinstance(self.body, Path) else len(self.body)

    def read(self, start: int, length: int) -> Iterator[bytes]:
        if isinstance(self.body, bytes):
            yield self.body[start : start + length]
            return
        with self.body.open("rb") as handle:
            handle.seek(start)
            while length > 0:
                piece = handle.read(min(256 * 1024, length))
                if not piece:
                    return
                length -= len(piece)
                yield piece


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Hub:
    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        hub = self.server.hub
        hub.requests.append(
            Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        )
        route = hub.routes.get(self.path)
        if route is None or route.status != 200:
            self.send_response(404 if route is None else route.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = route.size
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and not route.ignore_range:
            start = int(match.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        if route.no_length:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(size - start))
        if status == 206:
            shown = start + route.range_start_shift
            self.send_header("Content-Range", f"bytes {shown}-{size - 1}/{size}")
        self.end_headers()
        if head:
            return
        length = size - start if route.cut_after is None else min(route.cut_after, size - start)
        try:
            for piece in route.read(start, length):
                self.wfile.write(piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (a body refused as too long)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hub: Hub

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-transfer is expected here


@pytest.fixture
def hub() -> Iterator[Hub]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.hub = Hub(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- full downloads ----------------------------------------------------------------------------


def test_full_download_verifies_and_renames(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "sub" / "a.zip"

    result = fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA).lower(), chunk_size=4096)

    assert dest.read_bytes() == DATA
    assert result.path == dest
    assert result.size == len(DATA)
    assert result.md5 == md5_of(DATA)
    assert result.sha256 == sha256_of(DATA)
    assert result.resumed_from == 0
    assert not partial_path(dest).exists()
    assert "range" not in hub.requests[0].headers


def test_download_without_md5_still_reports_hashes(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    result = fetch(hub.url("/a.zip"), tmp_path / "a.zip", expected_md5="")
    assert (result.md5, result.sha256) == (md5_of(DATA), sha256_of(DATA))


def test_existing_verified_dest_is_not_downloaded_again(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "a.zip"
    fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA))

    again = fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA))

    assert len(hub.requests) == 1
    assert again.md5 == md5_of(DATA)
    assert again.resumed_from == len(DATA)


def test_existing_wrong_dest_is_replaced(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "a.zip"
    dest.write_bytes(b"not the archive")

    fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA))

    assert dest.read_bytes() == DATA
    assert len(hub.requests) == 1


# -- resume ------------------------------------------------------------------------------------


def test_cut_transfer_keeps_partial_and_the_retry_resumes(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA, cut_after=100_000)
    dest = tmp_path / "a.zip"

    with pytest.raises(TemporaryDownloadError, match="failed after"):
        fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA), chunk_size=8192)

    assert not dest.exists()
    assert partial_path(dest).read_bytes() == DATA[:100_000]

    hub.routes["/a.zip"].cut_after = None
    result = fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA), chunk_size=8192)

    assert hub.requests[-1].headers["range"] == "bytes=100000-"
    assert result.resumed_from == 100_000
    assert (result.md5, result.sha256, result.size) == (md5_of(DATA), sha256_of(DATA), len(DATA))
    assert dest.read_bytes() == DATA
    assert not partial_path(dest).exists()


def test_server_ignoring_range_starts_over_from_zero(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA, ignore_range=True)
    dest = tmp_path / "a.zip"
    partial_path(dest).write_bytes(b"x" * 5000)  # would corrupt the file if appended to

    result = fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA))

    assert hub.requests[0].headers["range"] == "bytes=5000-"
    assert len(hub.requests) == 1  # the 200's body is used from byte 0
    assert result.resumed_from == 0
    assert dest.read_bytes() == DATA


def test_wrong_content_range_starts_over(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA, range_start_shift=7)
    dest = tmp_path / "a.zip"
    partial_path(dest).write_bytes(DATA[:5000])

    result = fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA))

    assert [r.headers.get("range") for r in hub.requests] == ["bytes=5000-", None]
    assert result.resumed_from == 0
    assert dest.read_bytes() == DATA


def test_complete_partial_is_verified_without_a_body(hub: Hub, tmp_path: Path) -> None:
    # Killed after the last byte but before the rename: the server answers 416.
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "a.zip"
    partial_path(dest).write_bytes(DATA)

    result = fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA))

    assert result.resumed_from == len(DATA)
    assert dest.read_bytes() == DATA


def test_complete_partial_with_known_size_needs_no_request(hub: Hub, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    partial_path(dest).write_bytes(DATA)

    result = fetch(hub.url("/gone.zip"), dest, expected_md5=md5_of(DATA), expected_size=len(DATA))

    assert hub.requests == []
    assert result.md5 == md5_of(DATA)


def test_partial_being_written_elsewhere_is_left_alone(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "a.zip"
    with partial_path(dest).open("wb") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(TemporaryDownloadError, match="another process"):
            fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA))
    assert hub.requests == []


# -- verification and errors -------------------------------------------------------------------


def test_checksum_mismatch_removes_partial_and_leaves_no_dest(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "a.zip"
    url = hub.url("/a.zip")

    with pytest.raises(ChecksumMismatch) as caught:
        fetch(url, dest, expected_md5="0" * 32)

    assert str(caught.value) == (
        f"checksum mismatch for {url}: hub says MD5 {'0' * 32}, downloaded file has {md5_of(DATA)}"
    )
    assert not dest.exists()
    assert not partial_path(dest).exists()


def test_corrupt_partial_is_caught_by_the_checksum(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "a.zip"
    partial_path(dest).write_bytes(b"garbage!" * 100)  # the server honours the range

    with pytest.raises(ChecksumMismatch):
        fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA))
    assert not partial_path(dest).exists()

    result = fetch(hub.url("/a.zip"), dest, expected_md5=md5_of(DATA))
    assert result.resumed_from == 0
    assert dest.read_bytes() == DATA


def test_size_other_than_the_hubs_is_refused(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "a.zip"
    url = hub.url("/a.zip")
    with pytest.raises(SizeMismatch) as caught:
        fetch(url, dest, expected_md5=None, expected_size=10)
    assert str(caught.value) == (
        f"the archive at {url} is corrupted: it is {len(DATA)} bytes but the hub says 10"
    )
    assert not dest.exists()
    assert not partial_path(dest).exists()


def test_404_is_permanent_and_removes_partial(hub: Hub, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    partial_path(dest).write_bytes(b"old")
    url = hub.url("/missing.zip")

    with pytest.raises(HubHTTPError) as caught:
        fetch(url, dest, expected_md5=None)

    assert caught.value.status == 404
    assert not isinstance(caught.value, TemporaryDownloadError)
    assert str(caught.value) == f"hub answered HTTP 404 Not Found for {url}"
    assert not partial_path(dest).exists()
    assert not dest.exists()


@pytest.mark.parametrize("status", [500, 503, 429])
def test_5xx_is_temporary_and_keeps_partial(hub: Hub, tmp_path: Path, status: int) -> None:
    hub.routes["/a.zip"] = Route(DATA, status=status)
    dest = tmp_path / "a.zip"
    partial_path(dest).write_bytes(DATA[:1000])

    with pytest.raises(TemporaryDownloadError, match=f"HTTP {status}"):
        fetch(hub.url("/a.zip"), dest, expected_md5=None)

    assert partial_path(dest).read_bytes() == DATA[:1000]
    assert not dest.exists()


def test_unreachable_server_is_temporary(tmp_path: Path) -> None:
    with pytest.raises(TemporaryDownloadError):
        fetch("http://127.0.0.1:9/a.zip", tmp_path / "a.zip", expected_md5=None, timeout=2)


def test_caller_client_is_used_and_left_open(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    with httpx.Client(headers={"User-Agent": "nlphub-test"}) as client:
        fetch(hub.url("/a.zip"), tmp_path / "a.zip", expected_md5=None, client=client)
        assert not client.is_closed
    assert hub.requests[0].headers["user-agent"] == "nlphub-test"


def test_head_size(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    assert head_size(hub.url("/a.zip")) == len(DATA)
    assert hub.requests[0].method == "HEAD"
    with pytest.raises(HubHTTPError):
        head_size(hub.url("/nope.zip"))
    source = tmp_path / "a.zip"
    source.write_bytes(b"12345")
    assert head_size(source.as_uri()) == 5


# -- hub input: sizes (security) ---------------------------------------------------------------


def _progress() -> tuple[list[int], Any]:
    seen: list[int] = []
    return seen, lambda done, total: seen.append(done)


def test_a_body_longer_than_the_declared_size_stops_there(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA, no_length=True)  # no Content-Length to check first
    dest = tmp_path / "a.zip"
    url = hub.url("/a.zip")
    seen, progress = _progress()

    with pytest.raises(SizeMismatch) as caught:
        fetch(url, dest, expected_md5=None, expected_size=1000, progress=progress)

    assert str(caught.value) == (
        f"the archive at {url} is corrupted: it is longer than the 1000 bytes the hub declares"
    )
    assert max(seen, default=0) <= 1000  # nothing past the declared size was written
    assert not dest.exists() and not partial_path(dest).exists()


def test_without_a_declared_size_an_endless_body_stops_at_the_limit(
    hub: Hub, tmp_path: Path
) -> None:
    hub.routes["/a.zip"] = Route(payload(4 * MiB), no_length=True)
    dest = tmp_path / "a.zip"
    url = hub.url("/a.zip")
    seen, progress = _progress()

    with pytest.raises(DownloadTooLarge) as caught:
        fetch(url, dest, expected_md5=None, max_size=100_000, progress=progress)

    assert not isinstance(caught.value, TemporaryDownloadError)
    assert str(caught.value) == (
        f"download of {url} stopped: the hub declares no size for this archive and it is "
        "larger than the download limit of 97.7 KiB (NLPHUB_MAX_DOWNLOAD_BYTES)"
    )
    assert max(seen, default=0) <= 100_000
    assert not dest.exists() and not partial_path(dest).exists()


def test_without_a_declared_size_a_content_length_over_the_limit_is_refused_at_once(
    hub: Hub, tmp_path: Path
) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "a.zip"
    seen, progress = _progress()
    with pytest.raises(DownloadTooLarge, match="larger than the download limit of 1000 B"):
        fetch(hub.url("/a.zip"), dest, expected_md5=None, max_size=1000, progress=progress)
    assert seen == []
    assert not partial_path(dest).exists()


def test_the_limit_lets_a_body_of_exactly_that_size_through(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA, no_length=True)
    result = fetch(hub.url("/a.zip"), tmp_path / "a.zip", expected_md5=None, max_size=len(DATA))
    assert result.size == len(DATA)
    assert DEFAULT_MAX_SIZE == 50 * GiB


def test_the_declared_size_not_the_limit_bounds_a_declared_archive(
    hub: Hub, tmp_path: Path
) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    result = fetch(
        hub.url("/a.zip"),
        tmp_path / "a.zip",
        expected_md5=None,
        expected_size=len(DATA),
        max_size=10,
    )
    assert result.size == len(DATA)


def test_a_resumed_partial_over_the_limit_starts_over(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/a.zip"] = Route(DATA)
    dest = tmp_path / "a.zip"
    partial_path(dest).write_bytes(b"x" * 2000)
    with pytest.raises(DownloadTooLarge):
        fetch(hub.url("/a.zip"), dest, expected_md5=None, max_size=1000)
    assert "range" not in hub.requests[0].headers
    assert not partial_path(dest).exists()


# -- progress and memory -----------------------------------------------------------------------


def test_progress_is_throttled_and_ends_at_total(hub: Hub, tmp_path: Path) -> None:
    data = payload(2 * MiB)
    hub.routes["/a.zip"] = Route(data)
    calls: list[tuple[int, int | None]] = []

    started = time.monotonic()
    fetch(
        hub.url("/a.zip"),
        tmp_path / "a.zip",
        expected_md5=None,
        chunk_size=1024,  # ~2000 chunks
        progress=lambda done, total: calls.append((done, total)),
    )
    elapsed = time.monotonic() - started

    assert calls[-1] == (len(data), len(data))
    assert len(calls) <= 2 + elapsed / fetch_module.PROGRESS_INTERVAL + 1
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_fifty_megabytes_stream_in_flat_memory(hub: Hub, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    block = payload(MiB, seed=7)
    digest = hashlib.md5()
    with big.open("wb") as handle:
        for _ in range(50):
            handle.write(block)
            digest.update(block)
    hub.routes["/big.zip"] = Route(big)
    dest = tmp_path / "big.zip"

    tracemalloc.start()
    try:
        result = fetch(hub.url("/big.zip"), dest, expected_md5=digest.hexdigest())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.size == 50 * MiB
    assert peak < 20 * MiB, f"peak {human_size(peak)}"


def test_errors_share_a_base() -> None:
    for cls in (TemporaryDownloadError, ChecksumMismatch, NotEnoughSpace, HubHTTPError):
        assert issubclass(cls, DownloadError)
    assert os.path.basename(str(partial_path(Path("/x/a.zip")))) == "a.zip.partial"

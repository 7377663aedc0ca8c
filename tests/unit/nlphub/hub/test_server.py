"""Unit tests for nlphub.hub.server: a real HTTP server for hub mirrors, with fault injection."""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import nlphub.hub.server
from nlphub.hub.metadata import parse_metadata
from nlphub.hub.mirror import build_demo_mirror
from nlphub.hub.server import Faults, MirrorServer, serve_forever

DATA = bytes((i * 7 + i // 256) % 256 for i in range(200_000))  # > 3 chunks of 64 KiB
ARCHIVE = "/public/models/a_en_5.4.0_3.4_1.zip"
SECRET = b"top secret outside the mirror"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    (root / "public" / "models").mkdir(parents=True)
    (root / "data.bin").write_bytes(DATA)
    (root / "public" / "models" / "metadata.json").write_text('{"name": "a"}\n')
    (root / ARCHIVE.lstrip("/")).write_bytes(DATA[:5000])
    (root / "empty.bin").write_bytes(b"")
    (root / ".hidden").write_bytes(b"hidden")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root / "inside.bin").symlink_to(root / "data.bin")
    return root


@pytest.fixture
def server(folder: Path) -> Iterator[MirrorServer]:
    with MirrorServer(folder) as srv:
        yield srv


@pytest.fixture
def client(server: MirrorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def raw_get(server: MirrorServer, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (httpx would normalise dot segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- plain serving ------------------------------------------------------------------------------


def test_url_and_binding(server: MirrorServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.port > 0


def test_get_whole_file(client: httpx.Client, folder: Path) -> None:
    response = client.get("/data.bin")
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["etag"].startswith('"')
    mtime = (folder / "data.bin").stat().st_mtime
    assert response.headers["last-modified"] == email.utils.formatdate(mtime, usegmt=True)
    nested = client.get(ARCHIVE)
    assert nested.content == DATA[:5000]
    assert nested.headers["content-type"] == "application/zip"
    assert client.get("/public/models/metadata.json").text == '{"name": "a"}\n'


def test_get_empty_file(client: httpx.Client) -> None:
    response = client.get("/empty.bin")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == "0"


def test_head(client: httpx.Client) -> None:
    response = client.head("/data.bin")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["etag"] == client.get("/data.bin").headers["etag"]
    assert client.head("/missing.bin").status_code == 404


def test_keep_alive_serves_several_requests_on_one_connection(client: httpx.Client) -> None:
    for _ in range(3):
        assert client.get("/data.bin", headers={"Range": "bytes=0-9"}).content == DATA[:10]
        assert client.head("/data.bin").status_code == 200


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=0-0", 0, 0),
        ("bytes=150000-", 150000, len(DATA) - 1),
        ("bytes=-100", len(DATA) - 100, len(DATA) - 1),
        ("bytes=-999999", 0, len(DATA) - 1),
        ("bytes=199990-999999", 199990, len(DATA) - 1),
    ],
)
def test_ranges(client: httpx.Client, header: str, start: int, end: int) -> None:
    response = client.get("/data.bin", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == DATA[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert response.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize("header", ["bytes=200000-", "bytes=300000-300010", "bytes=-0"])
def test_unsatisfiable_range(client: httpx.Client, header: str) -> None:
    response = client.get("/data.bin", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"
    assert client.get("/empty.bin", headers={"Range": "bytes=0-"}).status_code == 416


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=9-3", "bytes=-"])
def test_unusable_range_headers_get_the_whole_file(client: httpx.Client, header: str) -> None:
    response = client.get("/data.bin", headers={"Range": header})
    assert response.status_code == 200
    assert response.content == DATA


def test_if_range(client: httpx.Client) -> None:
    first = client.head("/data.bin")
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]
    same = client.get("/data.bin", headers={"Range": "bytes=5-9", "If-Range": etag})
    assert same.status_code == 206 and same.content == DATA[5:10]
    by_date = client.get("/data.bin", headers={"Range": "bytes=5-9", "If-Range": last_modified})
    assert by_date.status_code == 206
    changed = client.get("/data.bin", headers={"Range": "bytes=5-9", "If-Range": '"other"'})
    assert changed.status_code == 200 and changed.content == DATA


def test_conditional_requests(client: httpx.Client, folder: Path) -> None:
    first = client.get("/data.bin")
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]

    not_modified = client.get("/data.bin", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert client.get("/data.bin", headers={"If-None-Match": f'"x", {etag}'}).status_code == 304
    assert client.head("/data.bin", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/data.bin", headers={"If-None-Match": '"nope"'}).status_code == 200

    assert client.get("/data.bin", headers={"If-Modified-Since": last_modified}).status_code == 304
    earlier = email.utils.formatdate(time.time() - 86400 * 365 * 30, usegmt=True)
    response = client.get("/data.bin", headers={"If-Modified-Since": earlier})
    assert response.status_code == 200 and response.content == DATA
    assert client.get("/data.bin", headers={"If-Modified-Since": "garbage"}).status_code == 200

    # A changed file has a new ETag: the old one no longer matches.
    os.utime(folder / "data.bin", ns=(0, 10**18))
    changed = client.get("/data.bin", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


# --- what is not served -------------------------------------------------------------------------


def test_missing_files_and_folders_are_404(client: httpx.Client) -> None:
    assert client.get("/missing.bin").status_code == 404
    for path in ("/", "/public", "/public/models/", "/public/models"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"metadata.json" not in response.content
    assert client.get("/.hidden").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/public/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/public/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/escape.txt",
        "//etc/passwd",
        "/data.bin%00",
        "secret.txt",
    ],
)
def test_traversal_is_refused(server: MirrorServer, path: str) -> None:
    status, body = raw_get(server, path)
    assert status in (403, 404), path
    assert SECRET not in body


def test_symlink_inside_the_folder_is_served(client: httpx.Client) -> None:
    assert client.get("/inside.bin").content == DATA


def test_query_string_is_ignored(client: httpx.Client) -> None:
    assert client.get("/data.bin?x=1").content == DATA


# --- faults -------------------------------------------------------------------------------------


def test_cut_after_bytes_truncates_once(client: httpx.Client, server: MirrorServer) -> None:
    server.faults.cut_after_bytes = 70_000
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("GET", "/data.bin") as response,
    ):
        assert response.headers["content-length"] == str(len(DATA))
        for chunk in response.iter_raw():
            received += chunk
    assert bytes(received) == DATA[:70_000]
    assert server.faults.cut_after_bytes is None
    # A resume with Range gets the rest.
    rest = client.get("/data.bin", headers={"Range": f"bytes={len(received)}-"})
    assert rest.status_code == 206 and bytes(received) + rest.content == DATA
    assert server.requests[-1] == ("GET", "/data.bin", "bytes=70000-")


def test_cut_applies_only_to_its_path(client: httpx.Client, server: MirrorServer) -> None:
    server.faults.cut_after_bytes = 100
    server.faults.cut_path = ARCHIVE
    assert client.get("/data.bin").content == DATA
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(ARCHIVE)
    assert server.faults.cut_after_bytes is None and server.faults.cut_path is None
    assert client.get(ARCHIVE).content == DATA[:5000]


def test_cut_at_zero_bytes(client: httpx.Client, server: MirrorServer) -> None:
    server.faults.cut_after_bytes = 0
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/data.bin")
    assert client.get("/data.bin").content == DATA


def test_status_for(client: httpx.Client, server: MirrorServer) -> None:
    server.faults.status_for[ARCHIVE] = 500
    server.faults.status_for["missing.zip"] = 503  # without the leading slash works too
    for _ in range(2):
        assert client.get(ARCHIVE).status_code == 500
    assert client.head(ARCHIVE).status_code == 500
    assert client.get("/missing.zip").status_code == 503
    assert client.get("/data.bin").status_code == 200
    del server.faults.status_for[ARCHIVE]
    assert client.get(ARCHIVE).status_code == 200


def test_fail_times(client: httpx.Client, server: MirrorServer) -> None:
    server.faults.fail_times[ARCHIVE] = 2
    codes = [client.get(ARCHIVE).status_code for _ in range(4)]
    assert codes == [500, 500, 200, 200]
    assert ARCHIVE not in server.faults.fail_times


def test_fail_times_with_another_status(client: httpx.Client, server: MirrorServer) -> None:
    server.faults.fail_status = 503
    server.faults.fail_times[ARCHIVE] = 1
    assert [client.get(ARCHIVE).status_code for _ in range(2)] == [503, 200]


def test_body_for_replaces_the_file(client: httpx.Client, server: MirrorServer) -> None:
    page = b"<html><body>proxy login</body></html>"
    server.faults.body_for["public/models/metadata.json"] = page
    server.faults.body_for["/nowhere.json"] = b""
    for _ in range(2):
        response = client.get("/public/models/metadata.json")
        assert (response.status_code, response.content) == (200, page)
        assert response.headers["content-type"] == "application/json"
    assert client.head("/public/models/metadata.json").headers["content-length"] == str(len(page))
    assert client.get("/nowhere.json").content == b""
    server.faults.body_for.clear()
    assert client.get("/public/models/metadata.json").content == b'{"name": "a"}\n'


def test_slow_times_then_recovers(client: httpx.Client, server: MirrorServer) -> None:
    server.faults.slow_delay = 0.2
    server.faults.slow_times["/data.bin"] = 1
    started = time.monotonic()
    assert client.get(ARCHIVE).content == DATA[:5000]  # another path: not slowed
    assert client.get("/data.bin").content == DATA
    slow = time.monotonic() - started
    assert slow >= 0.2 * 4  # four chunks of 64 KiB
    assert server.faults.slow_times == {}
    server.faults.slow_times["/data.bin"] = 1
    server.faults.slow_delay = 1.0
    with pytest.raises(httpx.ReadTimeout):
        client.get("/data.bin", timeout=0.3)
    assert client.get("/data.bin").content == DATA


def test_corrupt(client: httpx.Client, server: MirrorServer) -> None:
    server.faults.corrupt.add("/data.bin")
    response = client.get("/data.bin")
    assert response.status_code == 200
    assert len(response.content) == len(DATA)
    assert response.content != DATA
    assert response.content == bytes(255 - b for b in DATA)
    ranged = client.get("/data.bin", headers={"Range": "bytes=100-199"})
    assert ranged.content == bytes(255 - b for b in DATA[100:200])
    assert client.get(ARCHIVE).content == DATA[:5000]
    server.faults.corrupt.clear()
    assert client.get("/data.bin").content == DATA


def test_delay_per_chunk(client: httpx.Client, server: MirrorServer) -> None:
    started = time.monotonic()
    client.get("/data.bin")
    fast = time.monotonic() - started
    server.faults.delay_per_chunk = 0.05
    started = time.monotonic()
    assert client.get("/data.bin").content == DATA
    slow = time.monotonic() - started
    assert slow >= 0.05 * 4  # four chunks of 64 KiB
    assert slow > fast


def test_request_log(client: httpx.Client, server: MirrorServer) -> None:
    client.head(ARCHIVE)
    client.get(ARCHIVE, headers={"Range": "bytes=10-"})
    client.get("/missing%20file.zip")
    assert server.requests == [
        ("HEAD", ARCHIVE, None),
        ("GET", ARCHIVE, "bytes=10-"),
        ("GET", "/missing file.zip", None),
    ]
    assert server.count("GET", ARCHIVE) == 1
    assert server.requests is not server.faults.requests
    server.faults.reset()
    assert server.requests == []


def test_concurrent_requests_are_all_served_and_logged(server: MirrorServer) -> None:
    results: list[bytes] = []
    lock = threading.Lock()

    def fetch() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            body = c.get("/data.bin").content
        with lock:
            results.append(body)

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [DATA] * 20
    assert server.count("GET", "/data.bin") == 20


def test_faults_reset() -> None:
    faults = Faults(cut_after_bytes=1, status_for={"/a": 500}, fail_times={"/b": 1})
    faults.corrupt.add("/c")
    faults.delay_per_chunk = 1.0
    faults.fail_status = 503
    faults.body_for["/d"] = b"x"
    faults.slow_times["/e"] = 2
    faults.slow_delay = 1.0
    faults.reset()
    assert faults == Faults()


def test_serves_a_demo_mirror(tmp_path: Path) -> None:
    root = build_demo_mirror(tmp_path / "demo")
    with MirrorServer(root) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        for folder in ("", "/clinical/models"):
            text = c.get(f"{folder}/metadata.json").text
            entries, warnings = parse_metadata(text, source=folder or "/")
            assert entries and warnings == []
            for entry in entries:
                body = c.get(f"{folder}/{entry.archive_name}").content
                assert hashlib.md5(body, usedforsecurity=False).hexdigest().upper() == (
                    entry.checksum
                )
                assert len(body) == entry.size


# --- life cycle ---------------------------------------------------------------------------------


def test_stop_releases_the_port_even_with_an_idle_connection(folder: Path) -> None:
    server = MirrorServer(folder).start()
    port = server.port
    idle = socket.create_connection(("127.0.0.1", port))
    try:
        with httpx.Client(base_url=server.url) as c:  # a keep-alive connection left open
            assert c.get("/data.bin").status_code == 200
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 5
        server.stop()  # twice is fine
    finally:
        idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError):
        _ = server.url


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        MirrorServer(tmp_path / "nope")


def test_requests_are_logged(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nlphub.hub.server"):
        client.get("/data.bin")
        client.get("/missing.bin")
    messages = [r.getMessage() for r in caplog.records if r.name == "nlphub.hub.server"]
    assert any("GET /data.bin" in m and "200" in m for m in messages)
    assert any("GET /missing.bin" in m and "404" in m for m in messages)


def test_serve_forever_binds_logs_and_stops_on_interrupt(
    folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    def fake_serve_forever(self: nlphub.hub.server._HTTPServer, poll_interval: float = 0.5) -> None:
        seen.append(self.server_address[1])
        raise KeyboardInterrupt

    monkeypatch.setattr(nlphub.hub.server._HTTPServer, "serve_forever", fake_serve_forever)
    with caplog.at_level(logging.INFO, logger="nlphub.hub.server"):
        serve_forever(folder, "127.0.0.1", 0)
    assert seen and seen[0] > 0
    assert any(str(folder.resolve()) in r.getMessage() for r in caplog.records)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", seen[0]), timeout=1).close()

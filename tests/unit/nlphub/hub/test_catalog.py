"""Unit tests for nlphub.hub.catalog: hub folders, the metadata.json cache, outages."""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from nlphub.hub.catalog import (
    CatalogResult,
    HubFolder,
    archive_url,
    edition_for_url,
    folders_from_settings,
    read_catalog,
)
from nlphub.hub.metadata import HubEntry

T0 = 1_735_689_600.0  # 2025-01-01 00:00:00 UTC
T0_TEXT = "2025-01-01 00:00:00 UTC"
TTL = 3600.0


def line(name: str, language: str = "en", ms: int = 1_700_000_000_000, **extra: Any) -> str:
    data = {
        "name": name,
        "language": language,
        "libVersion": {"parts": [5, 1, 0]},
        "sparkVersion": {"parts": [3, 0]},
        "readyToUse": True,
        "time": ms,
        "isZipped": True,
        "category": "ml",
        "checksum": "",
        "annotator": "NerDLModel",
        **extra,
    }
    # The hub writes ISO times; an ISO string from milliseconds keeps the archive name exact.
    data["time"] = datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(data)


BODY_V1 = "\n".join([line("ner_dl"), line("pos_anc")]) + "\n"
BODY_V2 = BODY_V1 + line("lemma_antbnc") + "\n"


# -- a tiny hub server -------------------------------------------------------------------------


@dataclass
class Folder:
    body: bytes
    etag: str = '"v1"'
    last_modified: str = "Wed, 01 Jan 2025 00:00:00 GMT"
    status: int = 200


@dataclass
class Hub:
    base: str
    folders: dict[str, Folder] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, folder: str) -> str:
        return f"{self.base}/{folder}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        hub = self.server.hub
        headers = {k.lower(): v for k, v in self.headers.items()}
        hub.requests.append((self.path, headers))
        folder = hub.folders.get(self.path.removesuffix("/metadata.json").lstrip("/"))
        if folder is None or not self.path.endswith("/metadata.json"):
            self._reply(404, b"")
            return
        if folder.status != 200:
            self._reply(folder.status, b"<html>oops</html>")
            return
        if headers.get("if-none-match") == folder.etag:
            self._reply(304, None, folder)
            return
        self._reply(200, folder.body, folder)

    def _reply(self, status: int, body: bytes | None, folder: Folder | None = None) -> None:
        self.send_response(status)
        if folder is not None:
            self.send_header("ETag", folder.etag)
            self.send_header("Last-Modified", folder.last_modified)
        if body is not None:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hub: Hub


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


@pytest.fixture
def dead_url() -> str:
    """A URL nothing listens on."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/public/models"


def names(result: CatalogResult) -> list[str]:
    return [entry.name for entry in result.entries]


# -- cache, TTL, 304 ---------------------------------------------------------------------------


def test_first_read_then_ttl_cache_hit_without_request(hub: Hub, tmp_path: Path) -> None:
    hub.folders["public/models"] = Folder(BODY_V1.encode())
    folder = HubFolder(hub.url("public/models"))

    first = read_catalog([folder], tmp_path, ttl=TTL, now=T0)
    assert names(first) == ["ner_dl", "pos_anc"]
    assert first.sources == {folder.url: "network"}
    assert first.errors == [] and first.warnings == []

    second = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + TTL - 1)
    assert names(second) == ["ner_dl", "pos_anc"]
    assert second.sources == {folder.url: "cache"}
    assert len(hub.requests) == 1
    assert [p.name for p in tmp_path.iterdir()] == [next(tmp_path.iterdir()).name]  # no temp


def test_after_ttl_a_conditional_request_accepts_304(hub: Hub, tmp_path: Path) -> None:
    hub.folders["public/models"] = Folder(BODY_V1.encode())
    folder = HubFolder(hub.url("public/models"))
    read_catalog([folder], tmp_path, ttl=TTL, now=T0)

    result = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + TTL)

    _, headers = hub.requests[-1]
    assert headers["if-none-match"] == '"v1"'
    assert headers["if-modified-since"] == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert result.sources == {folder.url: "not-modified"}
    assert names(result) == ["ner_dl", "pos_anc"]
    # The 304 renews the copy: within the TTL again, no request.
    again = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + TTL + 10)
    assert again.sources == {folder.url: "cache"}
    assert len(hub.requests) == 2


def test_after_ttl_a_changed_folder_is_read_again(hub: Hub, tmp_path: Path) -> None:
    hub.folders["public/models"] = Folder(BODY_V1.encode())
    folder = HubFolder(hub.url("public/models"))
    read_catalog([folder], tmp_path, ttl=TTL, now=T0)
    hub.folders["public/models"] = Folder(BODY_V2.encode(), etag='"v2"')

    result = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + 2 * TTL)

    assert result.sources == {folder.url: "network"}
    assert names(result) == ["ner_dl", "pos_anc", "lemma_antbnc"]


# -- failures ----------------------------------------------------------------------------------


def seed_cache(tmp_path: Path, hub: Hub) -> HubFolder:
    hub.folders["public/models"] = Folder(BODY_V1.encode())
    folder = HubFolder(hub.url("public/models"))
    read_catalog([folder], tmp_path, ttl=TTL, now=T0)
    return folder


def test_server_down_uses_stale_cache_with_an_error(tmp_path: Path, dead_url: str) -> None:
    # Fill the cache from a live server at the same URL, then take it away.
    server = _Server(("127.0.0.1", int(dead_url.split(":")[2].split("/")[0])), _Handler)
    server.hub = Hub(dead_url.rsplit("/public/models", 1)[0])
    server.hub.folders["public/models"] = Folder(BODY_V1.encode())
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    folder = HubFolder(dead_url)
    try:
        read_catalog([folder], tmp_path, ttl=TTL, now=T0)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

    result = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + 2 * TTL)

    assert names(result) == ["ner_dl", "pos_anc"]
    assert result.sources == {dead_url: "stale-cache"}
    assert len(result.errors) == 1
    assert re.fullmatch(
        rf"hub {re.escape(dead_url)} is unreachable: .+; using the copy from {T0_TEXT}",
        result.errors[0],
    ), result.errors[0]


def test_5xx_uses_stale_cache(hub: Hub, tmp_path: Path) -> None:
    folder = seed_cache(tmp_path, hub)
    hub.folders["public/models"].status = 503

    result = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + 2 * TTL)

    assert result.errors == [
        f"hub {folder.url} is unreachable: HTTP 503 Service Unavailable; "
        f"using the copy from {T0_TEXT}"
    ]
    assert result.sources == {folder.url: "stale-cache"}
    assert names(result) == ["ner_dl", "pos_anc"]
    # The failure does not renew the copy: the next read asks again.
    read_catalog([folder], tmp_path, ttl=TTL, now=T0 + 2 * TTL + 1)
    assert len(hub.requests) == 3


def test_no_cache_and_down_is_an_error_without_entries(tmp_path: Path, dead_url: str) -> None:
    result = read_catalog([HubFolder(dead_url)], tmp_path, ttl=TTL, now=T0)

    assert result.entries == []
    assert result.sources == {dead_url: "failed"}
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"hub {dead_url} is unreachable: ")
    assert result.errors[0].endswith("; no earlier copy")


def test_garbage_keeps_the_last_good_copy(hub: Hub, tmp_path: Path) -> None:
    folder = seed_cache(tmp_path, hub)
    hub.folders["public/models"] = Folder(b"\xff\xfe\x00garbage", etag='"v9"')

    result = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + 2 * TTL)

    assert result.errors == [
        f"hub {folder.url} sent no usable metadata.json: metadata.json is not UTF-8 text "
        f"(invalid start byte at byte 0); using the copy from {T0_TEXT}"
    ]
    assert names(result) == ["ner_dl", "pos_anc"]
    # Still the old copy, with its old ETag.
    read_catalog([folder], tmp_path, ttl=TTL, now=T0 + 3 * TTL)
    assert hub.requests[-1][1]["if-none-match"] == '"v1"'


def test_html_page_is_not_taken_for_an_empty_hub(hub: Hub, tmp_path: Path) -> None:
    folder = seed_cache(tmp_path, hub)
    hub.folders["public/models"] = Folder(b"<html>\n<body>maintenance</body>\n</html>\n", '"v9"')

    result = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + 2 * TTL)

    assert result.sources == {folder.url: "stale-cache"}
    assert "none of its 3 non-blank lines is a hub entry" in result.errors[0]
    assert names(result) == ["ner_dl", "pos_anc"]


def test_empty_body_does_not_wipe_a_catalog_but_an_empty_hub_is_fine(
    hub: Hub, tmp_path: Path
) -> None:
    folder = seed_cache(tmp_path, hub)
    hub.folders["public/models"] = Folder(b"\n", '"v9"')

    result = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + 2 * TTL)

    assert result.sources == {folder.url: "stale-cache"}
    assert result.errors == [
        f"hub {folder.url} sent no usable metadata.json: metadata.json is empty (the last copy "
        f"listed 2 entries); using the copy from {T0_TEXT}"
    ]
    assert names(result) == ["ner_dl", "pos_anc"]
    # A folder that never listed anything may well be empty.
    hub.folders["empty/models"] = Folder(b"")
    empty = HubFolder(hub.url("empty/models"))
    fresh = read_catalog([empty], tmp_path, now=T0)
    assert (fresh.sources, fresh.errors, fresh.entries) == ({empty.url: "network"}, [], [])


def test_404_without_cache(hub: Hub, tmp_path: Path) -> None:
    folder = HubFolder(hub.url("nothing/models"))
    result = read_catalog([folder], tmp_path, now=T0)
    assert result.errors == [
        f"hub {folder.url} sent no usable metadata.json: HTTP 404 Not Found; no earlier copy"
    ]


def test_malformed_lines_are_warnings_with_line_numbers(hub: Hub, tmp_path: Path) -> None:
    body = "\n".join([line("ner_dl"), "{broken", "", '{"name": "x"}', line("pos_anc")])
    hub.folders["public/models"] = Folder(body.encode())
    folder = HubFolder(hub.url("public/models"))

    result = read_catalog([folder], tmp_path, now=T0)

    assert names(result) == ["ner_dl", "pos_anc"]
    assert result.errors == []
    assert len(result.warnings) == 2
    assert result.warnings[0].startswith(f"{folder.url}/metadata.json line 2: invalid JSON")
    assert result.warnings[1] == (
        f"{folder.url}/metadata.json line 4: missing field 'language'; missing field 'time'"
    )


def test_corrupt_cache_file_is_ignored(hub: Hub, tmp_path: Path) -> None:
    folder = seed_cache(tmp_path, hub)
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_text("{torn")

    result = read_catalog([folder], tmp_path, ttl=TTL, now=T0 + 1)

    assert result.sources == {folder.url: "network"}
    assert len(hub.requests) == 2


# -- file:// folders ---------------------------------------------------------------------------


def test_file_folder_is_cached_and_revalidated_by_mtime(tmp_path: Path) -> None:
    hub_dir = tmp_path / "hub" / "clinical" / "models"
    hub_dir.mkdir(parents=True)
    metadata = hub_dir / "metadata.json"
    metadata.write_text(BODY_V1)
    folder = HubFolder(hub_dir.as_uri() + "/", "Healthcare NLP")
    cache = tmp_path / "cache"

    assert read_catalog([folder], cache, now=T0).sources == {folder.url: "network"}
    assert read_catalog([folder], cache, now=T0 + 1).sources == {folder.url: "cache"}
    unchanged = read_catalog([folder], cache, now=T0 + 2 * TTL)
    assert unchanged.sources == {folder.url: "not-modified"}
    assert {e.edition for e in unchanged.entries} == {"Healthcare NLP"}

    metadata.write_text(BODY_V2)
    os.utime(metadata, ns=(1, 1))
    changed = read_catalog([folder], cache, now=T0 + 4 * TTL)
    assert changed.sources == {folder.url: "network"}
    assert names(changed) == ["ner_dl", "pos_anc", "lemma_antbnc"]

    metadata.unlink()
    gone = read_catalog([folder], cache, now=T0 + 6 * TTL)
    assert gone.sources == {folder.url: "stale-cache"}
    assert names(gone) == ["ner_dl", "pos_anc", "lemma_antbnc"]


# -- folders and archive URLs ------------------------------------------------------------------


@dataclass
class FakeSettings:
    hub_urls: list[str]
    licensed_hub_urls: list[str]


@pytest.mark.parametrize(
    ("url", "edition"),
    [
        ("https://s3.amazonaws.com/auxdata.johnsnowlabs.com/clinical/models", "Healthcare NLP"),
        ("https://x/finance/models", "Finance NLP"),
        ("https://x/legal/models", "Legal NLP"),
        ("https://x/ocr/models", "Visual NLP"),
        ("file:///srv/visual-nlp/models", "Visual NLP"),
        ("https://x/licensed/models", "Healthcare NLP"),
    ],
)
def test_edition_inferred_from_path(url: str, edition: str) -> None:
    assert edition_for_url(url) == edition


def test_folders_from_settings() -> None:
    settings = FakeSettings(
        hub_urls=["https://x/public/models/"],
        licensed_hub_urls=[
            "https://x/clinical/models",
            "https://x/legal/models",
            "finance=https://mirror/a/models",
            "Visual-NLP=file:///srv/b",
            "https://x/clinical/models",
        ],
    )

    assert folders_from_settings(settings) == [
        HubFolder("https://x/public/models", "Open Source"),
        HubFolder("https://x/clinical/models", "Healthcare NLP"),
        HubFolder("https://x/legal/models", "Legal NLP"),
        HubFolder("https://mirror/a/models", "Finance NLP"),
        HubFolder("file:///srv/b", "Visual NLP"),
    ]


def test_unknown_explicit_edition_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown edition 'spark'"):
        folders_from_settings(FakeSettings([], ["spark=https://x/models"]))


def test_folders_from_real_settings() -> None:
    from schemas.settings import Settings

    settings = Settings(
        hub_urls=["https://x/public/models"], licensed_hub_urls=["https://x/finance/models"]
    )
    assert [f.edition for f in folders_from_settings(settings)] == ["Open Source", "Finance NLP"]


def test_each_entry_knows_its_archive_url(hub: Hub, tmp_path: Path) -> None:
    hub.folders["public/models"] = Folder(line("ner_dl").encode())
    hub.folders["clinical/models"] = Folder(line("deid", ms=1_559_669_094_458).encode())
    public = HubFolder(hub.url("public/models"))
    clinical = HubFolder(hub.url("clinical/models"), "Healthcare NLP")

    result = read_catalog([public, clinical], tmp_path, now=T0)

    ner, deid = result.entries
    assert result.folder_for(deid) == clinical
    assert result.folder_url(ner) == public.url
    assert result.url_of(deid) == f"{clinical.url}/deid_en_5.1.0_3.0_1559669094458.zip"
    assert archive_url(public, ner) == f"{public.url}/{ner.archive_name}"


# -- hub input (security) ----------------------------------------------------------------------


def test_archive_url_quotes_the_archive_name_as_one_segment() -> None:
    # Built without validation: what the quoting alone guarantees, whatever a name holds.
    odd = HubEntry.model_construct(
        name="../up?q=1#frag",
        language="en",
        lib_version=None,
        spark_version=None,
        is_zipped=True,
        time=datetime(2024, 1, 1, tzinfo=UTC),
    )
    url = archive_url(HubFolder("file:///srv/hub/models/"), odd)
    assert url == f"file:///srv/hub/models/..%2Fup%3Fq%3D1%23frag_en___{odd.time_ms}.zip"
    assert archive_url("https://hub/x/", odd) == url.replace(
        "file:///srv/hub/models", "https://hub/x"
    )
    parsed = urlparse(url)
    assert (parsed.query, parsed.fragment) == ("", "")
    assert unquote(parsed.path.rsplit("/", 1)[1]) == odd.archive_name


def test_unsafe_names_in_a_file_mirror_are_skipped_lines(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    lines = [line("ner_dl"), line("../secret"), line("glove?x"), line("pos", language="../en")]
    (mirror / "metadata.json").write_text("\n".join(lines) + "\n")
    folder = HubFolder(mirror.as_uri())

    result = read_catalog([folder], tmp_path / "cache", now=T0)

    assert [e.name for e in result.entries] == ["ner_dl"]
    assert [w.split(": ", 2)[:2] for w in result.warnings] == [
        [f"{folder.metadata_url} line 2", "bad field 'name'"],
        [f"{folder.metadata_url} line 3", "bad field 'name'"],
        [f"{folder.metadata_url} line 4", "bad field 'language'"],
    ]
    assert result.errors == []
    assert result.url_of(result.entries[0]).startswith(f"{folder.url}/ner_dl_en_")

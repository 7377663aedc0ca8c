"""Reading the hub folders' ``metadata.json`` into one catalog, with a cache that outlives outages.

A hub folder is a URL (``http(s)://`` or ``file://``) and the edition of what it holds. For
each folder ``read_catalog`` reads ``<url>/metadata.json``:

* within ``ttl`` seconds of the last successful read it uses the cached copy (no request);
* after that it asks again with ``If-None-Match`` / ``If-Modified-Since`` and accepts ``304``
  (for ``file://``, an unchanged modification time is the ``304``);
* when the folder is unreachable (network error, 5xx, a cut transfer, a timeout) or sends
  something unusable (a 4xx, bytes that are not UTF-8, a body none of whose lines is a hub
  entry, such as an HTML error page, or an empty body where the last copy had entries) it keeps
  using the last good copy and reports one error for the folder.

The cache is one JSON file per folder under ``cache_dir``, named by a hash of the URL and
written atomically (temporary file, ``fsync``, ``os.replace``), so a crash never leaves a torn
copy behind.

Archives live next to ``metadata.json``: ``archive_url(folder, entry)``, or
``CatalogResult.url_of(entry)`` for an entry of the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote, unquote, urlparse
from urllib.request import url2pathname

import httpx

from nlphub.hub.metadata import HubEntry, parse_metadata
from schemas.editions import HEALTHCARE, OPEN_SOURCE

__all__ = [
    "CatalogResult",
    "HubFolder",
    "Source",
    "archive_url",
    "edition_for_url",
    "folders_from_settings",
    "read_catalog",
]

logger = logging.getLogger(__name__)

Source = Literal["network", "not-modified", "cache", "stale-cache", "failed"]

METADATA_FILE = "metadata.json"
DEFAULT_TIMEOUT = 30.0

# Words in a licensed folder's path (or in an explicit "edition=URL") → edition.
_EDITION_WORDS = {
    "clinical": HEALTHCARE,
    "healthcare": HEALTHCARE,
    "medical": HEALTHCARE,
    "finance": "Finance NLP",
    "legal": "Legal NLP",
    "ocr": "Visual NLP",
    "visual": "Visual NLP",
    "open": OPEN_SOURCE,
    "public": OPEN_SOURCE,
}
_WORD = re.compile(r"[a-z0-9]+")
_EXPLICIT = re.compile(r"^(?P<edition>[A-Za-z][A-Za-z0-9 _-]*)=(?P<url>(?:https?|file)://.+)$")


@dataclass(frozen=True)
class HubFolder:
    """A hub folder: ``url`` (``http(s)://`` or ``file://``, no trailing slash) and its edition."""

    url: str
    edition: str = OPEN_SOURCE

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://", "file://")):
            raise ValueError(f"{self.url!r} is not an http(s):// or file:// URL")
        object.__setattr__(self, "url", self.url.rstrip("/"))

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/{METADATA_FILE}"


def archive_url(folder: HubFolder | str, entry: HubEntry) -> str:
    """Where the archive of ``entry`` lives: ``<folder url>/<archive name>``.

    The archive name is one path segment, percent-quoted (``urllib.parse.quote`` with no safe
    characters): whatever a name held, it could not add a segment, a query or a fragment. (A
    `HubEntry`'s name and language already follow the hub's naming, which quoting leaves as
    it is.) ``folder`` is a `HubFolder` or its URL.
    """
    base = folder.url if isinstance(folder, HubFolder) else folder.rstrip("/")
    return f"{base}/{quote(entry.archive_name, safe='')}"


class _HubSettings(Protocol):
    hub_urls: list[str]
    licensed_hub_urls: list[str]


def edition_for_url(url: str) -> str:
    """The edition a licensed folder holds, read from its path.

    ``.../clinical/models`` → Healthcare NLP, ``.../finance/models`` → Finance NLP,
    ``.../legal/models`` → Legal NLP, ``.../ocr/models`` or a ``visual`` folder → Visual NLP;
    anything else → Healthcare NLP (the licensed hub's main edition).
    """
    path = urlparse(url).path.lower()
    for segment in reversed([part for part in path.split("/") if part]):
        for word in _WORD.findall(segment):
            edition = _EDITION_WORDS.get(word)
            if edition is not None and edition != OPEN_SOURCE:
                return edition
    return HEALTHCARE


def _explicit_edition(name: str) -> str:
    from nlphub.hub.licence import EDITIONS  # the canonical spellings

    text = name.strip().lower()
    for edition in EDITIONS:
        if text in (edition.lower(), edition.lower().replace(" ", "-")):
            return edition
    for word in _WORD.findall(text):
        if word in _EDITION_WORDS:
            return _EDITION_WORDS[word]
    raise ValueError(f"unknown edition {name!r} (known: {', '.join(EDITIONS)})")


def folders_from_settings(settings: _HubSettings) -> list[HubFolder]:
    """The hub folders to read: ``hub_urls`` (Open Source), then ``licensed_hub_urls``.

    A licensed URL's edition comes from its path (``edition_for_url``), or is given explicitly
    as ``EDITION=URL`` (``healthcare=https://...``, ``Finance-NLP=file:///...``; an edition
    name without spaces, as the setting splits on them). Duplicates are dropped.

    Raises:
        ValueError: an ``EDITION=URL`` names an unknown edition.
    """
    folders: list[HubFolder] = []
    seen: set[str] = set()

    def add(folder: HubFolder) -> None:
        if folder.url not in seen:
            seen.add(folder.url)
            folders.append(folder)

    for url in settings.hub_urls:
        add(HubFolder(url, OPEN_SOURCE))
    for item in settings.licensed_hub_urls:
        match = _EXPLICIT.match(item.strip())
        if match:
            add(HubFolder(match.group("url"), _explicit_edition(match.group("edition"))))
        else:
            add(HubFolder(item.strip(), edition_for_url(item)))
    return folders


@dataclass
class CatalogResult:
    """The entries of all folders, with what went wrong and where each copy came from."""

    entries: list[HubEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Malformed lines, skipped: ``"<url>/metadata.json line <n>: <problem>"``."""
    errors: list[str] = field(default_factory=list)
    """One per folder that could not be read fresh."""
    sources: dict[str, Source] = field(default_factory=dict)
    """Folder URL → where its entries came from: ``network`` (a new copy), ``not-modified`` (a
    ``304``), ``cache`` (within the TTL), ``stale-cache`` (the folder failed; the last good copy),
    or ``failed`` (the folder failed and there is no copy: it contributes no entries, which does
    not mean it is empty)."""
    folder_of: dict[tuple[str, str], HubFolder] = field(default_factory=dict)
    """``(edition, archive_name)`` → the folder holding it (the first folder, if several)."""

    def folder_for(self, entry: HubEntry) -> HubFolder:
        """The folder ``entry`` came from. Raises ``KeyError`` for a foreign entry."""
        return self.folder_of[(entry.edition, entry.archive_name)]

    def folder_url(self, entry: HubEntry) -> str:
        """The URL of the folder ``entry`` came from."""
        return self.folder_for(entry).url

    def url_of(self, entry: HubEntry) -> str:
        """Where the archive of ``entry`` lives."""
        return archive_url(self.folder_for(entry), entry)


# -- the cache ---------------------------------------------------------------------------------


@dataclass
class _Cached:
    body: str
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None


def _cache_file(cache_dir: Path, url: str) -> Path:
    return cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}.json"


def _load_cache(path: Path, url: str) -> _Cached | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring the unreadable catalog cache %s: %s", path, exc)
        return None
    try:
        if data["url"] != url:
            return None
        return _Cached(
            body=str(data["body"]),
            fetched_at=float(data["fetched_at"]),
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("ignoring the malformed catalog cache %s: %s", path, exc)
        return None


def _store_cache(path: Path, url: str, cached: _Cached) -> None:
    data = {
        "url": url,
        "fetched_at": cached.fetched_at,
        "etag": cached.etag,
        "last_modified": cached.last_modified,
        "body": cached.body,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _when(fetched_at: float) -> str:
    return f"{datetime.fromtimestamp(fetched_at, UTC):%Y-%m-%d %H:%M:%S} UTC"


# -- reading one folder ------------------------------------------------------------------------


class _Unreachable(Exception):
    """The folder could not be reached (network error, 5xx)."""


class _Unusable(Exception):
    """The folder answered, but not with a usable ``metadata.json``."""


@dataclass
class _Fresh:
    """What a request brought: a new body, or ``None`` for "not modified"."""

    body: str | None
    etag: str | None = None
    last_modified: str | None = None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"metadata.json is not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise _Unusable(reason) from None


def _request_http(folder: HubFolder, cached: _Cached | None, client: httpx.Client) -> _Fresh:
    headers: dict[str, str] = {}
    if cached is not None and cached.etag:
        headers["If-None-Match"] = cached.etag
    if cached is not None and cached.last_modified:
        headers["If-Modified-Since"] = cached.last_modified
    try:
        response = client.get(folder.metadata_url, headers=headers, follow_redirects=True)
    except httpx.TransportError as exc:
        raise _Unreachable(str(exc) or type(exc).__name__) from exc
    except httpx.HTTPError as exc:
        raise _Unusable(str(exc) or type(exc).__name__) from exc
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if response.status_code == 304 and cached is not None:
        return _Fresh(None)
    if response.status_code >= 500:
        raise _Unreachable(status)
    if response.status_code != 200:
        raise _Unusable(status)
    return _Fresh(
        _decode(response.content),
        etag=response.headers.get("etag"),
        last_modified=response.headers.get("last-modified"),
    )


def _request_file(folder: HubFolder, cached: _Cached | None) -> _Fresh:
    parsed = urlparse(folder.metadata_url)
    path = Path(url2pathname(unquote(parsed.path)))
    try:
        stat = path.stat()
        stamp = f"mtime_ns={stat.st_mtime_ns} size={stat.st_size}"
        if cached is not None and cached.last_modified == stamp:
            return _Fresh(None)
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _Unusable(f"{path} does not exist") from None
    except OSError as exc:
        raise _Unreachable(exc.strerror or str(exc)) from exc
    return _Fresh(_decode(raw), last_modified=stamp)


def _parse(folder: HubFolder, body: str) -> tuple[list[HubEntry], list[str]]:
    return parse_metadata(body, source=folder.metadata_url, edition=folder.edition)


@contextlib.contextmanager
def _http_client(
    client: httpx.Client | None, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    with httpx.Client(timeout=timeout, follow_redirects=True) as own:
        yield own


def _read_folder(
    folder: HubFolder,
    cache_dir: Path,
    ttl: float,
    client: httpx.Client | None,
    now: float,
    result: CatalogResult,
) -> None:
    cache_path = _cache_file(cache_dir, folder.url)
    cached = _load_cache(cache_path, folder.url)
    if cached is not None and 0 <= now - cached.fetched_at < ttl:
        _use(folder, cached.body, "cache", result)
        return
    failure: str
    try:
        if folder.url.startswith("file://"):
            fresh = _request_file(folder, cached)
        else:
            with _http_client(client) as http:
                fresh = _request_http(folder, cached, http)
        if fresh.body is None:
            assert cached is not None  # a 304 answers a conditional request only
            cached.fetched_at = now
            _store_cache(cache_path, folder.url, cached)
            _use(folder, cached.body, "not-modified", result)
            return
        entries, warnings = _parse(folder, fresh.body)
        if warnings and not entries:
            raise _Unusable(
                f"none of its {len(warnings)} non-blank lines is a hub entry "
                f"(first problem: {warnings[0]})"
            )
        if not entries and cached is not None:
            # A hub that listed resources and now lists none is far more likely a glitch (a
            # zero-byte upload, a proxy) than a hub emptied on purpose: keep the last copy.
            had = len(_parse(folder, cached.body)[0])
            if had:
                raise _Unusable(f"metadata.json is empty (the last copy listed {had} entries)")
    except _Unreachable as exc:
        failure = f"hub {folder.url} is unreachable: {exc}"
    except _Unusable as exc:
        failure = f"hub {folder.url} sent no usable metadata.json: {exc}"
    else:
        fresh_copy = _Cached(fresh.body, now, fresh.etag, fresh.last_modified)
        _store_cache(cache_path, folder.url, fresh_copy)
        _collect(folder, entries, warnings, "network", result)
        return
    if cached is None:
        message = f"{failure}; no earlier copy"
        result.sources[folder.url] = "failed"
    else:
        message = f"{failure}; using the copy from {_when(cached.fetched_at)}"
        _use(folder, cached.body, "stale-cache", result)
    logger.warning("%s", message)
    result.errors.append(message)


def _use(folder: HubFolder, body: str, source: Source, result: CatalogResult) -> None:
    entries, warnings = _parse(folder, body)
    _collect(folder, entries, warnings, source, result)


def _collect(
    folder: HubFolder,
    entries: Iterable[HubEntry],
    warnings: Sequence[str],
    source: Source,
    result: CatalogResult,
) -> None:
    result.sources[folder.url] = source
    result.warnings.extend(warnings)
    for entry in entries:
        result.entries.append(entry)
        result.folder_of.setdefault((entry.edition, entry.archive_name), folder)


def read_catalog(
    folders: Iterable[HubFolder],
    cache_dir: Path,
    *,
    ttl: float = 3600,
    client: httpx.Client | None = None,
    now: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> CatalogResult:
    """Read every folder's ``metadata.json`` (through the cache) into one ``CatalogResult``.

    Args:
        folders: the folders, in order; an archive found in several belongs to the first.
        cache_dir: where the per-folder copies are kept (created if needed).
        ttl: seconds during which a copy is used without asking the hub again.
        client: the httpx client for ``http(s)://`` folders; a new one otherwise.
        now: the current time as a Unix timestamp (default ``time.time()``).
        timeout: seconds to connect or to wait for the next bytes (new client only); a folder
            that takes longer is unreachable.

    Never raises for a folder that fails: it is reported in ``errors`` and, when there is
    an earlier copy, that copy is used (``sources[url] == "stale-cache"``).
    """
    moment = time.time() if now is None else now
    result = CatalogResult()
    folder_list = list(folders)
    if client is None and any(not f.url.startswith("file://") for f in folder_list):
        with _http_client(None, timeout) as own:
            for folder in folder_list:
                _read_folder(folder, cache_dir, ttl, own, moment, result)
        return result
    for folder in folder_list:
        _read_folder(folder, cache_dir, ttl, client, moment, result)
    return result

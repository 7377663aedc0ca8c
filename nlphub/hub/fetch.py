"""The download engine: one hub archive to one verified file on disk (design.md sections 1, 4).

``fetch`` streams a URL (``http(s)://`` through httpx, ``file://`` by copying) into
``<dest>.partial`` next to ``dest``, hashing as it goes (MD5 and SHA-256, constant memory), and
only when the whole file is there and its size and MD5 are right does it ``fsync`` the file and
``os.replace`` it onto ``dest``. So:

* a file at ``dest`` is always complete and verified: a run killed at any moment (a Celery
  worker SIGKILLed, the machine losing power) leaves at most the ``.partial``;
* a re-run with the same ``dest`` resumes from the ``.partial``: it re-hashes the bytes already
  there and asks for the rest with ``Range: bytes=<n>-``; a server that ignores the range
  (``200``) or answers with another range makes it start over from byte 0;
* a re-run after a completed download whose ``dest`` is still there and matches
  ``expected_md5`` returns at once without downloading (redelivered tasks are cheap);
* two processes never write the same ``.partial``: the writer holds an ``flock`` on it, which
  the kernel drops when the process dies, so no stale lock survives a crash.

Hub input is not trusted:

* a download stops at the size the hub declares (or, without one, at ``Content-Length``): a
  longer body is a corrupted archive (``SizeMismatch``); with neither it stops at ``max_size``
  (``DownloadTooLarge``); either way the ``.partial`` is removed;
* a ``file://`` archive must be a regular file whose resolved path (symbolic links followed)
  is inside its hub folder, the folder of the URL: no ``.``/``..`` segments, no query or
  fragment, nothing outside the mirror is opened (``OutsideHubFolder``).

Failures are ``DownloadError``s. ``TemporaryDownloadError`` (network errors, cut transfers,
5xx, 408/429) keeps the ``.partial`` so the caller's retry resumes; every other
``DownloadError`` is permanent (``HubHTTPError`` for 4xx, ``ChecksumMismatch``, ``SizeMismatch``,
``DownloadTooLarge``, ``OutsideHubFolder``, ``NotEnoughSpace``) and removes the ``.partial``
where its bytes are useless.

No database, no Celery: the caller decides retries and records results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nlphub.hashing import Hashes, hash_file
from nlphub.hub import local
from nlphub.hub.fetch_errors import (
    ChecksumMismatch,
    DownloadError,
    DownloadTooLarge,
    HubHTTPError,
    NotEnoughSpace,
    OutsideHubFolder,
    SizeMismatch,
    TemporaryDownloadError,
)
from nlphub.hub.partial import Partial, fsync_dir, partial_path
from nlphub.hub.space import check_free_space, human_size

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ChecksumMismatch",
    "DownloadError",
    "DownloadTooLarge",
    "FetchResult",
    "HubHTTPError",
    "NotEnoughSpace",
    "OutsideHubFolder",
    "Progress",
    "SizeMismatch",
    "TemporaryDownloadError",
    "check_free_space",
    "fetch",
    "head_size",
    "human_size",
    "partial_path",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
"""``progress(done_bytes, total_bytes)``; ``total_bytes`` is ``None`` while unknown."""

PROGRESS_INTERVAL = 0.1
"""Seconds between two progress calls (the final call is always made)."""

_TEMPORARY_CLIENT_ERRORS = frozenset({408, 425, 429})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)
DEFAULT_MAX_SIZE = 50 * (1 << 30)
"""Most bytes of an archive whose size the hub does not declare (``NLPHUB_MAX_DOWNLOAD_BYTES``)."""
MAX_SIZE_SETTING = "NLPHUB_MAX_DOWNLOAD_BYTES"


# -- results and helpers -----------------------------------------------------------------------


@dataclass
class FetchResult:
    """A complete, verified file at ``path``."""

    path: Path
    size: int
    md5: str
    """Upper-case hex, as the hub writes it."""
    sha256: str | None
    """Lower-case hex; ``None`` when the caller did not ask for it (``fetch(sha256=False)``)."""
    resumed_from: int
    """Bytes that were already on disk (a resumed ``.partial``, or all of an existing ``dest``)."""


class _Throttle:
    """Calls ``progress`` at most every ``PROGRESS_INTERVAL`` seconds, and always at the end."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._last = -float("inf")

    def __call__(self, done: int, total: int | None, *, final: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if final or now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._progress(done, total)


def _existing_dest(
    dest: Path, expected_md5: str, expected_size: int | None, sha256: bool = True
) -> FetchResult | None:
    """The result for a ``dest`` left by an earlier complete run, if it still verifies.

    A ``dest`` that does not verify is removed: it is not the hub's file.
    """
    try:
        size = dest.stat().st_size
    except FileNotFoundError:
        return None
    hashes = Hashes(sha256)
    if expected_size is None or size == expected_size:
        with dest.open("rb") as handle:
            hash_file(handle, hashes)
    if hashes.size != size or hashes.md5.hexdigest().upper() != expected_md5:
        logger.warning("%s does not match the hub's MD5 %s; removing it", dest, expected_md5)
        dest.unlink(missing_ok=True)
        return None
    return FetchResult(dest, hashes.size, expected_md5, hashes.sha256, hashes.size)


# -- fetch -------------------------------------------------------------------------------------


def fetch(
    url: str,
    dest: Path,
    *,
    expected_md5: str | None,
    expected_size: int | None = None,
    client: httpx.Client | None = None,
    progress: Progress | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
    sha256: bool = True,
    max_size: int = DEFAULT_MAX_SIZE,
) -> FetchResult:
    """Download ``url`` to ``dest``, resuming an earlier ``.partial``, and verify it.

    Args:
        url: ``http://``, ``https://`` or ``file://``.
        dest: the final path; its directory is created if needed.
        expected_md5: the hub's MD5 (any case); ``None`` or empty skips the check.
        expected_size: the size the hub states, if any; the file must have it, and a longer
            body stops the download at once (a corrupted archive).
        client: an httpx client to use (its own timeouts then apply); a new one otherwise.
        progress: called with ``(done_bytes, total_bytes)`` at most ~10 times a second and
            once at the end with ``done == total``.
        chunk_size: bytes per read of a ``file://`` source or of a ``.partial`` being
            re-hashed (HTTP bodies are written as they arrive, at most 64 KiB at a time), so
            memory use stays a few chunks whatever the size.
        timeout: seconds to connect or to wait for the next bytes (new client only).
        sha256: also compute the file's SHA-256 (MD5 is always computed). Off, the download
            costs one hash less (`nlphub.hub.install` then records the SHA-256 of the unpacked
            tree).
        max_size: without ``expected_size``, the most bytes the file may have (whatever its
            ``Content-Length`` says); more stops the download (``DownloadTooLarge``).

    Returns:
        The verified file, now at ``dest``.

    Raises:
        TemporaryDownloadError: network error, cut transfer, 5xx, 408/429, or another
            process writing the same ``.partial``: retry; the ``.partial`` is kept.
        HubHTTPError: any other 4xx (``.partial`` removed).
        ChecksumMismatch, SizeMismatch: the file is not the hub's (``.partial`` removed).
        DownloadTooLarge: no declared size and more than ``max_size`` bytes (``.partial``
            removed).
        OutsideHubFolder: a ``file://`` archive that is not a regular file inside its hub
            folder.
        DownloadError: any other permanent failure (e.g. a missing ``file://`` source).
    """
    md5 = (expected_md5 or "").strip().upper() or None
    dest.parent.mkdir(parents=True, exist_ok=True)
    existing = _already_there(url, dest, md5, expected_size, sha256, progress)
    if existing is not None:
        return existing
    partial = Partial(partial_path(dest), sha256)
    try:
        if url.startswith("file://"):
            hashes, resumed = _copy_file(
                url, partial, _Limits(expected_size, max_size), progress, chunk_size
            )
        else:
            hashes, resumed = _download(
                url,
                partial,
                _Limits(expected_size, max_size),
                client,
                progress,
                chunk_size,
                timeout,
            )
        actual = _verify_and_install(url, partial, hashes, md5, dest)
    except BaseException:
        if not partial.handle.closed:
            partial.close()
        raise
    if resumed:
        logger.info("downloaded %s to %s (resumed from byte %d)", url, dest, resumed)
    else:
        logger.info("downloaded %s to %s", url, dest)
    return FetchResult(dest, hashes.size, actual, hashes.sha256, resumed)


def _already_there(
    url: str,
    dest: Path,
    md5: str | None,
    expected_size: int | None,
    sha256: bool,
    progress: Progress | None,
) -> FetchResult | None:
    """The result for a ``dest`` an earlier run completed and that still verifies, if any."""
    if md5 is None:
        return None
    existing = _existing_dest(dest, md5, expected_size, sha256)
    if existing is not None:
        logger.info("%s is already at %s and verified", url, dest)
        _Throttle(progress)(existing.size, existing.size, final=True)
    return existing


def _verify_and_install(
    url: str, partial: Partial, hashes: Hashes, md5: str | None, dest: Path
) -> str:
    """Check the MD5 of the complete ``.partial`` and rename it onto ``dest``; its MD5."""
    actual: str = hashes.md5.hexdigest().upper()
    if md5 is not None and actual != md5:
        partial.discard()
        raise ChecksumMismatch(url, md5, actual)
    # No fsync of the archive: it is a temporary file, verified (size, MD5) again before it
    # is reused after a crash and checked entry by entry (CRC) when unpacked.
    partial.handle.flush()
    os.replace(partial.path, dest)
    partial.close()
    fsync_dir(dest.parent)
    return actual


@dataclass(frozen=True)
class _Limits:
    """How long the archive may be: the hub's declared size, else at most ``max_size``."""

    declared: int | None
    max_size: int

    def bound(
        self, total: int | None, stated: str = "its Content-Length says"
    ) -> tuple[int, str | None]:
        """The most bytes to accept, and why (``None``: only the download limit bounds it).

        ``total`` is the size the source states (``Content-Length``, a file's size), if any;
        ``stated`` says where it comes from.
        """
        if self.declared is not None:
            return self.declared, "the hub declares"
        if total is not None:
            return total, stated
        return self.max_size, None


def _corrupted(url: str, problem: str) -> SizeMismatch:
    return SizeMismatch(f"the archive at {url} is corrupted: {problem}")


def _too_large(url: str, max_size: int) -> DownloadTooLarge:
    return DownloadTooLarge(
        f"download of {url} stopped: the hub declares no size for this archive and it is "
        f"larger than the download limit of {human_size(max_size)} ({MAX_SIZE_SETTING})"
    )


def _check_total(url: str, partial: Partial, total: int | None, limits: _Limits) -> None:
    """A source whose stated size is not the hub's, or too large without one: permanent."""
    if total is None:
        return
    if limits.declared is not None and total != limits.declared:
        partial.discard()
        raise _corrupted(url, f"it is {total} bytes but the hub says {limits.declared}")
    if limits.declared is None and total > limits.max_size:
        partial.discard()
        raise _too_large(url, limits.max_size)


def _check_room(
    url: str, partial: Partial, done: int, more: int, limit: int, why: str | None, max_size: int
) -> None:
    """Refuse ``more`` bytes that would take the file past ``limit`` (checked before writing)."""
    if done + more <= limit:
        return
    partial.discard()
    if why is None:
        raise _too_large(url, max_size)
    raise _corrupted(url, f"it is longer than the {limit} bytes {why}")


def _finish_size(
    url: str, partial: Partial, done: int, total: int | None, expected: int | None
) -> None:
    """A short file is a cut transfer (temporary); a long one is not the hub's file."""
    want = total if total is not None else expected
    if want is None:
        return
    if done < want:
        raise TemporaryDownloadError(f"transfer of {url} ended after {done} of {want} bytes")
    if done > want:
        partial.discard()
        raise _corrupted(url, f"it sent {done} bytes but should be {want}")


def _copy_file(
    url: str,
    partial: Partial,
    limits: _Limits,
    progress: Progress | None,
    chunk_size: int,
) -> tuple[Hashes, int]:
    try:
        src = local.open_source(url)
    except DownloadError as exc:
        if not isinstance(exc, TemporaryDownloadError):
            partial.discard()
        raise
    throttle = _Throttle(progress)
    with src:
        total = os.fstat(src.fileno()).st_size
        _check_total(url, partial, total, limits)
        limit, why = limits.bound(total, "the file had when it was opened")
        hashes = Hashes(partial.sha256)
        offset = os.fstat(partial.handle.fileno()).st_size
        if offset > total:
            hashes = partial.restart()
            offset = 0
        if offset:
            hash_file(partial.handle, hashes, offset)
        partial.handle.seek(offset)
        src.seek(offset)
        throttle(offset, total)
        try:
            # Never more than one byte past the limit is read: a file growing while it is
            # copied (or lying about its size) cannot make the copy endless.
            while data := src.read(min(chunk_size, limit - hashes.size + 1)):
                _check_room(url, partial, hashes.size, len(data), limit, why, limits.max_size)
                partial.handle.write(data)
                hashes.update(data)
                throttle(hashes.size, total)
        except OSError as exc:
            raise TemporaryDownloadError(f"copying {url} failed: {exc.strerror or exc}") from exc
    _finish_size(url, partial, hashes.size, total, limits.declared)
    throttle(hashes.size, hashes.size, final=True)
    return hashes, offset


def _status_error(url: str, response: httpx.Response, partial: Partial) -> DownloadError:
    status = response.status_code
    reason = response.reason_phrase
    if status >= 500 or status in _TEMPORARY_CLIENT_ERRORS:
        return TemporaryDownloadError(f"hub answered HTTP {status} {reason} for {url}".strip())
    if 400 <= status < 500:
        partial.discard()
        return HubHTTPError(url, status, reason)
    return TemporaryDownloadError(f"unexpected HTTP {status} {reason} for {url}".strip())


def _total_of(response: httpx.Response, offset: int) -> int | None:
    """The full size of the file from Content-Range or Content-Length, if it is known."""
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        return None  # the length is of the encoded body, not of the file
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if match and match.group(3) != "*":
            return int(match.group(3))
        length = response.headers.get("content-length")
        return offset + int(length) if length and length.isdigit() else None
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


@contextlib.contextmanager
def _client(client: httpx.Client | None, timeout: float) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    with httpx.Client(timeout=timeout, follow_redirects=True) as own:
        yield own


def _download(
    url: str,
    partial: Partial,
    limits: _Limits,
    client: httpx.Client | None,
    progress: Progress | None,
    chunk_size: int,
    timeout: float,
) -> tuple[Hashes, int]:
    expected_size = limits.declared
    hashes = Hashes(partial.sha256)
    offset = os.fstat(partial.handle.fileno()).st_size
    if offset > (limits.max_size if expected_size is None else expected_size):
        hashes = partial.restart()
        offset = 0
    if offset:
        hash_file(partial.handle, hashes, offset)
    throttle = _Throttle(progress)
    if expected_size is not None and offset == expected_size and offset > 0:
        # Everything is already there (killed before the rename): just verify.
        throttle(offset, offset, final=True)
        return hashes, offset
    with _client(client, timeout) as http:
        # At most two requests: a range the server cannot serve makes us start over once.
        for _attempt in range(2):
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                with http.stream("GET", url, headers=headers, follow_redirects=True) as response:
                    start = _start_of(url, response, partial, offset)
                    if start is not None:
                        if start < offset:  # a 200: the whole file comes again
                            logger.info("%s ignored the Range request; starting over", url)
                            hashes = partial.restart()
                            offset = 0
                        _receive(
                            url,
                            response,
                            partial,
                            hashes,
                            offset,
                            limits,
                            throttle,
                            chunk_size,
                        )
                        return hashes, offset
            except httpx.TransportError as exc:
                raise TemporaryDownloadError(
                    f"download of {url} failed after {hashes.size} bytes: {exc}"
                ) from exc
            except httpx.RequestError as exc:  # e.g. too many redirects, undecodable body
                raise DownloadError(f"download of {url} failed: {exc}") from exc
            if response.status_code == 416 and _complete_416(response, offset):
                _check_total(url, partial, offset, limits)
                throttle(offset, offset, final=True)
                return hashes, offset  # the .partial was already complete
            logger.info(
                "%s cannot resume from byte %d (HTTP %d, Content-Range %r); starting over",
                url,
                offset,
                response.status_code,
                response.headers.get("content-range"),
            )
            hashes = partial.restart()
            offset = 0
    raise TemporaryDownloadError(f"{url}: the server would not send the file from byte 0")


def _complete_416(response: httpx.Response, offset: int) -> bool:
    """Whether a 416 says the file is exactly ``offset`` bytes (the .partial is complete)."""
    match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("content-range", "").strip())
    return match is not None and int(match.group(1)) == offset


def _start_of(url: str, response: httpx.Response, partial: Partial, offset: int) -> int | None:
    """Where the body starts in the file: 0 for a 200, ``offset`` for the right 206.

    ``None`` when the server did not send what we asked for (a 416, a 206 with another range):
    the caller starts over. Raises for an error status.
    """
    status = response.status_code
    if status == 200:
        return 0
    if status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        return offset if match is not None and int(match.group(1)) == offset else None
    if status == 416 and offset:
        return None
    raise _status_error(url, response, partial)


def _receive(
    url: str,
    response: httpx.Response,
    partial: Partial,
    hashes: Hashes,
    offset: int,
    limits: _Limits,
    throttle: _Throttle,
    chunk_size: int,
) -> None:
    """Write the body into the .partial from ``offset`` on, hashing it; stop at the limit."""
    total = _total_of(response, offset)
    _check_total(url, partial, total, limits)
    limit, why = limits.bound(total)
    handle = partial.handle
    handle.seek(offset)
    throttle(offset, total)
    # Whatever arrives (at most 64 KiB a read) is written at once, so a cut loses nothing; a
    # chunk that would take the file past its limit is refused before it is written.
    for data in response.iter_bytes():
        _check_room(url, partial, hashes.size, len(data), limit, why, limits.max_size)
        handle.write(data)
        hashes.update(data)
        throttle(hashes.size, total)
    _finish_size(url, partial, hashes.size, total, limits.declared)
    throttle(hashes.size, hashes.size, final=True)


# -- size --------------------------------------------------------------------------------------


def head_size(url: str, client: httpx.Client | None = None, *, timeout: float = 30.0) -> int | None:
    """The size of the file at ``url`` (HEAD ``Content-Length``; ``file://`` by ``stat``).

    Returns ``None`` when the server does not say (no length, an encoded body, or HEAD not
    allowed).

    Raises:
        TemporaryDownloadError: network error, 5xx, 408/429.
        HubHTTPError: another 4xx, or a ``file://`` path that does not exist (404).
    """
    if url.startswith("file://"):
        with local.open_source(url) as source:
            return os.fstat(source.fileno()).st_size
    kwargs: dict[str, Any] = {"headers": {"Accept-Encoding": "identity"}, "follow_redirects": True}
    try:
        with _client(client, timeout) as http:
            response = http.head(url, **kwargs)
    except httpx.TransportError as exc:
        raise TemporaryDownloadError(f"HEAD {url} failed: {exc}") from exc
    if response.status_code in (405, 501):
        return None
    if response.status_code != 200:
        status, reason = response.status_code, response.reason_phrase
        if status >= 500 or status in _TEMPORARY_CLIENT_ERRORS or status < 400:
            raise TemporaryDownloadError(f"hub answered HTTP {status} {reason} for {url}")
        raise HubHTTPError(url, status, reason)
    return _total_of(response, 0)

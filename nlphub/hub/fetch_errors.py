"""The errors of the download engine (`nlphub.hub.fetch`): ``DownloadError`` and its kinds.

``TemporaryDownloadError`` keeps the ``.partial`` so a retry resumes; every other
``DownloadError`` is permanent.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ChecksumMismatch",
    "DownloadError",
    "DownloadTooLarge",
    "HubHTTPError",
    "NotEnoughSpace",
    "OutsideHubFolder",
    "SizeMismatch",
    "TemporaryDownloadError",
]


class DownloadError(Exception):
    """A download failed. Permanent unless it is a ``TemporaryDownloadError``."""


class TemporaryDownloadError(DownloadError):
    """A network error, a cut transfer or a 5xx: retry later; the ``.partial`` is kept."""


class ChecksumMismatch(DownloadError):
    """The downloaded file's MD5 is not the hub's. Permanent; the ``.partial`` is removed."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        self.url = url
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"checksum mismatch for {url}: hub says MD5 {expected}, downloaded file has {actual}"
        )


class SizeMismatch(DownloadError):
    """A corrupted archive: longer than, or not the size the hub (or Content-Length) states.
    Permanent; the ``.partial`` is removed."""


class DownloadTooLarge(DownloadError):
    """An archive without a declared size went past the download limit (``max_size``).
    Permanent; the ``.partial`` is removed."""


class OutsideHubFolder(DownloadError):
    """A ``file://`` archive that is not a regular file inside its hub folder. Permanent."""


class NotEnoughSpace(DownloadError):
    """Too little free disk space for a download (see ``check_free_space``)."""

    def __init__(self, message: str, *, needed: int, available: int, path: Path) -> None:
        self.needed = needed
        self.available = available
        self.path = path
        super().__init__(message)


class HubHTTPError(DownloadError):
    """The hub answered 4xx (e.g. the archive is not there). Permanent."""

    def __init__(self, url: str, status: int, reason: str = "") -> None:
        self.url = url
        self.status = status
        self.reason = reason
        text = f"HTTP {status} {reason}".rstrip()
        super().__init__(f"hub answered {text} for {url}")

"""``file://`` hub archives: confinement to the hub folder and opening a regular file.

A ``file://`` archive must be a regular file whose resolved path (symbolic links followed) is
inside its hub folder, the folder of the URL: no ``.``/``..`` segments, no query or fragment,
nothing outside the mirror is opened (``OutsideHubFolder``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from nlphub.hub.fetch_errors import (
    DownloadError,
    HubHTTPError,
    OutsideHubFolder,
    TemporaryDownloadError,
)

__all__ = ["file_path", "open_source"]


def file_path(url: str) -> Path:
    """The file a ``file://`` archive URL names, once it is known to be inside its hub folder.

    The hub folder is the URL's folder (an archive URL is ``<folder>/<archive name>``). Refused
    (``OutsideHubFolder``): a query or fragment, ``.`` or ``..`` segments, a NUL, or a path
    whose resolution (symbolic links followed, whether or not the target exists) leaves the
    folder. The message names the URL only, never where a link leads.
    """
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(f"cannot read {url}: file:// URLs must be local")
    refused = OutsideHubFolder(
        f"refused to read {url}: a hub archive must be a file inside its hub folder"
    )
    if parsed.query or parsed.fragment or parsed.params:
        raise refused
    text = url2pathname(unquote(parsed.path))
    folder, _, name = text.rpartition("/")
    segments = text.split("/")
    if "\x00" in text or not name or any(part in (".", "..") for part in segments):
        raise refused
    root = Path(folder or "/")
    try:
        inside = (root / name).resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symbolic link loop
        inside = False
    if not inside:
        raise refused
    return root / name


def open_source(url: str) -> IO[bytes]:
    """The ``file://`` archive, opened: a regular file inside its hub folder."""
    source = file_path(url)
    try:
        # Non-blocking, so that a FIFO is refused below instead of waiting for a writer.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HubHTTPError(url, 404, "Not Found (no such file)") from None
    except OSError as exc:
        raise TemporaryDownloadError(f"cannot read {url}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutsideHubFolder(f"refused to read {url}: it is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")

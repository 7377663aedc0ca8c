"""The ``.partial`` file of a download: where it is, and its lock against a second writer."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from nlphub.hashing import Hashes
from nlphub.hub.fetch_errors import TemporaryDownloadError

__all__ = ["PARTIAL_SUFFIX", "Partial", "fsync_dir", "partial_path"]

PARTIAL_SUFFIX = ".partial"


def partial_path(dest: Path) -> Path:
    """Where ``fetch`` keeps the incomplete download for ``dest``."""
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def fsync_dir(directory: Path) -> None:
    # Makes the rename durable; not every file system allows opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Partial:
    """The ``.partial`` file, locked against a second writer while it is open."""

    def __init__(self, path: Path, sha256: bool = True) -> None:
        self.path = path
        self.sha256 = sha256
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TemporaryDownloadError(
                f"{path} is being written by another process; try again later"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self.handle: IO[bytes] = os.fdopen(fd, "r+b")

    def close(self) -> None:
        self.handle.close()  # also drops the lock

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.close()

    def restart(self) -> Hashes:
        """Empty the file: the download starts over from byte 0."""
        self.handle.seek(0)
        self.handle.truncate(0)
        return Hashes(self.sha256)

"""Hashing on a helper thread: hashlib releases the GIL for large buffers, so the hash of a
stream can be computed while the caller reads, checks and writes the next chunk.

`HashThread` hashes an upload's files as they are extracted (`nlphub.uploads.archive`);
`Hashes` computes a download's MD5 + SHA-256 as it streams (`nlphub.hub.fetch`)."""

from __future__ import annotations

import hashlib
import queue
import threading
from types import TracebackType
from typing import IO, Any, Protocol


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...


class HashThread:
    """Applies ``hash.update(chunk)`` calls on one helper thread, in the order they were made.

    Use as a context manager; leaving it waits for every queued update, so the hash objects
    are complete afterwards (also when the block raised, so no thread outlives it). At most
    ``depth`` chunks wait in the queue: memory stays bounded whatever the stream's size.
    """

    def __init__(self, depth: int = 16, name: str = "hash") -> None:
        self._queue: queue.Queue[tuple[_Hash, bytes] | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    item[0].update(item[1])
                except BaseException as exc:  # reported to the caller by close()
                    self._error = exc

    def update(self, digest: _Hash, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((digest, data))

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> HashThread:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        if exc is None:
            self.close()
        else:
            try:
                self.close()
            except BaseException:  # the block's own error is the one that matters
                pass
        return None


READ_CHUNK = 1 << 20


class Hashes:
    """MD5 + SHA-256 of a stream, computed on a helper thread (hashlib releases the GIL on
    large buffers), so hashing overlaps receiving and writing. Reading `md5` / `sha256` waits
    for every queued chunk; later updates are hashed inline."""

    def __init__(self, sha256: bool = True) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256() if sha256 else None
        self.size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._thread: threading.Thread | None = None
        self._done = False

    def _run(self) -> None:
        # Ends at the sentinel, or after a minute without data (an abandoned download).
        while True:
            try:
                data = self._queue.get(timeout=60)
            except queue.Empty:
                return
            if data is None:
                return
            self._md5.update(data)
            if self._sha256 is not None:
                self._sha256.update(data)

    def update(self, data: bytes) -> None:
        self.size += len(data)
        if self._done:
            self._md5.update(data)
            if self._sha256 is not None:
                self._sha256.update(data)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fetch-hash", daemon=True)
            self._thread.start()
        self._queue.put(bytes(data))

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()

    @property
    def md5(self) -> Any:
        self._finish()
        return self._md5

    @property
    def sha256(self) -> str | None:
        self._finish()
        return None if self._sha256 is None else self._sha256.hexdigest()


def hash_file(handle: IO[bytes], hashes: Hashes, limit: int | None = None) -> None:
    """Feed the first ``limit`` bytes of ``handle`` (all when ``None``) into ``hashes``."""
    handle.seek(0)
    left = limit
    while left is None or left > 0:
        data = handle.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
        if not data:
            break
        hashes.update(data)
        if left is not None:
            left -= len(data)

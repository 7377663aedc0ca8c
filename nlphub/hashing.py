"""Hashing on a helper thread: hashlib releases the GIL for large buffers, so the hash of a
stream can be computed while the caller reads, checks and writes the next chunk."""

from __future__ import annotations

import queue
import threading
from types import TracebackType
from typing import Any, Protocol


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

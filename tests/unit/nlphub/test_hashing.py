from __future__ import annotations

import hashlib
import threading

import pytest

from nlphub.hashing import HashThread


def test_updates_are_applied_in_order_and_complete_on_exit() -> None:
    chunks = [bytes([i]) * (1000 + i) for i in range(200)]
    a, b = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with HashThread(depth=2) as hasher:
        for chunk in chunks:
            hasher.update(a, chunk)
            hasher.update(b, chunk)
    whole = b"".join(chunks)
    assert a.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert b.hexdigest() == hashlib.md5(whole, usedforsecurity=False).hexdigest()
    assert not any(t.name == "hash" for t in threading.enumerate())


class _Broken:
    def update(self, data: bytes, /) -> None:
        raise ValueError("broken hash")


def test_an_error_in_the_thread_reaches_the_caller() -> None:
    with pytest.raises(ValueError, match="broken hash"), HashThread() as hasher:
        hasher.update(_Broken(), b"x")


def test_the_blocks_own_error_wins_and_no_thread_is_left() -> None:
    with pytest.raises(KeyError), HashThread(name="left-behind?") as hasher:
        hasher.update(_Broken(), b"x")
        raise KeyError("mine")
    assert not any(t.name == "left-behind?" for t in threading.enumerate())

"""Deterministic payloads and their digests for the download tests (`test_fetch`, `test_local`)."""

from __future__ import annotations

import hashlib


def payload(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


DATA = payload(300_000)

"""A zip's central directory is bounded before zipfile loads it: `check_directory` reads the
end records and walks the entries' fixed headers in constant memory, so a zip declaring (or
holding) more entries than the limit, or a directory above its size limit, is refused before
any `zipfile.ZipFile` is built (which would make an object per entry)."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from nlphub.uploads.archive import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    ArchiveProblem,
    check_directory,
    check_zip,
    safe_extract,
)
from tests.unit.nlphub.uploads.conftest import tree_snapshot

END = struct.Struct("<4s4H2LH")
END64 = struct.Struct("<4sQ2H2L4Q")
LOCATOR = struct.Struct("<4sLQL")
ZIPFILE = zipfile.ZipFile  # the real one, for building test archives under `no_zipfile`


def _zip_bytes(n: int, *, comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with ZIPFILE(buffer, "w") as zf:
        for i in range(n):
            zf.writestr(f"d/f{i:05d}.txt", b"x")
        zf.comment = comment
    return buffer.getvalue()


def _split(blob: bytes) -> tuple[bytes, int, int, int]:
    """A comment-less zip's bytes before its end record, and that record's count, size and
    offset of its directory."""
    head, end = blob[: -END.size], END.unpack(blob[-END.size :])
    return head, end[4], end[5], end[6]


def _end(entries: int, size: int, offset: int) -> bytes:
    return END.pack(b"PK\x05\x06", 0, 0, entries, entries, size, offset, 0)


def _zip64_end(head: bytes, entries: int, size: int, offset: int) -> bytes:
    """`head` closed by ZIP64 end records (and a plain one pointing to them)."""
    record = END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset)
    locator = LOCATOR.pack(b"PK\x06\x07", 0, len(head), 1)
    return head + record + locator + _end(0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)


@pytest.fixture
def no_zipfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a ZipFile fails the test: the refusal must come before it."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("zipfile.ZipFile was built before the directory was checked")

    monkeypatch.setattr(zipfile, "ZipFile", refuse)


def _refused(path: Path, expected: str, limits: ArchiveLimits = DEFAULT_LIMITS) -> None:
    for check in (check_directory, check_zip):
        with pytest.raises(ArchiveProblem) as info:
            check(path, limits)
        assert any(expected in p for p in info.value.problems), info.value.problems
    before = tree_snapshot(path.parent)
    with pytest.raises(ArchiveProblem):
        safe_extract(path, path.parent / "out", limits)
    assert tree_snapshot(path.parent) == before


def test_a_zip64_end_record_declaring_200k_entries_is_refused_unread(
    tmp_path: Path, no_zipfile: None
) -> None:
    """200,000 entries claimed by a file of a few KB: refused on the declared count."""
    head, _count, _size, offset = _split(_zip_bytes(3))
    path = tmp_path / "many.zip"
    path.write_bytes(_zip64_end(head, 200_000, 46 * 200_000, offset))
    _refused(path, "archive has 200000 entries, above the limit of 100000")


def test_a_directory_declared_above_its_size_limit_is_refused_unread(
    tmp_path: Path, no_zipfile: None
) -> None:
    head, count, _size, _offset = _split(_zip_bytes(3))
    path = tmp_path / "big.zip"
    path.write_bytes(head + _end(count, 0xFFFF0000, 0))
    _refused(path, "archive's central directory is 4 GB, above the limit of 64 MB")


def test_a_directory_holding_more_entries_than_it_declares_is_refused_unread(
    tmp_path: Path, no_zipfile: None
) -> None:
    """The declared count says 1, the directory holds 12: the walk counts them."""
    head, _count, size, offset = _split(_zip_bytes(12))
    path = tmp_path / "lying.zip"
    path.write_bytes(head + _end(1, size, offset))
    _refused(path, "archive has more than 10 entries, the limit", ArchiveLimits(max_entries=10))


@pytest.mark.parametrize(
    "blob",
    [b"", b"not a zip at all", b"PK\x05\x06" + bytes(10)],
    ids=["empty", "text", "short-end-record"],
)
def test_a_file_without_end_records_is_not_a_zip(
    tmp_path: Path, no_zipfile: None, blob: bytes
) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(blob)
    _refused(path, "not a valid zip archive")


def test_a_truncated_directory_is_refused_unread(tmp_path: Path, no_zipfile: None) -> None:
    head, count, size, offset = _split(_zip_bytes(3))
    path = tmp_path / "cut.zip"
    path.write_bytes(head + _end(count, size + 46, offset - 46))  # starts mid-file data
    _refused(path, "not a valid zip archive (corrupt central directory)")


@pytest.mark.parametrize("form", ["plain", "comment", "zip64"])
def test_real_zips_are_counted_and_accepted(tmp_path: Path, form: str) -> None:
    """A modest real zip (300 entries), with an archive comment after its end record, or
    closed by ZIP64 end records: counted exactly and still accepted by check_zip."""
    blob = _zip_bytes(300, comment=b"an archive comment" if form == "comment" else b"")
    if form == "zip64":
        head, count, size, offset = _split(blob)
        blob = _zip64_end(head, count, size, offset)
    path = tmp_path / "ok.zip"
    path.write_bytes(blob)
    assert check_directory(path) == 300
    assert len([e for e in check_zip(path) if not e.is_dir]) == 300
    digests = safe_extract(path, tmp_path / "out")
    assert len(digests) == 300

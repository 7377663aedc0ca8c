"""Archive safety: a corpus of hostile and broken zips, entry names, sizes, and properties."""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nlphub.uploads.archive import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    ArchiveProblem,
    check_name,
    check_zip,
    format_size,
    safe_extract,
)
from tests.unit.nlphub.uploads.conftest import (
    HYPOTHESIS,
    SMALL,
    RawEntry,
    raw_zip,
    tree_snapshot,
    valid_zip,
)


@dataclass(frozen=True)
class Bad:
    id: str
    build: Callable[[Path], Path]
    expected: str
    limits: ArchiveLimits = DEFAULT_LIMITS


def raw(*entries: RawEntry) -> Callable[[Path], Path]:
    return lambda tmp: raw_zip(tmp / "upload.zip", entries)


def bytes_file(data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / "upload.zip"
        path.write_bytes(data)
        return path

    return build


def truncated(keep: Callable[[int], int]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = valid_zip(tmp)
        data = path.read_bytes()
        path.write_bytes(data[: keep(len(data))])
        return path

    return build


def empty_zip(tmp: Path) -> Path:
    path = tmp / "upload.zip"
    with zipfile.ZipFile(path, "w"):
        pass
    return path


def name_mismatch(tmp: Path) -> Path:
    path = raw_zip(tmp / "upload.zip", [RawEntry("aaaa.txt", b"hello")])
    data = path.read_bytes()
    path.write_bytes(data.replace(b"aaaa.txt", b"bbbb.txt", 1))  # local header only
    return path


@cache
def zeros_deflated(size: int) -> tuple[bytes, int]:
    """Deflated ``size`` zero bytes and their CRC (computed once per session)."""
    data = b"\0" * size
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush(), zlib.crc32(data)


def bomb(tmp: Path) -> Path:
    """50 MB of zeros in ~50 KB; honest sizes and CRC, the ratio alone gives it away."""
    size = 50 * 2**20
    payload, crc = zeros_deflated(size)
    return raw_zip(
        tmp / "upload.zip",
        [RawEntry("metadata/part-00000", payload=payload, file_size=size, crc=crc)],
    )


def many_small_zeros(tmp: Path) -> Path:
    entries = [RawEntry(f"fields/f{i}", b"\0" * (512 * 1024)) for i in range(8)]
    return raw_zip(tmp / "upload.zip", entries)


def mode(kind: int) -> int:
    return (kind | 0o644) << 16


ZIP_CASES = [
    Bad("not-a-zip", bytes_file(b"this is not a zip file\n" * 20), "not a valid zip archive"),
    Bad("empty-file", bytes_file(b""), "not a valid zip archive"),
    Bad("truncated-end", truncated(lambda n: n - 40), "not a valid zip archive"),
    Bad("truncated-half", truncated(lambda n: n // 2), "not a valid zip archive"),
    Bad("empty-archive", empty_zip, "archive is empty"),
    Bad("bad-crc", raw(RawEntry("metadata/part-00000", b"{}", crc=0x1234)), "Bad CRC-32"),
    Bad(
        "bad-crc-after-good-entries",
        raw(RawEntry("a.txt", b"good"), RawEntry("b.txt", b"bad", crc=1)),
        "entry 'b.txt': corrupt data",
    ),
    Bad(
        "corrupt-deflate-stream",
        raw(RawEntry("a.txt", b"x" * 100, payload=b"\xff\xfe\xfd garbage")),
        "entry 'a.txt': corrupt data",
    ),
    Bad(
        "declared-size-larger-than-data",
        raw(RawEntry("a.txt", b"hello", method=zipfile.ZIP_STORED, file_size=50)),
        "entry 'a.txt': holds 5 B, not the 50 B its header declares",
    ),
    Bad("local-name-differs", name_mismatch, "differ"),
    Bad("dotdot-evil", raw(RawEntry("../evil", b"x")), "'..' segment"),
    Bad("absolute", raw(RawEntry("/abs", b"x")), "absolute path"),
    Bad("absolute-etc", raw(RawEntry("/etc/cron.d/evil", b"x")), "absolute path"),
    Bad("nested-dotdot", raw(RawEntry("a/../../b", b"x")), "'..' segment"),
    Bad("dotdot-dir-entry", raw(RawEntry("x/../../", b"")), "'..' segment"),
    Bad("backslash-traversal", raw(RawEntry("a\\..\\..\\b", b"x")), "backslash"),
    Bad("drive-letter", raw(RawEntry("C:/Windows/evil.dll", b"x")), "drive letter"),
    Bad("drive-relative", raw(RawEntry("c:evil", b"x")), "drive letter"),
    Bad("nul-byte", raw(RawEntry(b"meta\x00data/part-00000", b"x")), "NUL byte"),
    Bad("latin1-name", raw(RawEntry(b"caf\xe9.txt", b"x")), "not valid UTF-8"),
    Bad(
        "bad-utf8-with-flag",
        raw(RawEntry(b"\xff\xfe.txt", b"x", flags=0x800)),
        "name is not valid UTF-8",
    ),
    Bad("control-char", raw(RawEntry("a\x07b.txt", b"x")), "non-printable"),
    Bad("newline-name", raw(RawEntry("evil\nname", b"x")), "non-printable"),
    Bad("long-segment", raw(RawEntry("a" * 300, b"x")), "longer than 255 bytes"),
    Bad("empty-name", raw(RawEntry("", b"x")), "empty name"),
    Bad(
        "symlink",
        raw(RawEntry("metadata", b"/etc/passwd", external_attr=mode(stat.S_IFLNK))),
        "is a symbolic link",
    ),
    Bad(
        "symlink-windows-host",
        raw(RawEntry("x", b"/etc", external_attr=mode(stat.S_IFLNK), create_system=0)),
        "is a symbolic link",
    ),
    Bad("fifo", raw(RawEntry("pipe", external_attr=mode(stat.S_IFIFO))), "special file (fifo)"),
    Bad(
        "char-device",
        raw(RawEntry("dev/null", external_attr=mode(stat.S_IFCHR))),
        "special file (character device)",
    ),
    Bad(
        "block-device",
        raw(RawEntry("dev/sda", external_attr=mode(stat.S_IFBLK))),
        "special file (block device)",
    ),
    Bad("socket", raw(RawEntry("sock", external_attr=mode(stat.S_IFSOCK))), "(socket)"),
    Bad("encrypted", raw(RawEntry("secret.txt", b"x", flags=0x1)), "is encrypted"),
    Bad("strong-encryption", raw(RawEntry("s.txt", b"x", flags=0x41)), "is encrypted"),
    Bad(
        "unsupported-method",
        raw(RawEntry("a.txt", b"x", method=99)),
        "unsupported compression method 99",
    ),
    Bad("zip-bomb-50mb", bomb, "compression ratio"),
    Bad(
        "size-without-compressed-data",
        raw(RawEntry("a", method=zipfile.ZIP_STORED, file_size=5 * 2**20, compress_size=0)),
        "compression ratio",
    ),
    Bad("many-small-bombs", many_small_zeros, "archive compression ratio"),
    Bad("entry-too-big", raw(RawEntry("big", os.urandom(600))), "above the per-file limit", SMALL),
    Bad(
        "total-too-big",
        raw(*(RawEntry(f"f{i}", os.urandom(400)) for i in range(3))),
        "archive expands to 1.2 KB, above the limit of 1000 B",
        SMALL,
    ),
    Bad(
        "too-many-entries",
        raw(*(RawEntry(f"f{i}", b"x") for i in range(6))),
        "archive has 6 entries, above the limit of 5",
        SMALL,
    ),
    Bad(
        "huge-declared-size",
        raw(RawEntry("a", b"x", method=zipfile.ZIP_STORED, file_size=11 * 2**30)),
        "11 GB uncompressed, above the per-file limit of 10 GB",
    ),
    Bad("duplicate-name", raw(RawEntry("a.txt", b"1"), RawEntry("a.txt", b"2")), "duplicate name"),
    Bad(
        "duplicate-after-normalizing",
        raw(RawEntry("a/./b.txt", b"1"), RawEntry("a//b.txt", b"2")),
        "duplicate name",
    ),
    Bad(
        "file-and-dir-same-name",
        raw(RawEntry("a", b"1"), RawEntry("a/", b"")),
        "duplicate name",
    ),
    Bad("file-used-as-parent", raw(RawEntry("a", b"1"), RawEntry("a/b", b"2")), "parent 'a'"),
    Bad("dir-with-data", raw(RawEntry("dir/", b"data")), "is a directory but holds"),
]


@pytest.mark.parametrize("case", ZIP_CASES, ids=[c.id for c in ZIP_CASES])
def test_check_zip_rejects(case: Bad, tmp_path: Path) -> None:
    path = case.build(tmp_path)
    with pytest.raises(ArchiveProblem) as info:
        check_zip(path, case.limits)
    assert info.value.problems
    assert any(case.expected in p for p in info.value.problems), info.value.problems
    assert case.expected in str(info.value)


@pytest.mark.parametrize("case", ZIP_CASES, ids=[c.id for c in ZIP_CASES])
def test_safe_extract_rejects_and_leaves_nothing(case: Bad, tmp_path: Path) -> None:
    path = case.build(tmp_path)
    before = tree_snapshot(tmp_path)
    dest = tmp_path / "out"
    with pytest.raises(ArchiveProblem) as info:
        safe_extract(path, dest, case.limits)
    assert any(case.expected in p for p in info.value.problems), info.value.problems
    assert not dest.exists()
    assert tree_snapshot(tmp_path) == before


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = raw_zip(
        tmp_path / "upload.zip",
        [
            RawEntry("../evil", b"x"),
            RawEntry("link", b"/etc", external_attr=mode(stat.S_IFLNK)),
            RawEntry("secret", b"x", flags=0x1),
            RawEntry("ok.txt", b"fine"),
        ],
    )
    with pytest.raises(ArchiveProblem) as info:
        check_zip(path)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert "'..'" in problems[0] and "symbolic link" in problems[1] and "encrypted" in problems[2]
    assert str(info.value) == "; ".join(problems)


def test_problem_text_is_capped_but_list_is_complete() -> None:
    exc = ArchiveProblem([f"p{i}" for i in range(150)])
    assert len(exc.problems) == 150
    assert str(exc).endswith("; ... and 50 more problems")
    assert str(ArchiveProblem(["a", "b"])) == "a; b"


def test_bomb_is_refused_without_inflating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = bomb(tmp_path)

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("entry data was read")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_open)
    with pytest.raises(ArchiveProblem, match="zip bomb"):
        check_zip(path)
    with pytest.raises(ArchiveProblem, match="zip bomb"):
        safe_extract(path, tmp_path / "out")


def test_utf8_name_without_flag_is_read_as_utf8(tmp_path: Path) -> None:
    path = raw_zip(tmp_path / "u.zip", [RawEntry("café/naïve.txt".encode(), b"ok", flags=0)])
    (entry,) = check_zip(path)
    assert entry.name == "café/naïve.txt"
    safe_extract(path, tmp_path / "out")
    assert (tmp_path / "out" / "café" / "naïve.txt").read_bytes() == b"ok"


def test_normalized_names_extract_in_place(tmp_path: Path) -> None:
    path = raw_zip(
        tmp_path / "n.zip",
        [
            RawEntry("./metadata/", b""),
            RawEntry("./metadata//part-00000", b"{}"),
            RawEntry("d/", b""),
        ],
    )
    assert [e.name for e in check_zip(path)] == ["metadata", "metadata/part-00000", "d"]
    safe_extract(path, tmp_path / "out")
    assert tree_snapshot(tmp_path / "out") == {"metadata", "metadata/part-00000", "d"}


def test_small_compressible_files_are_not_bombs(tmp_path: Path) -> None:
    path = raw_zip(tmp_path / "z.zip", [RawEntry("zeros", b"\0" * 100_000)])
    assert check_zip(path)[0].file_size == 100_000


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1000, "1000 B"), (1536, "1.5 KB"), (12 * 2**20, "12 MB"), (10 * 2**30, "10 GB")],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize("name", ["a", "a/b.txt", "./a", "dir/", "ünï/cödé", "a..b", "..a/b.."])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == []


# ---------------------------------------------------------------------------------------------
# Properties


@HYPOTHESIS
@given(st.data())
def test_mutated_zips_are_rejected_cleanly_or_extracted(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        path = raw_zip(
            base / "in.zip",
            [RawEntry("metadata/part-00000", b'{"class":"x"}'), RawEntry("fields/f", b"abc" * 50)],
        )
        blob = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 4))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(blob))
        try:
            check_zip(path)
        except ArchiveProblem as exc:
            assert exc.problems
        dest = base / "out"
        try:
            safe_extract(path, dest)
        except ArchiveProblem as exc:
            assert exc.problems
            assert tree_snapshot(base) == {"in.zip"}
        else:
            assert all(p.resolve().is_relative_to(dest.resolve()) for p in dest.rglob("*"))


@HYPOTHESIS
@given(st.binary(max_size=300))
def test_random_bytes_are_not_zips(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.zip"
        path.write_bytes(b"PK\x05\x06" + blob if len(blob) % 2 else blob)
        try:
            entries = check_zip(path)
        except ArchiveProblem as exc:
            assert exc.problems
        else:
            assert entries  # a readable zip with no entries is refused

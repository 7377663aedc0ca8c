"""Archive safety: a corpus of hostile and broken zips/folders, valid ones, and properties."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlphub.uploads.archive import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    ArchiveProblem,
    check_name,
    check_tree,
    check_zip,
    extraction_leftovers,
    format_size,
    remove_extraction,
    resource_root,
    safe_extract,
)
from tests.unit.nlphub.uploads.conftest import (
    RawEntry,
    SparkBuilder,
    raw_zip,
    tree_snapshot,
    zip_dir,
)

SMALL = ArchiveLimits(max_entries=5, max_total_bytes=1000, max_entry_bytes=500)
HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
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


def valid_zip(tmp: Path) -> Path:
    src = SparkBuilder(tmp / "src").ner_model()
    return zip_dir(src, tmp / "upload.zip")


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


def test_stream_longer_than_header_is_aborted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = raw_zip(tmp_path / "upload.zip", [RawEntry("a.txt", b"hello")])
    before = tree_snapshot(tmp_path)

    def lying_open(self: zipfile.ZipFile, *args: object, **kwargs: object) -> io.BytesIO:
        return io.BytesIO(b"x" * 10_000)  # a decompressor that produces more than declared

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    with pytest.raises(ArchiveProblem, match="more data than the 5 B its header declares"):
        safe_extract(path, tmp_path / "out")
    assert tree_snapshot(tmp_path) == before


def test_stream_beyond_total_limit_is_aborted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = raw_zip(tmp_path / "upload.zip", [RawEntry(f"f{i}", b"y" * 400) for i in range(2)])
    limits = ArchiveLimits(max_total_bytes=1000)
    check_zip(path, limits)
    real_check = check_zip

    def check_trusting_headers(path: Path, *args: object, **kwargs: object) -> object:
        # As if the headers understated the sizes: the up-front check lets the zip through.
        return real_check(path, ArchiveLimits(), verify_crc=False)

    monkeypatch.setattr("nlphub.uploads.archive.check_zip", check_trusting_headers)
    with pytest.raises(ArchiveProblem, match="more than the limit of 600 B"):
        safe_extract(path, tmp_path / "out", ArchiveLimits(max_total_bytes=600))


def test_interrupted_extract_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = valid_zip(tmp_path)
    before = tree_snapshot(tmp_path)

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("nlphub.uploads.archive.os.rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        safe_extract(path, tmp_path / "out")
    assert tree_snapshot(tmp_path) == before


_KILLED_EXTRACT = """
import os, signal, sys
import nlphub.uploads.archive as archive
os.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # killed with all written
archive.safe_extract(sys.argv[1], sys.argv[2])
"""


def test_redelivery_removes_what_a_killed_extract_left(tmp_path: Path) -> None:
    """SIGKILL runs no cleanup: the hidden work folder stays beside the destination until the
    next attempt's `remove_extraction`, which leaves the neighbours alone."""
    path = valid_zip(tmp_path)
    dest = tmp_path / "upload-1"
    neighbours = [tmp_path / "upload-12", tmp_path / ".upload-12.x.partial"]
    for folder in neighbours:
        folder.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_EXTRACT, str(path), str(dest)], check=False, timeout=60
    )
    assert run.returncode == -signal.SIGKILL
    left = extraction_leftovers(dest)
    assert len(left) == 1 and left[0].name.startswith(".upload-1.") and any(left[0].iterdir())
    remove_extraction(dest)
    assert extraction_leftovers(dest) == [] and not dest.exists()
    assert all(folder.is_dir() for folder in neighbours)
    safe_extract(path, dest)  # the next attempt starts from nothing
    remove_extraction(dest)
    assert not dest.exists()


def test_safe_extract_refuses_existing_destination(tmp_path: Path) -> None:
    path = valid_zip(tmp_path)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        safe_extract(path, dest)
    assert tree_snapshot(dest) == {"keep.txt"}


def test_safe_extract_needs_existing_parent(tmp_path: Path) -> None:
    path = valid_zip(tmp_path)
    with pytest.raises(FileNotFoundError):
        safe_extract(path, tmp_path / "missing" / "out")
    assert not (tmp_path / "missing").exists()


def test_safe_extract_valid_model(tmp_path: Path) -> None:
    src = SparkBuilder(tmp_path / "src").ner_model()
    path = zip_dir(src, tmp_path / "model.zip")
    entries = check_zip(path)
    assert {e.name for e in entries if not e.is_dir} >= {"metadata/part-00000", "nerdl_tensorflow"}
    dest = tmp_path / "out"
    old_umask = os.umask(0o077)  # modes must not depend on the worker's umask
    try:
        safe_extract(path, dest)
    finally:
        os.umask(old_umask)
    assert tree_snapshot(dest) == tree_snapshot(src)
    for file in src.rglob("*"):
        target = dest / file.relative_to(src)
        if file.is_file():
            assert target.read_bytes() == file.read_bytes()
            assert stat.S_IMODE(target.stat().st_mode) == 0o644
        else:
            assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert resource_root(dest) == dest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_safe_extract_wrapped_folder_and_resource_root(tmp_path: Path) -> None:
    src = SparkBuilder(tmp_path / "src").embeddings()
    path = zip_dir(src, tmp_path / "emb.zip", prefix="glove_100d_en/")
    dest = tmp_path / "out"
    safe_extract(path, dest)
    assert resource_root(dest) == dest / "glove_100d_en"
    assert (dest / "glove_100d_en" / "storage" / "EMBEDDINGS_glove_100d" / "CURRENT").is_file()


def test_resource_root_ignores_macos_junk(tmp_path: Path) -> None:
    (tmp_path / "res" / "metadata").mkdir(parents=True)
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    assert resource_root(tmp_path) == tmp_path / "res"


@pytest.mark.parametrize(
    "layout",
    [["a/metadata", "b/metadata"], ["a/fields"], []],
    ids=["two-folders", "no-metadata", "empty"],
)
def test_resource_root_rejects(layout: list[str], tmp_path: Path) -> None:
    for rel in layout:
        (tmp_path / rel).mkdir(parents=True)
    with pytest.raises(ArchiveProblem, match="no metadata/ folder"):
        resource_root(tmp_path)


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
# Uploaded folders


@dataclass(frozen=True)
class BadTree:
    id: str
    build: Callable[[Path], Path]
    expected: str
    limits: ArchiveLimits = DEFAULT_LIMITS


def tree(*files: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        root = tmp / "upload"
        root.mkdir()
        for rel in files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"x" * 10)
        return root

    return build


def with_extra(base: Callable[[Path], Path], add: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        root = base(tmp)
        add(root)
        return root

    return build


def file_of(size: int, name: str = "big") -> Callable[[Path], None]:
    def add(root: Path) -> None:
        (root / name).write_bytes(b"z" * size)

    return add


def root_is_link(tmp: Path) -> Path:
    real = tree("metadata/part-00000")(tmp)
    link = tmp / "link"
    link.symlink_to(real)
    return link


def not_a_dir(tmp: Path) -> Path:
    path = tmp / "upload.txt"
    path.write_text("x")
    return path


def dangling_link(root: Path) -> None:
    (root / "m").mkdir()
    (root / "m" / "x").symlink_to("nope")


def undecodable(root: Path) -> None:
    (Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9"))).write_bytes(b"x")


TREE_CASES = [
    BadTree(
        "symlink-file",
        with_extra(tree("metadata/part-00000"), lambda r: (r / "evil").symlink_to("/etc/passwd")),
        "'evil': is a symbolic link",
    ),
    BadTree(
        "symlink-dir",
        with_extra(tree("metadata/part-00000"), lambda r: (r / "stages").symlink_to("/")),
        "'stages': is a symbolic link",
    ),
    BadTree(
        "dangling-symlink",
        with_extra(tree("a"), dangling_link),
        "'m/x': is a symbolic link",
    ),
    BadTree(
        "fifo",
        with_extra(tree("metadata/part-00000"), lambda r: os.mkfifo(r / "metadata" / "pipe")),
        "'metadata/pipe': is a special file (fifo)",
    ),
    BadTree("root-is-symlink", root_is_link, "link: is a symbolic link"),
    BadTree("not-a-directory", not_a_dir, "not a directory"),
    BadTree("empty-dir", tree(), "directory is empty"),
    BadTree(
        "too-many-entries",
        tree("a", "b", "c", "d", "e", "f"),
        "folder has 6 entries, above the limit of 5",
        SMALL,
    ),
    BadTree("file-too-big", with_extra(tree("a"), file_of(600)), "above the per-file limit", SMALL),
    BadTree(
        "total-too-big",
        tree(*(f"d/f{i}" for i in range(4))),
        "folder holds",
        ArchiveLimits(max_total_bytes=30),
    ),
    BadTree("newline-name", tree("evil\nname"), "non-printable"),
    BadTree("backslash-name", tree("a\\..\\b"), "backslash"),
    BadTree("undecodable-name", with_extra(tree("a"), undecodable), "not valid UTF-8"),
]


@pytest.mark.parametrize("case", TREE_CASES, ids=[c.id for c in TREE_CASES])
def test_check_tree_rejects(case: BadTree, tmp_path: Path) -> None:
    root = case.build(tmp_path)
    with pytest.raises(ArchiveProblem) as info:
        check_tree(root, case.limits)
    assert any(case.expected in p for p in info.value.problems), info.value.problems


def test_check_tree_accepts_resources(tmp_path: Path) -> None:
    builder = SparkBuilder(tmp_path)
    for root in (builder.ner_model(), builder.embeddings(), builder.pipeline()):
        check_tree(root)


def test_check_tree_reports_everything(tmp_path: Path) -> None:
    root = tree("metadata/part-00000", "evil\nname")(tmp_path)
    (root / "link").symlink_to("/")
    os.mkfifo(root / "pipe")
    with pytest.raises(ArchiveProblem) as info:
        check_tree(root)
    assert len(info.value.problems) == 3, info.value.problems


# ---------------------------------------------------------------------------------------------
# Properties

SEGMENTS = st.one_of(
    st.sampled_from(
        ["a", "b", "metadata", "..", ".", "", "C:", "c:x", "x\\..", "\x00", "é", "\x07"]
    ),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=6),
)
ENTRIES = st.lists(
    st.tuples(
        st.booleans(),  # leading slash
        st.lists(SEGMENTS, min_size=1, max_size=4),
        st.booleans(),  # directory entry
        st.binary(max_size=64),
    ),
    min_size=1,
    max_size=8,
)


def _oracle_unsafe(name: str) -> bool:
    """Independent of the implementation: names that must never be extracted."""
    parts = name.replace("\\", "/").split("/")
    return (
        name.startswith("/")
        or ".." in parts
        or "\\" in name
        or "\x00" in name
        or (len(name) > 1 and name[0].isascii() and name[0].isalpha() and name[1] == ":")
        or not name.replace("\x00", "").isprintable()
    )


@HYPOTHESIS
@given(ENTRIES)
def test_random_trees_extract_inside_dest_or_are_rejected(
    specs: list[tuple[bool, list[str], bool, bytes]],
) -> None:
    entries = []
    for slash, segments, is_dir, data in specs:
        name = ("/" if slash else "") + "/".join(segments) + ("/" if is_dir else "")
        entries.append(RawEntry(name, b"" if is_dir else data))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        path = raw_zip(base / "in.zip", entries)
        dest = base / "out"
        try:
            safe_extract(path, dest)
        except ArchiveProblem as exc:
            assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
            assert not dest.exists()
            assert tree_snapshot(base) == {"in.zip"}
            return
        real_dest = dest.resolve()
        files: dict[str, bytes] = {}
        for found in dest.rglob("*"):
            assert not found.is_symlink()
            assert found.resolve().is_relative_to(real_dest)
            if found.is_file():
                files[found.relative_to(dest).as_posix()] = found.read_bytes()
        expected = {}
        for entry in entries:
            assert isinstance(entry.name, str)
            assert not _oracle_unsafe(entry.name), entry.name
            if not entry.name.endswith("/"):
                expected[str(PurePosixPath(entry.name))] = entry.data
        assert files == expected


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


@HYPOTHESIS
@given(
    st.lists(
        st.sampled_from(["a", "b", "c/d", "c/e", "f/g/h"]), min_size=1, max_size=5, unique=True
    ),
    st.sampled_from([None, "link", "c/link"]),
)
def test_check_tree_rejects_exactly_the_trees_with_links(
    files: list[str], link: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = tree(*files)(Path(tmp))
        if link is not None:
            (root / link).parent.mkdir(parents=True, exist_ok=True)
            (root / link).symlink_to(root / files[0])
        if link is None:
            check_tree(root)
        else:
            with pytest.raises(ArchiveProblem, match="symbolic link"):
                check_tree(root)

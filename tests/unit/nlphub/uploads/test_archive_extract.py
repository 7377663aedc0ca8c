"""Archive safety: extraction (aborted streams, interruptions, destinations) and resource_root."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nlphub.uploads.archive import (
    ArchiveLimits,
    ArchiveProblem,
    check_zip,
    extraction_leftovers,
    remove_extraction,
    resource_root,
    safe_extract,
)
from tests.unit.nlphub.uploads.conftest import (
    HYPOTHESIS,
    RawEntry,
    SparkBuilder,
    raw_zip,
    tree_snapshot,
    valid_zip,
    zip_dir,
)


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

"""Unit tests for nlphub.hub.local: ``file://`` archives, copied and resumed, and confined to
their hub folder (regular files only, bounded like downloads)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nlphub.hub import local as local_module
from nlphub.hub.fetch import fetch, head_size
from nlphub.hub.fetch_errors import (
    ChecksumMismatch,
    DownloadTooLarge,
    HubHTTPError,
    OutsideHubFolder,
    SizeMismatch,
)
from nlphub.hub.partial import partial_path
from tests.unit.nlphub.hub.payloads import DATA, md5_of, sha256_of

# -- file:// -----------------------------------------------------------------------------------


def test_file_url_copy_and_resume(tmp_path: Path) -> None:
    source = tmp_path / "hub" / "a b.zip"
    source.parent.mkdir()
    source.write_bytes(DATA)
    url = source.as_uri()
    dest = tmp_path / "a.zip"

    first = fetch(url, dest, expected_md5=md5_of(DATA), chunk_size=4096)
    assert (first.md5, first.sha256, first.resumed_from) == (md5_of(DATA), sha256_of(DATA), 0)
    assert dest.read_bytes() == DATA

    dest2 = tmp_path / "b.zip"
    partial_path(dest2).write_bytes(DATA[:12345])
    resumed = fetch(url, dest2, expected_md5=md5_of(DATA))
    assert resumed.resumed_from == 12345
    assert (resumed.md5, resumed.sha256) == (md5_of(DATA), sha256_of(DATA))
    assert dest2.read_bytes() == DATA


def test_file_url_checksum_mismatch_and_missing_file(tmp_path: Path) -> None:
    source = tmp_path / "a.zip"
    source.write_bytes(DATA)
    dest = tmp_path / "out" / "a.zip"
    with pytest.raises(ChecksumMismatch):
        fetch(source.as_uri(), dest, expected_md5="A" * 32)
    assert not dest.exists() and not partial_path(dest).exists()

    with pytest.raises(HubHTTPError) as caught:
        fetch((tmp_path / "nope.zip").as_uri(), dest, expected_md5=None)
    assert caught.value.status == 404


# -- hub input: file:// folders (security) ------------------------------------------------------


@pytest.fixture
def mirror_dir(tmp_path: Path) -> Path:
    """A file:// hub folder, with a secret next to it (outside it) and links of both kinds."""
    folder = tmp_path / "hub" / "models"
    folder.mkdir(parents=True)
    (folder / "a.zip").write_bytes(DATA)
    (tmp_path / "hub" / "secret.zip").write_bytes(b"secret outside the mirror")
    (folder / "escape.zip").symlink_to(tmp_path / "hub" / "secret.zip")
    (folder / "dangling.zip").symlink_to(tmp_path / "hub" / "nowhere.zip")
    (folder / "inside.zip").symlink_to(folder / "a.zip")
    (folder / "sub").mkdir()
    os.mkfifo(folder / "pipe.zip")
    return folder


@pytest.mark.parametrize(
    "tail",
    [
        "/../secret.zip",
        "/..%2Fsecret.zip",
        "/sub/../../secret.zip",
        "/./a.zip",
        "/escape.zip",
        "/dangling.zip",
        "/a.zip?x=1",
        "/a.zip#frag",
        "/",
        "/a%00.zip",
    ],
)
def test_file_archives_outside_their_folder_are_refused(
    mirror_dir: Path, tmp_path: Path, tail: str
) -> None:
    url = mirror_dir.as_uri() + tail
    dest = tmp_path / "out" / "a.zip"
    partial_path(dest).parent.mkdir()
    partial_path(dest).write_bytes(b"old")

    with pytest.raises(OutsideHubFolder) as caught:
        fetch(url, dest, expected_md5=None)

    assert str(caught.value) == (
        f"refused to read {url}: a hub archive must be a file inside its hub folder"
    )
    assert "nowhere" not in str(caught.value)
    assert not dest.exists() and not partial_path(dest).exists()
    with pytest.raises(OutsideHubFolder):
        head_size(url)


@pytest.mark.parametrize("name", ["pipe.zip", "sub"])
def test_file_archives_must_be_regular_files(mirror_dir: Path, tmp_path: Path, name: str) -> None:
    url = (mirror_dir / name).as_uri()
    with pytest.raises(OutsideHubFolder, match="it is not a regular file"):
        fetch(url, tmp_path / "a.zip", expected_md5=None, timeout=2)
    assert not partial_path(tmp_path / "a.zip").exists()


def test_a_link_inside_the_folder_is_followed(mirror_dir: Path, tmp_path: Path) -> None:
    result = fetch((mirror_dir / "inside.zip").as_uri(), tmp_path / "a.zip", expected_md5=None)
    assert result.md5 == md5_of(DATA)
    assert head_size((mirror_dir / "inside.zip").as_uri()) == len(DATA)


def test_file_archives_are_bounded_like_downloads(mirror_dir: Path, tmp_path: Path) -> None:
    url = (mirror_dir / "a.zip").as_uri()
    dest = tmp_path / "a.zip"
    with pytest.raises(SizeMismatch, match="is corrupted: it is 300000 bytes but the hub says 10"):
        fetch(url, dest, expected_md5=None, expected_size=10)
    with pytest.raises(DownloadTooLarge, match="larger than the download limit of 1000 B"):
        fetch(url, dest, expected_md5=None, max_size=1000)
    assert not dest.exists() and not partial_path(dest).exists()


def test_a_file_growing_while_copied_stops_at_its_size(
    mirror_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A source that grows after its size was taken (a file being appended to while copied).
    real = local_module.open_source

    class Growing:
        def __init__(self, handle: Any) -> None:
            self.handle = handle
            self.grown = False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

        def __enter__(self) -> Growing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def read(self, size: int = -1) -> bytes:
            if not self.grown:
                self.grown = True
                with (mirror_dir / "a.zip").open("ab") as more:
                    more.write(b"more" * 1000)
            return bytes(self.handle.read(size))

    def growing(url: str) -> Any:
        return Growing(real(url))

    monkeypatch.setattr(local_module, "open_source", growing)
    url = (mirror_dir / "a.zip").as_uri()
    with pytest.raises(
        SizeMismatch, match=f"longer than the {len(DATA)} bytes the file had when it was opened"
    ):
        fetch(url, tmp_path / "a.zip", expected_md5=None)
    assert not partial_path(tmp_path / "a.zip").exists()

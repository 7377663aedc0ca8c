"""nlphub.uploads.service before anything is unpacked: an uploaded zip over
NLPHUB_MAX_UPLOAD_BYTES is refused before it is read, and its declared size is read only once
its central directory passed its limits (no zipfile.ZipFile built for one that does not)."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from nlphub.uploads import service
from nlphub.uploads.archive import DEFAULT_LIMITS, ArchiveProblem
from nlphub.uploads.service import UploadGuards, UploadRequest
from schemas.settings import Settings, load_settings

GUARDS = UploadGuards(licence_problem=lambda edition: None, space_problem=lambda path, n: None)


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Settings:
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(tmp_path / "incoming"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
def no_zipfile(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("zipfile.ZipFile was built")

    monkeypatch.setattr(zipfile, "ZipFile", refuse)


def _many_entries(path: Path) -> Path:
    """A few bytes closed by ZIP64 end records that declare 200,000 entries."""
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 200_000, 200_000, 0, 0)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 2**32 - 1, 2**32 - 1, 0)
    path.write_bytes(record + locator + end)
    return path


def test_the_declared_size_is_read_only_after_the_directory_check(
    tmp_path: Path, no_zipfile: None
) -> None:
    with pytest.raises(ArchiveProblem, match="archive has 200000 entries, above the limit"):
        service._declared_size(_many_entries(tmp_path / "many.zip"), DEFAULT_LIMITS)


def test_a_zip_over_the_upload_limit_is_refused_before_it_is_read(
    tmp_path: Path, incoming: Path, monkeypatch: pytest.MonkeyPatch, no_zipfile: None
) -> None:
    settings = _settings(monkeypatch, tmp_path, NLPHUB_MAX_UPLOAD_BYTES="100")
    assert settings.max_upload_bytes == 100
    (incoming / "big.zip").write_bytes(bytes(101))
    req = UploadRequest(path=Path("big.zip"), kind="model", name="big")
    with pytest.raises(ArchiveProblem) as info:
        service._unpack(req, settings, tmp_path / "staging", GUARDS)
    assert info.value.problems == [
        "the zip is 101 B, above the limit of 100 B (NLPHUB_MAX_UPLOAD_BYTES)"
    ]
    assert not (tmp_path / "staging").exists()


def test_the_upload_limit_defaults_to_24_gib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _settings(monkeypatch, tmp_path).max_upload_bytes == 24 * 2**30

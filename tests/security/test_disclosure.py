"""Security: what a tenant is told reveals nothing about the server.

A download refused for its licence or for disk space says what is wrong, without the licence
file's name, what the licence covers or when it expires, `NLPHUB_HOME` or the resources folder
(the worker log has the details); a download's or an upload's result names the resource's
folder under the resources folder, never an absolute path; a failed download names the
archive, not the hub's URL nor a `file://` hub's folder.

Each test fails with its fix removed (checked by undoing each in turn): `licence_refusal` /
`unusable_licence` (`nlphub.hub.licence`, used by `check_licence`), `space_refusal` and
`_tenant_reason` (`nlphub.hub.service`, `nlphub.hub.install`), the result `path` of
`nlphub.hub.install`, `UploadResult.as_dict` and `without_locations` (`nlphub.hub.install`).
"""

from __future__ import annotations

import errno
import json
import shutil
import uuid
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from nlphub.hub.fetch_errors import NotEnoughSpace
from nlphub.hub.install import _tenant_reason, without_locations
from nlphub.hub.mirror import build_mirror
from nlphub.uploads.service import UploadResult
from schemas.db import get_engine
from schemas.models import Resource
from schemas.settings import get_settings
from schemas.states import JobState
from tests.integration.test_hub import LIBS, res

pytestmark = pytest.mark.integration


@pytest.fixture
def hub(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `file://` hub with an open-source and a Healthcare resource, synced."""
    folder = tmp_path / "hub"
    build_mirror(folder, [res("good_emb", "WordEmbeddingsModel", payload_bytes=300_000)])
    build_mirror(
        folder,
        [res("ner_clinical", "MedicalNerModel", language="de", labels=["DRUG"])],
        edition_folder="clinical/models",
    )
    monkeypatch.setenv("NLPHUB_HUB_URLS", folder.as_uri())
    monkeypatch.setenv("NLPHUB_LICENSED_HUB_URLS", (folder / "clinical" / "models").as_uri())
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
    get_settings.cache_clear()
    from tasks.hub import sync_hubs

    out = sync_hubs("test")
    assert not out["errors"], out
    return folder


def _failed(wait_job: Callable[..., Any], payload: dict[str, Any]) -> str:
    job = wait_job(nlphub.enqueue("nlphub.download", payload))
    assert job.state == JobState.FAILED, job.result
    return str(job.error)


def _server_folders() -> list[str]:
    settings = get_settings()
    return [str(settings.home), str(settings.resources_dir), "/"]


def _licence(folder: Path, editions: list[str], expires: str) -> None:
    body = {"licensee": "lab", "license_key": "K-1", "editions": editions, "expires_at": expires}
    (folder / "licence.json").write_text(json.dumps(body))


def test_a_licence_refusal_names_no_file_and_nothing_of_the_licence(
    hub, worker, wait_job, tmp_path, monkeypatch
) -> None:
    secret = tmp_path / "srv-secret"
    secret.mkdir()
    monkeypatch.setenv("NLPHUB_LICENSE_FILE", str(secret / "licence.json"))
    get_settings.cache_clear()
    clinical = {"name": "ner_clinical", "language": "de"}
    error = _failed(wait_job, clinical)  # the file is missing
    assert "the configured licence cannot be used" in error, error
    assert "licence.json" not in error and "No such file" not in error
    assert not any(folder in error for folder in [*_server_folders(), str(secret)])
    _licence(secret, ["Finance NLP"], "2999-01-01")
    error = _failed(wait_job, clinical)
    assert "the configured licence does not cover Healthcare NLP" in error, error
    assert "Finance" not in error and str(secret) not in error
    _licence(secret, ["Healthcare NLP"], "2001-01-31")
    error = _failed(wait_job, clinical)
    assert "the configured licence for Healthcare NLP has expired" in error, error
    assert "2001" not in error


def test_a_disk_refusal_names_no_server_folder(hub, worker, wait_job, monkeypatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 100_000))
    error = _failed(wait_job, {"name": "good_emb"})
    assert "not enough free disk space for good_emb" in error, error
    assert "available" in error
    assert not any(folder in error for folder in _server_folders()), error


def test_a_download_result_holds_no_absolute_path(hub, worker, wait_job) -> None:
    job = wait_job(nlphub.enqueue("nlphub.download", {"name": "good_emb"}))
    assert job.state == JobState.SUCCEEDED, job.error
    path = job.result["path"]
    assert path.endswith("/good_emb_en_5.4.0") and not Path(path).is_absolute(), path
    # it is the install folder under the resources folder
    assert (get_settings().resources_dir / path).is_dir()
    assert str(get_settings().home) not in json.dumps(job.result)


def test_an_upload_result_holds_no_absolute_path(tmp_path) -> None:
    target = tmp_path / "resources" / "embeddings" / "emb_en_1"
    result = UploadResult(uuid.uuid4(), "emb (en) 1", "installed", str(target))
    assert result.as_dict()["path"] == "embeddings/emb_en_1"


def test_a_failed_download_tells_no_path_of_a_disk_or_os_error(tmp_path) -> None:
    full = NotEnoughSpace(
        f"not enough free disk space for x: needs 2.0 GiB (twice its size, 1.0 GiB), "
        f"1.0 KiB available at {tmp_path}",
        needed=2 << 30,
        available=1024,
        path=tmp_path,
    )
    assert _tenant_reason(full, str(full)) == (
        "not enough free disk space for x: needs 2.0 GiB (twice its size, 1.0 GiB), "
        "1.0 KiB available"
    )
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x.zip"))
    assert _tenant_reason(denied, str(denied)) == (
        "the download could not be stored: Permission denied"
    )
    filled = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.zip"))
    assert _tenant_reason(filled, f"the disk filled up: {filled}") == (
        "the disk filled up during the download"
    )


def test_a_failed_download_names_the_archive_not_the_hub_folder(hub, worker, wait_job) -> None:
    """A `file://` hub's folder is a server path: the tenant is told the archive's name; the
    resource (the operator's view) keeps the whole reason."""
    archive = next(hub.glob("good_emb_*.zip"))
    archive.unlink()
    error = _failed(wait_job, {"name": "good_emb"})
    assert f"hub answered HTTP 404 Not Found (no such file) for {archive.name}" in error, error
    assert str(hub) not in error and "file://" not in error
    with Session(get_engine()) as session:
        resource = session.exec(select(Resource).where(Resource.name == "good_emb")).one()
    assert resource.error is not None and archive.as_uri() in resource.error


def test_a_download_error_keeps_only_the_last_part_of_each_location() -> None:
    assert without_locations(
        "checksum mismatch for https://hub.example.com/models/x_en_1_3_2.zip: hub says MD5 AB"
    ) == ("checksum mismatch for x_en_1_3_2.zip: hub says MD5 AB")
    assert without_locations(
        "/srv/nlphub/downloads/x.zip.partial is being written by another process"
    ) == ("x.zip.partial is being written by another process")
    assert without_locations("HEAD https://hub.example.com/ failed") == "HEAD the hub failed"
    assert without_locations("needs 2/3 and/or 1.0 GiB") == "needs 2/3 and/or 1.0 GiB"

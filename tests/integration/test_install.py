"""One install path for every source: a model waiting for its embeddings is released when they
are installed, whether each of the two came from the hub or from an upload.

Real Postgres, a real worker, and a small hub mirror on 127.0.0.1 (no Spark needed).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from nlphub.hub.mirror import build_mirror
from nlphub.hub.server import MirrorServer
from schemas.db import get_engine
from schemas.models import Resource
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.conftest import wait_for
from tests.integration.conftest import audit_events
from tests.integration.test_hub import res
from tests.unit.nlphub.uploads.conftest import (
    EMB_UID,
    WORD_EMBEDDINGS,
    SparkBuilder,
    write_metadata,
    write_storage,
    zip_dir,
)

pytestmark = pytest.mark.integration

LIBS = "spark-nlp=5.5.0,spark=3.5.0"

#: The keys of each source's audit record and job result, as they were before the install path
#: was shared: each source keeps its own.
UPLOADED_DETAILS = {"class", "kind", "bytes", "checksum", "dependencies", "missing"}
INSTALLED_DETAILS = {"path", "checksum", "bytes", "dependencies", "missing"}
UPLOAD_RESULT = {"resource_id", "resource", "state", "path", "missing_dependencies", "notice"}
DOWNLOAD_RESULT = {
    "resource",
    "state",
    "path",
    "bytes",
    "checksum",
    "dependencies",
    "missing_dependencies",
    "released",
}


@pytest.fixture
def libs(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(tmp_path))  # the uploads are made there
    get_settings.cache_clear()


@pytest.fixture
def hub(libs: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MirrorServer]:
    """A synced mirror with glove_100d, and ner_local, whose emb_local is not in the hub."""
    folder = tmp_path / "mirror"
    build_mirror(
        folder,
        [
            res("glove_100d", "WordEmbeddingsModel", "5.4.0"),
            res("ner_local", "NerDLModel", storage_ref="emb_local", labels=["PER"]),
        ],
    )
    with MirrorServer(folder) as server:
        monkeypatch.setenv("NLPHUB_HUB_URLS", server.url)
        monkeypatch.setenv("NLPHUB_LICENSED_HUB_URLS", "")
        get_settings.cache_clear()
        from tasks.hub import sync_hubs

        out = sync_hubs("test")
        assert not out["errors"], out
        yield server


def _embeddings(base: Path, name: str) -> Path:
    """An embeddings folder whose storageRef is its own name (so it depends on nothing)."""
    folder = base / name
    params = {
        "inputCols": ["document", "token"],
        "outputCol": "embeddings",
        "dimension": 100,
        "caseSensitive": False,
        "storageRef": name,
    }
    write_metadata(folder, WORD_EMBEDDINGS, EMB_UID, params)
    write_storage(folder, name)
    return folder


def _row(name: str) -> Resource:
    with Session(get_engine()) as session:
        row = session.exec(select(Resource).where(Resource.name == name)).one()
        session.expunge(row)
        return row


def _upload(wait_job: Any, path: Path, kind: str, name: str, **kw: Any) -> Any:
    job = wait_job(
        nlphub.enqueue(
            "nlphub.validate_upload",
            {"path": str(path), "kind": kind, "name": name, **kw},
            requested_by="carol",
        )
    )
    assert job.state == JobState.SUCCEEDED, job.error
    assert set(job.result) == UPLOAD_RESULT, job.result
    return job


def _details(job_id: uuid.UUID, action: str) -> dict[str, Any]:
    (event,) = audit_events(job_id, action)
    return dict(event.details)


def _released_by(job_id: uuid.UUID) -> list[str]:
    return [e.target or "" for e in audit_events(job_id, "resource.dependencies_installed")]


def test_uploaded_model_is_installed_once_its_uploaded_embeddings_are(
    libs, worker, wait_job, tmp_path
) -> None:
    spark = SparkBuilder(tmp_path / "src")
    ner = spark.ner_model("my_ner", storage_ref="my_emb")
    model = _upload(wait_job, zip_dir(ner, tmp_path / "ner.zip"), "model", "my_ner", labels=["PER"])
    assert model.result["state"] == "missing_dependencies"
    assert model.result["missing_dependencies"] == ["my_emb"]
    assert "`nlphub download my_emb --language en`" in model.result["notice"]
    assert set(_details(model.id, "resource.uploaded")) == UPLOADED_DETAILS
    assert _row("my_ner").state == ResourceState.MISSING_DEPENDENCIES

    emb = _upload(wait_job, _embeddings(tmp_path / "src", "my_emb"), "embeddings", "my_emb")
    assert emb.result["state"] == "installed" and emb.result["notice"] is None
    # no further command: the embeddings' upload released the model in its own transaction
    row = _row("my_ner")
    assert row.state == ResourceState.INSTALLED, row
    assert row.error is None and row.dependencies == ["my_emb"]
    assert _released_by(emb.id) == ["my_ner/en/upload"]
    assert _details(emb.id, "resource.uploaded")["missing"] == []


def test_uploaded_model_is_installed_once_its_embeddings_come_from_the_hub(
    hub, worker, wait_job, tmp_path
) -> None:
    ner = SparkBuilder(tmp_path / "src").ner_model("my_ner", storage_ref="glove_100d")
    model = _upload(wait_job, ner, "model", "my_ner", labels=["PER"])
    assert model.result["missing_dependencies"] == ["glove_100d"]
    assert _row("my_ner").state == ResourceState.MISSING_DEPENDENCIES

    glove = wait_job(nlphub.enqueue("nlphub.download", {"name": "glove_100d"}))
    assert glove.state == JobState.SUCCEEDED, glove.error
    assert set(glove.result) == DOWNLOAD_RESULT, glove.result
    assert glove.result["released"] == ["my_ner/en/upload"]
    assert set(_details(glove.id, "resource.installed")) == INSTALLED_DETAILS
    assert _row("my_ner").state == ResourceState.INSTALLED


def test_hub_model_is_installed_once_its_embeddings_are_uploaded(
    hub, worker, wait_job, tmp_path
) -> None:
    ner = wait_job(nlphub.enqueue("nlphub.download", {"name": "ner_local"}))
    assert ner.state == JobState.SUCCEEDED, ner.error
    assert set(ner.result) == DOWNLOAD_RESULT, ner.result
    assert ner.result["missing_dependencies"] == ["emb_local"]
    # the download queued nlphub.fetch_dependencies; the hub has no emb_local: reported
    wait_for(
        lambda: "needs emb_local" in (_row("ner_local").error or ""),
        60,
        what="the missing emb_local to be reported",
    )
    assert "`nlphub upload PATH --kind embeddings --name emb_local`" in (
        _row("ner_local").error or ""
    )
    assert _row("ner_local").state == ResourceState.MISSING_DEPENDENCIES

    emb = _upload(wait_job, _embeddings(tmp_path / "src", "emb_local"), "embeddings", "emb_local")
    assert emb.result["state"] == "installed"
    row = _row("ner_local")
    assert row.state == ResourceState.INSTALLED, row
    assert row.error is None
    assert _released_by(emb.id) == [row.label]

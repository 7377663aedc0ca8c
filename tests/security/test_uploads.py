"""Items (c) and (f, uploads): an upload's edition comes from its classes and its licence, never
from the caller alone; an upload must fit the free-space rule of downloads (twice its unpacked
size free) before anything is copied or extracted. Refusals leave nothing behind.

Through a real worker; each test fails with its check removed (`nlphub.uploads.service`).
"""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from nlphub.uploads import service
from schemas.db import get_engine
from schemas.models import Resource
from schemas.settings import get_settings
from schemas.states import JobState
from tests.unit.nlphub.uploads.conftest import (
    MEDICAL_NER,
    SparkBuilder,
    Stage,
    default_stages,
    zip_dir,
)

pytestmark = pytest.mark.integration

LIBS = "spark-nlp=5.5.0,healthcare-nlp=5.5.0,finance-nlp=5.5.0,spark=3.5.0"
FINANCE_NER = "com.johnsnowlabs.finance.token_classification.ner.FinanceNerModel"
NER_PARAMS = {"inputCols": ["sentence", "token", "embeddings"], "outputCol": "ner"}


@pytest.fixture
def incoming(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(folder))
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)  # licensed libraries "installed"
    monkeypatch.delenv("NLPHUB_LICENSE_FILE", raising=False)
    get_settings.cache_clear()
    return folder


def _licence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, editions: list[str], expires: str
) -> None:
    path = tmp_path / "licence.json"
    data = {"licensee": "Clinic", "license_key": "k-123", "editions": editions}
    path.write_text(json.dumps({**data, "expires_at": expires}))
    monkeypatch.setenv("NLPHUB_LICENSE_FILE", str(path))
    get_settings.cache_clear()


def _snapshot() -> set[str]:
    """Everything under NLPHUB_HOME (the temp area must be empty after every upload)."""
    home = get_settings().home
    return {str(p.relative_to(home)) for p in home.rglob("*") if p != home / "tmp"}


def _rows() -> list[Resource]:
    with Session(get_engine()) as session:
        return list(session.exec(select(Resource)).all())


def _upload(wait_job: Callable[..., Any], path: Path, **kw: Any) -> Any:
    payload = {"path": str(path), "kind": "model", "name": "ner", "labels": ["DRUG"], **kw}
    return wait_job(nlphub.enqueue("nlphub.validate_upload", payload))


def _refused(wait_job: Callable[..., Any], path: Path, *expected: str, **kw: Any) -> str:
    before = _snapshot()
    job = _upload(wait_job, path, **kw)
    assert job.state == JobState.FAILED, job.result
    for text in expected:
        assert text in job.error, job.error
    assert _snapshot() == before  # nothing left behind: no files ...
    assert _rows() == []  # ... and no resource row
    return str(job.error)


def _medical(base: Path) -> Path:
    return SparkBuilder(base).ner_model("medical", cls=MEDICAL_NER, uid="MedicalNerModel_1")


# -- (c) editions and licences -----------------------------------------------------------------


def test_a_caller_edition_cannot_let_licensed_classes_in(incoming, worker, wait_job) -> None:
    _refused(
        wait_job,
        _medical(incoming),
        "edition 'Open Source' contradicts the upload's classes",
        "MedicalNerModel is Healthcare NLP",
        "Healthcare NLP needs a licence",
        edition="Open Source",
    )


def test_a_caller_edition_must_match_the_classes(incoming, worker, wait_job) -> None:
    open_ner = SparkBuilder(incoming).ner_model("open_ner", storage_ref=None)
    _refused(wait_job, open_ner, "edition 'Healthcare NLP' contradicts", edition="Healthcare NLP")
    _refused(wait_job, open_ner, "edition 'Premium' is not an edition (known:", edition="Premium")
    job = _upload(wait_job, open_ner, edition="open source")  # agrees (any case): accepted
    assert job.state == JobState.SUCCEEDED, job.error
    assert [row.edition for row in _rows()] == ["Open Source"]


def test_licensed_classes_need_a_valid_licence_covering_them(
    incoming, worker, wait_job, tmp_path, monkeypatch
) -> None:
    medical = _medical(incoming)
    _refused(wait_job, medical, "Healthcare NLP needs a licence: none is configured")
    _licence(monkeypatch, tmp_path, ["Finance NLP"], "2999-01-01")
    error = _refused(wait_job, medical, "the configured licence does not cover Healthcare NLP")
    assert "Finance NLP" not in error  # what the licence covers is not told
    _licence(monkeypatch, tmp_path, ["Healthcare NLP"], "2001-01-01")
    error = _refused(wait_job, medical, "the configured licence for Healthcare NLP has expired")
    assert "2001" not in error  # nor when it expired
    (tmp_path / "licence.json").write_text("{not json")
    error = _refused(wait_job, medical, "the configured licence cannot be used")
    assert "licence.json" not in error  # the server's file is not named to the caller
    _licence(monkeypatch, tmp_path, ["Healthcare NLP"], "2999-01-01")
    job = _upload(wait_job, medical, edition="Healthcare NLP")
    assert job.state == JobState.SUCCEEDED, job.error
    assert [row.edition for row in _rows()] == ["Healthcare NLP"]


def test_unlisted_spark_nlp_classes_are_licensed(incoming, worker, wait_job) -> None:
    """Fail closed: a class in Spark NLP's packages that is not one of its open-source classes
    (here Healthcare NLP's text generator) needs a licence; a listed one does not."""
    generator = SparkBuilder(incoming).resource(
        "generator", "com.johnsnowlabs.nlp.annotators.seq2seq.MedicalTextGenerator"
    )
    _refused(
        wait_job,
        generator,
        "Healthcare NLP needs a licence: none is configured",
        "licensed classes: MedicalTextGenerator",
        labels=None,
    )
    t5 = SparkBuilder(incoming).resource(
        "t5", "com.johnsnowlabs.nlp.annotators.seq2seq.T5Transformer"
    )
    job = _upload(wait_job, t5, labels=None)
    assert job.state == JobState.SUCCEEDED, job.error
    assert [row.edition for row in _rows()] == ["Open Source"]


def test_a_pipeline_needs_a_licence_for_every_licensed_edition_in_it(
    incoming, worker, wait_job, tmp_path, monkeypatch
) -> None:
    stages = [
        *default_stages(),
        Stage(MEDICAL_NER, "MedicalNerModel_1", {**NER_PARAMS, "outputCol": "ner_med"}),
        Stage(FINANCE_NER, "FinanceNerModel_1", {**NER_PARAMS, "outputCol": "ner_fin"}),
    ]
    mixed = SparkBuilder(incoming).pipeline("mixed", stages)
    _licence(monkeypatch, tmp_path, ["Healthcare NLP"], "2999-01-01")
    error = _refused(
        wait_job, mixed, "the configured licence does not cover Finance NLP", kind="pipeline"
    )
    assert "it covers" not in error


# -- (f) free space --------------------------------------------------------------------------


class Disk:
    """Pretends the disk has `free` bytes free; records every copy or extraction started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.started: list[str] = []
        for name in ("safe_extract", "copy_tree"):
            self._spy(name)

    def free(self, free: int) -> None:
        usage = namedtuple("usage", "total used free")
        self.monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, free))

    def _spy(self, name: str) -> None:
        original = getattr(service, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.started.append(name)
            return original(*args, **kwargs)

        self.monkeypatch.setattr(service, name, wrapped)


def test_an_upload_must_fit_the_free_space_rule_before_it_is_unpacked(
    incoming, worker, wait_job, monkeypatch
) -> None:
    """~200 KB unpacked, ~4 KB zipped, 300 KB free: the zip fits twice, its content does not."""
    disk = Disk(monkeypatch)
    emb = SparkBuilder(incoming).embeddings("emb")
    (emb / "storage" / "EMBEDDINGS_glove_100d" / "000009.sst").write_bytes(b"\0" * 200_000)
    archive = zip_dir(emb, incoming / "emb.zip")
    assert 2 * archive.stat().st_size < 300_000
    disk.free(300_000)
    home = str(get_settings().home)
    for path in (archive, emb):
        error = _refused(
            wait_job,
            path,
            "not enough free disk space for this upload: it unpacks to ",
            "(twice its size), 293.0 KiB available",
            kind="embeddings",
            labels=None,
        )
        assert home not in error  # the server's folders are not named
    assert disk.started == []  # refused before copying or extracting
    disk.free(10**9)
    job = _upload(wait_job, archive, kind="embeddings", labels=None)
    assert job.state == JobState.SUCCEEDED, job.error
    assert disk.started == ["safe_extract"]

"""Custom uploads: accepted ones installed atomically, rejected ones leave no trace."""

from __future__ import annotations

import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from nlphub.hub.policy import upload_guards
from nlphub.uploads import service
from nlphub.uploads.service import UploadRejected, UploadRequest, accept_upload
from schemas.db import get_engine, session_scope
from schemas.models import Resource, ResourceSource
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.unit.nlphub.uploads.conftest import (
    MEDICAL_NER,
    SparkBuilder,
    write_metadata,
    write_storage,
    zip_dir,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def uploads(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", "spark-nlp=5.5.0,spark=3.5.0")
    folder = tmp_path / "incoming"
    folder.mkdir()
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(folder))  # uploads are read only from there
    get_settings.cache_clear()
    return folder


def _snapshot(root: Path) -> set[str]:
    """Everything under NLPHUB_HOME but the temp area (home/tmp, emptied after each upload)."""
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if p.relative_to(root).parts[0] != "tmp"
    }


def _rows() -> list[Resource]:
    with Session(get_engine()) as session:
        return list(session.exec(select(Resource)).all())


def _accept(**kw: Any) -> Any:
    settings = get_settings()
    return accept_upload(
        session_scope, settings, UploadRequest(**kw), guards=upload_guards(settings)
    )


def _bad_inputs(base: Path) -> dict[str, tuple[Path, dict[str, Any], list[str]]]:
    spark = SparkBuilder(base / "src")
    cases: dict[str, tuple[Path, dict[str, Any], list[str]]] = {}
    slip = base / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("metadata/part-00000", "{}")
        zf.writestr("../../evil.txt", "x")
    cases["zip slip"] = (slip, {"kind": "model"}, ["'../../evil.txt'"])
    trunc = base / "truncated.zip"
    good_zip = zip_dir(spark.embeddings("trunc_src"), base / "full.zip")
    trunc.write_bytes(good_zip.read_bytes()[:200])
    cases["truncated zip"] = (trunc, {"kind": "embeddings"}, ["not a valid zip"])
    no_storage = spark.embeddings("no_storage", storage=False)
    cases["embeddings without storage"] = (
        no_storage,
        {"kind": "embeddings"},
        ["needs a storage/ folder"],
    )
    ner = spark.ner_model("ner_no_labels", storage_ref=None)
    cases["ner without labels"] = (ner, {"kind": "model"}, ["NER model needs its labels"])
    wrong_kind = spark.ner_model("ner_as_emb", storage_ref=None)
    cases["model declared as embeddings"] = (
        wrong_kind,
        {"kind": "embeddings", "labels": ["PER"]},
        ["declared as embeddings"],
    )
    old = base / "too_new"
    write_metadata(
        old,
        "com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel",
        "W_1",
        {"storageRef": "x"},
        spark_version="9.1.0",
    )
    write_storage(old)
    cases["spark too new"] = (old, {"kind": "embeddings"}, ["Spark"])
    medical = base / "medical"
    write_metadata(medical, MEDICAL_NER, "MedicalNerModel_1", {"storageRef": "w2v"})
    cases["healthcare not installed"] = (
        medical,
        {"kind": "model", "labels": ["DRUG"]},
        ["needs Healthcare NLP, which is not installed"],
    )
    empty = base / "empty.zip"
    with zipfile.ZipFile(empty, "w"):
        pass
    cases["empty archive"] = (empty, {"kind": "model"}, ["archive is empty"])
    cases["missing path"] = (base / "nope.zip", {"kind": "model"}, ["does not exist"])
    return cases


BAD = [
    "zip slip",
    "truncated zip",
    "embeddings without storage",
    "ner without labels",
    "model declared as embeddings",
    "spark too new",
    "healthcare not installed",
    "empty archive",
    "missing path",
]


@pytest.mark.parametrize("case", BAD)
def test_rejected_upload_leaves_nothing_behind(uploads, case) -> None:
    path, kw, expected = _bad_inputs(uploads)[case]
    home = get_settings().home
    before = _snapshot(home)
    with pytest.raises(UploadRejected) as info:
        _accept(path=path, name="custom", **kw)
    for text in expected:
        assert text in str(info.value), str(info.value)
    assert info.value.problems
    assert _snapshot(home) == before
    assert not any((home / "tmp").iterdir())
    assert _rows() == []


def test_every_problem_is_listed_not_only_the_first(uploads) -> None:
    ner = SparkBuilder(uploads / "src").ner_model("ner_as_embeddings", storage_ref=None)
    with pytest.raises(UploadRejected) as info:
        _accept(path=ner, name="x", kind="embeddings")
    text = str(info.value)
    assert len(info.value.problems) == 2, info.value.problems
    assert "declared as embeddings" in text and "NER model needs its labels" in text


@pytest.mark.parametrize("as_zip", [True, False])
def test_valid_uploads_of_each_kind_are_installed(uploads, as_zip) -> None:
    spark = SparkBuilder(uploads / "src")
    emb = spark.embeddings("glove_100d")
    ner = spark.ner_model("my_ner", storage_ref="glove_100d")
    pipe = spark.pipeline("my_pipe")
    items = [
        (emb, "embeddings", "glove_100d", None),
        (ner, "model", "my_ner", ["PER", "LOC"]),
        (pipe, "pipeline", "my_pipe", ["PER"]),
    ]
    for folder, kind, name, labels in items:
        path = zip_dir(folder, uploads / f"{name}.zip") if as_zip else folder
        result = _accept(path=path, kind=kind, name=name, labels=labels)
        assert result.state in ("installed", "missing_dependencies"), result
        assert (Path(result.path) / "metadata").is_dir()
    rows = {r.name: r for r in _rows()}
    assert rows["glove_100d"].state == ResourceState.INSTALLED
    assert rows["glove_100d"].source == ResourceSource.UPLOAD
    assert rows["my_ner"].state == ResourceState.INSTALLED  # its glove_100d was uploaded first
    assert rows["my_ner"].dependencies == ["glove_100d"]
    assert rows["my_ner"].labels == ["PER", "LOC"]
    assert not list(get_settings().resources_dir.rglob(".staging-*"))


def test_redelivered_upload_removes_what_its_killed_attempt_left(uploads) -> None:
    """A worker SIGKILLed while unpacking leaves its staging folder and safe_extract's hidden
    work folder in home/tmp; the redelivered job (same job id) removes both."""
    job_id = uuid.uuid4()
    tmp = get_settings().home / "tmp"
    left = [tmp / f"upload-{job_id}", tmp / f".upload-{job_id}.k1ll3d.partial"]
    for folder in left:
        (folder / "metadata").mkdir(parents=True)
    other = tmp / f".upload-{uuid.uuid4()}.busy.partial"  # another job's, still running
    other.mkdir()
    emb = zip_dir(SparkBuilder(uploads / "src").embeddings("glove_100d"), uploads / "g.zip")
    result = _accept(path=emb, kind="embeddings", name="glove_100d", job_id=job_id)
    assert result.state == "installed"
    assert not any(folder.exists() for folder in left)
    assert sorted(tmp.iterdir()) == [other]


def test_missing_dependency_is_noticed_with_the_command_to_fetch_it(uploads) -> None:
    ner = SparkBuilder(uploads / "src").ner_model("ner_x", storage_ref="w2v_cc_300d")
    result = _accept(path=ner, kind="model", name="ner_x", labels=["PER"])
    assert result.state == "missing_dependencies"
    assert result.missing == ["w2v_cc_300d"]
    assert "`nlphub download w2v_cc_300d --language en`" in (result.notice or "")
    assert "`nlphub deps ner_x`" in (result.notice or "")


def test_upload_task_rejects_with_every_problem_in_job_and_audit(
    uploads, worker, wait_job, audit_actions
) -> None:
    spark = SparkBuilder(uploads / "src")
    bad = spark.embeddings("noStorage", storage=False)
    job = wait_job(
        nlphub.enqueue(
            "nlphub.validate_upload", {"path": str(bad), "kind": "embeddings", "name": "e1"}
        )
    )
    assert job.state == JobState.FAILED
    assert "needs a storage/ folder" in job.error
    assert "upload.rejected" in audit_actions(job.id)
    assert _rows() == []
    good = spark.embeddings("okEmb")
    job = wait_job(
        nlphub.enqueue(
            "nlphub.validate_upload",
            {
                "path": str(zip_dir(good, uploads / "ok.zip")),
                "kind": "embeddings",
                "name": "glove_100d",
            },
            requested_by="carol",
        )
    )
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["state"] == "installed"
    assert "resource.uploaded" in audit_actions(job.id)


# -- the whole unit corpus, through the service, with the database and the disk checked -------

from nlphub.uploads.archive import DEFAULT_LIMITS  # noqa: E402
from tests.unit.nlphub.uploads.test_archive import ZIP_CASES  # noqa: E402
from tests.unit.nlphub.uploads.test_archive_tree import TREE_CASES  # noqa: E402
from tests.unit.nlphub.uploads.test_sparknlp_rejects import RESOURCE_CASES  # noqa: E402

ZIPS = [c for c in ZIP_CASES if c.limits == DEFAULT_LIMITS]
TREES = [c for c in TREE_CASES if c.limits == DEFAULT_LIMITS]
RESOURCES = [c for c in RESOURCE_CASES if c.limits == DEFAULT_LIMITS]

#: The service reads its input before the validator does: a path that is not a folder is read
#: as a zip, links are refused by the folder check, and the resource root is looked up first —
#: so these cases fail earlier, with these messages.
SERVICE_MESSAGE = {
    "root-is-symlink": "is a symbolic link",
    "not-a-directory": "not a valid zip archive",
    "root-not-a-directory": "not a valid zip archive",
    "no-metadata": "no metadata/ folder at the top",
    "metadata-dir-symlink": "'metadata': is a symbolic link",
    "part-file-symlink": "'metadata/part-00000': is a symbolic link",
}


def _rejected_cleanly(path: Path, kind: str, expected: str, labels: Any = None) -> None:
    home = get_settings().home
    before = _snapshot(home)
    with pytest.raises(UploadRejected) as info:
        _accept(path=path, name="custom", kind=kind, labels=labels)
    assert any(expected in p for p in info.value.problems), info.value.problems
    assert _snapshot(home) == before
    assert not any((home / "tmp").iterdir())
    assert _rows() == []


@pytest.mark.parametrize("case", ZIPS, ids=[c.id for c in ZIPS])
def test_corpus_zip_rejected_without_trace(uploads, case) -> None:
    _rejected_cleanly(case.build(uploads), "model", case.expected)


@pytest.mark.parametrize("case", TREES, ids=[c.id for c in TREES])
def test_corpus_tree_rejected_without_trace(uploads, case) -> None:
    _rejected_cleanly(case.build(uploads), "model", SERVICE_MESSAGE.get(case.id, case.expected))


@pytest.mark.parametrize("case", RESOURCES, ids=[c.id for c in RESOURCES])
def test_corpus_resource_rejected_without_trace(uploads, case) -> None:
    root = case.build(SparkBuilder(uploads / "src"))
    expected = SERVICE_MESSAGE.get(case.id, case.expected)
    _rejected_cleanly(root, case.kind, expected, case.labels)


def test_two_uploads_of_one_identity_at_once_reject_the_second_cleanly(
    uploads, monkeypatch
) -> None:
    """Both look the identity up before either commits (the race, replayed: the second's
    look-ups see nothing); the second's insert then meets the first's row and it is rejected
    like a later upload, not failed with a database error, and leaves nothing behind."""
    spark = SparkBuilder(uploads / "src")
    first = zip_dir(spark.embeddings("glove_100d"), uploads / "a.zip")
    assert _accept(path=first, kind="embeddings", name="glove_100d").state == "installed"
    before = _snapshot(get_settings().home)
    real = service._done_or_taken
    blind = iter([None, None])  # the second upload's two look-ups, made before the first commit

    def look_up(session: Any, req: Any, version: str) -> Any:
        for answer in blind:
            return answer
        return real(session, req, version)

    monkeypatch.setattr(service, "_done_or_taken", look_up)
    # The same archive (a double submit): the install folder then holds the same files, as it
    # does for a racing twin that renamed first, so only the identity tells them apart.
    with pytest.raises(UploadRejected, match=r"glove_100d/en/upload already exists \(installed\)"):
        _accept(path=first, kind="embeddings", name="glove_100d")
    assert _snapshot(get_settings().home) == before
    assert not list((get_settings().home / "tmp").iterdir())
    assert [r.state for r in _rows()] == [ResourceState.INSTALLED]

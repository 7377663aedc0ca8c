"""The Models Hub end to end: a real mirror on 127.0.0.1, real worker(s), real Postgres."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

import nlphub
from nlphub.errors import NotFound, Refused
from nlphub.hub.mirror import MirrorResource, build_mirror
from nlphub.hub.server import MirrorServer
from nlphub.hub.service import Installed, request_download, search
from schemas.db import autocommit_engine, get_engine
from schemas.models import Resource
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
LIBS = "spark-nlp=5.5.0,healthcare-nlp=5.5.0,spark=3.5.0"


def res(name: str, annotator: str, lib: str = "5.4.0", **kw: Any) -> MirrorResource:
    return MirrorResource(
        name=name,
        language=kw.pop("language", "en"),
        lib_version=lib,
        spark_version=kw.pop("spark", "3.4"),
        annotator=annotator,
        time=kw.pop("time", T0),
        **kw,
    )


PUBLIC = [
    res("glove_100d", "WordEmbeddingsModel", "5.0.0"),
    res("glove_100d", "WordEmbeddingsModel", "5.4.0", payload_bytes=300_000),
    res("glove_100d", "WordEmbeddingsModel", "99.0.0"),  # too new for what is installed
    res("bert_base_cased", "BertEmbeddings"),
    res("tfhub_use", "UniversalSentenceEncoder"),
    res("w2v_cc_300d", "WordEmbeddingsModel", language="de"),
    res("ner_dl", "NerDLModel", storage_ref="glove_100d", labels=["PER", "LOC"]),
    res("future_emb", "WordEmbeddingsModel", "99.0.0"),
    res("ner_future", "NerDLModel", storage_ref="future_emb", labels=["X"]),
    res("bad_md5", "WordEmbeddingsModel", checksum="wrong"),
    res("slow_emb", "WordEmbeddingsModel", payload_bytes=2_000_000),
]
CLINICAL = [
    res(
        "ner_clinical", "MedicalNerModel", storage_ref="w2v_cc_300d", language="de", labels=["DRUG"]
    ),
]


@pytest.fixture(scope="session")
def spark_written(
    spark_session: Any, tmp_path_factory: pytest.TempPathFactory
) -> list[MirrorResource]:
    """Resources whose folders pyspark wrote (real Spark ML persistence, Spark NLP classes)."""
    from tests.sparkml import write_spark_nlp_resource

    base = tmp_path_factory.mktemp("sparkml")
    emb = write_spark_nlp_resource(
        spark_session,
        base / "emb_spark",
        class_name="com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel",
        storage_ref="emb_spark",
        storage=True,
        spark_version="3.4.1",
    )
    ner = write_spark_nlp_resource(
        spark_session,
        base / "ner_spark",
        class_name="com.johnsnowlabs.nlp.annotators.ner.dl.NerDLModel",
        storage_ref="emb_spark",
        labels=["PER", "LOC"],
        spark_version="3.4.1",
    )
    return [
        res("emb_spark", "WordEmbeddingsModel", source_dir=emb),
        res("ner_spark", "NerDLModel", source_dir=ner),
    ]


@pytest.fixture
def mirror(
    env: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spark_written: list[MirrorResource],
) -> Iterator[MirrorServer]:
    folder = tmp_path / "mirror"
    build_mirror(folder, PUBLIC + spark_written)
    build_mirror(folder, CLINICAL, edition_folder="clinical/models")
    with MirrorServer(folder) as server:
        monkeypatch.setenv("NLPHUB_HUB_URLS", server.url)
        monkeypatch.setenv("NLPHUB_LICENSED_HUB_URLS", f"{server.url}/clinical/models")
        monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
        get_settings.cache_clear()
        from tasks.hub import sync_hubs

        out = sync_hubs("test")
        assert not out["errors"], out
        yield server


def _resource(name: str, language: str = "en") -> Resource:
    with Session(get_engine()) as session:
        row = session.exec(
            select(Resource).where(Resource.name == name, Resource.language == language)
        ).one()
        session.expunge(row)
        return row


def _request(name: str, **kw: Any) -> uuid.UUID:
    with Session(get_engine()) as session:
        req = request_download(session, get_settings(), name=name, requested_by="test", **kw)
        session.commit()
        return req.job_id


def _archive_gets(server: MirrorServer, name: str) -> list[Any]:
    return [r for r in server.faults.requests if r[0] == "GET" and f"/{name}_" in r[1]]


def _leftovers(home: Path) -> list[str]:
    found = []
    for path in home.rglob("*"):
        if path.name.endswith(".partial") or path.name.startswith((".staging-", ".trash-")):
            found.append(str(path))
    return found


def test_search_filters_and_compatibility(mirror) -> None:
    installed = Installed.from_settings(get_settings())
    with Session(get_engine()) as session:
        names = {h.entry.name for h in search(session, installed, name="glove")}
        assert names == {"glove_100d"}
        versions = [h.entry.lib_version for h in search(session, installed, name="glove_100d")]
        assert sorted(v or "" for v in versions) == ["5.0.0", "5.4.0", "99.0.0"]
        compatible = search(session, installed, name="glove_100d", compatible_only=True)
        assert sorted(h.entry.lib_version or "" for h in compatible) == ["5.0.0", "5.4.0"]
        spec = search(session, installed, name="glove", version=">=5.1,<6")
        assert [h.entry.lib_version for h in spec] == ["5.4.0"]
        sentence = search(session, installed, embedding_type="sentence")
        assert {h.entry.name for h in sentence} == {"tfhub_use"}
        assert {h.entry.name for h in search(session, installed, edition="Healthcare NLP")} == {
            "ner_clinical"
        }
        assert {h.entry.name for h in search(session, installed, language="de")} == {
            "w2v_cc_300d",
            "ner_clinical",
        }
        assert all(h.entry.kind.value == "model" for h in search(session, installed, kind="model"))


def test_download_installs_newest_compatible_with_progress_and_audit(
    mirror, worker, wait_job, audit_actions
) -> None:
    job_id = nlphub.enqueue("nlphub.download", {"name": "glove_100d"}, requested_by="alice")
    job = wait_job(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.progress == 1.0
    row = _resource("glove_100d")
    assert row.state == ResourceState.INSTALLED
    assert row.version == "5.4.0"  # 99.0.0 is newer but not compatible
    assert row.checksum and row.bytes_on_disk and row.bytes_on_disk > 300_000
    path = Path(row.install_path or "")
    assert (path / "metadata").is_dir() and (path / "storage").is_dir()
    actions = audit_actions()
    for step in ("resource.download_started", "resource.downloaded", "resource.installed"):
        assert actions.count(step) == 1, (step, actions)
    assert _leftovers(get_settings().home) == []
    assert not list((get_settings().home / "downloads").iterdir())


@pytest.mark.parametrize(
    ("name", "kw", "error", "message"),
    [
        ("nope", {}, NotFound, "no resource named nope in the hub catalog"),
        (
            "glove_100d",
            {"language": "fr"},
            NotFound,
            "glove_100d is not in the hub for language 'fr' (it is for: en)",
        ),
        (
            "future_emb",
            {},
            Refused,
            "future_emb (en) 99.0.0 is not compatible with what is installed: needs Spark NLP",
        ),
        (
            "glove_100d",
            {"version": "4.0.0"},
            NotFound,
            "glove_100d (en) has no version matching 4.0.0 (the hub has: 5.0.0, 5.4.0, 99.0.0)",
        ),
    ],
)
def test_bad_requests_are_refused_clearly(mirror, name, kw, error, message) -> None:
    with pytest.raises(error) as info:
        _request(name, **kw)
    assert message in str(info.value)


def test_licensed_edition_needs_a_valid_licence(mirror, tmp_path, monkeypatch) -> None:
    with pytest.raises(Refused, match=r"Healthcare NLP needs a licence: none is configured"):
        _request("ner_clinical", language="de")
    lic = tmp_path / "licence.json"
    lic.write_text(
        json.dumps(
            {
                "licensee": "lab",
                "license_key": "KEY-marker-123",
                "editions": ["Finance NLP"],
                "expires_at": "2099-01-01",
            }
        )
    )
    monkeypatch.setenv("NLPHUB_LICENSE_FILE", str(lic))
    get_settings.cache_clear()
    with pytest.raises(Refused) as refused:
        _request("ner_clinical", language="de")
    # the problem, not the licence's contents (security: nothing about the server)
    assert str(refused.value) == "the configured licence does not cover Healthcare NLP"
    lic.write_text(
        json.dumps(
            {
                "licensee": "lab",
                "license_key": "KEY-marker-123",
                "editions": ["Healthcare NLP"],
                "expires_at": "2020-01-31",
            }
        )
    )
    with pytest.raises(Refused) as refused:
        _request("ner_clinical", language="de")
    assert str(refused.value) == "the configured licence for Healthcare NLP has expired"
    lic.write_text(
        json.dumps(
            {
                "licensee": "lab",
                "license_key": "KEY-marker-123",
                "editions": ["Healthcare NLP"],
                "expires_at": "2099-01-31",
            }
        )
    )
    assert _request("ner_clinical", language="de")


def test_two_x_free_disk_rule(mirror, monkeypatch) -> None:
    import shutil

    real = shutil.disk_usage

    def tiny(path: Any) -> Any:
        usage = real(path)
        return type(usage)(usage.total, usage.used, 400_000)  # 400 kB free

    monkeypatch.setattr(shutil, "disk_usage", tiny)
    with pytest.raises(
        Exception,
        match=r"not enough free disk space for glove_100d 5.4.0: "
        r"needs .* \(twice its size, .*\), .* available$",
    ) as refused:
        _request("glove_100d")
    assert str(get_settings().home) not in str(refused.value)  # no server folder
    with Session(get_engine()) as session:
        assert session.exec(select(Resource)).all() == []


def test_checksum_mismatch_fails_and_leaves_nothing(mirror, worker, wait_job) -> None:
    job = wait_job(nlphub.enqueue("nlphub.download", {"name": "bad_md5"}))
    assert job.state == JobState.FAILED
    assert "checksum mismatch" in job.error and "hub says MD5" in job.error
    row = _resource("bad_md5")
    assert row.state == ResourceState.FAILED and "checksum mismatch" in (row.error or "")
    assert row.install_path is None
    assert _leftovers(get_settings().home) == []
    assert not list((get_settings().home / "downloads").iterdir())


def test_cut_transfer_is_resumed_with_range(mirror, worker, wait_job) -> None:
    mirror.faults.cut_after_bytes = 100_000
    job = wait_job(nlphub.enqueue("nlphub.download", {"name": "glove_100d"}), timeout=90)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 2
    gets = _archive_gets(mirror, "glove_100d")
    assert len(gets) == 2
    assert gets[0][2] is None and gets[1][2] == "bytes=100000-"
    assert _resource("glove_100d").state == ResourceState.INSTALLED


def test_twenty_identical_requests_download_once(mirror, worker, wait_job, audit_actions) -> None:
    ids: list[uuid.UUID] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def ask() -> None:
        try:
            barrier.wait()
            ids.append(_request("bert_base_cased"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(ids)) == 1
    assert wait_job(ids[0]).state == JobState.SUCCEEDED
    assert len(_archive_gets(mirror, "bert_base_cased")) == 1
    assert audit_actions().count("resource.installed") == 1


def test_dependency_chain_installs_the_embeddings_then_releases_the_model(
    mirror, worker, wait_job, job_state
) -> None:
    job = wait_job(nlphub.enqueue("nlphub.download", {"name": "ner_dl"}))
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["missing_dependencies"] == ["glove_100d"]
    wait_for(
        lambda: _resource("ner_dl").state == ResourceState.INSTALLED,
        60,
        what="ner_dl to be released once glove_100d is installed",
    )
    glove = _resource("glove_100d")
    assert glove.state == ResourceState.INSTALLED and glove.version == "5.4.0"
    assert _resource("ner_dl").dependencies == ["glove_100d"]


def test_incompatible_dependency_is_reported_with_versions_and_a_command(
    mirror, worker, wait_job, audit_actions
) -> None:
    job = wait_job(nlphub.enqueue("nlphub.download", {"name": "ner_future"}))
    assert job.state == JobState.SUCCEEDED, job.error
    wait_for(
        lambda: "future_emb" in (_resource("ner_future").error or ""),
        60,
        what="the dependency problem to be recorded",
    )
    row = _resource("ner_future")
    assert row.state == ResourceState.MISSING_DEPENDENCIES
    assert "needs future_emb: future_emb (en) 99.0.0 is not compatible" in (row.error or "")
    assert "installed 5.5.0" in (row.error or "")
    assert "`nlphub download future_emb --language en`" in (row.error or "")


def test_failed_download_can_be_redownloaded(mirror, worker, wait_job) -> None:
    archive = next(p for p in Path(mirror.folder).iterdir() if p.name.startswith("slow_emb_"))
    mirror.faults.status_for[f"/{archive.name}"] = 404
    job = wait_job(nlphub.enqueue("nlphub.download", {"name": "slow_emb"}))
    assert job.state == JobState.FAILED and "404" in job.error
    assert _resource("slow_emb").state == ResourceState.FAILED
    mirror.faults.status_for.clear()
    again = wait_job(_request("slow_emb"))
    assert again.state == JobState.SUCCEEDED, again.error
    assert _resource("slow_emb").state == ResourceState.INSTALLED


def test_pyspark_written_model_and_its_embeddings_install(mirror, worker, wait_job) -> None:
    job = wait_job(nlphub.enqueue("nlphub.download", {"name": "ner_spark"}))
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["dependencies"] == ["emb_spark"]
    wait_for(
        lambda: _resource("ner_spark").state == ResourceState.INSTALLED,
        60,
        what="ner_spark to be released once emb_spark is installed",
    )
    emb = Path(_resource("emb_spark").install_path or "")
    assert any(p.name.startswith("part-00000-") for p in (emb / "metadata").iterdir())
    assert (emb / "data").is_dir() and (emb / "storage").is_dir()


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """NLPHUB_HOME on a 1.5 MB tmpfs (skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    monkeypatch.setenv("NLPHUB_HOME", str(mount))
    get_settings.cache_clear()
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.faults  # issue 7's fault list; kept beside its fixtures
def test_disk_filling_up_fails_cleanly_and_leaves_others_alone(
    mirror, small_disk, worker, wait_job, monkeypatch
) -> None:
    from sqlmodel import Session as S

    from nlphub.resources import tree_checksum

    first = wait_job(nlphub.enqueue("nlphub.download", {"name": "bert_base_cased"}))
    assert first.state == JobState.SUCCEEDED, first.error
    bert = _resource("bert_base_cased")
    # the 2x rule would refuse this one up front; let it start, so the disk fills mid-download
    monkeypatch.setattr("nlphub.hub.install.check_free_space", lambda *a, **k: None)
    monkeypatch.setattr("nlphub.hub.space.check_free_space", lambda *a, **k: None)
    job = wait_job(nlphub.enqueue("nlphub.download", {"name": "slow_emb"}))
    assert job.state == JobState.FAILED
    assert "the disk filled up during the download" in job.error
    assert str(small_disk) not in job.error  # the OS error's file is not named to the caller
    assert _resource("slow_emb").state == ResourceState.FAILED
    assert _leftovers(small_disk) == []
    assert not list((small_disk / "downloads").iterdir())
    assert tree_checksum(Path(bert.install_path or ""))[0] == bert.checksum
    with S(get_engine()) as session:
        assert session.get(Resource, bert.id).state == ResourceState.INSTALLED  # type: ignore[union-attr]


def test_redelivery_after_the_install_removes_a_left_archive(mirror) -> None:
    """A worker killed between the install's commit and the archive's deletion leaves the
    archive in downloads/; the redelivered job finds the resource installed and removes it."""
    from nlphub.hub.install import _archive_path, download_and_install
    from nlphub.hub.partial import partial_path

    job_id = _request("glove_100d")
    settings = get_settings()

    def run() -> dict[str, Any]:
        return download_and_install(
            _resource("glove_100d").id,
            settings,
            actor="test",
            job_id=job_id,
            progress=lambda *_: None,
            last_try=False,
        )

    assert run().get("already") is None
    installed = _resource("glove_100d")
    assert installed.state == ResourceState.INSTALLED
    archive = _archive_path(settings, installed)
    assert not archive.exists()
    archive.write_bytes(b"left behind by a killed worker")
    partial_path(archive).write_bytes(b"and its partial")
    assert run()["already"] is True
    assert not archive.exists() and not partial_path(archive).exists()
    assert _resource("glove_100d").state == ResourceState.INSTALLED


def test_two_catalog_syncs_at_once_do_not_collide(env) -> None:
    """Two update checks reading the hub at the same moment each replace the catalog; the
    second waits for the first (it would otherwise insert the same archives and fail on the
    unique key, as a soak run once showed) and then replaces its rows."""
    from nlphub.hub.metadata import parse_metadata
    from nlphub.hub.service import sync_catalog
    from schemas.models import HubEntryRow

    folder = "http://127.0.0.1:1/models/metadata.json"
    line = (
        '{"name": "glove_100d", "language": "en", "libVersion": {"parts": [5, 4, 0]}, '
        '"sparkVersion": {"parts": [3, 4]}, "readyToUse": true, '
        '"time": "2025-01-01T00:00:00.000Z", "isZipped": true, "checksum": "", '
        '"annotator": "WordEmbeddingsModel"}'
    )
    entries, _ = parse_metadata(line + "\n", source=folder)
    first = Session(get_engine())
    sync_catalog(first, {folder: entries}, actor="first")  # not committed yet
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with Session(get_engine()) as session:
                sync_catalog(session, {folder: entries}, actor="second")
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()

    def second_waits() -> bool:
        # Each look in its own transaction: pg_stat_activity is a snapshot taken once per
        # transaction, so polling inside one would see the first look's answer forever.
        with autocommit_engine().connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            ).scalar_one()
        return bool(waiting == 1)

    wait_for(second_waits, 30, what="the second sync to wait")
    first.commit()
    first.close()
    thread.join(30)
    assert not thread.is_alive() and errors == []
    with Session(get_engine()) as session:
        rows = session.exec(select(HubEntryRow)).all()
    assert [r.name for r in rows] == ["glove_100d"]

"""Inventory and delete with real files, rows and a worker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

import nlphub
from nlphub.resources import install_dir, tree_checksum
from schemas.db import get_engine
from schemas.models import Resource, ResourceKind, ResourceSource
from schemas.states import JobState, ResourceState

pytestmark = pytest.mark.integration


def make_installed(
    home: Path,
    name: str,
    *,
    kind: ResourceKind = ResourceKind.EMBEDDINGS,
    dependencies: list[str] | None = None,
    size: int = 2048,
) -> Resource:
    path = install_dir(home / "resources", kind, name, "en", "5.0.0")
    (path / "metadata").mkdir(parents=True)
    (path / "metadata" / "part-00000").write_text('{"class": "com.johnsnowlabs.nlp.X"}')
    (path / "storage").mkdir()
    (path / "storage" / "data.bin").write_bytes(b"\1" * size)
    checksum, total = tree_checksum(path)
    res = Resource(
        name=name,
        language="en",
        version="5.0.0",
        kind=kind,
        source=ResourceSource.HUB,
        state=ResourceState.INSTALLED,
        install_path=str(path),
        checksum=checksum,
        bytes_on_disk=total,
        dependencies=dependencies or [],
    )
    with Session(get_engine(), expire_on_commit=False) as session:
        session.add(res)
        session.commit()
    return res


def reload(res: Resource) -> Resource:
    with Session(get_engine()) as session:
        fresh = session.get(Resource, res.id)
        assert fresh is not None
        session.expunge(fresh)
        return fresh


def test_inventory_finds_missing_corrupt_orphans_and_reports_disk(
    env, worker, wait_job, audit_actions
) -> None:
    home = env["home"]
    good = make_installed(home, "glove_100d")
    corrupt = make_installed(home, "bert_base_cased")
    missing = make_installed(home, "tfhub_use")
    (Path(corrupt.install_path or "") / "storage" / "data.bin").write_bytes(b"\2" * 2048)
    import shutil

    shutil.rmtree(missing.install_path or "")
    orphan = home / "resources" / "model" / "stray_en_1.0"
    orphan.mkdir(parents=True)
    job = wait_job(nlphub.enqueue("nlphub.inventory", {}))
    assert job.state == JobState.SUCCEEDED, job.error
    result: dict[str, Any] = job.result
    assert result["verified"] == 1
    assert result["corrupt"] == [corrupt.label]
    assert result["missing"] == [missing.label]
    assert result["orphans"] == [str(orphan)]
    assert result["disk"]["per_resource"] == {
        good.label: good.bytes_on_disk,
        corrupt.label: good.bytes_on_disk,
    }
    assert result["disk"]["free_bytes"] > 0
    assert reload(good).state == ResourceState.INSTALLED
    assert reload(corrupt).state == ResourceState.INVALID
    assert "checksum mismatch" in (reload(corrupt).error or "")
    assert reload(missing).state == ResourceState.INVALID
    assert audit_actions().count("resource.invalid") == 2
    # Put the right bytes back: the next inventory recovers it, once.
    (Path(corrupt.install_path or "") / "storage" / "data.bin").write_bytes(b"\1" * 2048)
    job = wait_job(nlphub.enqueue("nlphub.inventory", {}))
    assert job.result["recovered"] == [corrupt.label]
    assert reload(corrupt).state == ResourceState.INSTALLED


def test_delete_removes_files_and_is_audited_and_idempotent(
    env, worker, wait_job, audit_actions
) -> None:
    res = make_installed(env["home"], "glove_100d")
    job = wait_job(nlphub.enqueue("nlphub.delete", {"name": "glove_100d"}, requested_by="bob"))
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["freed_bytes"] == res.bytes_on_disk
    assert not Path(res.install_path or "").exists()
    assert not list((env["home"] / "resources" / "embeddings").iterdir())
    assert reload(res).state == ResourceState.DELETED
    assert audit_actions().count("resource.deleted") == 1
    again = wait_job(nlphub.enqueue("nlphub.delete", {"resource_id": str(res.id)}))
    assert again.state == JobState.SUCCEEDED and again.result["already"] is True
    assert audit_actions().count("resource.deleted") == 1


def test_delete_refuses_while_a_model_depends_on_it_unless_forced(env, worker, wait_job) -> None:
    emb = make_installed(env["home"], "w2v_cc_300d")
    model = make_installed(
        env["home"], "ner_healthcare", kind=ResourceKind.MODEL, dependencies=["w2v_cc_300d"]
    )
    job = wait_job(nlphub.enqueue("nlphub.delete", {"name": "w2v_cc_300d"}))
    assert job.state == JobState.FAILED
    assert job.error == (f"{emb.label} is used by {model.label}; pass force to delete it anyway")
    assert Path(emb.install_path or "").exists()
    assert reload(emb).state == ResourceState.INSTALLED
    forced = wait_job(nlphub.enqueue("nlphub.delete", {"name": "w2v_cc_300d", "force": True}))
    assert forced.state == JobState.SUCCEEDED
    assert reload(emb).state == ResourceState.DELETED


def test_delete_of_unknown_resource_fails_clearly(env, worker, wait_job) -> None:
    job = wait_job(nlphub.enqueue("nlphub.delete", {"name": "nope", "language": "de"}))
    assert job.state == JobState.FAILED
    assert job.error == "resource nope (de) not found"


def test_cleanup_removes_old_leftovers_but_not_active_downloads(env, worker, wait_job) -> None:
    import os
    import time

    home = env["home"]
    active = Resource(
        name="busy", version="1", kind=ResourceKind.EMBEDDINGS, state=ResourceState.QUEUED
    )
    with Session(get_engine(), expire_on_commit=False) as session:
        session.add(active)
        session.commit()
    downloads = home / "downloads"
    downloads.mkdir()
    stale = downloads / f"{'0' * 32}-old.zip.partial"
    busy = downloads / f"{active.id}-busy.zip.partial"
    fresh = downloads / "fresh.zip.partial"
    temp = home / "tmp" / "upload-abc"
    temp.mkdir(parents=True)
    for path in (stale, busy, fresh):
        path.write_bytes(b"x" * 10)
    old = time.time() - 3 * 86400
    for path in (stale, busy, temp):
        os.utime(path, (old, old))
    job = wait_job(nlphub.enqueue("nlphub.cleanup", {"older_than": 86400}))
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["removed"] == 2
    assert not stale.exists() and not temp.exists()
    assert busy.exists() and fresh.exists()


def test_cleanup_removes_a_killed_extractions_work_folder_beside_the_install_folders(
    env, worker, wait_job
) -> None:
    """A worker killed while unpacking a hub download leaves `safe_extract`'s hidden work
    folder, `..staging-<id>.<random>.partial`, beside the install folders; cleanup removes it
    once old, like the staging folder itself, and keeps the one of a resource in progress."""
    import os
    import time

    active = Resource(
        name="busy", version="1", kind=ResourceKind.EMBEDDINGS, state=ResourceState.VERIFYING
    )
    with Session(get_engine(), expire_on_commit=False) as session:
        session.add(active)
        session.commit()
    kind = env["home"] / "resources" / "embeddings"
    gone = uuid.uuid4()
    left = [kind / f"..staging-{gone}.k1ll3d.partial", kind / f".staging-{gone}"]
    busy = kind / f"..staging-{active.id}.w0rk1n.partial"
    old = time.time() - 3 * 86400
    for path in (*left, busy):
        (path / "metadata").mkdir(parents=True)
        os.utime(path, (old, old))
    job = wait_job(nlphub.enqueue("nlphub.cleanup", {"older_than": 86400}))
    assert job.state == JobState.SUCCEEDED, job.error
    assert sorted(job.result["paths"]) == sorted(
        p.relative_to(env["home"]).as_posix() for p in left
    )
    assert not any(p.exists() for p in left) and busy.exists()

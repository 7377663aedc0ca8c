"""Worker SIGKILL in the middle of each long task type (issue 7, reliability suite).

One real prefork worker (`-P prefork -c 1`) per test. Each trial starts a new job on a new
resource / upload / embedding / update notice, stops it at a chosen point, SIGKILLs the pool
process and lets the parent fork a new one: the message comes back (acks_late +
reject_on_worker_lost) and the job must finish exactly once — one `job.succeeded`, no duplicate
resources, downloads or vectors, nothing half-written left on disk, the audit chain intact.

Trials cycle through their task type's kill modes; the random parts (a threshold, a delay) come
from `random.Random(trial)`, so a failing trial reproduces with the same numbers. The points:

- *observed progress*: the ``.partial`` or the stored vectors reach a threshold, or a random
  delay after the job started; the process dies between two statements.
- *a job-row write* (`RowGate` on the job row): the test holds the row's lock, so the task
  stops at its next write of its own row (start, progress, outcome); the test lets the writes
  through one at a time until the chosen point. This reaches "the work is committed but its
  success is not recorded" deterministically — where redelivery bugs hide.
- *a lock inside the work*: the identity lock of a download request, a resource row, a
  conflicting (uncommitted) resource row: the task stops in the middle of its transaction.

A task stopped at a lock has a Postgres backend in the middle of a statement, and a backend
outlives its dead client until that statement ends (its transaction then aborts). `terminate`
ends that backend with the process (what happens to an idle connection); `stuck` keeps it
waiting until the redelivered message has started the job again in a new pool process, then
lets the orphaned statement run, alongside the new attempt.

NLPHUB_FAULT_TRIALS (default 20) sets the number of trials per task type; NLPHUB_FAULT_MODES
(e.g. ``renamed,committed``) keeps only those kill modes. Run with
``-o log_cli=true --log-cli-level=INFO`` to see where each test's trials stopped.

The harness (the worker, the rig, the trials, the ways to stop a task) is in
tests/faults/harness.py, the locks in tests/faults/locks.py.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from nlphub.embeddings.records import import_records
from nlphub.hub.mirror import build_mirror, write_resource_dir
from nlphub.hub.policy import upload_guards
from nlphub.hub.server import MirrorServer
from nlphub.hub.service import request_download
from nlphub.hub.sync import sync_hubs
from nlphub.hub.updates import check_updates
from nlphub.resources import install_dir, tree_checksum
from nlphub.uploads.service import UploadRequest, accept_upload
from schemas.db import get_engine, session_scope
from schemas.models import Resource, ResourceKind, ResourceSource, UpdateNotice
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.conftest import wait_for
from tests.faults.harness import (
    Rig,
    enqueue_held,
    kill_after_start,
    kill_at_outcome,
    kill_when_blocked,
    leftovers,
)
from tests.faults.locks import Db, conflicting_row_hold, describe_statement, identity_hold
from tests.integration.test_hub import LIBS, res

pytestmark = [pytest.mark.slow]

TRIALS = int(os.environ.get("NLPHUB_FAULT_TRIALS", "20"))
CHUNK_DELAY = 0.05  # seconds per 64 KiB chunk: a 1 MB archive takes about 0.8 s
DL_BYTES = 1_000_000
RECORDS = 5000  # stored in windows of 2048: killed after 0, 2048 or 4096 of them


# -- the hub -----------------------------------------------------------------------------------


def _dl(i: int) -> str:
    return f"kill_dl_{i:02d}"


def _dep(i: int) -> str:
    return f"kill_dep_{i:02d}"


def _upd(i: int) -> str:
    return f"kill_upd_{i:02d}"


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror with one resource per trial and task type (built once for the module)."""
    folder = tmp_path_factory.mktemp("kill-hub")
    build_mirror(
        folder,
        [res(_dl(i), "WordEmbeddingsModel", payload_bytes=DL_BYTES) for i in range(TRIALS)]
        + [res(_dep(i), "WordEmbeddingsModel", payload_bytes=200_000) for i in range(TRIALS)]
        + [
            res(_upd(i), "WordEmbeddingsModel", "5.5.0", payload_bytes=DL_BYTES)
            for i in range(TRIALS)
        ],
    )
    return folder


@pytest.fixture
def hub(
    env: dict[str, Any], hub_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MirrorServer]:
    with MirrorServer(hub_folder) as server:
        monkeypatch.setenv("NLPHUB_HUB_URLS", server.url)
        monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
        get_settings.cache_clear()
        out = sync_hubs("test")
        assert not out["errors"], out
        yield server


def _archive_size(server: MirrorServer, name: str, version: str = "5.4.0") -> int:
    lines = (Path(server.folder) / "metadata.json").read_text().splitlines()
    for line in lines:
        entry = json.loads(line)
        if entry["name"] == name and ".".join(map(str, entry["libVersion"]["parts"])) == version:
            return int(entry["size"])
    raise AssertionError(f"{name} {version} is not in the mirror")


# -- download ------------------------------------------------------------------------------------

DL_MODES = ("transfer", "gate-transfer", "gate-stuck", "downloaded", "installed")


def _request(session: Session, name: str) -> uuid.UUID:
    return request_download(session, get_settings(), name=name, requested_by="t").job_id


def _partial_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "downloads").glob("*.partial"))


def _download_trial(rig: Rig, hub: MirrorServer, i: int) -> None:
    rng, trial = rig.trial(DL_MODES, i)
    home = rig.home
    name = _dl(i)
    size = _archive_size(hub, name)
    threshold = int(size * rng.uniform(0.05, 0.95))
    hub.faults.delay_per_chunk = 0.0 if trial.mode == "installed" else CHUNK_DELAY
    if trial.mode == "transfer":
        trial.job_id = nlphub.enqueue("nlphub.download", {"name": name})
        wait_for(
            lambda: _partial_bytes(home) >= threshold,
            60,
            interval=0.002,
            what="the transfer to pass the threshold",
        )
        rig.kill()
        trial.stopped_at = f"transfer at {_partial_bytes(home)} bytes"
    elif trial.mode in ("gate-transfer", "gate-stuck"):
        # progress is written at most every 0.5 s: at the start, mid-way, at the end
        at = int(size * rng.choice([0.0, 0.3, 1.0]))
        gate = rig.gate()
        trial.job_id = enqueue_held(lambda s: _request(s, name), gate.hold)
        stop = gate.until(trial.job_id, lambda _q: _partial_bytes(home) >= at)
        assert stop is not None
        trial.stopped_at = f"{describe_statement(stop[1])} at {_partial_bytes(home)} bytes"
        rig.kill(stop[0], stuck=trial.mode == "gate-stuck", release=gate.release)
    elif trial.mode == "downloaded":
        # The resource row's lock: the task waits at its claim, then (let through) once the
        # whole archive is on disk, at its step to `verifying`.
        gate = rig.gate("resource")
        made: list[uuid.UUID] = []

        def make(s: Session) -> uuid.UUID:
            req = request_download(s, get_settings(), name=name, requested_by="t")
            made.append(req.resource_id)
            return req.job_id

        def archive_done(_q: str) -> bool:
            return any(not p.name.endswith(".partial") for p in (home / "downloads").iterdir())

        trial.job_id = enqueue_held(make, lambda _j: gate.hold(made[0]))
        stop = gate.until(trial.job_id, archive_done)
        assert stop is not None
        trial.stopped_at = f"{describe_statement(stop[1])}, archive complete"
        rig.kill(stop[0], release=gate.release)
    else:  # installed: files in place and recorded, the success not yet recorded
        gate = rig.gate()

        def installed(_q: str) -> bool:
            state = rig.db.value("SELECT state FROM resource WHERE name = %s", (name,))
            return bool(state == "installed")

        trial.job_id = enqueue_held(
            lambda s: nlphub.enqueue("nlphub.download", {"name": name}, session=s), gate.hold
        )
        stop = gate.until(trial.job_id, installed)
        assert stop is not None
        trial.stopped_at = f"{describe_statement(stop[1])} after install"
        rig.kill(stop[0], release=gate.release)
    rig.completed_once(trial)
    row = rig.check_installed(name, "5.4.0")
    assert rig.actions(target=row.label).count("resource.installed") == 1
    assert rig.actions(target=row.label).count("resource.download_requested") == 1
    assert rig.downloads(row.id, name) == 1
    if trial.mode == "transfer":
        gets = [r for r in hub.faults.requests if r[0] == "GET" and f"/{name}_" in r[1]]
        assert gets[-1][2] is not None, gets  # resumed with Range
    assert leftovers(home) == [], trial


@pytest.mark.timeout(900)
def test_download_killed_mid_run_installs_once(hub, rig_factory) -> None:
    rig = rig_factory("downloads")
    for i in range(TRIALS):
        _download_trial(rig, hub, i)
    hub.faults.delay_per_chunk = 0.0
    rig.check_end()


# -- dependency fetch ----------------------------------------------------------------------------

DEP_MODES = ("delay", "gate-done", "identity", "identity-stuck")


def _upload_model(tmp: Path, i: int) -> Resource:
    """An uploaded NER model whose embeddings (kill_dep_NN) are not installed."""
    name = f"kill_ner_{i:02d}"
    folder = write_resource_dir(
        res(name, "NerDLModel", storage_ref=_dep(i), labels=["PER", "LOC"]), tmp / name
    )
    settings = get_settings()
    out = accept_upload(
        session_scope,
        settings,
        UploadRequest(path=folder, kind="model", name=name, labels=["PER", "LOC"]),
        guards=upload_guards(settings),
    )
    assert out.missing == [_dep(i)], out
    with Session(get_engine()) as session:
        row = session.get(Resource, out.resource_id)
        assert row is not None
        session.expunge(row)
        return row


def _dependency_trial(rig: Rig, tmp: Path, i: int) -> None:
    rng, trial = rig.trial(DEP_MODES, i)
    model = _upload_model(tmp, i)
    task, payload = "nlphub.fetch_dependencies", {"resource_id": str(model.id)}
    if trial.mode == "delay":
        kill_after_start(rig, trial, task, payload, rng.uniform(0.0, 0.03))
    elif trial.mode == "gate-done":
        kill_at_outcome(rig, trial, task, payload)
    else:
        hold = rig.hold(identity_hold(_dep(i), "5.4.0"))
        kill_when_blocked(rig, trial, task, payload, hold, "lock")
    rig.completed_once(trial)
    dep = rig.resource(_dep(i))
    assert dep.job_id is not None
    assert rig.finish(dep.job_id).state == JobState.SUCCEEDED
    dep = rig.check_installed(_dep(i))
    assert rig.actions(target=dep.label).count("resource.download_requested") == 1
    assert rig.actions(target=dep.label).count("resource.installed") == 1
    assert rig.downloads(dep.id) == 1
    wait_for(
        lambda: rig.resource(model.name).state == ResourceState.INSTALLED,
        30,
        what="the model to be released",
    )
    assert rig.actions(target=model.label).count("resource.dependencies_installed") == 1


@pytest.mark.timeout(900)
def test_dependency_fetch_killed_mid_run_downloads_once(
    hub, rig_factory, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(tmp_path / "models"))
    get_settings.cache_clear()
    rig = rig_factory("default,downloads")
    for i in range(TRIALS):
        _dependency_trial(rig, tmp_path / "models", i)
    rig.check_end()


# -- upload validation ---------------------------------------------------------------------------

UPLOAD_MODES = ("delay", "staged", "staged-stuck", "committed", "renamed")
UPLOAD_BYTES = 3_000_000


def _zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def _upload_trial(rig: Rig, incoming: Path, i: int) -> None:
    rng, trial = rig.trial(UPLOAD_MODES, i)
    name = f"kill_up_{i:02d}"
    source = write_resource_dir(
        res(name, "WordEmbeddingsModel", payload_bytes=UPLOAD_BYTES), incoming / name
    )
    if i % 2:
        source = _zip(source, incoming / f"{name}.zip")
    task = "nlphub.validate_upload"
    payload = {"path": str(source), "kind": "embeddings", "name": name}
    if trial.mode == "delay":
        kill_after_start(rig, trial, task, payload, rng.uniform(0.0, 0.06))
    elif trial.mode in ("staged", "staged-stuck"):
        hold = rig.hold(conflicting_row_hold(name, "upload"))
        kill_when_blocked(rig, trial, task, payload, hold, "insert", ", staged")
    elif trial.mode == "committed":  # installed and recorded, the success not yet recorded
        kill_at_outcome(rig, trial, task, payload)
    else:  # renamed: the folder is in place, its row not yet committed (a window of ~1 ms)
        target = install_dir(get_settings().resources_dir, "embeddings", name, "en", "upload")
        trial.job_id = nlphub.enqueue(task, payload)
        wait_for(target.exists, 60, interval=0, what="the install folder to appear")
        rig.worker.stop()  # SIGSTOP at once; a statement it had sent still runs: wait for it
        wait_for(
            lambda: (
                not rig.db.value(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'active' AND pid <> pg_backend_pid()"
                )
            ),
            30,
            interval=0.005,
            what="the stopped process's statements to end",
        )
        row = rig.db.value("SELECT state FROM resource WHERE name = %s", (name,))
        trial.stopped_at = f"folder renamed, row {'committed' if row else 'not committed'}"
        rig.kill()
    job = rig.completed_once(trial)
    row = rig.check_installed(name, "upload")
    assert row.source == ResourceSource.UPLOAD and row.job_id == trial.job_id
    assert job.result["resource_id"] == str(row.id)
    assert rig.actions(target=row.label).count("resource.uploaded") == 1
    assert "upload.rejected" not in rig.actions(trial.job_id)
    assert leftovers(rig.home) == [], trial


@pytest.mark.timeout(900)
def test_upload_validation_killed_mid_run_installs_once(
    env, rig_factory, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(incoming))  # before the rig's worker starts
    get_settings.cache_clear()
    rig = rig_factory("default")
    for i in range(TRIALS):
        _upload_trial(rig, incoming, i)
    kinds = get_settings().resources_dir / ResourceKind.EMBEDDINGS.value
    expected = [f"kill_up_{i:02d}_en_upload" for i in range(TRIALS)]
    assert sorted(p.name for p in kinds.iterdir()) == expected  # no orphan folders
    rig.check_end()


# -- embeddings ----------------------------------------------------------------------------------

EMB_MODES = ("vectors", "gate-mid", "gate-stuck", "finished", "early")


def _records(n: int) -> list[dict[str, Any]]:
    words = (
        "team won football match goal final minute striker league fans club recipe tomato "
        "soup basil bake bread oven pasta garlic olive chef curry laptop processor software "
        "update phone battery bug database server"
    ).split()
    rng = random.Random(7)
    return [{"id": f"r{i:05d}", "text": " ".join(rng.choices(words, k=12))} for i in range(n)]


def _embedding_of(db: Db, job_id: uuid.UUID) -> Any:
    return db.value("SELECT id FROM embedding WHERE job_id = %s", (job_id,))


def _vectors(db: Db, emb_id: Any) -> int:
    if emb_id is None:
        return 0
    return int(db.value("SELECT count(*) FROM embedding_vector WHERE embedding_id = %s", (emb_id,)))


def _embedding_trial(rig: Rig, i: int) -> None:
    rng, trial = rig.trial(EMB_MODES, i)
    db = rig.db
    task = "nlphub.compute_embeddings"
    payload = {
        "dataset": "kill",
        "attribute": "text",
        "platform": "bow",
        "model": "tfidf" if i % 2 else "count",
        "dims": 16,
    }
    threshold = rng.randint(1, RECORDS - 1)
    if trial.mode == "vectors":
        job_id = trial.job_id = nlphub.enqueue(task, payload)
        wait_for(
            lambda: _vectors(db, _embedding_of(db, job_id)) >= threshold,
            120,
            interval=0.005,
            what="vectors to be stored",
        )
        rig.kill()
        trial.stopped_at = f"{_vectors(db, _embedding_of(db, job_id))} vectors"
    elif trial.mode in ("gate-mid", "gate-stuck", "finished"):
        gate = rig.gate()
        job_id = trial.job_id = enqueue_held(
            lambda s: nlphub.enqueue(task, payload, session=s), gate.hold
        )

        def stop_at(_q: str) -> bool:
            emb = _embedding_of(db, job_id)
            if trial.mode == "finished":
                state = db.value("SELECT state FROM embedding WHERE id = %s", (emb,))
                return bool(state == "finished")
            return _vectors(db, emb) >= threshold

        stop = gate.until(job_id, stop_at, timeout=120)
        assert stop is not None
        trial.stopped_at = (
            f"{describe_statement(stop[1])} at {_vectors(db, _embedding_of(db, job_id))} vectors"
        )
        rig.kill(stop[0], stuck=trial.mode == "gate-stuck", release=gate.release)
    else:  # early: as soon as the embedding exists, plus a random delay
        delay = rng.uniform(0.0, 0.05)
        job_id = trial.job_id = nlphub.enqueue(task, payload)
        wait_for(lambda: _embedding_of(db, job_id), 60, interval=0.002, what="the embedding")
        time.sleep(delay)  # the trial's kill moment, not a wait
        trial.stopped_at = f"{delay * 1000:.0f} ms after creation"
        rig.kill()
    rig.completed_once(trial)
    rows = db.conn.execute(
        "SELECT id, state FROM embedding WHERE job_id = %s", (job_id,)
    ).fetchall()
    assert len(rows) == 1 and rows[0][1] == "finished", rows
    emb_id = rows[0][0]
    assert _vectors(db, emb_id) == RECORDS
    per_record = db.value(
        "SELECT count(DISTINCT record_id) FROM embedding_vector WHERE embedding_id = %s",
        (emb_id,),
    )
    assert per_record == RECORDS
    assert rig.actions(target=str(emb_id)).count("embedding.finished") == 1
    created = db.value(
        "SELECT count(*) FROM audit_event WHERE action = 'embedding.created' "
        "AND details ->> 'embedding' = %s",
        (str(emb_id),),
    )
    assert created == 1


@pytest.mark.timeout(900)
def test_embeddings_killed_mid_run_store_each_vector_once(env, rig_factory, tmp_path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(RECORDS)))
    with session_scope() as session:
        import_records(session, path, dataset="kill", actor="test")
    rig = rig_factory("embeddings")
    for i in range(TRIALS):
        _embedding_trial(rig, i)
    assert rig.db.value("SELECT count(*) FROM embedding") == TRIALS
    rig.check_end()


# -- update apply --------------------------------------------------------------------------------

UPDATE_MODES = ("delay", "identity", "identity-stuck", "confirmed", "download")


def _old_versions() -> None:
    """Installed 5.4.0 rows of every kill_upd_NN (the mirror has 5.5.0), and their notices."""
    settings = get_settings()
    with session_scope() as session:
        for i in range(TRIALS):
            folder = install_dir(settings.resources_dir, "embeddings", _upd(i), "en", "5.4.0")
            write_resource_dir(res(_upd(i), "WordEmbeddingsModel"), folder)
            checksum, size = tree_checksum(folder)
            session.add(
                Resource(
                    name=_upd(i),
                    version="5.4.0",
                    kind=ResourceKind.EMBEDDINGS,
                    source=ResourceSource.HUB,
                    lib_version="5.4.0",
                    spark_version="3.4",
                    state=ResourceState.INSTALLED,
                    install_path=str(folder),
                    checksum=checksum,
                    bytes_on_disk=size,
                )
            )
    out = check_updates(session_scope, settings, actor="test", reason="test")
    assert len(out["new"]) == TRIALS, out


def _notice(name: str) -> UpdateNotice:
    with Session(get_engine()) as session:
        row = session.exec(select(UpdateNotice).where(UpdateNotice.name == name)).one()
        session.expunge(row)
        return row


def _update_trial(rig: Rig, hub: MirrorServer, i: int) -> None:
    rng, trial = rig.trial(UPDATE_MODES, i)
    home = rig.home
    name = _upd(i)
    task = "nlphub.apply_update"
    payload = {"notice_id": str(_notice(name).id), "confirmed_by": "dora"}
    hub.faults.delay_per_chunk = CHUNK_DELAY if trial.mode == "download" else 0.0
    if trial.mode == "delay":
        kill_after_start(rig, trial, task, payload, rng.uniform(0.0, 0.03))
    elif trial.mode in ("identity", "identity-stuck"):
        hold = rig.hold(identity_hold(name, "5.5.0"))
        kill_when_blocked(rig, trial, task, payload, hold, "lock")
    elif trial.mode == "confirmed":
        kill_at_outcome(rig, trial, task, payload)
    else:  # download: the update's download, killed mid-transfer
        trial.job_id = nlphub.enqueue(task, payload)
        threshold = int(_archive_size(hub, name, "5.5.0") * rng.uniform(0.1, 0.9))
        wait_for(
            lambda: _partial_bytes(home) >= threshold,
            60,
            interval=0.002,
            what="the update's transfer to pass the threshold",
        )
        trial.stopped_at = "the update's download"
        rig.kill()
    job = rig.completed_once(trial)
    notice = _notice(name)
    assert notice.job_id is not None and job.result["job_id"] == str(notice.job_id)
    download = rig.finish(notice.job_id)
    assert download.state == JobState.SUCCEEDED, download.error
    new = rig.check_installed(name, "5.5.0")
    old = rig.check_installed(name, "5.4.0")  # stayed in use
    assert new.job_id == notice.job_id
    notice = _notice(name)
    assert notice.state == "applied" and notice.decided_by == "dora"
    target = f"{name}/en"
    assert rig.actions(target=target).count("update.confirmed") == 1
    assert rig.actions(target=target).count("update.applied") == 1
    assert rig.actions(target=new.label).count("resource.download_requested") == 1
    assert rig.actions(target=new.label).count("resource.installed") == 1
    assert old.state == ResourceState.INSTALLED
    assert rig.downloads(new.id) == 1
    assert leftovers(home) == [], trial


@pytest.mark.timeout(900)
def test_update_apply_killed_mid_run_switches_once(hub, rig_factory) -> None:
    _old_versions()
    rig = rig_factory("default,downloads")
    for i in range(TRIALS):
        _update_trial(rig, hub, i)
    hub.faults.delay_per_chunk = 0.0
    rig.check_end()

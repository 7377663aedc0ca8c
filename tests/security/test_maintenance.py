"""Maintenance tasks a tenant may enqueue (`nlphub.cleanup`, `nlphub.reconcile_outbox`): their
knobs are bounded, and a cleanup never removes the files of work in progress. The full scans
(`nlphub.audit_verify`, `nlphub.inventory`) run one at a time: a request while one runs
succeeds at once, coalesced with the running job.

- An upload's staging is named by its job (`tmp/upload-<job>`, `.upload-<job>.*.partial`):
  while the job is not finished, cleanup keeps it whatever its age, so a running upload is
  never cut (nor installed with files missing, when its folder is renamed into place).
- `older_than` has a floor (MIN_CLEANUP_AGE), checked when the job is enqueued, when a
  message sent around the API is delivered, and by the cleanup itself.
- What a cleanup reports names paths relative to NLPHUB_HOME, never the server's folders.

Through a real worker; each test fails with its fix removed (`nlphub.resources`,
`schemas.payloads`).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from nlphub import install
from nlphub.errors import Refused
from nlphub.resources import cleanup_leftovers, tree_checksum
from nlphub.uploads import archive
from schemas.db import get_engine, session_scope
from schemas.models import Resource
from schemas.payloads import MIN_CLEANUP_AGE, PayloadError
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.conftest import wait_for
from tests.unit.nlphub.uploads.conftest import SparkBuilder, zip_dir

pytestmark = pytest.mark.integration

LIBS = "spark-nlp=5.5.0,spark=3.5.0"
#: Two days: older than any cleanup's `older_than` in these tests.
OLD = 2 * 86400


@pytest.fixture
def incoming(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(folder))
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
    get_settings.cache_clear()
    return folder


class Pause:
    """Stops the upload at one step (on the worker's thread) until released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def here(self) -> None:
        self.reached.set()
        assert self.release.wait(60), "the test never released the upload"


def _pause_at(step: str, monkeypatch: pytest.MonkeyPatch) -> Pause:
    """`extraction`: every file written into the hidden work folder, not yet renamed to the
    staging folder; `install`: unpacked and validated, just before the rename into place."""
    pause = Pause()
    if step == "extraction":
        extract = archive._extract_into

        def paused_extract(*args: Any, **kwargs: Any) -> Any:
            digests = extract(*args, **kwargs)
            pause.here()
            return digests

        monkeypatch.setattr(archive, "_extract_into", paused_extract)
    else:
        put = install.put_in_place

        def paused_put(root: Path, target: Path, trash: Path) -> None:
            pause.here()
            put(root, target, trash)

        monkeypatch.setattr(install, "put_in_place", paused_put)
    return pause


def _age(folder: Path, seconds: float) -> None:
    """Make everything below `folder` (itself excluded) look `seconds` old."""
    old = time.time() - seconds
    for path in sorted(folder.rglob("*"), reverse=True):
        os.utime(path, (old, old), follow_symlinks=False)


@pytest.mark.parametrize("step", ["extraction", "install"])
def test_an_upload_in_progress_survives_a_cleanup(
    incoming, worker, wait_job, monkeypatch, step: str
) -> None:
    """The upload's staging, aged past `older_than`, is kept while its job runs (before the
    fix it was removed: the upload failed naming a server path, or lost files mid-rename);
    an old leftover of no running job beside it is removed, and reported relative to home."""
    home = get_settings().home
    model = SparkBuilder(incoming).ner_model("paused_ner", storage_ref=None)
    expected = tree_checksum(model)
    upload_zip = zip_dir(model, incoming / "paused_ner.zip")
    pause = _pause_at(step, monkeypatch)
    upload = nlphub.enqueue(
        "nlphub.validate_upload",
        {"path": str(upload_zip), "kind": "model", "name": "paused_ner", "labels": ["PER"]},
    )
    assert pause.reached.wait(60), "the upload never reached the pause"
    tmp = home / "tmp"
    staging = sorted(p.name for p in tmp.iterdir())
    assert staging and all(str(upload) in name for name in staging), staging
    stale = tmp / f"upload-{uuid.uuid4()}"  # no such job: a leftover, removed
    (stale / "x").mkdir(parents=True)
    _age(tmp, OLD)
    try:
        cleanup = wait_job(nlphub.enqueue("nlphub.cleanup", {"older_than": MIN_CLEANUP_AGE}))
        assert cleanup.state == JobState.SUCCEEDED, cleanup.error
        assert cleanup.result["paths"] == [f"tmp/{stale.name}"]  # relative to home
        assert str(home) not in str(cleanup.result)
        assert sorted(p.name for p in tmp.iterdir()) == staging  # the upload's, untouched
    finally:
        pause.release.set()
    job = wait_job(upload)
    assert job.state == JobState.SUCCEEDED, job.error
    with Session(get_engine()) as session:
        res = session.exec(select(Resource).where(Resource.name == "paused_ner")).one()
    assert res.state == ResourceState.INSTALLED
    installed = Path(res.install_path or "")
    assert tree_checksum(installed) == expected  # every file there
    assert res.checksum == expected[0]


def test_a_cleanup_of_young_leftovers_is_refused(env, worker, wait_job, job_state) -> None:
    """`older_than` below MIN_CLEANUP_AGE (0 would remove work in progress): refused by the
    payload when enqueued, by the worker when sent around the API, and by the domain."""
    with pytest.raises(PayloadError) as refused:
        nlphub.enqueue("nlphub.cleanup", {"older_than": 0})
    assert "older_than: Input should be greater than or equal to 3600" in str(refused.value)
    from workers.app import app

    sent = uuid.uuid4()
    app.send_task("nlphub.cleanup", kwargs={"older_than": 0}, task_id=str(sent))

    def handled() -> Any:
        job = job_state(sent)
        return job if job is not None and job.state == JobState.FAILED else None

    job = wait_for(handled, 30, what="the delivery to be refused")
    assert "older_than" in (job.error or "") and "3600" in (job.error or "")
    home = get_settings().home
    kept = home / "tmp" / "upload-young"
    kept.mkdir(parents=True)
    _age(home / "tmp", OLD)
    with session_scope() as session, pytest.raises(Refused) as domain:
        cleanup_leftovers(session, home, older_than=0, actor="t")
    assert str(domain.value) == (
        "cleanup removes only leftovers at least 3600 seconds old (older_than 0 asked): "
        "younger ones may belong to work in progress"
    )
    assert kept.exists()


@pytest.mark.parametrize("task", ["nlphub.audit_verify", "nlphub.inventory"])
def test_a_full_scan_requested_while_one_runs_is_coalesced_with_it(
    worker, wait_job, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    import tasks.maintenance
    from nlphub import resources

    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def scan(*_: Any, **__: Any) -> Any:
        calls.append(task)
        entered.set()
        assert release.wait(60)
        chain = SimpleNamespace(checked=0)
        return SimpleNamespace(ok=True, chain=chain, problems=[], as_dict=lambda: {"checked": 0})

    monkeypatch.setattr(tasks.maintenance, "verify_log", scan)
    monkeypatch.setattr(resources, "inventory", scan)
    try:
        first = nlphub.enqueue(task, {})
        assert entered.wait(60)
        second = wait_job(nlphub.enqueue(task, {}), timeout=30)
    finally:
        release.set()
    assert second.state == JobState.SUCCEEDED, second.error
    assert second.result == {"coalesced": True, "running_job": str(first)}
    ran = wait_job(first)
    assert ran.state == JobState.SUCCEEDED, ran.error
    assert "coalesced" not in ran.result
    assert calls == [task]
    # the lock went with the run: the next request does the work
    release.set()
    assert "coalesced" not in wait_job(nlphub.enqueue(task, {})).result
    assert calls == [task, task]

"""`nlphub metrics serve` (a real process) reports what a download, an upload, a failed job, a
pending update and an audit verification did, read from the test's Postgres."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlmodel import Session, select

import nlphub
from nlphub import audit, counters
from nlphub.hub.mirror import build_mirror
from nlphub.jobstate import insert_job, transition
from schemas.db import get_engine, session_scope
from schemas.models import Dataset, Embedding, Resource
from schemas.states import JobState
from tests.conftest import wait_for
from tests.integration.test_embeddings import _compute, _load, _records
from tests.integration.test_hub import res
from tests.integration.test_jobs import _migrate
from tests.integration.test_uploads import uploads  # noqa: F401  (the fixture)
from tests.procs import NLPHUB, tail
from tests.unit.nlphub.uploads.conftest import SparkBuilder, zip_dir
from workers.embedded import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def _scrape(url: str) -> Samples | None:
    """name → {sorted labels → value}; None while the endpoint does not answer."""
    try:
        response = httpx.get(url, timeout=10)
    except httpx.TransportError:
        return None
    response.raise_for_status()
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _finished(samples: Samples, task: str, state: str) -> float:
    return samples["nlphub_jobs_finished_total"][(("state", state), ("task", task))]


def _resource(name: str) -> Resource:
    with Session(get_engine()) as session:
        row = session.exec(select(Resource).where(Resource.name == name)).one()
        session.expunge(row)
        return row


def _succeeded(job: Any) -> None:
    assert job.state == JobState.SUCCEEDED, job.error


@pytest.fixture
def metrics_url(env: dict[str, Any], spawn: Any, tmp_path: Path) -> str:
    """`nlphub metrics serve` on a free port, answering; its /metrics URL."""
    port = free_port()
    log = tmp_path / "metrics.log"
    spawn([NLPHUB, "metrics", "serve", "--port", str(port)], log=log)
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: _scrape(url), 60, what=f"the metrics endpoint\n{tail(log)}")
    return url


def test_metrics_after_a_download_an_upload_a_failed_job_and_a_pending_update(
    uploads: Path,  # noqa: F811
    mirror: Any,
    worker: Any,
    wait_job: Any,
    metrics_url: str,
) -> None:
    url = metrics_url
    before = _scrape(url)
    assert before is not None
    assert before["nlphub_database_up"][()] == 1
    assert _finished(before, "nlphub.download", "succeeded") == 0
    assert before["nlphub_download_bytes_total"][()] == 0
    assert before["nlphub_update_notices_pending"][()] == 0

    # a download, an upload, a failed job, a pending update, an audit verification
    _succeeded(wait_job(nlphub.enqueue("nlphub.download", {"name": "glove_100d"})))
    upload = zip_dir(SparkBuilder(uploads / "src").embeddings("myEmb"), uploads / "my.zip")
    _succeeded(
        wait_job(
            nlphub.enqueue(
                "nlphub.validate_upload",
                {"path": str(upload), "kind": "embeddings", "name": "my_emb"},
            )
        )
    )
    failed = wait_job(nlphub.enqueue("nlphub.download", {"name": "bad_md5"}))
    assert failed.state == JobState.FAILED
    build_mirror(Path(mirror.folder), [res("glove_100d", "WordEmbeddingsModel", "5.5.0")])
    checked = wait_job(nlphub.enqueue("nlphub.check_updates", {"reason": "manual"}))
    _succeeded(checked)
    assert [n["new"] for n in checked.result["new"]] == ["5.5.0"]
    verified = wait_job(nlphub.enqueue("nlphub.audit_verify", {}, requested_by="beat"))
    _succeeded(verified)
    assert verified.result["ok"] is True

    after = _scrape(url)
    assert after is not None
    assert after["nlphub_database_up"][()] == 1
    for task, state, count in [
        ("nlphub.download", "succeeded", 1),
        ("nlphub.download", "failed", 1),
        ("nlphub.validate_upload", "succeeded", 1),
        ("nlphub.check_updates", "succeeded", 1),
        ("nlphub.audit_verify", "succeeded", 1),
        ("nlphub.validate_upload", "failed", 0),
    ]:
        assert _finished(after, task, state) == count, (task, state)
    assert sum(after["nlphub_jobs"].values()) == 0  # nothing waiting or running
    assert "nlphub_job_oldest_age_seconds" not in after
    assert after["nlphub_outbox_unpublished_jobs"][()] == 0

    glove, mine, bad = _resource("glove_100d"), _resource("my_emb"), _resource("bad_md5")
    assert after["nlphub_download_bytes_total"][()] == glove.size_bytes  # not bad_md5's
    installed = (("edition", "Open Source"), ("kind", "embeddings"), ("state", "installed"))
    assert after["nlphub_resources"][installed] == 2
    assert after["nlphub_resource_bytes"][installed] == (glove.bytes_on_disk or 0) + (
        mine.bytes_on_disk or 0
    )
    failed_key = (("edition", bad.edition), ("kind", "embeddings"), ("state", "failed"))
    assert after["nlphub_resources"][failed_key] == 1
    assert after["nlphub_download_pending_largest_bytes"][()] == 0
    assert after["nlphub_resources_volume_free_bytes"][()] > 0

    assert after["nlphub_update_notices_pending"][()] == 1
    assert after["nlphub_audit_verification_ok"][()] == 1
    stamp = after["nlphub_audit_verification_timestamp_seconds"][()]
    assert verified.finished_at.timestamp() - 60 < stamp <= verified.finished_at.timestamp()
    assert after["nlphub_redeploys_failed"][()] == 0


def test_records_embedded_by_platform(
    env: dict[str, Any], worker: Any, wait_job: Any, tmp_path: Path, metrics_url: str
) -> None:
    _load(tmp_path, _records(2))
    computed = _compute(wait_job, platform="bow", model="count")
    _succeeded(computed)
    _load(tmp_path, [{"id": "new-1", "text": "the laptop software crashed"}])
    embedded = wait_job(
        nlphub.enqueue(
            "nlphub.embed_records",
            {"embedding_id": computed.result["embedding"], "records": ["new-1"]},
        )
    )
    _succeeded(embedded)
    after = _scrape(metrics_url)
    assert after is not None
    records = after["nlphub_embedding_records_total"]
    assert records[(("platform", "bow"),)] == computed.result["records"] + 1
    assert records[(("platform", "huggingface"),)] == 0


def _counters() -> dict[tuple[str, str], int]:
    with Session(get_engine()) as session:
        rows = session.execute(text("SELECT name, label, value FROM counter")).all()
    return {(r.name, r.label): int(r.value) for r in rows}


def test_migration_0008_fills_the_totals_from_what_is_recorded(env: dict[str, Any]) -> None:
    """The totals kept as work is recorded equal those 0008 computes from the job rows and
    audit events already there (its downgrade drops them)."""
    with session_scope() as session:
        for outcome in (JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.FAILED):
            job_id = uuid.uuid4()
            insert_job(
                session, job_id, task="nlphub.ping", queue="default", payload={}, requested_by="t"
            )
            for state in (JobState.STARTED, outcome):
                transition(session, job_id, state, actor="t", action="t", task="nlphub.ping")
        dataset = Dataset(name="news")
        session.add(dataset)
        session.flush()
        emb = Embedding(dataset_id=dataset.id, attribute="text", platform="bow", model="count")
        session.add(emb)
        session.flush()
        audit.record(session, actor="t", action="resource.downloaded", details={"bytes": 1234})
        counters.add(session, counters.DOWNLOAD_BYTES, 1234)
        audit.record(
            session,
            actor="t",
            action="embedding.finished",
            target=str(emb.id),
            details={"records": 7},
        )
        counters.add(session, counters.EMBEDDING_RECORDS, 7, "bow")
    kept = _counters()
    assert kept == {
        ("job.succeeded", "nlphub.ping"): 2,
        ("job.failed", "nlphub.ping"): 1,
        ("download.bytes", ""): 1234,
        ("embedding.records", "bow"): 7,
    }
    _migrate(env, "0007")
    _migrate(env, "head")
    assert _counters() == kept


def test_a_taken_port_is_waited_for_not_fatal(
    env: dict[str, Any], spawn: Any, tmp_path: Path
) -> None:
    """Another `nlphub up` holding the port: the metrics process says so and keeps trying,
    rather than exiting (which would make `nlphub up` stop its whole stack)."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    log = tmp_path / "metrics.log"
    proc = spawn([NLPHUB, "metrics", "serve", "--port", str(port)], log=log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: "is in use" in log.read_text(), 30, what=f"the message\n{tail(log)}")
        assert proc.poll() is None
    finally:
        holder.close()
    samples = wait_for(lambda: _scrape(url), 30, what=f"the endpoint\n{tail(log)}")
    assert samples["nlphub_database_up"][()] == 1

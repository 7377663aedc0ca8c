"""The collector turns a snapshot of the database into Prometheus samples (no database here:
the snapshot is made by hand; `tests/integration/test_metrics.py` reads a real one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from nlphub.metrics.collector import METRICS, NlphubCollector, registry
from nlphub.metrics.queries import ActiveJobs, Resources, Snapshot
from schemas.payloads import TASKS
from schemas.settings import Settings


def _samples(settings: Settings, snapshot: Snapshot | None) -> dict[str, dict[Any, float]]:
    """name → {sorted label items → value}, scraped through the text format; the database
    read gives `snapshot` (None: the database is unreachable)."""

    def connect() -> Any:
        if snapshot is None:
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return _Conn()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("nlphub.metrics.collector.read_snapshot", lambda conn: snapshot)
        text = generate_latest(registry(settings, connect)).decode()
    out: dict[str, dict[Any, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


class _Conn:
    def __enter__(self) -> _Conn:
        return self

    def __exit__(self, *_: Any) -> None:
        pass


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, audit_verify_interval=3600)


def _snapshot(**kw: Any) -> Snapshot:
    base: dict[str, Any] = {
        "active": [
            ActiveJobs("nlphub.download", "queued", 3, 120.0, None, 2, 90.0),
            ActiveJobs("nlphub.download", "started", 1, None, 4000.0, 0, None),
            ActiveJobs("nlphub.ping", "queued", 1, 5.0, None, 1, 5.0),
        ],
        "counters": {
            ("job.succeeded", "nlphub.download"): 7,
            ("job.failed", "nlphub.download"): 2,
            ("job.succeeded", "custom.task"): 1,
            ("download.bytes", ""): 123456,
            ("embedding.records", "bow"): 500,
        },
        "resources": [
            Resources("installed", "model", "Open Source", 2, 3000, 0),
            Resources("queued", "embeddings", "Open Source", 1, 0, 9000),
            Resources("downloading", "model", "Healthcare NLP", 1, 0, 5000),
        ],
        "update_notices": 1,
        "redeploys": 3,
        "redeploys_failed": 1,
        "log_start": 1000.0,
        "verified_at": None,
        "verified_ok": None,
    }
    return Snapshot(**{**base, **kw})


def test_every_sample_is_a_declared_metric(settings: Settings) -> None:
    samples = _samples(settings, _snapshot(verified_at=2000.0, verified_ok=True))
    assert set(samples) == set(METRICS)


def test_jobs_by_task_and_state_with_zeros_for_every_task(settings: Settings) -> None:
    samples = _samples(settings, _snapshot())
    jobs = samples["nlphub_jobs"]
    assert jobs[(("state", "queued"), ("task", "nlphub.download"))] == 3
    assert jobs[(("state", "started"), ("task", "nlphub.download"))] == 1
    assert jobs[(("state", "retrying"), ("task", "nlphub.similar"))] == 0
    assert len(jobs) == len(TASKS) * 4
    finished = samples["nlphub_jobs_finished_total"]
    assert finished[(("state", "succeeded"), ("task", "nlphub.download"))] == 7
    assert finished[(("state", "failed"), ("task", "nlphub.download"))] == 2
    assert finished[(("state", "failed"), ("task", "nlphub.ping"))] == 0  # zero, not absent
    assert finished[(("state", "succeeded"), ("task", "custom.task"))] == 1  # unknown task kept
    oldest = samples["nlphub_job_oldest_age_seconds"]
    assert oldest == {
        (("state", "queued"), ("task", "nlphub.download")): 120.0,
        (("state", "started"), ("task", "nlphub.download")): 4000.0,
        (("state", "queued"), ("task", "nlphub.ping")): 5.0,
    }
    assert samples["nlphub_outbox_unpublished_jobs"][()] == 3
    assert samples["nlphub_outbox_oldest_unpublished_age_seconds"][()] == 90.0


def test_resources_disk_and_the_largest_pending_download(settings: Settings) -> None:
    samples = _samples(settings, _snapshot())
    key = (("edition", "Open Source"), ("kind", "model"), ("state", "installed"))
    assert samples["nlphub_resources"][key] == 2
    assert samples["nlphub_resource_bytes"][key] == 3000
    assert samples["nlphub_download_pending_largest_bytes"][()] == 9000
    assert samples["nlphub_resources_volume_free_bytes"][()] > 0
    size = samples["nlphub_resources_volume_size_bytes"][()]
    assert size >= samples["nlphub_resources_volume_free_bytes"][()]


def test_work_totals(settings: Settings) -> None:
    samples = _samples(settings, _snapshot())
    assert samples["nlphub_update_notices_pending"][()] == 1
    assert samples["nlphub_redeploys_pending"][()] == 3
    assert samples["nlphub_redeploys_failed"][()] == 1
    assert samples["nlphub_download_bytes_total"][()] == 123456
    records = samples["nlphub_embedding_records_total"]
    assert records[(("platform", "bow"),)] == 500
    assert records[(("platform", "openai"),)] == 0


def test_audit_verification_before_and_after_the_first(settings: Settings) -> None:
    never = _samples(settings, _snapshot())
    # never verified: unverified since the log's first event, no result yet
    assert never["nlphub_audit_verification_timestamp_seconds"][()] == 1000.0
    assert "nlphub_audit_verification_ok" not in never
    assert never["nlphub_audit_verification_interval_seconds"][()] == 3600
    failed = _samples(settings, _snapshot(verified_at=2000.0, verified_ok=False))
    assert failed["nlphub_audit_verification_timestamp_seconds"][()] == 2000.0
    assert failed["nlphub_audit_verification_ok"][()] == 0
    empty = _samples(settings, _snapshot(log_start=None))
    assert "nlphub_audit_verification_timestamp_seconds" not in empty


def test_without_the_database_the_scrape_still_answers(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    samples = _samples(settings, None)
    assert samples["nlphub_database_up"][()] == 0
    assert samples["nlphub_resources_volume_free_bytes"][()] > 0
    assert samples["nlphub_task_time_limit_seconds"][()] == settings.effective_time_limit
    assert "nlphub_jobs" not in samples
    assert "the database could not be read" in caplog.text


def test_the_collector_registers_without_a_trial_scrape(settings: Settings) -> None:
    calls: list[int] = []

    def connect() -> Iterator[Any]:
        calls.append(1)
        raise AssertionError("no scrape at registration")

    registry(settings, connect)  # type: ignore[arg-type]
    assert calls == []
    assert NlphubCollector(settings, connect).describe() == []  # type: ignore[arg-type]

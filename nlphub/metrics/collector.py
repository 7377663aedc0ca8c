"""nlphub's Prometheus metrics: a prometheus-client collector that reads Postgres at each
scrape (`nlphub.metrics.queries`) and the resources volume's free space.

Every metric name is in `METRICS` (the alert rules and the dashboard may name only these:
tests check it). A scrape that cannot reach the database still answers, with
`nlphub_database_up 0` and the disk figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from nlphub.counters import DOWNLOAD_BYTES, EMBEDDING_RECORDS
from nlphub.hub.space import volume_space
from nlphub.metrics.queries import Snapshot, read_snapshot
from schemas.embedding_platforms import PLATFORMS
from schemas.payloads import TASKS
from schemas.settings import Settings
from schemas.states import JOB_ACTIVE, JOB_TERMINAL

log = logging.getLogger(__name__)

Family = GaugeMetricFamily | CounterMetricFamily

#: Every metric this collector exposes, as scraped (counters with `_total`) → its help.
METRICS: dict[str, str] = {
    "nlphub_database_up": "1 when this scrape read the database, else 0",
    "nlphub_metrics_query_seconds": "Seconds this scrape's database reads took",
    "nlphub_jobs": "Jobs now waiting or running, by task and state",
    "nlphub_jobs_finished_total": "Jobs finished, by task and final state",
    "nlphub_job_oldest_age_seconds": (
        "Age of the oldest job by task: since it was created (state queued) or first started "
        "(state started)"
    ),
    "nlphub_outbox_unpublished_jobs": "Queued jobs not yet published to the broker (outbox)",
    "nlphub_outbox_oldest_unpublished_age_seconds": (
        "Seconds since the oldest unpublished queued job was created (0 when none)"
    ),
    "nlphub_resources": "Resources by state, kind and edition",
    "nlphub_resource_bytes": "Bytes on disk of the resources, by state, kind and edition",
    "nlphub_download_pending_largest_bytes": (
        "Archive size of the largest download still to come (queued or downloading; 0 when none)"
    ),
    "nlphub_resources_volume_free_bytes": "Free bytes on the resources volume",
    "nlphub_resources_volume_size_bytes": "Size of the resources volume in bytes",
    "nlphub_update_notices_pending": "Update notices waiting for a decision",
    "nlphub_redeploys_pending": "Pre-annotation server redeploys not yet done",
    "nlphub_redeploys_failed": "Pending redeploys whose last attempt failed",
    "nlphub_embedding_records_total": "Records embedded, by platform",
    "nlphub_download_bytes_total": "Bytes of hub archives downloaded",
    "nlphub_audit_verification_timestamp_seconds": (
        "When the audit log was last verified (Unix time); before the first verification, "
        "the time of its first event"
    ),
    "nlphub_audit_verification_ok": "1 when the last audit verification passed, 0 when it failed",
    "nlphub_audit_verification_interval_seconds": "Seconds between beat's audit verifications",
    "nlphub_task_time_limit_seconds": "Hard time limit of a task (a job started before is stuck)",
}


def _gauge(name: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, METRICS[name], labels=labels)


def _counter(name: str, labels: list[str] | None = None) -> CounterMetricFamily:
    base = name.removesuffix("_total")
    return CounterMetricFamily(base, METRICS[name], labels=labels)


def job_families(snap: Snapshot) -> Iterator[Family]:
    """Jobs by task and state (every task and state, zeros included), the oldest, the outbox."""
    jobs = _gauge("nlphub_jobs", ["task", "state"])
    counts = {(a.task, a.state): a.jobs for a in snap.active}
    tasks = sorted(set(TASKS) | {task for task, _ in counts})
    for task in tasks:
        for state in JOB_ACTIVE:
            jobs.add_metric([task, state.value], counts.get((task, state.value), 0))
    yield jobs
    finished = _counter("nlphub_jobs_finished_total", ["task", "state"])
    counted = {
        (label, name.removeprefix("job.")): value
        for (name, label), value in snap.counters.items()
        if name.startswith("job.")
    }
    for task in sorted(set(tasks) | {task for task, _ in counted}):
        for final in sorted(s.value for s in JOB_TERMINAL):
            finished.add_metric([task, final], counted.get((task, final), 0))
    yield finished
    oldest = _gauge("nlphub_job_oldest_age_seconds", ["task", "state"])
    for a in snap.active:
        if a.oldest_queued is not None:
            oldest.add_metric([a.task, "queued"], max(0.0, a.oldest_queued))
        if a.oldest_started is not None:
            oldest.add_metric([a.task, "started"], max(0.0, a.oldest_started))
    yield oldest
    unpublished = _gauge("nlphub_outbox_unpublished_jobs")
    unpublished.add_metric([], sum(a.unpublished for a in snap.active))
    yield unpublished
    ages = [a.oldest_unpublished for a in snap.active if a.oldest_unpublished is not None]
    age = _gauge("nlphub_outbox_oldest_unpublished_age_seconds")
    age.add_metric([], max([0.0, *ages]))
    yield age


def resource_families(snap: Snapshot) -> Iterator[Family]:
    """Resources and their bytes by state, kind and edition; the largest pending download."""
    count = _gauge("nlphub_resources", ["state", "kind", "edition"])
    size = _gauge("nlphub_resource_bytes", ["state", "kind", "edition"])
    for r in snap.resources:
        count.add_metric([r.state, r.kind, r.edition], r.resources)
        size.add_metric([r.state, r.kind, r.edition], r.bytes)
    yield count
    yield size
    largest = _gauge("nlphub_download_pending_largest_bytes")
    largest.add_metric([], max([0, *(r.largest_pending for r in snap.resources)]))
    yield largest


def work_families(snap: Snapshot) -> Iterator[Family]:
    """Updates, redeploys, embedded records, downloaded bytes."""
    for name, value in (
        ("nlphub_update_notices_pending", snap.update_notices),
        ("nlphub_redeploys_pending", snap.redeploys),
        ("nlphub_redeploys_failed", snap.redeploys_failed),
    ):
        gauge = _gauge(name)
        gauge.add_metric([], value)
        yield gauge
    records = _counter("nlphub_embedding_records_total", ["platform"])
    embedded = {
        label: value for (name, label), value in snap.counters.items() if name == EMBEDDING_RECORDS
    }
    for platform in sorted(set(PLATFORMS) | set(embedded)):
        records.add_metric([platform], embedded.get(platform, 0))
    yield records
    downloaded = _counter("nlphub_download_bytes_total")
    downloaded.add_metric([], snap.counters.get((DOWNLOAD_BYTES, ""), 0))
    yield downloaded


def audit_families(snap: Snapshot) -> Iterator[Family]:
    """The last audit verification: when (or since when the log went unverified), and ok."""
    when = snap.verified_at if snap.verified_at is not None else snap.log_start
    if when is not None:
        stamp = _gauge("nlphub_audit_verification_timestamp_seconds")
        stamp.add_metric([], when)
        yield stamp
    if snap.verified_ok is not None:
        ok = _gauge("nlphub_audit_verification_ok")
        ok.add_metric([], 1 if snap.verified_ok else 0)
        yield ok


def setting_families(settings: Settings) -> Iterator[Family]:
    """Settings the alert rules compare with."""
    for name, value in (
        ("nlphub_audit_verification_interval_seconds", settings.audit_verify_interval),
        ("nlphub_task_time_limit_seconds", settings.effective_time_limit),
    ):
        gauge = _gauge(name)
        gauge.add_metric([], value)
        yield gauge


def disk_families(settings: Settings) -> Iterator[Family]:
    """The resources volume's size and free space."""
    _, total, free = volume_space(settings.resources_dir)
    for name, value in (
        ("nlphub_resources_volume_free_bytes", free),
        ("nlphub_resources_volume_size_bytes", total),
    ):
        gauge = _gauge(name)
        gauge.add_metric([], value)
        yield gauge


class NlphubCollector(Collector):
    """Reads everything at each scrape (no cache: each scrape is a handful of bounded reads)."""

    def __init__(self, settings: Settings, connect: Callable[[], Connection]) -> None:
        self.settings = settings
        self.connect = connect

    def describe(self) -> list[Family]:
        return []  # registered without a trial scrape: its names are METRICS

    def collect(self) -> Iterator[Family]:
        started = time.perf_counter()
        try:
            with self.connect() as conn:
                snap: Snapshot | None = read_snapshot(conn)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("metrics: the database could not be read: %s", exc)
            snap = None
        took = time.perf_counter() - started
        up = _gauge("nlphub_database_up")
        up.add_metric([], 0 if snap is None else 1)
        yield up
        seconds = _gauge("nlphub_metrics_query_seconds")
        seconds.add_metric([], took)
        yield seconds
        if snap is not None:
            yield from job_families(snap)
            yield from resource_families(snap)
            yield from work_families(snap)
            yield from audit_families(snap)
        yield from setting_families(self.settings)
        yield from disk_families(self.settings)


def registry(settings: Settings, connect: Callable[[], Connection]) -> CollectorRegistry:
    """A registry holding only nlphub's collector (no process metrics of the exporter)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NlphubCollector(settings, connect))
    return reg

"""The job event lines `nlphub up` prints (`workers.events.JobEvents`), from audit events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from workers.events import JobEvents

JOB = "6f1c2d3e-0000-4000-8000-000000000001"
T0 = datetime(2026, 12, 7, 18, 0, 0, tzinfo=UTC)


def event(
    action: str, seconds: float = 0.0, actor: str = "admin", job: str = JOB, **details: Any
) -> SimpleNamespace:
    return SimpleNamespace(
        seq=1,
        at=T0 + timedelta(seconds=seconds),
        actor=actor,
        action=action,
        target="nlphub.download",
        job_id=job,
        details=details,
    )


def lines(events: JobEvents, *evs: SimpleNamespace) -> list[str]:
    """The lines, without their local time."""
    return [line.split(" ", 1)[1] for e in evs if (line := events.render(e)) is not None]


def test_a_jobs_life_is_a_few_lines() -> None:
    events = JobEvents()
    assert lines(
        events,
        event("job.enqueued", payload={"name": "glove_100d", "language": "en"}),
        event("job.started", 1, worker="downloads@host"),
        event("job.progress", 2, fraction=0.5),  # a short job: no progress lines
        event("job.succeeded", 3, result={"state": "installed"}),
    ) == [
        "job 6f1c2d3e nlphub.download glove_100d: queued",
        "job 6f1c2d3e nlphub.download glove_100d: started on downloads@host",
        "job 6f1c2d3e nlphub.download glove_100d: succeeded in 2.0 s",
    ]


def test_a_long_job_shows_its_quarters() -> None:
    events = JobEvents()
    got = lines(
        events,
        event("job.enqueued", payload={"name": "bert"}),
        event("job.started", 0),
        *(
            event("job.progress", 20 + i, fraction=f, message="3 of 4 GB" if f == 0.75 else None)
            for i, f in enumerate((0.25, 0.5, 0.75, 1.0))
        ),
    )
    assert [line.split(": ", 1)[1] for line in got[2:]] == ["25 %", "50 %", "75 % (3 of 4 GB)"]


def test_a_failure_is_one_line_with_its_reason() -> None:
    events = JobEvents()
    got = lines(
        events,
        event("job.received", payload={"path": "missing.zip"}),
        event("job.started", 1),
        event("job.failed", 2, error="upload refused:\n  missing.zip: no such file\n"),
    )
    assert got[-1] == (
        "job 6f1c2d3e nlphub.download missing.zip: failed: upload refused: missing.zip: "
        "no such file"
    )
    assert len(got) == 2  # received is no line of its own; started is


def test_routine_jobs_are_silent_unless_they_retry_or_fail() -> None:
    events = JobEvents()
    ping = "6f1c2d3e-0000-4000-8000-0000000000aa"
    assert not lines(
        events,
        event("job.received", actor="beat", job=ping),
        event("job.started", 1, actor="beat", job=ping),
        event("job.succeeded", 2, actor="beat", job=ping),
    )
    got = lines(
        events,
        event("job.received", actor="beat", job=ping),
        event(
            "job.retry", 1, actor="beat", job=ping, error="ConnectionError: refused", retry_in_s=4.2
        ),
        event("job.failed", 2, actor="beat", job=ping, error="gave up after 9 attempts"),
    )
    assert [line.split(": ", 1)[1] for line in got] == [
        "retrying in 4.2 s: ConnectionError: refused",
        "failed: gave up after 9 attempts",
    ]


def test_jobs_queued_before_are_named_from_their_rows() -> None:
    events = JobEvents()
    started = event("job.started", 5)
    assert events.unknown([started]) == [JOB]
    events.learn(
        {
            JOB: {
                "task": "nlphub.download",
                "payload": {"resource_id": "x"},
                "requested_by": "nlphub up",
                "started_at": None,
                "resource": "tfhub_use",
            }
        }
    )
    assert events.unknown([started]) == []
    assert lines(events, started, event("job.succeeded", 6)) == [
        "job 6f1c2d3e nlphub.download tfhub_use: started",
        "job 6f1c2d3e nlphub.download tfhub_use: succeeded in 1.0 s",
    ]

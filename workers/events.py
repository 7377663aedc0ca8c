"""The job events `nlphub up` prints: one console line each, followed from the audit log.

Every job transition is an audit event written in the transition's own transaction
(`tasks.base`, `nlphub.jobstate`), and seq order is commit order (`nlphub.audit.events_after`),
so following the log by seq sees each transition once, whichever process made it, including
jobs enqueued by other programs or through Flower; nothing is lost while a worker restarts.
Routine jobs that beat sends show up only when they retry or fail.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workers.logs import one_line

log = logging.getLogger(__name__)

#: The transitions followed (a job's receipt is not a line: its start follows at once).
ACTIONS = (
    "job.enqueued",
    "job.received",
    "job.started",
    "job.progress",
    "job.retry",
    "job.succeeded",
    "job.failed",
)

#: Who asks for routine jobs (the beat schedule): their lines only when they retry or fail.
ROUTINE_ACTORS = frozenset({"beat"})

#: Seconds a job must have been running for its 25/50/75 % lines to be shown.
LONG_JOB_SECONDS = 10.0

#: Payload fields that say what a job is about, in order of preference.
SUBJECT_FIELDS = ("name", "dataset", "path", "embedding_id", "notice_id")


def subject(task: str, payload: Any, resource: str | None = None) -> str:
    """`nlphub.download glove_100d`: the task and what it is about (`resource`: the name of
    the resource its payload names by id)."""
    if isinstance(payload, dict):
        for key in SUBJECT_FIELDS:
            value = payload.get(key)
            if isinstance(value, str | int | float) and str(value):
                return f"{task} {one_line(str(value), 80)}"
    return f"{task} {resource}" if resource else task


@dataclass
class JobEvents:
    """Renders job events as console lines, remembering what each job is and when it started."""

    labels: dict[str, str] = field(default_factory=dict)
    started: dict[str, datetime] = field(default_factory=dict)
    routine: set[str] = field(default_factory=set)

    def learn(self, briefs: dict[str, dict[str, Any]]) -> None:
        """Name jobs from their rows (`nlphub.jobstate.job_briefs`)."""
        for job, brief in briefs.items():
            self.labels[job] = subject(brief["task"], brief["payload"], brief.get("resource"))
            if brief["requested_by"] in ROUTINE_ACTORS:
                self.routine.add(job)
            if brief["started_at"] is not None:
                self.started.setdefault(job, brief["started_at"])

    def unknown(self, events: list[Any]) -> list[Any]:
        """The jobs of `events` not named yet."""
        return sorted({e.job_id for e in events if e.job_id and str(e.job_id) not in self.labels})

    def render(self, event: Any) -> str | None:
        """The console line of one audit event (`seq, at, actor, action, target, job_id,
        details`), or None when it is not one to show."""
        job = str(event.job_id) if event.job_id else ""
        details = event.details if isinstance(event.details, dict) else {}
        task = event.target or "job"
        if job not in self.labels and event.action in ("job.enqueued", "job.received"):
            self.labels[job] = subject(task, details.get("payload"))
        label = self.labels.get(job, task)
        routine = job in self.routine or event.actor in ROUTINE_ACTORS
        what = self._what(event, job, details, routine)
        if event.action in ("job.succeeded", "job.failed"):
            self.labels.pop(job, None)
            self.started.pop(job, None)
            self.routine.discard(job)
        if what is None:
            return None
        at = event.at.astimezone().strftime("%H:%M:%S")
        return f"{at} job {job[:8]} {label}: {what}"

    def _what(self, event: Any, job: str, details: dict[str, Any], routine: bool) -> str | None:
        action = event.action
        error = one_line(str(details.get("error") or "no reason recorded"))
        if action == "job.failed":
            return f"failed: {error}"
        if action == "job.retry":
            wait = details.get("retry_in_s")
            return f"retrying{f' in {wait} s' if wait is not None else ''}: {error}"
        if routine or action == "job.received":
            return None
        if action == "job.enqueued":
            return "queued"
        if action == "job.started":
            self.started[job] = event.at
            worker = details.get("worker")
            return f"started on {worker}" if worker else "started"
        if action == "job.progress":
            since = self.started.get(job)
            if since is not None and (event.at - since).total_seconds() < LONG_JOB_SECONDS:
                return None
            percent = int(float(details.get("fraction") or 0) * 4) * 25
            if not 0 < percent < 100:
                return None
            message = details.get("message")
            return f"{percent} %" + (f" ({one_line(str(message), 120)})" if message else "")
        if action == "job.succeeded":
            since = self.started.get(job)
            took = f" in {(event.at - since).total_seconds():.1f} s" if since else ""
            return f"succeeded{took}"
        return None


@dataclass
class EventFollower:
    """Follows the audit log from its head at `start()` and `say`s each job event that matters,
    in a thread, every `interval` seconds. A database that does not answer is said once, and
    followed again when it is back."""

    say: Callable[[str], None]
    interval: float = 0.5
    events: JobEvents = field(default_factory=JobEvents)
    seq: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _failing: bool = False

    def poll(self) -> int:
        """Say the events committed since the last poll; how many were read."""
        from nlphub.audit import events_after
        from nlphub.jobstate import job_briefs
        from schemas.db import get_engine

        with get_engine().connect() as conn:
            rows = events_after(conn, self.seq, ACTIONS)
            self.events.learn(job_briefs(conn, self.events.unknown(rows)))
        for row in rows:
            line = self.events.render(row)
            if line is not None:
                self.say(line)
            self.seq = row.seq
        return len(rows)

    def start(self) -> None:
        from nlphub.audit import head_seq
        from schemas.db import get_engine

        with get_engine().connect() as conn:
            self.seq = head_seq(conn)
        self._thread = threading.Thread(target=self._run, name="job-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.poll() and not self._stop.is_set():
                    pass  # a backlog: read on at once
                if self._failing:
                    self._failing = False
                    log.warning("job events: the database answers again")
            except Exception as exc:
                if not self._failing:
                    self._failing = True
                    log.warning("job events paused, the database does not answer: %s", exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop following, after one last look (a job that ended as the workers stopped)."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(10)
        self._thread = None
        try:
            self.poll()
        except Exception as exc:
            log.warning("job events: no last look, the database does not answer: %s", exc)

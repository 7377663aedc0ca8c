"""The resource and job state machines: the only place that knows which moves are legal."""

from __future__ import annotations

from enum import StrEnum


class ResourceState(StrEnum):
    AVAILABLE = "available"
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLED = "installed"
    MISSING_DEPENDENCIES = "missing_dependencies"
    FAILED = "failed"
    INVALID = "invalid"
    DELETING = "deleting"
    DELETED = "deleted"


RS = ResourceState

#: Legal resource moves. Anything else raises `IllegalTransition`.
RESOURCE_TRANSITIONS: dict[ResourceState, frozenset[ResourceState]] = {
    RS.AVAILABLE: frozenset({RS.QUEUED, RS.DELETED}),
    RS.QUEUED: frozenset({RS.DOWNLOADING, RS.VERIFYING, RS.FAILED}),
    RS.DOWNLOADING: frozenset({RS.VERIFYING, RS.FAILED, RS.QUEUED}),
    RS.VERIFYING: frozenset({RS.INSTALLED, RS.MISSING_DEPENDENCIES, RS.FAILED, RS.INVALID}),
    RS.INSTALLED: frozenset({RS.DELETING, RS.INVALID, RS.MISSING_DEPENDENCIES, RS.QUEUED}),
    RS.MISSING_DEPENDENCIES: frozenset({RS.INSTALLED, RS.FAILED, RS.INVALID, RS.DELETING}),
    RS.FAILED: frozenset({RS.QUEUED, RS.DELETING}),
    RS.INVALID: frozenset({RS.QUEUED, RS.DELETING, RS.INSTALLED}),
    RS.DELETING: frozenset({RS.DELETED, RS.FAILED}),
    RS.DELETED: frozenset({RS.QUEUED, RS.AVAILABLE}),
}

#: States a new resource row may start in (hub catalog, download request, upload, default).
RESOURCE_INITIAL: frozenset[ResourceState] = frozenset(
    {RS.AVAILABLE, RS.QUEUED, RS.VERIFYING, RS.INSTALLED}
)

#: On its way in: a download (or upload) job owns it until it is installed or failed.
RESOURCE_IN_PROGRESS: frozenset[ResourceState] = frozenset(
    {RS.QUEUED, RS.DOWNLOADING, RS.VERIFYING}
)

#: Installed: complete and verified, maybe still waiting for its dependencies.
RESOURCE_INSTALLED: frozenset[ResourceState] = frozenset({RS.INSTALLED, RS.MISSING_DEPENDENCIES})

#: States whose files are on disk and count as in use: installed, or found damaged (`invalid`).
RESOURCE_ON_DISK: frozenset[ResourceState] = RESOURCE_INSTALLED | {RS.INVALID}


class JobState(StrEnum):
    QUEUED = "queued"
    RECEIVED = "received"
    STARTED = "started"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVOKED = "revoked"


JS = JobState

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JS.QUEUED: frozenset({JS.RECEIVED, JS.STARTED, JS.FAILED, JS.REVOKED}),
    JS.RECEIVED: frozenset({JS.STARTED, JS.FAILED, JS.REVOKED, JS.RECEIVED}),
    # STARTED → RECEIVED/STARTED: the message was redelivered after a worker died.
    JS.STARTED: frozenset(
        {JS.SUCCEEDED, JS.FAILED, JS.RETRYING, JS.REVOKED, JS.RECEIVED, JS.STARTED}
    ),
    JS.RETRYING: frozenset({JS.RECEIVED, JS.STARTED, JS.FAILED, JS.REVOKED}),
    JS.SUCCEEDED: frozenset(),
    JS.FAILED: frozenset(),
    JS.REVOKED: frozenset(),
}

JOB_TERMINAL: frozenset[JobState] = frozenset({JS.SUCCEEDED, JS.FAILED, JS.REVOKED})
#: The states a job is in while it waits or runs, in their order.
JOB_ACTIVE: tuple[JobState, ...] = tuple(s for s in JobState if s not in JOB_TERMINAL)

#: An embedding its compute job is still working on (then `finished`, `failed` or `deleted`).
EMBEDDING_IN_PROGRESS = ("initializing", "waiting", "encoding")


class IllegalTransition(ValueError):
    """A state change the state machine does not allow."""


def check_resource_transition(
    current: ResourceState | str | None, new: ResourceState | str
) -> None:
    new_state = ResourceState(new)
    if current is None:
        if new_state not in RESOURCE_INITIAL:
            raise IllegalTransition(f"a new resource cannot start as {new_state.value}")
        return
    old = ResourceState(current)
    if new_state not in RESOURCE_TRANSITIONS[old]:
        allowed = ", ".join(sorted(s.value for s in RESOURCE_TRANSITIONS[old])) or "nothing"
        raise IllegalTransition(
            f"resource cannot go from {old.value} to {new_state.value} (allowed: {allowed})"
        )


def check_job_transition(current: JobState | str, new: JobState | str) -> None:
    old, new_state = JobState(current), JobState(new)
    if new_state not in JOB_TRANSITIONS[old]:
        raise IllegalTransition(f"job cannot go from {old.value} to {new_state.value}")


def job_predecessors(target: JobState) -> list[str]:
    """States a job may be in to move to `target` (for conditional UPDATEs in SQL)."""
    return sorted(s.value for s, targets in JOB_TRANSITIONS.items() if target in targets)

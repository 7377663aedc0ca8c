from __future__ import annotations

import pytest

from schemas.models import Resource, ResourceKind
from schemas.states import (
    JOB_TRANSITIONS,
    RESOURCE_TRANSITIONS,
    IllegalTransition,
    JobState,
    ResourceState,
    check_job_transition,
    check_resource_transition,
)

RS = ResourceState

HAPPY_PATH = [
    RS.AVAILABLE,
    RS.QUEUED,
    RS.DOWNLOADING,
    RS.VERIFYING,
    RS.INSTALLED,
    RS.DELETING,
    RS.DELETED,
]


def test_download_path_is_legal() -> None:
    res = Resource(name="glove_100d", kind=ResourceKind.EMBEDDINGS)
    assert res.state == RS.AVAILABLE
    for state in HAPPY_PATH[1:]:
        res.move_to(state)
    assert res.state == RS.DELETED


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (RS.AVAILABLE, RS.INSTALLED),
        (RS.DOWNLOADING, RS.INSTALLED),
        (RS.DELETED, RS.INSTALLED),
        (RS.INSTALLED, RS.DOWNLOADING),
        (RS.QUEUED, RS.DELETED),
        (RS.DELETING, RS.INSTALLED),
    ],
)
def test_illegal_moves_are_refused_with_the_allowed_ones(old: RS, new: RS) -> None:
    res = Resource(name="x", kind=ResourceKind.MODEL, state=old)
    with pytest.raises(IllegalTransition, match=f"from {old.value} to {new.value} .allowed: "):
        res.move_to(new)
    assert res.state == old


def test_every_state_has_an_entry_and_no_move_leads_nowhere() -> None:
    assert set(RESOURCE_TRANSITIONS) == set(RS)
    assert set(JOB_TRANSITIONS) == set(JobState)
    for targets in RESOURCE_TRANSITIONS.values():
        assert targets <= set(RS)


def test_new_resources_start_only_in_initial_states() -> None:
    check_resource_transition(None, RS.AVAILABLE)
    check_resource_transition(None, RS.INSTALLED)
    with pytest.raises(IllegalTransition, match="cannot start as deleting"):
        check_resource_transition(None, RS.DELETING)


def test_failed_resource_can_be_downloaded_again() -> None:
    check_resource_transition(RS.FAILED, RS.QUEUED)
    check_resource_transition(RS.DELETED, RS.QUEUED)


def test_finished_jobs_never_move_again() -> None:
    for terminal in (JobState.SUCCEEDED, JobState.FAILED, JobState.REVOKED):
        for target in JobState:
            with pytest.raises(IllegalTransition):
                check_job_transition(terminal, target)


def test_redelivered_job_may_start_again() -> None:
    check_job_transition(JobState.STARTED, JobState.STARTED)
    check_job_transition(JobState.RETRYING, JobState.STARTED)
    with pytest.raises(IllegalTransition):
        check_job_transition(JobState.QUEUED, JobState.SUCCEEDED)

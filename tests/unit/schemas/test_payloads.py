"""schemas.payloads: the task payload models, their JSON schemas, and fuzzing them (no unhandled
exception, every rejection has a message)."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.payloads import TASKS, PayloadError, json_schemas, validate_payload


def test_every_task_has_a_json_schema() -> None:
    schemas = json_schemas()
    assert set(schemas) == set(TASKS)
    for schema in schemas.values():
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("task", "data", "message"),
    [
        ("nlphub.inventory", {"verify_checksums": "maybe"}, "verify_checksums: Input should be"),
        ("nlphub.inventory", {"extra": 1}, "extra: unknown field"),
        ("nlphub.inventory", [], "payload must be a JSON object, got list"),
        ("nlphub.delete", {}, "give resource_id or name"),
        (
            "nlphub.delete",
            {"resource_id": "not-a-uuid"},
            "resource_id: Input should be a valid UUID",
        ),
        ("nlphub.delete", {"name": "x", "requested_by": ""}, "requested_by: String should have"),
        ("nlphub.reconcile_outbox", {"limit": 0}, "limit: Input should be greater than or equal"),
        # maintenance knobs a tenant may set are bounded (tests/security/test_maintenance.py)
        (
            "nlphub.reconcile_outbox",
            {"limit": 100_000},
            "limit: Input should be less than or equal to 1000",
        ),
        ("nlphub.cleanup", {"older_than": 0}, "older_than: Input should be greater than or equal"),
        ("nlphub.unknown", {}, "unknown task 'nlphub.unknown'"),
    ],
)
def test_bad_payloads_name_the_field(task: str, data: object, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        validate_payload(task, data)
    assert message in str(info.value)


def test_good_payload_defaults() -> None:
    payload = validate_payload("nlphub.delete", {"name": "glove_100d"})
    assert payload.model_dump()["language"] == "en"
    assert payload.requested_by == "system"


# Fuzzing the task payload models: no unhandled exception, every rejection has a message.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


def _field_names(task: str) -> list[str]:
    return [*TASKS[task].payload.model_fields, "api_key", "extra"]


@pytest.mark.parametrize("task", sorted(TASKS))
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_json_payload_is_accepted_or_rejected_with_a_message(task: str, data: Any) -> None:
    keys = st.sampled_from(_field_names(task)) | st.text(max_size=12)
    payload = data.draw(st.dictionaries(keys, json_values, max_size=6) | json_values)
    try:
        model = validate_payload(task, payload)
    except PayloadError as exc:
        assert exc.problems and all(p.strip() for p in exc.problems)
        assert str(exc).startswith(f"invalid payload for {task}: ")
    else:
        assert set(model.model_dump()) >= {"requested_by"}


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_.:/@", min_size=8, max_size=40))
@settings(max_examples=30, deadline=None, database=None)
def test_a_secret_value_never_appears_in_a_rejection(tail: str) -> None:
    secret = f"marker-secret-{tail}"
    for task in TASKS:
        try:
            validate_payload(task, {"api_key": secret, "password": secret})
        except PayloadError as exc:
            assert secret not in str(exc)

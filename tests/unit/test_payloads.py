from __future__ import annotations

import pytest

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

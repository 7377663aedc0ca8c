"""schemas.payloads: every caller-given field and list is bounded, identities are one printable
line, and a PayloadError's message stays small whatever the payload (security issue: payload
bounds and log injection; tests/security/test_payload_input.py runs them through a worker)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from nlphub.rules.model import MAX_RULE_JSON_BYTES
from schemas.payloads import (
    MAX_LIST_ITEMS,
    MAX_RULE_BYTES,
    MAX_SHOWN_PROBLEMS,
    PayloadError,
    claimed_identity,
    validate_payload,
)

NOTICE = str(uuid.uuid4())
EMBEDDING = str(uuid.uuid4())


def _refusal(task: str, data: Any) -> str:
    with pytest.raises(PayloadError) as info:
        validate_payload(task, data)
    return str(info.value)


@pytest.mark.parametrize(
    ("task", "data", "field"),
    [
        ("nlphub.ping", {"requested_by": "alice\nINFO forged line"}, "requested_by"),
        ("nlphub.ping", {"requested_by": "alice\rbob"}, "requested_by"),
        ("nlphub.ping", {"requested_by": "a\tb"}, "requested_by"),
        ("nlphub.ping", {"requested_by": "\x1b[31mroot"}, "requested_by"),
        ("nlphub.ping", {"requested_by": "alice\u2028bob"}, "requested_by"),  # line separator
        ("nlphub.ping", {"requested_by": "alice\u202ebob"}, "requested_by"),  # bidi override
        ("nlphub.apply_update", {"notice_id": NOTICE, "confirmed_by": "bob\nx"}, "confirmed_by"),
    ],
)
def test_an_identity_with_a_newline_or_control_character_is_refused(
    task: str, data: dict[str, Any], field: str
) -> None:
    message = _refusal(task, data)
    assert f"{field}: must be one line of printable text" in message
    assert "\n" not in message and "\x1b" not in message


def test_a_printable_identity_is_accepted() -> None:
    payload = validate_payload("nlphub.ping", {"requested_by": "  José Müller (erp) 李  "})
    assert payload.requested_by == "José Müller (erp) 李"
    assert validate_payload("nlphub.ping", {"requested_by": "x" * 255}).requested_by == "x" * 255
    assert "requested_by: String should have at most 255" in _refusal(
        "nlphub.ping", {"requested_by": "x" * 256}
    )


def test_claimed_identity_keeps_only_a_valid_requested_by() -> None:
    assert claimed_identity(" erp ", "external") == "erp"
    for bad in ("a\nb", "", "x" * 256, "x" * 10**6, None, 3, {"a": 1}, ["erp"]):
        assert claimed_identity(bad, "external") == "external"


@pytest.mark.parametrize(
    ("task", "data", "problem"),
    [
        (
            "nlphub.validate_upload",
            {"path": "u.zip", "kind": "model", "name": "m", "labels": ["x" * 256]},
            "labels.0: String should have at most 255 characters",
        ),
        (
            "nlphub.validate_upload",
            {"path": "u.zip", "kind": "model", "name": "m", "labels": ["L"] * (MAX_LIST_ITEMS + 1)},
            f"labels: List should have at most {MAX_LIST_ITEMS} items",
        ),
        (
            "nlphub.rules_export",
            {"path": "out.zip", "names": ["r"] * (MAX_LIST_ITEMS + 1)},
            f"names: List should have at most {MAX_LIST_ITEMS} items",
        ),
        (
            "nlphub.rules_export",
            {"path": "out.zip", "names": ["r" * 129]},
            "names.0: String should have at most 128 characters",
        ),
        (
            "nlphub.embed_records",
            {"embedding_id": EMBEDDING, "records": ["ok", "r" * 256]},
            "records.1: String should have at most 255 characters",
        ),
        (
            "nlphub.similar",
            {"dataset": "d", "record": "r" * 256},
            "record: String should have at most 255 characters",
        ),
        (
            "nlphub.rule_save",
            {"rule": {"name": "r", "dictionary": ["w" * 1000] * (MAX_RULE_BYTES // 1000)}},
            f"bytes as JSON, above the {MAX_RULE_BYTES:,} limit",
        ),
    ],
)
def test_lists_and_their_items_are_bounded(task: str, data: dict[str, Any], problem: str) -> None:
    message = _refusal(task, data)
    assert problem in message
    assert len(message) < 1000


def test_a_rule_that_is_not_json_is_refused_with_a_message() -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(100_000):
        inner["x"] = inner = {}
    for rule in (nested, {"a": {(1, 2): "tuple key"}}):
        assert "rule: must be a rule as a JSON object" in _refusal(
            "nlphub.rule_save", {"rule": rule}
        )


def test_the_rule_limit_is_the_rule_file_limit() -> None:
    assert MAX_RULE_BYTES == MAX_RULE_JSON_BYTES
    rule = {"name": "r", "dictionary": ["w" * 1000] * (MAX_RULE_BYTES // 1100)}
    assert validate_payload("nlphub.rule_save", {"rule": rule})


def test_ten_thousand_unknown_keys_give_a_short_message() -> None:
    keys = {f"unknown_{i}": i for i in range(10_000)}
    with pytest.raises(PayloadError) as info:
        validate_payload("nlphub.ping", keys)
    message = str(info.value)
    assert len(message.encode()) < 4096
    assert message.startswith("invalid payload for nlphub.ping: unknown_0: unknown field; ")
    assert message.endswith(f"; and {10_000 - MAX_SHOWN_PROBLEMS:,} more")
    assert len(info.value.problems) == 10_000  # all of them, for a caller that wants them


def test_a_long_or_forged_key_is_shown_cut_and_escaped() -> None:
    message = _refusal("nlphub.ping", {"k" * 100_000: 1, "x\nERROR forged": 2})
    assert "k" * 63 + "…: unknown field" in message and "k" * 65 not in message
    assert "x\\nERROR forged: unknown field" in message
    assert "\n" not in message


def test_an_unknown_task_name_is_cut_and_escaped() -> None:
    message = _refusal("nlphub." + "t" * 10_000 + "\n", {})
    assert "\n" not in message and len(message) < 2000

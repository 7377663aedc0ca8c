from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from nlphub.audit import GENESIS, canonical, event_body, event_hash

AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _hash(prev: str = GENESIS, **over: object) -> str:
    fields: dict = {
        "seq": 1,
        "at": AT,
        "actor": "alice",
        "action": "job.started",
        "target": "nlphub.inventory",
        "job_id": uuid.UUID(int=7),
        "details_text": '{"a": 1, "b": [1, 2]}',
    }
    fields.update(over)
    return event_hash(prev, event_body(**fields))


def test_hash_is_deterministic() -> None:
    assert _hash() == _hash()
    assert len(_hash()) == 64


def test_body_is_what_the_database_trigger_hashes() -> None:
    body = event_body(
        seq=3, at=AT, actor="a", action="b", target=None, job_id=None, details_text="{}"
    )
    assert body == "3\x1f2026-01-02T03:04:05.678901\x1fa\x1fb\x1f\x1f\x1f{}"
    # the same instant in another zone hashes the same (the trigger formats it in UTC)
    other = AT.astimezone(timezone(timedelta(hours=5)))
    assert (
        event_body(
            seq=3, at=other, actor="a", action="b", target=None, job_id=None, details_text="{}"
        )
        == body
    )


def test_any_field_change_changes_the_hash() -> None:
    base = _hash()
    assert _hash(actor="mallory") != base
    assert _hash(details_text='{"a": 2, "b": [1, 2]}') != base
    assert _hash(seq=2) != base
    assert _hash(at=AT.replace(microsecond=0)) != base
    assert _hash(job_id=None) != base
    assert _hash(prev="1" * 64) != base


def test_canonical_json_is_compact_and_sorted() -> None:
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def test_small_details_are_stored_as_they_are() -> None:
    from nlphub.audit import bounded_details

    details = {"payload": {"name": "glove_100d"}, "queue": "default"}
    assert bounded_details(details) == canonical(details)


def test_oversized_details_keep_their_small_values_and_mark_the_large_one() -> None:
    import json

    from nlphub.audit import bounded_details
    from schemas.settings import get_settings

    big = {"content": "é" * 5 * 2**20}
    text = bounded_details({"payload": big, "queue": "default"})
    assert len(text.encode()) <= get_settings().audit_details_max_bytes
    stored = json.loads(text)
    assert stored["queue"] == "default"
    marker = stored["payload"]
    assert marker["truncated"] is True and marker["bytes"] == len(canonical(big).encode())
    assert len(marker["sha256"]) == 64 and len(marker["preview"]) == 256


def test_too_many_keys_become_one_marker() -> None:
    import json

    from nlphub.audit import bounded_details

    details = {f"k{i}": "v" * 100 for i in range(400)}
    stored = json.loads(bounded_details(details))
    assert stored["truncated"] is True and "preview" in stored

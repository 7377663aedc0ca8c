"""The payload digest a delivery under a job's id must match (`nlphub.jobstate`)."""

from __future__ import annotations

from nlphub.jobstate import payload_digest, sendable
from nlphub.redact import redact
from schemas.models import Job


def test_the_digest_tells_apart_payloads_that_differ_only_in_a_secret() -> None:
    one = {"content": "x://u:p@h", "requested_by": "erp"}
    two = {"content": "x://u:q@h", "requested_by": "erp"}
    assert redact(one) == redact(two)  # what the row stores cannot tell them apart
    assert payload_digest(one) != payload_digest(two)
    assert payload_digest({"password": "a"}) != payload_digest({"password": "b"})
    # canonical: key order does not matter; the digest is SHA-256 in hex
    assert payload_digest(one) == payload_digest(dict(reversed(one.items())))
    assert len(payload_digest(one)) == 64 and int(payload_digest(one), 16) >= 0


def test_a_payload_changed_by_redaction_is_not_sendable() -> None:
    secret = {"content": "x://u:p@h"}
    plain = {"content": "no secret here"}
    assert not sendable(
        Job(task="t", queue="q", payload=redact(secret), payload_sha256=payload_digest(secret))
    )
    assert sendable(
        Job(task="t", queue="q", payload=redact(plain), payload_sha256=payload_digest(plain))
    )
    assert sendable(Job(task="t", queue="q", payload=redact(secret)))  # before 0009: no digest

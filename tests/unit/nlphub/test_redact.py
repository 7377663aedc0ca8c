from __future__ import annotations

from nlphub.redact import REDACTED, redact


def test_secrets_are_redacted_recursively() -> None:
    data = {
        "api_key": "sk-123",
        "nested": {"password": "p", "license_key_ref": "LIC"},
        "url": "redis://:hunter2@redis:6379/0",
        "tokens": 3,
        "items": [{"token": "t"}],
    }
    clean = redact(data)
    assert clean["api_key"] == REDACTED
    assert clean["nested"]["password"] == REDACTED
    assert clean["nested"]["license_key_ref"] == "LIC"  # a reference, not the secret
    assert "hunter2" not in clean["url"]
    assert clean["items"][0]["token"] == REDACTED

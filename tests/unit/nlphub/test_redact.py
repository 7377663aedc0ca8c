from __future__ import annotations

import time

import pytest

from nlphub.redact import REDACTED, redact, redact_text


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


# URL passwords: redacted in any URL shape, in linear time on any input (security issue:
# `"a://:" * n` was quadratic, 17 s for 80 KB, run on every payload a worker receives).

LONG = "p" * 2000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        (
            "postgresql+psycopg://nlp:s3cret@db:5432/nlphub",
            "postgresql+psycopg://nlp:***@db:5432/nlphub",
        ),
        (f"https://u:{LONG}@host/x", "https://u:***@host/x"),  # a long password
        ("https://u:p%40ss%2Fw%3Ard@host/", "https://u:***@host/"),  # percent-encoded
        ("HTTPS://U:Secret@Host/", "HTTPS://U:***@Host/"),  # schemes are case-insensitive
        ("amqp://u:p@ss:w@rd@host/vhost", "amqp://u:***@host/vhost"),  # a raw @ (urllib's split)
        ("see redis://:a@h and s3://k:b@bucket/x.", "see redis://:***@h and s3://k:***@bucket/x."),
        ("url=1redis://:pw@h", "url=1redis://:***@h"),
        ("'redis://:pw@h'", "'redis://:***@h'"),
    ],
)
def test_url_passwords_are_redacted(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "https://host:8080/search?mail=a@b.example",  # a port, then an @ after the path
        "http://user@host/path",
        "ratio 3:4 @ noon, a://b, see http://x:1/",
        "no url at all: user:pw@host",
    ],
)
def test_text_without_a_url_password_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


#: Inputs of 1 MB built to make a backtracking regex slow: many tries that each read far.
ADVERSARIAL = {
    "empty-passwords": "a://:" * (2**20 // 5),
    "users-and-colons": "a://x:" * (2**20 // 6),
    "colons": "a://" + ":" * 2**20,
    "passwords-with-colons": "a://:" + "a:" * (2**19),
    "at-signs": "a://:@" * (2**20 // 6),
    "scheme-run": "a" * 2**20 + "://",
    "digit-run": "1" * 2**20,
    "long-user": "a://" + "u" * 2**20,
    "long-password": "a://:" + "p" * 2**20,
    "schemes-without-slashes": "a:" * (2**19),
    "slashes": "a://:/" * (2**20 // 6),
    "mixed": "ab1+.-://u:p@x:/" * (2**20 // 16),
}


@pytest.mark.timeout(60)  # quadratic, these take most of an hour
@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_redacting_is_linear_on_adversarial_input(text: str) -> None:
    started = time.perf_counter()
    redact_text(text)
    assert time.perf_counter() - started < 0.5

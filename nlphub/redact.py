"""Keep secrets out of job rows, task arguments shown by Flower, logs and the audit log."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"

#: Keys whose values are secrets wherever they appear in a payload or a details dict.
_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|licen[cs]e[_-]?key|credential|auth)",
    re.IGNORECASE,
)
#: Keys that only *name* a secret (a reference), which is safe to show.
_REFERENCE_KEY = re.compile(r"(_ref|_name|_env|_file)$", re.IGNORECASE)
#: Secrets embedded in URLs: scheme://user:password@host (any case). Tried only where a run of
#: scheme characters starts (the look-behind): linear in a long run of letters. The user and
#: password stop at a `/` (RFC 3986: %2F there), so a try reads no further than the next `://`:
#: linear on any input, where a password running to the next `@` was quadratic (`"a://:" * n`:
#: 17 s for 80 KB). The password runs to the last `@` before that `/` (as urllib splits it).
#: docs/decisions.md, "Redacting URL passwords in linear time".
_URL_PASSWORD = re.compile(
    r"(?<![a-z0-9+.-])(?P<lead>[0-9+.-]*)"
    r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^/\s]+)(?P<post>@)",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _REFERENCE_KEY.search(key)


def redact_text(text: str) -> str:
    """`text` with URL passwords replaced by REDACTED; linear time on any input."""
    if "://" not in text:  # most log lines: no regex pass at all
        return text
    return _URL_PASSWORD.sub(lambda m: f"{m['lead']}{m['pre']}{REDACTED}{m['post']}", text)


def redact(value: Any) -> Any:
    """A copy of `value` with secret-looking keys masked and URL passwords removed."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value

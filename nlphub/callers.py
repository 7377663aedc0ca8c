"""Who sent a job, when it came through the broker: Flower's signed caller header.

Flower checks its user but puts nothing of it in a message, and every header is the sender's
claim. nlphub's Flower (`workers.flower`) adds one header, `nlphub_caller`:
``{"via": "flower", "user": <the authenticated user>, "sig": <hex>}``, where ``sig`` is an
HMAC-SHA256, with the key Flower and the workers share (NLPHUB_CALLER_KEY, else a generated one
in ``NLPHUB_HOME/run/caller-key``), over the task id, the task name, the caller and the
message's args and kwargs. A worker trusts the caller only if the signature verifies: copied
onto another message (another id, task or payload), or made up, it does not.
See docs/decisions.md, "Flower callers: a signed header, options allow-listed".
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from nlphub.files import stored_secret
from schemas.settings import Settings

#: The message header carrying the signed caller.
CALLER_HEADER = "nlphub_caller"
#: Keeps these signatures apart from any other use of the key.
_CONTEXT = "nlphub-caller-v1"


def caller_key_file(settings: Settings) -> Path:
    return settings.home / "run" / "caller-key"


def caller_key(settings: Settings) -> bytes:
    """NLPHUB_CALLER_KEY, else the generated key stored under NLPHUB_HOME (made on first use)."""
    if settings.caller_key is not None:
        return settings.caller_key.get_secret_value().encode()
    return stored_secret(caller_key_file(settings)).encode()


def _signature(
    key: bytes, task_id: str, task: str, caller: dict[str, Any], args: Any, kwargs: Any
) -> str:
    signed = json.dumps(
        [_CONTEXT, task_id, task, caller, list(args or ()), dict(kwargs or {})],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hmac.new(key, signed.encode(), hashlib.sha256).hexdigest()


def signed_caller(
    key: bytes, *, task_id: str, task: str, caller: dict[str, Any], args: Any, kwargs: Any
) -> dict[str, Any]:
    """The header value: `caller` and its signature for this message."""
    return {**caller, "sig": _signature(key, task_id, task, caller, args, kwargs)}


def verified_caller(
    key: bytes, header: Any, *, task_id: str, task: str, args: Any, kwargs: Any
) -> dict[str, Any] | None:
    """The caller in `header` if its signature holds for this message, else None."""
    if not isinstance(header, dict) or not isinstance(header.get("sig"), str):
        return None
    caller = {k: v for k, v in header.items() if k != "sig"}
    if set(caller) != {"via", "user"} or caller["via"] != "flower":
        return None
    if not (caller["user"] is None or isinstance(caller["user"], str)):
        return None
    try:
        expected = _signature(key, task_id, task, caller, args, kwargs)
    except (TypeError, ValueError):  # not JSON: nothing Flower could have signed
        return None
    return caller if hmac.compare_digest(expected, header["sig"]) else None

"""Licences for the licensed editions of the Models Hub (design.md section 1).

Every edition but Open Source (Healthcare NLP, Finance NLP, Legal NLP, Visual NLP) needs a
licence that covers it and has not expired before its resources are downloaded or deployed.
The licence is a JSON file named by ``NLPHUB_LICENSE_FILE``::

    {
      "licensee": "Example Hospital",
      "license_key": "<secret key>",
      "editions": ["Healthcare NLP", "Finance NLP"],
      "expires_at": "2027-01-31"
    }

* ``licensee``: who holds the licence (a non-empty string);
* ``license_key``: the secret key (a non-empty string). It is kept as a ``SecretStr`` and never
  appears in a repr, a log line or an error message;
* ``editions``: the editions it covers, spelled as the hub's editions: ``"Healthcare NLP"``,
  ``"Finance NLP"``, ``"Legal NLP"``, ``"Visual NLP"`` (``"Open Source"`` is allowed and
  needs no licence). Case does not matter;
* ``expires_at``: an ISO date (``"2027-01-31"``: valid through the end of that day, UTC) or
  an ISO date-time (``"2027-01-31T12:00:00Z"``; a time without an offset is UTC).

Other keys are ignored. Pure apart from reading the file (and the log lines of the
tenant-facing ``licence_refusal`` / ``unusable_licence``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from schemas.editions import EDITIONS, LICENSED_EDITIONS, OPEN_SOURCE

__all__ = [
    "EDITIONS",
    "LICENSED_EDITIONS",
    "OPEN_SOURCE",
    "Licence",
    "LicenceError",
    "licence_problem",
    "licence_refusal",
    "load_licence",
    "unusable_licence",
]

log = logging.getLogger(__name__)

"""The hub's editions, as ``HubEntry.edition`` spells them."""

_BY_LOWER = {edition.lower(): edition for edition in EDITIONS}
_FIELDS = ("licensee", "license_key", "editions", "expires_at")


class LicenceError(Exception):
    """The licence file cannot be read or is not a valid licence; the message names the file."""


@dataclass(frozen=True)
class Licence:
    """A licence: who holds it, which editions it covers, until when.

    ``expires_at`` is a ``date`` (valid through the end of that day, UTC) or an aware
    ``datetime`` (valid until that instant). The key is a ``SecretStr`` left out of the repr.
    """

    licensee: str
    editions: tuple[str, ...]
    expires_at: date | datetime
    license_key: SecretStr = field(repr=False, default=SecretStr(""))

    @property
    def expiry(self) -> datetime:
        """The instant from which the licence is no longer valid (aware, UTC)."""
        if isinstance(self.expires_at, datetime):
            value = self.expires_at
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value
        return datetime.combine(self.expires_at + timedelta(days=1), time(), tzinfo=UTC)

    @property
    def expires_text(self) -> str:
        """``2025-01-31`` for a date, ``2025-01-31 12:00 UTC`` for a date-time."""
        if isinstance(self.expires_at, datetime):
            return f"{self.expiry.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        return self.expires_at.isoformat()

    def covers(self, edition: str) -> bool:
        """Whether ``edition`` is among the editions (case-insensitive); ignores expiry."""
        wanted = edition.strip().lower()
        return any(covered.lower() == wanted for covered in self.editions)

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the licence has expired at ``now`` (default: the current time)."""
        moment = datetime.now(UTC) if now is None else now
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment >= self.expiry


def _parse_expiry(value: Any, path: Path) -> date | datetime:
    if not isinstance(value, str) or not value.strip():
        raise LicenceError(
            f"licence file {path}: bad expires_at {value!r}: expected an ISO date such as "
            "'2027-01-31' or a date-time such as '2027-01-31T12:00:00Z'"
        )
    text = value.strip()
    try:
        if len(text) == len("2027-01-31"):
            return date.fromisoformat(text)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise LicenceError(
            f"licence file {path}: bad expires_at {value!r}: expected an ISO date such as "
            "'2027-01-31' or a date-time such as '2027-01-31T12:00:00Z'"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _parse_editions(value: Any, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise LicenceError(
            f'licence file {path}: editions must be a non-empty list such as ["Healthcare NLP"]'
        )
    editions: list[str] = []
    for item in value:
        canonical = _BY_LOWER.get(item.strip().lower()) if isinstance(item, str) else None
        if canonical is None:
            raise LicenceError(
                f"licence file {path}: unknown edition {item!r} (known: {', '.join(EDITIONS)})"
            )
        if canonical not in editions:
            editions.append(canonical)
    return tuple(editions)


def _non_empty_string(data: dict[str, Any], name: str, path: Path) -> str:
    value = data[name]
    if not isinstance(value, str) or not value.strip():
        # Never echo the value: it may be the key.
        raise LicenceError(f"licence file {path}: {name} must be a non-empty string")
    return value.strip()


def load_licence(path: Path | None) -> Licence | None:
    """Read the licence file (see the module docstring); ``None`` when ``path`` is ``None``.

    Raises:
        LicenceError: the file cannot be read, is not JSON, lacks a field, names an unknown
            edition or has a bad ``expires_at``. The message names the file, never the key.
    """
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LicenceError(f"licence file {path} cannot be read: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: str(exc) could quote the document.
        raise LicenceError(
            f"licence file {path} is not valid JSON: {exc.msg} (line {exc.lineno}, "
            f"column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise LicenceError(f"licence file {path} must hold a JSON object")
    missing = [name for name in _FIELDS if name not in data or data[name] is None]
    if missing:
        raise LicenceError(
            f"licence file {path} is missing {', '.join(repr(name) for name in missing)} "
            f"(it needs {', '.join(_FIELDS)})"
        )
    return Licence(
        licensee=_non_empty_string(data, "licensee", path),
        editions=_parse_editions(data["editions"], path),
        expires_at=_parse_expiry(data["expires_at"], path),
        license_key=SecretStr(_non_empty_string(data, "license_key", path)),
    )


def licence_problem(
    edition: str, licence: Licence | None, *, now: datetime | None = None
) -> str | None:
    """Why resources of ``edition`` may not be used with ``licence``, or ``None`` if they may.

    Open Source never needs a licence. Otherwise the licence must cover the edition and not
    have expired at ``now`` (default: the current time).
    """
    if edition.strip().lower() == OPEN_SOURCE.lower():
        return None
    if licence is None:
        return f"{edition} needs a licence: none is configured (set NLPHUB_LICENSE_FILE)"
    if not licence.covers(edition):
        covered = ", ".join(licence.editions) or "no edition"
        return f"the licence does not cover {edition} (it covers: {covered})"
    if licence.expired(now):
        return f"the licence for {edition} expired on {licence.expires_text}"
    return None


def unusable_licence(edition: str, error: LicenceError) -> str:
    """What a tenant is told when the licence file cannot be used for ``edition``: not the
    file's name nor why (logged for the operator)."""
    log.warning("licence unusable for %s: %s", edition, error)
    return (
        f"{edition} needs a valid licence: the configured licence cannot be used "
        "(an administrator must check NLPHUB_LICENSE_FILE)"
    )


def licence_refusal(
    edition: str, licence: Licence | None, *, now: datetime | None = None
) -> str | None:
    """``licence_problem`` as a tenant is told it: what is wrong, never what the licence covers
    or when it expires (logged for the operator; `nlphub doctor` shows them)."""
    problem = licence_problem(edition, licence, now=now)
    if problem is None:
        return None
    log.warning("licence refuses %s: %s", edition, problem)
    if licence is None:
        return f"{edition} needs a licence: none is configured (set NLPHUB_LICENSE_FILE)"
    if not licence.covers(edition):
        return f"the configured licence does not cover {edition}"
    return f"the configured licence for {edition} has expired"

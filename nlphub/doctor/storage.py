"""The doctor's disk check: free space on the resources volume against an absolute minimum and
against the download rule (twice the archive's size, `nlphub.hub.space`) for the largest
download still on its way."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nlphub.doctor.core import Context, Finding, fail, ok, one_line
from nlphub.hub.space import DOWNLOAD_FACTOR, human_size, volume_space

__all__ = ["Pending", "disk_check", "judge_disk", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"500M"``, ``"2.5 G"``, ``"1024"`` → bytes (binary units either way).

    Raises:
        ValueError: not a size.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size such as 1GiB, 500MiB or 2048")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** _POWERS[unit])


@dataclass(frozen=True)
class Pending:
    """The largest download not yet installed: its label and its archive's size."""

    label: str
    size: int


def judge_disk(
    path: Path,
    free: int,
    *,
    minimum: int,
    pending: Pending | None,
    pending_error: str | None = None,
) -> Finding:
    """Fail below `minimum` free, or below twice the largest pending download's size."""
    where = f"{human_size(free)} free at {path}"
    if free < minimum:
        return fail(
            "disk",
            f"nearly full: {where}, below the minimum of {human_size(minimum)}",
            "free space on that volume (`nlphub disk` lists what resources use; "
            "`nlphub delete` removes one), or move NLPHUB_HOME to a larger one",
        )
    if pending is not None and free < DOWNLOAD_FACTOR * pending.size:
        return fail(
            "disk",
            f"nearly full: {where}, but the pending download {pending.label} needs "
            f"{human_size(DOWNLOAD_FACTOR * pending.size)} (twice its {human_size(pending.size)})",
            "free space on that volume before it runs (`nlphub disk`, `nlphub delete`), "
            "or it fails for want of space",
        )
    if pending is not None:
        need = human_size(DOWNLOAD_FACTOR * pending.size)
        rule = f"; the largest pending download ({pending.label}) needs {need}"
    elif pending_error is not None:
        rule = f"; pending downloads not known ({pending_error})"
    else:
        rule = "; no download pending"
    return ok("disk", f"{where} (minimum {human_size(minimum)}){rule}")


def largest_pending(ctx: Context) -> Pending | None:
    """The largest resource on its way in (queued, downloading, verifying) with a known size."""
    from sqlalchemy import text

    from nlphub.doctor.services import database_engine
    from schemas.states import RESOURCE_IN_PROGRESS

    with database_engine(ctx).connect() as conn:
        row = conn.execute(
            text(
                "SELECT name, language, version, size_bytes FROM resource "
                "WHERE state = ANY(:states) AND size_bytes IS NOT NULL "
                "ORDER BY size_bytes DESC LIMIT 1"
            ),
            {"states": [s.value for s in RESOURCE_IN_PROGRESS]},
        ).first()
    if row is None:
        return None
    return Pending(f"{row.name}/{row.language}/{row.version or '-'}", int(row.size_bytes))


def disk_check(ctx: Context) -> list[Finding]:
    path, _, free = volume_space(ctx.settings.resources_dir)
    pending: Pending | None = None
    pending_error: str | None = None
    if ctx.failed("database"):
        pending_error = "database unreachable"
    else:
        try:
            pending = largest_pending(ctx)
        except Exception as exc:
            pending_error = one_line(exc)
    return [
        judge_disk(path, free, minimum=ctx.min_free, pending=pending, pending_error=pending_error)
    ]

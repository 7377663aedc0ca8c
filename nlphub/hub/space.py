"""Sizes and free disk space: ``human_size`` and the 2x rule (``check_free_space``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from nlphub.hub.fetch_errors import NotEnoughSpace

__all__ = ["DOWNLOAD_FACTOR", "check_free_space", "human_size", "volume_space"]

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: float) -> str:
    """``512 B``, ``1.5 KiB``, ``2.0 GiB``: binary units, one decimal."""
    if size < 1024:
        return f"{int(size)} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


#: The download rule's factor: room for the archive and for what it unpacks to.
DOWNLOAD_FACTOR = 2.0


def volume_space(path: Path) -> tuple[Path, int, int]:
    """The folder measured (``path`` or its nearest existing parent: nothing is created) and
    its file system's size and free bytes."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return probe, usage.total, usage.free


def _free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    return volume_space(path)[2]


def _times(factor: float) -> str:
    if factor == 2:
        return "twice"
    if factor == 1:
        return "once"
    return f"{factor:g} times"


def check_free_space(
    path: Path,
    size: int,
    *,
    what: str,
    factor: float = DOWNLOAD_FACTOR,
    already_have: int = 0,
) -> None:
    """Require ``factor * size`` bytes of free space at ``path`` (the 2x rule).

    Room for the archive and for what it unpacks to. Bytes ``already_have`` on disk (a
    ``.partial`` being resumed) are already used, so they count towards the need.

    Raises:
        NotEnoughSpace: e.g. ``"not enough free disk space for x.zip: needs 2.0 GiB (twice its
            size, 1.0 GiB), 500.0 MiB available at /data"``.
    """
    needed = max(0, int(factor * size) - max(0, already_have))
    available = _free_bytes(path)
    if needed <= available:
        return
    detail = f"{_times(factor)} its size, {human_size(size)}"
    if already_have > 0:
        detail += f", less {human_size(already_have)} already downloaded"
    raise NotEnoughSpace(
        f"not enough free disk space for {what}: needs {human_size(needed)} ({detail}), "
        f"{human_size(available)} available at {path}",
        needed=needed,
        available=available,
        path=path,
    )

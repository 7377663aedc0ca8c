"""Process helpers for tests that run real processes: children, descendants, liveness, and the
environment of a benchmark script run on its own embedded servers."""

from __future__ import annotations

import os
from pathlib import Path


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found.append(child)
        found.extend(descendants(child))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def own_servers_env(tmp: Path) -> dict[str, str]:
    """This process' environment for a script that starts its own embedded servers under `tmp`
    (its TMPDIR: a short path, as Postgres' socket lives there): no database or Redis URL and
    no NLPHUB_ setting of the test session."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("NLPHUB_")
    }
    env["TMPDIR"] = str(tmp)
    return env

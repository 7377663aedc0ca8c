"""Process helpers for tests that run real processes: children, descendants, liveness, and the
environment of a benchmark script run on its own embedded servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def run_benchmark(script: str, *args: str, leftovers: str) -> tuple[int, str]:
    """Run `benchmarks/<script>` with `args` on its own embedded servers, in a temp folder of
    its own (a short path: Postgres' socket lives there); check that it removed the folders
    matching `leftovers` it made there. Its exit status and output (stdout and stderr)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-t-"))
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / script), *args],
            cwd=ROOT,
            env=own_servers_env(tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=240,
            check=False,
        )
        assert list(tmp.glob(leftovers)) == []  # the script removed its temp folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done.returncode, done.stdout.decode(errors="replace")

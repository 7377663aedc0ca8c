"""The alert rules and the Grafana dashboard shipped in deploy/ agree with the metrics.

- `promtool check rules` and `promtool test rules` pass (promtool comes with Debian's
  `prometheus` package; .ci/run installs it): every alert has unit tests that show it firing
  and not firing.
- Every metric a rule or a panel query names is one the collector exposes (`METRICS`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nlphub.metrics.collector import METRICS

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "nlphub.json"

#: PromQL words that are not metric names (functions and aggregations come before a '(').
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
#: Modifiers whose parenthesised label lists are not expressions.
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = LABEL_LISTS.sub("", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        if match.start() > 0 and (
            text[match.start() - 1].isdigit() or text[match.start() - 1] == "."
        ):
            continue  # a number's exponent or unit (1e9)
        names.add(word)
    return names


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: `apt-get install -y prometheus` (Debian) provides it; "
            ".ci/run installs it before the tests"
        )
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _panels(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in node.get("panels", []):
        found.append(panel)
        found += _panels(panel)
    return found


# -- promtool ------------------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    done = _run("check", "rules", str(RULES), cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    done = _run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_catch_a_broken_alert(tmp_path: Path) -> None:
    """The unit tests are not vacuous: with one threshold changed they fail."""
    broken = RULES.read_text().replace("nlphub_redeploys_failed > 0", "nlphub_redeploys_failed > 5")
    assert broken != RULES.read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = _run("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "NlphubRedeployFailed" in done.stdout + done.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in _rules():
        name = rule["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in mine), f"{name}: never tested firing"
        assert any(not case.get("exp_alerts") for case in mine), f"{name}: never tested quiet"


# -- metric names --------------------------------------------------------------------------------


def test_the_metric_name_reader() -> None:
    expr = (
        'sum by (task) (increase(nlphub_jobs_finished_total{state="failed"}[30m])) > 0.2 and '
        "time() - nlphub_x > on(instance) group_left() 2 * nlphub_y or vector(1e9)"
    )
    assert metric_names(expr) == {"nlphub_jobs_finished_total", "nlphub_x", "nlphub_y"}


def test_every_metric_an_alert_names_exists() -> None:
    for rule in _rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: names no metric"
        assert names <= set(METRICS), f"{rule['alert']}: unknown {sorted(names - set(METRICS))}"


def test_every_dashboard_query_names_a_metric_that_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in _panels(dashboard) if p.get("type") != "row"]
    assert len(panels) >= 10
    for panel in panels:
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no query"
        for target in targets:
            names = metric_names(target["expr"])
            assert names, f"panel {panel['title']!r}: {target['expr']!r} names no metric"
            unknown = sorted(names - set(METRICS))
            assert not unknown, f"panel {panel['title']!r}: unknown metric(s) {unknown}"


def test_every_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        name
        for panel in _panels(dashboard)
        for target in panel.get("targets") or []
        for name in metric_names(target["expr"])
    }
    used |= {name for rule in _rules() for name in metric_names(rule["expr"])}
    assert set(METRICS) - used == set()

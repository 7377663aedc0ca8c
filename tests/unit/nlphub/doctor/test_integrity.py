"""Unit tests for nlphub.doctor.integrity: the audit verdicts."""

from __future__ import annotations

from nlphub.anchors import AnchorReport
from nlphub.audit import ChainReport
from nlphub.doctor.core import Status
from nlphub.doctor.integrity import judge_audit

FILE = "/var/anchors/anchors.jsonl"


def test_a_broken_chain_fails() -> None:
    found = judge_audit(
        ChainReport(41, 42, "its content does not match its hash"),
        AnchorReport(1, [], []),
        anchor_file=FILE,
    )
    assert found.status == Status.FAIL
    assert found.summary.startswith("chain BROKEN at event 42: its content does not match")


def test_anchors_that_disagree_fail() -> None:
    found = judge_audit(
        ChainReport(10),
        AnchorReport(2, ["TRUNCATED: the log ends at event 10"], []),
        anchor_file=FILE,
    )
    assert found.status == Status.FAIL and "TRUNCATED" in found.summary


def test_no_anchor_or_unreadable_anchors_are_warnings() -> None:
    none = judge_audit(ChainReport(10), AnchorReport(0, [], []), anchor_file=FILE)
    assert none.status == Status.WARN and f"no anchor in {FILE} yet" in none.summary
    assert "nlphub audit anchor" in none.fix
    bad = judge_audit(ChainReport(10), AnchorReport(3, [], ["line 2: not JSON"]), anchor_file=FILE)
    assert bad.status == Status.WARN and "line 2: not JSON" in bad.summary


def test_a_verified_chain_with_matching_anchors_passes() -> None:
    found = judge_audit(ChainReport(10), AnchorReport(3, [], []), anchor_file=FILE)
    assert found.status == Status.OK
    assert found.summary == "chain OK (10 events), 3 anchors match"

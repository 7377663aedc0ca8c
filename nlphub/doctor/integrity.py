"""The doctor's audit check: `nlphub audit verify`'s chain walk and anchor comparison."""

from __future__ import annotations

from collections.abc import Sequence

from nlphub.anchors import AnchorReport
from nlphub.audit import ChainReport
from nlphub.doctor.core import Context, Finding, fail, ok, warn

__all__ = ["audit_budget", "audit_check", "judge_audit"]


def judge_audit(chain: ChainReport, anchors: AnchorReport, *, anchor_file: str) -> Finding:
    """Broken chain or anchors that disagree: fail. No anchor yet, or anchor lines that cannot
    be read: a warning (truncation and rewrites cannot be seen without anchors)."""
    problems: list[str] = []
    if not chain.ok:
        problems.append(
            f"chain BROKEN at event {chain.broken_at}: {chain.reason} "
            f"({chain.checked} events before it verified)"
        )
    problems += list(anchors.problems)
    if problems:
        return fail(
            "audit",
            "; ".join(problems),
            "the audit log was altered: keep the database as it is and investigate "
            "(`nlphub audit verify` shows every problem)",
        )
    notes: Sequence[str] = anchors.warnings
    if notes:
        return warn(
            "audit",
            f"chain OK ({chain.checked} events), but {len(notes)} anchor line(s) cannot be read: "
            f"{notes[0]}",
            f"see {anchor_file}",
        )
    if anchors.anchors == 0:
        return warn(
            "audit",
            f"chain OK ({chain.checked} events); no anchor in {anchor_file} yet, so deleted "
            "newest events or a recomputed chain cannot be seen",
            "run `nlphub audit anchor` (beat writes one every NLPHUB_AUDIT_ANCHOR_INTERVAL)",
        )
    return ok("audit", f"chain OK ({chain.checked} events), {anchors.anchors} anchors match")


def audit_check(ctx: Context) -> list[Finding]:
    from sqlmodel import Session

    from nlphub.anchors import ANCHOR_FILE, anchor_dir, check_anchors
    from nlphub.audit import verify_chain
    from nlphub.doctor.services import database_engine

    folder = anchor_dir(ctx.settings)
    with Session(database_engine(ctx)) as session:
        chain = verify_chain(session)
        anchors = check_anchors(session, folder)
    return [judge_audit(chain, anchors, anchor_file=str(folder / ANCHOR_FILE))]


def audit_budget(ctx: Context) -> float:
    """Walking a long chain takes a while: six times the per-check timeout (30 s by default)."""
    return ctx.timeout * 6

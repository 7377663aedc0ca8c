"""The soak's figures: what it submitted (`Load`), what the database says became of it
(`collect`), and the report with its verdict (`report`)."""

from __future__ import annotations

import argparse
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.soak_procs import Sampler

TERMINAL = ("succeeded", "failed", "revoked")
FINAL_ACTIONS = ("job.succeeded", "job.failed")


@dataclass
class Load:
    """What the soak submitted, and what it did to the workers."""

    jobs: dict[uuid.UUID, str] = field(default_factory=dict)
    kills: list[tuple[float, str, int]] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def collect(ids: list[uuid.UUID]) -> dict[str, Any]:
    from sqlalchemy import text

    from schemas.db import get_engine

    with get_engine().connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, task, state, attempts, error, "
                "EXTRACT(EPOCH FROM finished_at - created_at) AS latency "
                "FROM job WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        ).all()
        finals = conn.execute(
            text(
                "SELECT job_id, count(*) AS n FROM audit_event "
                "WHERE job_id = ANY(:ids) AND action = ANY(:a) GROUP BY job_id HAVING count(*) > 1"
            ),
            {"ids": ids, "a": list(FINAL_ACTIONS)},
        ).all()
        installs = conn.execute(
            text(
                "SELECT job_id, count(*) AS n FROM audit_event WHERE job_id = ANY(:ids) "
                "AND action = 'resource.installed' GROUP BY job_id HAVING count(*) > 1"
            ),
            {"ids": ids},
        ).all()
        embeddings = conn.execute(
            text(
                "SELECT job_id, count(*) AS n FROM embedding WHERE job_id = ANY(:ids) "
                "GROUP BY job_id HAVING count(*) > 1"
            ),
            {"ids": ids},
        ).all()
        vectors = conn.execute(
            text(
                "SELECT e.id, e.state, "
                "(SELECT count(*) FROM embedding_vector v WHERE v.embedding_id = e.id) AS n, "
                "(SELECT count(*) FROM record r WHERE r.dataset_id = e.dataset_id) AS records "
                "FROM embedding e WHERE e.job_id = ANY(:ids) AND e.state = 'finished'"
            ),
            {"ids": ids},
        ).all()
    return {
        "rows": rows,
        "dup_finals": finals,
        "dup_installs": installs,
        "dup_embeddings": embeddings,
        "extra_vectors": [v for v in vectors if v.n > v.records],
        "missing_vectors": [v for v in vectors if v.n < v.records],
    }


def leftovers(home: Path) -> list[str]:
    return sorted(
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.name.endswith(".partial")
        or p.name.startswith((".staging-", ".trash-"))
        or (p.parent.name == "downloads" and p.is_file())
    )


@dataclass
class Counts:
    """The soak's verdict figures, from the job rows and the checks of `collect`."""

    submitted: int
    completed: int
    failed: int
    lost_rows: list[Any]
    lost: int
    duplicated: int
    incomplete: int
    redelivered: int

    @classmethod
    def of(cls, load: Load, figures: dict[str, Any]) -> Counts:
        rows = figures["rows"]
        by_state = Counter(r.state for r in rows)
        lost_rows = [r for r in rows if r.state not in TERMINAL]
        return cls(
            submitted=len(load.jobs),
            completed=by_state.get("succeeded", 0),
            failed=by_state.get("failed", 0) + by_state.get("revoked", 0),
            lost_rows=lost_rows,
            lost=len(lost_rows) + len(load.jobs) - len(rows),
            duplicated=sum(len(figures[label]) for label in DUPLICATES),
            incomplete=len(figures["missing_vectors"]),
            redelivered=sum(1 for r in rows if (r.attempts or 0) > 1),
        )


#: `collect`'s checks that find a duplicate.
DUPLICATES = ("dup_finals", "dup_installs", "dup_embeddings", "extra_vectors")


def report(
    args: argparse.Namespace,
    load: Load,
    figures: dict[str, Any],
    sampler: Sampler,
    load_s: float,
    drain_s: float,
    home: Path,
) -> int:
    """Print the figures; the exit status (1 when anything was lost, duplicated or left
    incomplete)."""
    counts = Counts.of(load, figures)
    _print_counts(args, load, counts, load_s, drain_s)
    _print_latency(figures["rows"])
    print("  peak RSS (VmHWM)")
    for role, kib in sorted(sampler.peaks.items()):
        print(f"    {role:40s} {kib / 1024:8.1f} MiB")
    for name, pids in sorted(sampler.pool_pids.items()):
        print(f"    {name:40s} {len(pids):5d} pool processes seen")
    _print_problems(figures, counts, home)
    return 1 if counts.lost or counts.duplicated or counts.incomplete else 0


def _print_counts(
    args: argparse.Namespace, load: Load, counts: Counts, load_s: float, drain_s: float
) -> None:
    tasks = Counter(load.jobs.values())
    print(f"soak: {load_s:.0f} s of load + {drain_s:.0f} s to drain, {args.kill_every:g} s kills")
    print(
        f"  submitted      {counts.submitted:6d}  "
        f"({', '.join(f'{t} {n}' for t, n in tasks.items())})"
    )
    print(f"  completed      {counts.completed:6d}")
    print(f"  failed         {counts.failed:6d}")
    print(f"  lost           {counts.lost:6d}  (must be 0: not final, or no job row)")
    print(f"  duplicated     {counts.duplicated:6d}  (must be 0)")
    if counts.incomplete:
        print(f"  incomplete     {counts.incomplete:6d}  finished embeddings with missing vectors")
    print(f"  kills          {len(load.kills):6d}  pool children SIGKILLed")
    print(f"  redelivered    {counts.redelivered:6d}  jobs that ran more than once (attempts > 1)")
    if load.published:
        print(f"  hub updates    {len(load.published):6d}  versions published during the run")
    if load.refused:
        print(f"  not submitted  {sum(load.refused.values()):6d}  refused at enqueue")


def _print_latency(rows: list[Any]) -> None:
    latencies = [float(r.latency) for r in rows if r.latency is not None]
    print(
        f"  latency        p50 {percentile(latencies, 50):.2f} s, "
        f"p95 {percentile(latencies, 95):.2f} s, max {max(latencies, default=float('nan')):.2f} s"
        " (created -> finished)"
    )
    per_task: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.latency is not None:
            per_task[r.task].append(float(r.latency))
    for task, values in sorted(per_task.items()):
        print(
            f"    {task:26s} n={len(values):4d}  p50 {percentile(values, 50):6.2f} s  "
            f"p95 {percentile(values, 95):6.2f} s"
        )


def _print_problems(figures: dict[str, Any], counts: Counts, home: Path) -> None:
    """The failures' errors, lost and duplicated jobs, and leftovers under NLPHUB_HOME."""
    rows = figures["rows"]
    if counts.failed:
        errors = Counter((r.task, (r.error or "")[:160]) for r in rows if r.state != "succeeded")
        print("  failures")
        for (task, error), n in errors.most_common(10):
            print(f"    {n:4d} x {task}: {error}")
    for r in counts.lost_rows[:10]:
        print(f"  lost: {r.id} {r.task} state={r.state} attempts={r.attempts}")
    for label in DUPLICATES:
        for item in figures[label][:10]:
            print(f"  duplicated ({label}): {tuple(item)}")
    left = leftovers(home)
    if left:
        print(f"  leftovers under NLPHUB_HOME: {len(left)} (first: {left[:5]})")

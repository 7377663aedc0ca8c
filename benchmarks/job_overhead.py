"""N audited nlphub jobs vs N bare Celery no-op tasks, same broker, same worker, same run.

    python benchmarks/job_overhead.py [-n 2000] [--repeat 5] [--concurrency 2]

Starts embedded Postgres + Redis in a temp folder, one prefork worker, then measures:
- bare:   app.send_task("bench.noop") x N, until every result is stored;
- nlphub: nlphub.enqueue("nlphub.ping") x N (job row + audit + outbox publish), until every
          job row is `succeeded` (each job writes received, started, succeeded + audit events).
Runs `--repeat` rounds of both, alternating; prints each side's best rate, the machine's CPU
per task, and the ratio nlphub/bare (target >= 0.7). `--clients K` sends / enqueues from K
threads on both sides (default 1); each side also prints when its last send returned, which
shows when the one client's synchronous commits per job, not the worker, set the pace.
See docs/decisions.md, Benchmark method: job_overhead rounds and waiting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    celery_argv,
    child_env,
    embedded_servers,
    migrate,
    use_servers,
)

T = TypeVar("T")


def machine_busy() -> float:
    """CPU seconds this machine spent busy (all cores, all processes) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _roles(worker_pid: int) -> dict[int, str]:
    """This benchmark's processes (from /proc), by role."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                name, rest = f.read().rsplit(")", 1)
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        pid, ppid = int(entry), int(rest.split()[1])
        if pid == os.getpid():
            found[pid] = "client"
        elif pid == worker_pid:
            found[pid] = "worker main"
        elif ppid == worker_pid:
            found[pid] = "worker pool"
        elif "postgres" in cmd or "postgres" in name:
            found[pid] = "postgres"
        elif "redis" in cmd or "redis" in name:
            found[pid] = "redis"
    return found


def cpu_by_process_group(worker_pid: int) -> dict[str, float]:
    """CPU seconds so far of this benchmark's processes, by role."""
    tick = os.sysconf("SC_CLK_TCK")
    groups: dict[str, float] = {}
    for pid, role in _roles(worker_pid).items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        groups[role] = groups.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return groups


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    # Rounds of several seconds, five of them (see docs/decisions.md, Benchmark method:
    # job_overhead rounds and waiting).
    parser.add_argument("-n", type=int, default=2000, help="tasks / jobs per round")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5, help="rounds of bare + nlphub")
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        help="threads sending the tasks / enqueuing the jobs, on both sides (1)",
    )
    parser.add_argument(
        "--profile",
        choices=["bare", "nlphub"],
        help="run only this side, once, printing the worker's pids first (to attach a profiler)",
    )
    return parser


def _start_worker(concurrency: int) -> subprocess.Popen[bytes]:
    """One prefork worker on the default queue, with the bare task registered too."""
    argv = celery_argv("worker", "-Q", "default", "-c", str(concurrency), "-P", "prefork")
    argv += ["-l", "WARNING", "--include", "benchmarks.bare_tasks"]
    return subprocess.Popen(argv, cwd=ROOT, env=child_env(), start_new_session=True)


class _Sides:
    """The two sides of a round, each sending `n` tasks from `clients` threads and waiting for
    all of them: (seconds until every one is done, seconds until the last send returned)."""

    def __init__(self, clients: int) -> None:
        self.clients = clients

    def send_all(self, n: int, send: Callable[[], T]) -> list[T]:
        """`send` n times from `--clients` threads (one: this thread, no pool)."""
        if self.clients == 1:
            return [send() for _ in range(n)]
        shares = [n // self.clients + (i < n % self.clients) for i in range(self.clients)]
        with ThreadPoolExecutor(self.clients) as clients:
            parts = clients.map(lambda k: [send() for _ in range(k)], shares)
            return [item for part in parts for item in part]

    def bare(self, n: int) -> tuple[float, float]:
        """(seconds until every result is in, seconds until the last send returned)"""
        from workers.app import app

        start = time.perf_counter()
        results = self.send_all(n, lambda: app.send_task("bench.noop", queue="default"))
        sent = time.perf_counter() - start
        for r in results:
            r.get(timeout=300)
        return time.perf_counter() - start, sent

    def audited(self, n: int) -> tuple[float, float]:
        """(seconds until every job row is `succeeded`, seconds until the last enqueue)

        Waiting must cost little next to the work measured: every 20 ms it looks up the
        last job enqueued by its primary key, and counts the round's jobs only once that
        one succeeded (two pool processes run the jobs in about the order they were
        enqueued; see docs/decisions.md, Benchmark method: job_overhead rounds and
        waiting)."""
        from sqlalchemy import text
        from sqlmodel import Session

        import nlphub
        from schemas.db import get_engine

        start = time.perf_counter()
        ids = self.send_all(n, lambda: nlphub.enqueue("nlphub.ping", requested_by="bench"))
        sent = time.perf_counter() - start
        deadline = time.monotonic() + 600
        last = text("SELECT state = 'succeeded' FROM job WHERE id = :id")
        count = text("SELECT count(*) FROM job WHERE id = ANY(:ids) AND state = 'succeeded'")
        with Session(get_engine()) as session:
            while time.monotonic() < deadline:
                done = session.execute(last, {"id": ids[-1]}).scalar_one() and (
                    session.execute(count, {"ids": ids}).scalar_one() >= n
                )
                session.rollback()
                if done:
                    break
                time.sleep(0.02)
            else:
                raise SystemExit("nlphub jobs did not finish in time")
        return time.perf_counter() - start, sent


#: Per side, each round's (seconds, machine CPU seconds per task, seconds until all sent).
Runs = dict[str, list[tuple[float, float, float]]]
#: Per side, CPU seconds per task by process role (mean of the rounds).
Roles = dict[str, dict[str, float]]


def _measure(sides: _Sides, worker_pid: int, n: int, repeat: int) -> tuple[Runs, Roles]:
    """Alternate the two sides so that a slow spell of this (shared) machine hits both; each
    side's best run counts. CPU: all of the machine's busy time (/proc/stat) per task, which
    scheduling noise moves less than the rates, and each process role's."""
    runs: Runs = {"bare": [], "nlphub": []}
    roles: Roles = {"bare": {}, "nlphub": {}}
    for _ in range(repeat):
        for side, fn in (("bare", sides.bare), ("nlphub", sides.audited)):
            busy, by_role = machine_busy(), cpu_by_process_group(worker_pid)
            seconds, sent = fn(n)
            runs[side].append((seconds, (machine_busy() - busy) / n, sent))
            for role, cpu in cpu_by_process_group(worker_pid).items():
                spent = (cpu - by_role.get(role, 0.0)) / n / repeat
                roles[side][role] = roles[side].get(role, 0.0) + spent
    return runs, roles


def _report(args: argparse.Namespace, runs: Runs, roles: Roles) -> None:
    (t_bare, cpu_bare, s_bare) = min(runs["bare"])
    (t_nlphub, cpu_nlphub, s_nlphub) = min(runs["nlphub"])
    r_bare, r_nlphub = args.n / t_bare, args.n / t_nlphub
    print(f"{args.clients} client thread(s), {args.concurrency} pool processes")
    print(
        f"bare celery no-op : {r_bare:8.1f} tasks/s  ({args.n} in {t_bare:.2f}s, all sent "
        f"after {s_bare:.2f}s; CPU {cpu_bare * 1e3:.2f} ms/task)"
    )
    print(
        f"nlphub audited job: {r_nlphub:8.1f} jobs/s   ({args.n} in {t_nlphub:.2f}s, all "
        f"enqueued after {s_nlphub:.2f}s; CPU {cpu_nlphub * 1e3:.2f} ms/job)"
    )
    pairs = list(zip(runs["bare"], runs["nlphub"], strict=True))
    per_round = [x[0] / y[0] for x, y in pairs]
    for i, (x, y) in enumerate(pairs):
        print(
            f"  round {i + 1}: bare {args.n / x[0]:6.1f}/s, nlphub {args.n / y[0]:6.1f}/s, "
            f"ratio {x[0] / y[0]:.2f}"
        )
    print(
        f"ratio nlphub/bare : {r_nlphub / r_bare:.2f} best to best, "
        f"{statistics.median(per_round):.2f} median of the rounds  (target >= 0.7)"
    )
    print("CPU ms per task, by process (mean of the rounds): bare / nlphub")
    for role in sorted(roles["nlphub"], key=lambda r: -roles["nlphub"][r]):
        b, a = roles["bare"].get(role, 0.0) * 1e3, roles["nlphub"][role] * 1e3
        print(f"  {role:12s}: {b:5.2f} / {a:5.2f}  (+{a - b:.2f})")


def _profile(sides: _Sides, worker_pid: int, side: str, n: int) -> None:
    """One side, once, after printing the worker's pids (to attach a profiler)."""
    pool = [p for p, role in _roles(worker_pid).items() if role == "worker pool"]
    print(f"worker main {worker_pid}, pool {pool}", flush=True)
    seconds, _ = (sides.bare if side == "bare" else sides.audited)(n)
    print(f"{side}: {n / seconds:8.1f} per second")


def main() -> None:
    args = _parser().parse_args()
    base = Path(tempfile.mkdtemp(prefix="nlphub-bench-"))
    try:
        with embedded_servers(base) as (db_url, redis_url):
            assert redis_url is not None
            use_servers(db_url, redis_url, base / "home")
            migrate(db_url)
            worker = _start_worker(args.concurrency)
            try:
                sides = _Sides(args.clients)
                sides.bare(20)
                sides.audited(20)  # warm up both paths (worker pools, connections)
                if args.profile:
                    _profile(sides, worker.pid, args.profile, args.n)
                    return
                runs, roles = _measure(sides, worker.pid, args.n, args.repeat)
                _report(args, runs, roles)
            finally:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=60)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

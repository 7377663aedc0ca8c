"""Soak: a bounded mixed load on real worker processes, with pool children killed as it runs.

    python benchmarks/soak.py [--minutes 2] [--kill-every 15] [--rate 1.0] [--quick] [--keep]

Starts embedded Postgres + Redis in a temp folder (unless DATABASE_URL and REDIS_URL are set;
then those are used and only the jobs submitted here are counted), migrates, builds a small hub
mirror (`nlphub.hub.mirror.build_mirror`) and serves it on 127.0.0.1
(`nlphub.hub.server.MirrorServer`),
imports a small dataset, then starts one prefork worker per queue (``downloads``,
``embeddings``, ``default``) and a beat, as `nlphub up` does. The mirror sends each 64 KiB
after ``--hub-delay`` seconds, so a download lasts long enough to be killed.

For ``--minutes`` it submits, through `nlphub.enqueue`, about ``--rate`` jobs a second (never
more than ``--max-backlog`` unfinished): hub downloads (``redownload``, so a resource is fetched
again and again), bag-of-words embeddings of the dataset (PCA, pgvector) and update checks
(sync + compare; the mirror publishes a new compatible version now and then so that they find
some). Every ``--kill-every`` seconds it SIGKILLs a random worker pool child (of a worker
that is running one of the jobs, when one is). Then it waits (at most ``--drain`` seconds) for
every submitted job to finish, and prints:

- submitted, completed (succeeded), failed, lost (rows not in a final state: never run, or
  stuck), and the workers' kills;
- duplicated: jobs with more than one final audit event (``job.succeeded`` / ``job.failed``),
  download jobs that installed more than once, compute jobs that made more than one embedding,
  finished embeddings with more vectors than records (and, as incomplete, fewer);
- p50 / p95 / max latency, created -> finished, overall and per task;
- peak RSS (VmHWM, sampled from /proc every ``--sample`` seconds) of every process: this
  driver (which also serves the mirror), each worker's main process, the largest of its pool
  children (killed ones included) and beat.

Exits 1 when anything was lost, duplicated or left incomplete. Every process it started is
stopped and the temp folder removed (``--keep`` keeps it, with the worker logs).
``--quick`` is a 30 s run with a kill every 8 s (``tests/faults/test_soak.py`` runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import child_env  # noqa: E402
from tests.procs import children, descendants  # noqa: E402  (the same /proc walk)

log = logging.getLogger("soak")

LIBS = "spark-nlp=5.5.0,spark=3.5.0"
QUEUES = ("downloads", "embeddings", "default")
TERMINAL = ("succeeded", "failed", "revoked")
FINAL_ACTIONS = ("job.succeeded", "job.failed")
WORDS = (
    "model hub archive vector record token sentence label entity clinical drug dose patient "
    "football match goal striker league recipe soup bread oven pasta garlic curry laptop "
    "processor software update phone battery database server crash network cable"
).split()


# -- /proc ---------------------------------------------------------------------------------------


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM of a live process (its peak resident set so far), KiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


# -- the processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    is_worker: bool


@dataclass
class Sampler:
    """Peak RSS per process role, from /proc, on a thread."""

    procs: list[Proc]
    interval: float
    peaks: dict[str, int] = field(default_factory=dict)
    pool_pids: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    def _note(self, role: str, pid: int) -> None:
        value = peak_rss_kib(pid)
        if value is not None and value > self.peaks.get(role, 0):
            self.peaks[role] = value

    def sample(self) -> None:
        self._note("driver (+ mirror server)", os.getpid())
        for proc in self.procs:
            self._note(f"{proc.name} main", proc.popen.pid)
            for pid in descendants(proc.popen.pid):
                if proc.is_worker:
                    self.pool_pids[proc.name].add(pid)
                    self._note(f"{proc.name} pool child (largest)", pid)
                else:
                    self._note(f"{proc.name} child", pid)

    def run(self, stop: threading.Event) -> None:
        self.sample()
        while not stop.wait(self.interval):
            self.sample()


def start_process(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{name}.log"
    with path.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, path, is_worker=name.startswith("worker"))


def stop_processes(procs: list[Proc], timeout: float = 30.0) -> None:
    """SIGTERM each process group (warm shutdown), then SIGKILL what is left."""
    for proc in procs:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", proc.name, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)  # also any orphaned pool child
        proc.popen.wait()


def celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.app", *args]


# -- the load ------------------------------------------------------------------------------------


@dataclass
class Load:
    """What the soak submitted, and what it did to the workers."""

    jobs: dict[uuid.UUID, str] = field(default_factory=dict)
    kills: list[tuple[float, str, int]] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)


def mirror_resources(count: int, payload: int) -> list[Any]:
    from nlphub.hub.mirror import MirrorResource

    t0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    return [
        MirrorResource(
            name=f"soak_emb_{i}",
            language="en",
            lib_version="5.4.0",
            spark_version="3.4",
            annotator="WordEmbeddingsModel",
            time=t0 + timedelta(minutes=i),
            storage_ref=f"soak_emb_{i}",
            payload_bytes=payload,
        )
        for i in range(count)
    ]


def publish_update(folder: Path, load: Load, rng: random.Random, count: int, payload: int) -> None:
    """Publish the next compatible version (5.4.1 ... 5.4.9) of a random mirror resource."""
    from nlphub.hub.mirror import MirrorResource, build_mirror

    index = rng.randrange(count)
    name = f"soak_emb_{index}"
    done = sum(1 for p in load.published if p.startswith(f"{name} "))
    if done >= 9:
        return
    version = f"5.4.{done + 1}"
    build_mirror(
        folder,
        [
            MirrorResource(
                name=name,
                language="en",
                lib_version=version,
                spark_version="3.4",
                annotator="WordEmbeddingsModel",
                time=datetime(2024, 6, 1, tzinfo=UTC) + timedelta(hours=index, minutes=done),
                storage_ref=name,
                payload_bytes=payload,
            )
        ],
    )
    load.published.append(f"{name} {version}")


def import_dataset(base: Path, records: int, rng: random.Random) -> None:
    from nlphub.embeddings.service import import_records
    from schemas.db import session_scope

    path = base / "soak.jsonl"
    with path.open("w") as fh:
        for i in range(records):
            words = rng.choices(WORDS, k=rng.randint(4, 14))
            fh.write(json.dumps({"id": f"r{i}", "text": " ".join(words)}) + "\n")
    with session_scope() as session:
        import_records(session, path, dataset="soak", actor="soak")


def backlog(ids: list[uuid.UUID]) -> int:
    from sqlalchemy import text

    from schemas.db import get_engine

    if not ids:
        return 0
    with get_engine().connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM job WHERE id = ANY(:ids) AND NOT state = ANY(:t)"),
                {"ids": ids, "t": list(TERMINAL)},
            ).scalar_one()
        )


def submit_one(load: Load, rng: random.Random, resources: int, dims: int) -> None:
    import nlphub
    from nlphub.errors import NlphubError

    roll = rng.random()
    try:
        if roll < 0.5:
            task = "nlphub.download"
            payload: dict[str, Any] = {
                "name": f"soak_emb_{rng.randrange(resources)}",
                "redownload": True,
            }
        elif roll < 0.75:
            task = "nlphub.compute_embeddings"
            payload = {
                "dataset": "soak",
                "attribute": "text",
                "platform": "bow",
                "model": "tfidf",
                "dims": dims,
            }
        else:
            task = "nlphub.check_updates"
            payload = {"reason": "manual"}
        job_id = nlphub.enqueue(task, payload, requested_by="soak")
    except NlphubError as exc:  # e.g. a download refused up front; not a job
        load.refused[type(exc).__name__] += 1
        log.info("not submitted: %s", exc)
        return
    load.jobs[job_id] = task


def busy_workers() -> set[str]:
    """The workers (process names) running one of the jobs now, from the job rows."""
    from sqlalchemy import text

    from schemas.db import get_engine

    with get_engine().connect() as conn:
        hosts = conn.execute(
            text("SELECT DISTINCT worker FROM job WHERE state = 'started' AND worker IS NOT NULL")
        ).scalars()
        return {f"worker-{h.split('@')[0].removeprefix('soak-')}" for h in hosts}


def killer(
    procs: list[Proc], every: float, load: Load, rng: random.Random, stop: threading.Event
) -> None:
    """Every ``every`` seconds SIGKILL a random pool child, of a worker running a job: it
    waits up to ``every`` seconds more for one (an idle child's death tests little), then
    takes any."""
    started = time.monotonic()
    while not stop.wait(every):
        wait_until = time.monotonic() + every
        busy = busy_workers()
        while not busy and time.monotonic() < wait_until and not stop.wait(0.05):
            busy = busy_workers()
        pool = [(p.name, pid) for p in procs if p.is_worker for pid in children(p.popen.pid)]
        pool = [item for item in pool if item[0] in busy] or pool
        if not pool:
            log.warning("no pool child to kill")
            continue
        name, pid = rng.choice(pool)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            load.kills.append((time.monotonic() - started, name, pid))
            log.info("killed %s pool child %d%s", name, pid, " (busy)" if name in busy else "")


# -- the figures ---------------------------------------------------------------------------------


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


def wait_drained(ids: list[uuid.UUID], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if backlog(ids) == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def leftovers(home: Path) -> list[str]:
    return sorted(
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.name.endswith(".partial")
        or p.name.startswith((".staging-", ".trash-"))
        or (p.parent.name == "downloads" and p.is_file())
    )


def report(
    args: argparse.Namespace,
    load: Load,
    figures: dict[str, Any],
    sampler: Sampler,
    load_s: float,
    drain_s: float,
    home: Path,
) -> int:
    rows = figures["rows"]
    by_state = Counter(r.state for r in rows)
    submitted = len(load.jobs)
    completed = by_state.get("succeeded", 0)
    failed = by_state.get("failed", 0) + by_state.get("revoked", 0)
    lost_rows = [r for r in rows if r.state not in TERMINAL]
    missing_rows = submitted - len(rows)
    lost = len(lost_rows) + missing_rows
    duplicated = (
        len(figures["dup_finals"])
        + len(figures["dup_installs"])
        + len(figures["dup_embeddings"])
        + len(figures["extra_vectors"])
    )
    incomplete = len(figures["missing_vectors"])
    redelivered = sum(1 for r in rows if (r.attempts or 0) > 1)
    tasks = Counter(load.jobs.values())

    print(f"soak: {load_s:.0f} s of load + {drain_s:.0f} s to drain, {args.kill_every:g} s kills")
    print(f"  submitted      {submitted:6d}  ({', '.join(f'{t} {n}' for t, n in tasks.items())})")
    print(f"  completed      {completed:6d}")
    print(f"  failed         {failed:6d}")
    print(f"  lost           {lost:6d}  (must be 0: not final, or no job row)")
    print(f"  duplicated     {duplicated:6d}  (must be 0)")
    if incomplete:
        print(f"  incomplete     {incomplete:6d}  finished embeddings with missing vectors")
    print(f"  kills          {len(load.kills):6d}  pool children SIGKILLed")
    print(f"  redelivered    {redelivered:6d}  jobs that ran more than once (attempts > 1)")
    if load.published:
        print(f"  hub updates    {len(load.published):6d}  versions published during the run")
    if load.refused:
        print(f"  not submitted  {sum(load.refused.values()):6d}  refused at enqueue")
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
    print("  peak RSS (VmHWM)")
    for role, kib in sorted(sampler.peaks.items()):
        print(f"    {role:40s} {kib / 1024:8.1f} MiB")
    for name, pids in sorted(sampler.pool_pids.items()):
        print(f"    {name:40s} {len(pids):5d} pool processes seen")
    if failed:
        errors = Counter((r.task, (r.error or "")[:160]) for r in rows if r.state != "succeeded")
        print("  failures")
        for (task, error), n in errors.most_common(10):
            print(f"    {n:4d} x {task}: {error}")
    for r in lost_rows[:10]:
        print(f"  lost: {r.id} {r.task} state={r.state} attempts={r.attempts}")
    for label in ("dup_finals", "dup_installs", "dup_embeddings", "extra_vectors"):
        for item in figures[label][:10]:
            print(f"  duplicated ({label}): {tuple(item)}")
    left = leftovers(home)
    if left:
        print(f"  leftovers under NLPHUB_HOME: {len(left)} (first: {left[:5]})")
    return 1 if lost or duplicated or incomplete else 0


# -- main ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(base: Path) -> Iterator[tuple[str, str]]:
    """DATABASE_URL / REDIS_URL when both are set, else embedded ones under ``base``."""
    from workers.embedded import EmbeddedPostgres, EmbeddedRedis

    db_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    pg = redis = None
    try:
        if not (db_url and redis_url):
            pg, redis = EmbeddedPostgres(base / "pg"), EmbeddedRedis(base / "redis")
            db_url, redis_url = pg.start(), redis.start()
        yield db_url, redis_url
    finally:
        from schemas.db import dispose_engines

        dispose_engines()
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="length of the load")
    parser.add_argument("--kill-every", type=float, default=15.0, help="seconds between kills")
    parser.add_argument("--rate", type=float, default=1.0, help="jobs submitted per second")
    parser.add_argument("--max-backlog", type=int, default=12, help="unfinished jobs at most")
    parser.add_argument("--drain", type=float, default=240.0, help="seconds to wait at the end")
    parser.add_argument("--resources", type=int, default=6, help="resources in the mirror")
    parser.add_argument("--payload-kb", type=int, default=1024, help="model data per resource")
    parser.add_argument(
        "--hub-delay", type=float, default=0.03, help="mirror: seconds before each 64 KiB chunk"
    )
    parser.add_argument("--records", type=int, default=300, help="records in the dataset")
    parser.add_argument("--publish-every", type=float, default=20.0, help="s between updates")
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="30 s of load, a kill every 8 s")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder and logs")
    args = parser.parse_args()
    # SIGTERM (a test's timeout, a CI cancel) unwinds like Ctrl+C: every process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.minutes, args.kill_every, args.publish_every = 0.5, 8.0, 10.0
    logging.basicConfig(
        level=os.environ.get("SOAK_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="nlphub-soak-"))
    procs: list[Proc] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        with servers(base) as (db_url, redis_url):
            try:
                return run(args, rng, base, db_url, redis_url, procs, stop, threads)
            finally:  # the workers go before the servers they use
                stop.set()
                for thread in threads:
                    thread.join(timeout=10)
                stop_processes(procs)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def run(
    args: argparse.Namespace,
    rng: random.Random,
    base: Path,
    db_url: str,
    redis_url: str,
    procs: list[Proc],
    stop: threading.Event,
    threads: list[threading.Thread],
) -> int:
    home = base / "home"
    folder = base / "mirror"
    payload = args.payload_kb * 1024
    from nlphub.hub.mirror import build_mirror
    from nlphub.hub.server import MirrorServer

    build_mirror(folder, mirror_resources(args.resources, payload))
    with MirrorServer(folder) as mirror:
        mirror.faults.delay_per_chunk = args.hub_delay  # a download takes a while: kills hit it
        os.environ.update(
            {
                "DATABASE_URL": db_url,
                "REDIS_URL": redis_url,
                "NLPHUB_HOME": str(home),
                "NLPHUB_HUB_URLS": mirror.url,
                "NLPHUB_LICENSED_HUB_URLS": "",
                "NLPHUB_LIBRARY_VERSIONS": LIBS,
                "NLPHUB_LOG_LEVEL": "WARNING",
                "NLPHUB_HEARTBEAT": "10",
                "NLPHUB_OUTBOX_GRACE": "5",
                "NLPHUB_OUTBOX_REPUBLISH_AFTER": "60",
                "NLPHUB_VISIBILITY_TIMEOUT": "600",
                "NLPHUB_UPDATE_CHECK_CRONTAB": "0 3 * * *",
                "HF_HUB_OFFLINE": "1",
            }
        )
        from schemas.db import upgrade
        from schemas.settings import get_settings
        from workers.app import configure

        get_settings.cache_clear()
        configure(get_settings())
        upgrade(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
        from nlphub.hub.sync import sync_hubs

        synced = sync_hubs("soak")
        if synced["errors"]:
            raise SystemExit(f"the mirror could not be read: {synced['errors']}")
        import_dataset(base, args.records, rng)

        env = child_env()
        logs = base / "logs"
        for queue in QUEUES:
            concurrency = "2" if queue == "default" else "1"
            argv = celery("worker", "-Q", queue, "-c", concurrency, "-P", "prefork")
            argv += ["-n", f"soak-{queue}@%h", "-l", "WARNING"]
            procs.append(start_process(f"worker-{queue}", argv, env, logs))
        beat = celery("beat", "-s", str(base / "celerybeat-schedule"), "-l", "WARNING")
        procs.append(start_process("beat", beat, env, logs))
        deadline = time.monotonic() + 180
        while not all(children(p.popen.pid) for p in procs if p.is_worker):
            dead = [p.name for p in procs if p.popen.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise SystemExit(f"workers did not start ({dead or 'timeout'}); see {logs}")
            time.sleep(0.2)

        sampler = Sampler(procs, args.sample)
        load = Load()
        threads.append(threading.Thread(target=sampler.run, args=(stop,), name="rss", daemon=True))
        kill_rng = random.Random(args.seed + 1)
        threads.append(
            threading.Thread(
                target=killer,
                args=(procs, args.kill_every, load, kill_rng, stop),
                name="killer",
                daemon=True,
            )
        )
        for thread in threads:
            thread.start()

        started = time.monotonic()
        end = started + args.minutes * 60
        next_publish = started + args.publish_every
        ids: list[uuid.UUID] = []
        while time.monotonic() < end:
            tick = time.monotonic()
            if tick >= next_publish:
                publish_update(folder, load, rng, args.resources, payload)
                next_publish += args.publish_every
            if backlog(ids) < args.max_backlog:
                submit_one(load, rng, args.resources, dims=8)
                ids = list(load.jobs)
            time.sleep(max(0.0, 1.0 / args.rate - (time.monotonic() - tick)))
        load_s = time.monotonic() - started
        stop.set()  # no more kills
        for thread in threads:
            thread.join(timeout=10)
        threads.clear()
        drained = threading.Event()
        threads.append(
            threading.Thread(target=sampler.run, args=(drained,), name="rss-drain", daemon=True)
        )
        threads[0].start()
        drain_s = wait_drained(ids, args.drain)
        drained.set()
        threads[0].join(timeout=10)
        sampler.sample()
        dead = [p.name for p in procs if p.popen.poll() is not None]
        if dead:
            print(f"  processes that died (not pool children): {dead}")
        figures = collect(ids)
        return report(args, load, figures, sampler, load_s, drain_s, home)


if __name__ == "__main__":
    sys.exit(main())

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
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    celery_argv,
    child_env,
    embedded_servers,
    use_mirror,
)
from benchmarks.soak_figures import TERMINAL, Load, collect, report  # noqa: E402
from benchmarks.soak_procs import Proc, Sampler, start_process, stop_processes  # noqa: E402
from tests.procs import children  # noqa: E402  (the same /proc walk)

log = logging.getLogger("soak")

QUEUES = ("downloads", "embeddings", "default")
WORDS = (
    "model hub archive vector record token sentence label entity clinical drug dose patient "
    "football match goal striker league recipe soup bread oven pasta garlic curry laptop "
    "processor software update phone battery database server crash network cable"
).split()


# -- the load ------------------------------------------------------------------------------------


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
    from nlphub.embeddings.records import import_records
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


def wait_drained(ids: list[uuid.UUID], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if backlog(ids) == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - started


# -- main ----------------------------------------------------------------------------------------


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
        with embedded_servers(base, from_env=True) as (db_url, redis_url):
            assert redis_url is not None
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
        prepare(db_url, redis_url, home, mirror.url)
        import_dataset(base, args.records, rng)
        start_workers(base, procs)
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
        load_s, ids = submit_load(args, rng, folder, load)
        stop.set()  # no more kills
        for thread in threads:
            thread.join(timeout=10)
        threads.clear()
        drain_s = drain(args, ids, sampler, threads)
        dead = [p.name for p in procs if p.popen.poll() is not None]
        if dead:
            print(f"  processes that died (not pool children): {dead}")
        figures = collect(ids)
        return report(args, load, figures, sampler, load_s, drain_s, home)


def prepare(db_url: str, redis_url: str, home: Path, hub_url: str) -> None:
    """Point this process (and the workers it starts) at the servers and the mirror, migrate,
    read the mirror's catalog, and point the Celery app at the servers."""
    use_mirror(
        db_url,
        redis_url,
        home,
        hub_url,
        actor="soak",
        failure="the mirror could not be read",
        NLPHUB_HEARTBEAT="10",
        NLPHUB_OUTBOX_GRACE="5",
        NLPHUB_OUTBOX_REPUBLISH_AFTER="60",
        NLPHUB_VISIBILITY_TIMEOUT="600",
        NLPHUB_UPDATE_CHECK_CRONTAB="0 3 * * *",
        HF_HUB_OFFLINE="1",
    )
    from schemas.settings import get_settings
    from workers.app import configure

    configure(get_settings())


def start_workers(base: Path, procs: list[Proc]) -> None:
    """One prefork worker per queue and a beat, as `nlphub up` runs them; returns once every
    worker has its pool."""
    env = child_env()
    logs = base / "logs"
    for queue in QUEUES:
        concurrency = "2" if queue == "default" else "1"
        argv = celery_argv("worker", "-Q", queue, "-c", concurrency, "-P", "prefork")
        argv += ["-n", f"soak-{queue}@%h", "-l", "WARNING"]
        procs.append(start_process(f"worker-{queue}", argv, env, logs))
    beat = celery_argv("beat", "-s", str(base / "celerybeat-schedule"), "-l", "WARNING")
    procs.append(start_process("beat", beat, env, logs))
    deadline = time.monotonic() + 180
    while not all(children(p.popen.pid) for p in procs if p.is_worker):
        dead = [p.name for p in procs if p.popen.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise SystemExit(f"workers did not start ({dead or 'timeout'}); see {logs}")
        time.sleep(0.2)


def submit_load(
    args: argparse.Namespace, rng: random.Random, folder: Path, load: Load
) -> tuple[float, list[uuid.UUID]]:
    """About ``--rate`` jobs a second for ``--minutes`` (at most ``--max-backlog``
    unfinished), a mirror update every ``--publish-every`` seconds: (seconds, job ids)."""
    payload = args.payload_kb * 1024
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
    return time.monotonic() - started, ids


def drain(
    args: argparse.Namespace,
    ids: list[uuid.UUID],
    sampler: Sampler,
    threads: list[threading.Thread],
) -> float:
    """Wait (at most ``--drain`` seconds) for every job to finish, still sampling RSS; the
    seconds it took."""
    drained = threading.Event()
    threads.append(
        threading.Thread(target=sampler.run, args=(drained,), name="rss-drain", daemon=True)
    )
    threads[0].start()
    drain_s = wait_drained(ids, args.drain)
    drained.set()
    threads[0].join(timeout=10)
    sampler.sample()
    return drain_s


if __name__ == "__main__":
    sys.exit(main())

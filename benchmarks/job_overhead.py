"""N audited nlphub jobs vs N bare Celery no-op tasks, same broker, same worker, same run.

    python benchmarks/job_overhead.py [-n 500] [--concurrency 2]

Starts embedded Postgres + Redis in a temp folder, one prefork worker, then measures:
- bare:   app.send_task("bench.noop") x N, until every result is stored;
- nlphub: nlphub.enqueue("nlphub.ping") x N (job row + audit + outbox publish), until every
          job row is `succeeded` (each job writes received, started, succeeded + audit events).
Prints both rates and the ratio nlphub/bare (target >= 0.7).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="nlphub-bench-"))
    from workers.embedded import EmbeddedPostgres, EmbeddedRedis

    pg, redis = EmbeddedPostgres(base / "pg"), EmbeddedRedis(base / "redis")
    db_url, redis_url = pg.start(), redis.start()
    os.environ.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "NLPHUB_HOME": str(base / "home"),
            "NLPHUB_LOG_LEVEL": "WARNING",
        }
    )
    from schemas.db import upgrade

    upgrade(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            "default",
            "-c",
            str(args.concurrency),
            "-P",
            "prefork",
            "-l",
            "WARNING",
            "--include",
            "benchmarks.bare_tasks",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    try:
        from sqlalchemy import text
        from sqlmodel import Session

        import nlphub
        from schemas.db import get_engine
        from workers.app import app

        def bare(n: int) -> float:
            start = time.perf_counter()
            results = [app.send_task("bench.noop", queue="default") for _ in range(n)]
            for r in results:
                r.get(timeout=300)
            return time.perf_counter() - start

        def audited(n: int) -> float:
            start = time.perf_counter()
            ids = [nlphub.enqueue("nlphub.ping", requested_by="bench") for _ in range(n)]
            deadline = time.monotonic() + 600
            with Session(get_engine()) as session:
                while time.monotonic() < deadline:
                    done = session.execute(
                        text(
                            "SELECT count(*) FROM job WHERE state = 'succeeded' AND id = ANY(:ids)"
                        ),
                        {"ids": ids},
                    ).scalar_one()
                    session.rollback()
                    if done == n:
                        break
                    time.sleep(0.02)
                else:
                    raise SystemExit("nlphub jobs did not finish in time")
            return time.perf_counter() - start

        bare(20)
        audited(20)  # warm up both paths (worker pools, connections)
        t_bare = bare(args.n)
        t_nlphub = audited(args.n)
        t_bare2 = bare(args.n)
        t_bare = min(t_bare, t_bare2)
        r_bare, r_nlphub = args.n / t_bare, args.n / t_nlphub
        print(f"bare celery no-op : {r_bare:8.1f} tasks/s  ({args.n} in {t_bare:.2f}s)")
        print(f"nlphub audited job: {r_nlphub:8.1f} jobs/s   ({args.n} in {t_nlphub:.2f}s)")
        print(f"ratio nlphub/bare : {r_nlphub / r_bare:.2f}  (target >= 0.7)")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        from schemas.db import dispose_engines

        dispose_engines()
        redis.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

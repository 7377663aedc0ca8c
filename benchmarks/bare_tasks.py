"""A bare Celery task on nlphub's app: the baseline for benchmarks/job_overhead.py."""

from workers.app import app


@app.task(name="bench.noop")
def noop() -> None:
    return None

"""A bare Celery task on nlphub's app: the baseline for benchmarks/job_overhead.py."""

from nlphub.messaging.consumer import accept
from workers.app import app


@app.task(name="bench.noop")
def noop() -> None:
    return None


accept("bench.noop")  # workers run nlphub.* tasks only, unless told (nlphub.messaging.consumer)

"""Entry point of the Celery app (`celery -A workers.app`): the app with every task registered.

The worker, beat, Flower (`/api/task/async-apply/<name>`) and every process that imports this
module know the same task names.
"""

from __future__ import annotations

import tasks.embeddings
import tasks.hub
import tasks.maintenance
import tasks.preannotation
import tasks.resources
import tasks.rules
import tasks.uploads  # noqa: F401
from workers.celery_app import LONG_QUEUES, Queue, app, build_config, configure

__all__ = ["LONG_QUEUES", "Queue", "app", "build_config", "configure"]

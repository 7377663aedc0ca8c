"""Celery plumbing every sender shares: the app and its configuration (`app`), kombu's Redis
transport made safe to close (`transport`), the result backend (`results`).

Below the tasks on purpose: `nlphub.enqueue` and the reconciler send a task by name without
importing any task module; `workers.app` registers the tasks on this same app.
"""

"""Thin Celery tasks: validate the payload, call one domain function, decide retries (`base`)."""

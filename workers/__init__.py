"""The processes: the Celery entry point (`app`), the CLI (`cli`), `nlphub up` (`stack`), and
the embedded Postgres and Redis (`embedded`)."""

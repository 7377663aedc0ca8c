"""The doctor's checks of the running services: the database (reachable, migrated), the broker,
a worker on every queue, one active beat, and Flower."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nlphub.beat import BeatSession
from nlphub.doctor.core import Context, Finding, fail, ok, one_line
from schemas.settings import SettingsError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "broker_check",
    "database_check",
    "database_engine",
    "flower_check",
    "judge_beats",
    "judge_broker",
    "judge_database",
    "judge_flower",
    "judge_workers",
    "workers_check",
]

_ENGINE_LOCK = threading.Lock()


# -- database ------------------------------------------------------------------------------------


def database_engine(ctx: Context) -> Engine:
    """The doctor's own engine (made once per run): no pool kept, connecting and each statement
    bounded by the per-check timeout, named ``nlphub-doctor`` in ``pg_stat_activity``.

    Raises:
        SettingsError: no DATABASE_URL and no running `nlphub up`.
    """
    with _ENGINE_LOCK:
        engine: Engine | None = ctx.shared.get("engine")
        if engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            url = ctx.settings.require_database_url()
            seconds = max(1, int(ctx.timeout))
            engine = create_engine(
                url,
                poolclass=NullPool,
                connect_args={
                    "application_name": "nlphub-doctor",
                    "connect_timeout": seconds,
                    "options": f"-c statement_timeout={seconds * 1000}",
                },
            )
            ctx.shared["engine"] = engine
        return engine


def _where(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host") or "local socket"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{host}{port}/{parsed.database or ''}"


def judge_database(
    *,
    where: str | None,
    setting_error: str | None = None,
    error: str | None = None,
    current: str | None = None,
    head: str = "",
) -> Finding:
    """Reachable (no `error`) and at the code's revision (`current` == `head`)."""
    if setting_error is not None:
        return fail(
            "database",
            setting_error,
            "set DATABASE_URL (postgresql://…), or start the stack with `nlphub up`",
        )
    if error is not None:
        return fail(
            "database",
            f"unreachable at {where}: {error}",
            "start Postgres (or `nlphub up`), or correct DATABASE_URL",
        )
    if current != head:
        state = "empty (no schema)" if current is None else f"at revision {current}"
        return fail(
            "database",
            f"reachable at {where} but {state}; this code needs revision {head}",
            "run `nlphub db upgrade`",
        )
    return ok("database", f"reachable at {where}, migrated (revision {head})")


def database_check(ctx: Context) -> list[Finding]:
    from schemas.db import current_revision, head_revision

    try:
        url = ctx.settings.require_database_url()
    except SettingsError as exc:
        return [judge_database(where=None, setting_error=str(exc))]
    where = _where(url)
    head = head_revision()
    try:
        current = current_revision(database_engine(ctx))
    except Exception as exc:
        return [judge_database(where=where, error=one_line(exc), head=head)]
    return [judge_database(where=where, current=current, head=head)]


# -- broker --------------------------------------------------------------------------------------


def judge_broker(
    *, where: str | None, setting_error: str | None = None, error: str | None = None
) -> Finding:
    if setting_error is not None:
        return fail(
            "broker",
            setting_error,
            "set REDIS_URL (redis://…), or start the stack with `nlphub up`",
        )
    if error is not None:
        return fail(
            "broker",
            f"Redis unreachable at {where}: {error}",
            "start Redis (or `nlphub up`), or correct REDIS_URL",
        )
    return ok("broker", f"Redis answers at {where}")


def _redis_where(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "redis+socket":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


def _celery_app(ctx: Context) -> Any:
    """The Celery app, pointed at this run's settings' broker."""
    from nlphub.messaging.app import app, configure

    with _ENGINE_LOCK:
        if not ctx.shared.get("celery_configured"):
            configure(ctx.settings)
            ctx.shared["celery_configured"] = True
    return app


def broker_check(ctx: Context) -> list[Finding]:
    try:
        url = ctx.settings.require_redis_url()
    except SettingsError as exc:
        return [judge_broker(where=None, setting_error=str(exc))]
    where = _redis_where(url)
    try:
        app = _celery_app(ctx)
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=ctx.timeout)
            conn.default_channel.client.ping()
    except Exception as exc:
        return [judge_broker(where=where, error=one_line(exc))]
    return [judge_broker(where=where)]


# -- workers -------------------------------------------------------------------------------------


def judge_workers(
    queues: Sequence[str], replies: Mapping[str, Iterable[Mapping[str, Any]]] | None
) -> list[Finding]:
    """One finding per queue nlphub defines: which workers consume it (from
    `inspect().active_queues()`'s `replies`, worker → its queues), or that none does."""
    consumers: dict[str, list[str]] = {q: [] for q in queues}
    for worker, active in (replies or {}).items():
        for declared in active or ():
            consumed = declared.get("name")
            if consumed in consumers:
                consumers[consumed].append(worker)
    findings = []
    for queue in queues:
        name = f"worker: {queue}"
        workers = sorted(consumers[queue])
        if workers:
            findings.append(ok("workers", f"answered by {', '.join(workers)}", name=name))
        else:
            findings.append(
                fail(
                    "workers",
                    f"no worker consumes queue {queue!r}: its jobs wait forever",
                    f"start one: `nlphub worker -Q {queue}` (or `nlphub up`)",
                    name=name,
                )
            )
    return findings


def workers_check(ctx: Context) -> list[Finding]:
    from nlphub.messaging.app import Queue

    app = _celery_app(ctx)
    wait = max(0.5, min(2.0, ctx.timeout / 2))
    replies = app.control.inspect(timeout=wait).active_queues()
    return judge_workers([q.value for q in Queue], replies)


# -- beat ----------------------------------------------------------------------------------------


def judge_beats(sessions: Sequence[BeatSession]) -> Finding:
    """Exactly one beat, and it holds the lock (is active)."""
    active = [s for s in sessions if s.active]
    if not sessions:
        return fail(
            "beat",
            "no beat is running: nothing scheduled runs (outbox reconciler, inventory, "
            "update checks, audit anchors)",
            "start one: `nlphub beat` (or `nlphub up`)",
        )
    if len(sessions) > 1:
        listed = ", ".join(f"{s.who} ({'active' if s.active else 'standby'})" for s in sessions)
        return fail(
            "beat",
            f"{len(sessions)} beats are running: {listed}",
            "stop all but one (each `nlphub up` starts a beat; use `nlphub up --no-beat` "
            "for the others)",
        )
    if not active:
        return fail(
            "beat",
            f"a beat runs ({sessions[0].who}) but does not hold the beat lock yet",
            "wait a few seconds and run the doctor again; if it stays so, restart the beat",
        )
    return ok("beat", f"one beat, active: {active[0].who}")


def beat_check(ctx: Context) -> list[Finding]:
    from nlphub.beat import beat_sessions

    with database_engine(ctx).connect() as conn:
        return [judge_beats(beat_sessions(conn))]


# -- Flower --------------------------------------------------------------------------------------


def flower_url(ctx: Context) -> str:
    """Flower's health URL: its configured address (a wildcard one probed on the loopback)."""
    host = ctx.settings.flower_address
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{ctx.settings.flower_port}/healthcheck"


def judge_flower(
    url: str, *, status: int | None = None, body: str = "", error: str | None = None
) -> Finding:
    if error is not None:
        return fail(
            "flower",
            f"no answer at {url}: {error}",
            "start it: `nlphub flower` (or `nlphub up`); or set NLPHUB_FLOWER_ADDRESS / "
            "NLPHUB_FLOWER_PORT to where it runs; `--skip flower` if you run without it",
        )
    if status != 200:
        return fail(
            "flower",
            f"{url} answered HTTP {status}",
            "something else listens there, or Flower is unwell: see its log",
        )
    return ok("flower", f"up at {url.removesuffix('/healthcheck')} ({body.strip()[:20] or 'OK'})")


def flower_check(ctx: Context) -> list[Finding]:
    import httpx

    url = flower_url(ctx)
    try:
        reply = httpx.get(url, timeout=ctx.timeout)
    except httpx.HTTPError as exc:
        return [judge_flower(url, error=one_line(exc) or type(exc).__name__)]
    return [judge_flower(url, status=reply.status_code, body=reply.text)]

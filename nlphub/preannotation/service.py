"""Pre-annotation servers and their redeploys.

A change to a rule, or installing / updating / deleting a model, that a server uses records a
pending redeploy for that server ("Redeploy preannotation server to apply these changes").
Beat calls `run_redeploys`: each server whose last change is older than the debounce window is
redeployed once, however many changes piled up (debounce), through its HTTP endpoint; a
failure stays pending with its error, visible in `nlphub redeploys`, and is retried. The
endpoint is called with no transaction open (a change requested meanwhile never waits for it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, text
from sqlmodel import Session, col, select

from nlphub import audit
from nlphub.errors import NotFound, Refused
from schemas.db import autocommit_engine
from schemas.models import PreannotationServer, Redeploy, Resource, utcnow
from schemas.states import RESOURCE_ON_DISK

log = logging.getLogger(__name__)

MAX_MODELS = 5
REDEPLOY_MESSAGE = "Redeploy preannotation server to apply these changes"


def _embeddings_of(session: Session, model: str) -> frozenset[str]:
    rows = session.exec(
        select(Resource).where(
            Resource.name == model, col(Resource.state).in_([s.value for s in RESOURCE_ON_DISK])
        )
    ).all()
    deps: set[str] = set()
    for row in rows:
        deps.update(row.dependencies)
    return frozenset(deps)


def check_server_config(session: Session, models: list[str]) -> None:
    """At most 5 models, and no mixing of models trained on different embeddings."""
    if len(models) > MAX_MODELS:
        raise Refused(
            f"a pre-annotation server takes at most {MAX_MODELS} models ({len(models)} given)"
        )
    if len(set(models)) != len(models):
        raise Refused("a model is listed twice")
    trained_on = {m: _embeddings_of(session, m) for m in models}
    distinct = {deps for deps in trained_on.values() if deps}
    if len(distinct) > 1:
        detail = ", ".join(
            f"{m} on {'+'.join(sorted(d)) or 'none'}" for m, d in sorted(trained_on.items())
        )
        raise Refused(f"models trained on different embeddings cannot share a server: {detail}")


def set_server(
    session: Session, *, name: str, url: str, models: list[str], rules: list[str], actor: str
) -> PreannotationServer:
    if not url.startswith(("http://", "https://")):
        raise Refused(f"server URL {url!r} must be http:// or https://")
    check_server_config(session, models)
    server = session.exec(
        select(PreannotationServer).where(PreannotationServer.name == name)
    ).first()
    if server is None:
        server = PreannotationServer(name=name, url=url.rstrip("/"), models=models, rules=rules)
    else:
        server.url, server.models, server.rules = url.rstrip("/"), models, rules
        server.updated_at = utcnow()
    session.add(server)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="server.configured",
        target=name,
        details={"url": server.url, "models": models, "rules": rules},
    )
    return server


def _pending_for(session: Session, server: PreannotationServer) -> Redeploy:
    pending = session.exec(
        select(Redeploy)
        .where(Redeploy.server_id == server.id, Redeploy.state == "pending")
        .with_for_update()
    ).first()
    if pending is None:
        pending = Redeploy(server_id=server.id)
    return pending


def request_redeploys(
    session: Session,
    *,
    rules: Iterable[str] = (),
    models: Iterable[str] = (),
    reason: str,
    actor: str,
) -> list[str]:
    """Record a pending redeploy for every server using one of `rules` / `models`. Returns
    the affected servers' names (what the UI shows with REDEPLOY_MESSAGE)."""
    rule_set, model_set = set(rules), set(models)
    affected = []
    for server in session.exec(select(PreannotationServer)).all():
        if not (rule_set & set(server.rules) or model_set & set(server.models)):
            continue
        pending = _pending_for(session, server)
        pending.reasons = [*pending.reasons, reason][-50:]
        pending.last_change_at = utcnow()
        session.add(pending)
        affected.append(server.name)
        audit.record(
            session,
            actor=actor,
            action="redeploy.requested",
            target=server.name,
            details={"reason": reason, "message": REDEPLOY_MESSAGE},
        )
    session.flush()
    return affected


@dataclass
class RedeployOutcome:
    server: str
    ok: bool
    detail: str


def redeploy_server(
    server: PreannotationServer, *, client: httpx.Client, attempts: int = 3, backoff: float = 0.5
) -> RedeployOutcome:
    """POST <url>/redeploy with retries (backoff) on network errors and 5xx."""
    import time

    last = ""
    for attempt in range(attempts):
        try:
            response = client.post(
                f"{server.url}/redeploy",
                json={"server": server.name, "models": server.models, "rules": server.rules},
            )
            if response.status_code < 400:
                return RedeployOutcome(server.name, True, f"HTTP {response.status_code}")
            last = f"HTTP {response.status_code}"
            if response.status_code < 500:
                break
        except httpx.HTTPError as exc:
            last = f"{exc.__class__.__name__}: {exc}"
        if attempt + 1 < attempts:
            time.sleep(backoff * (2**attempt))
    return RedeployOutcome(server.name, False, last)


#: Advisory lock namespace ("rdep") of a redeploy being sent: `pg_try_advisory_lock(ns, key)`.
_SENDING_LOCK = 0x72646570


def _appended(before: list[str], after: list[str]) -> list[str]:
    """The reasons `request_redeploys` appended to `before` to make `after` (it keeps the last
    50): the shortest tail of `after` whose rest is a suffix of `before` (at least one)."""
    for count in range(1, len(after) + 1):
        rest = after[: len(after) - count]
        if not rest or before[-len(rest) :] == rest:
            return after[len(after) - count :]
    return after


def _send_one(
    session_factory: Any,
    sending: Connection,
    redeploy_id: uuid.UUID,
    *,
    http: httpx.Client,
    actor: str,
) -> dict[str, Any] | None:
    """Redeploy one server for one pending row; None when there is nothing to do (done, gone,
    or being sent by another run right now). No transaction is open during the POST: the row
    is read in one short transaction and the outcome recorded in another, so a change
    requested meanwhile (which locks the pending row and writes an audit event) never waits
    for the network. Concurrent runs skip a row this one is sending (a session-level advisory
    lock on `sending`, only ever tried, released at the end, or by Postgres if the process
    dies)."""
    lock = {"ns": _SENDING_LOCK, "id": str(redeploy_id)}
    if not sending.execute(
        text("SELECT pg_try_advisory_lock(CAST(:ns AS integer), hashtext(:id))"), lock
    ).scalar():
        return None
    try:
        pending = _read_pending(session_factory, redeploy_id)
        if pending is None:
            return None
        server, sent_reasons, sent_change = pending
        outcome = redeploy_server(server, client=http)  # no transaction open
        return _record_outcome(
            session_factory, redeploy_id, server, sent_reasons, sent_change, outcome, actor=actor
        )
    finally:
        if not sending.closed and not sending.invalidated:
            sending.execute(
                text("SELECT pg_advisory_unlock(CAST(:ns AS integer), hashtext(:id))"), lock
            )


def _read_pending(
    session_factory: Any, redeploy_id: uuid.UUID
) -> tuple[PreannotationServer, list[str], datetime] | None:
    """The server to redeploy, with the reasons and last change being sent; None when the row
    is done or gone (a row whose server is gone is marked done), in one short transaction."""
    with session_factory() as session:
        row = session.get(Redeploy, redeploy_id)
        if row is None or row.state != "pending":
            return None
        found = session.get(PreannotationServer, row.server_id)
        if found is None:
            row.state = "done"
            session.add(row)
            return None
        server = PreannotationServer(
            id=found.id,
            name=found.name,
            url=found.url,
            models=list(found.models),
            rules=list(found.rules),
        )
        return server, list(row.reasons), row.last_change_at


def _record_outcome(
    session_factory: Any,
    redeploy_id: uuid.UUID,
    server: PreannotationServer,
    sent_reasons: list[str],
    sent_change: datetime,
    outcome: RedeployOutcome,
    *,
    actor: str,
) -> dict[str, Any] | None:
    """Record a redeploy's outcome on its row (and in the audit log), in one transaction."""
    with session_factory() as session:
        row = session.get(Redeploy, redeploy_id, with_for_update=True)
        if row is None or row.state != "pending":
            return None
        row.attempts += 1
        if outcome.ok:
            if row.last_change_at != sent_change:
                # changes requested while the server was called: not in this redeploy, so
                # they wait for the next one (as if they had come right after it)
                session.add(
                    Redeploy(
                        server_id=row.server_id,
                        reasons=_appended(sent_reasons, row.reasons),
                        last_change_at=row.last_change_at,
                    )
                )
                row.reasons = sent_reasons
            row.state, row.done_at, row.last_error = "done", utcnow(), None
        else:
            row.last_error = outcome.detail
        session.add(row)
        audit.record(
            session,
            actor=actor,
            action="redeploy.done" if outcome.ok else "redeploy.failed",
            target=server.name,
            details={
                "changes": len(sent_reasons),
                "reasons": sent_reasons[-10:],
                "attempt": row.attempts,
                "detail": outcome.detail,
            },
        )
        return {
            "server": server.name,
            "ok": outcome.ok,
            "detail": outcome.detail,
            "changes": len(sent_reasons),
        }


def run_redeploys(
    session_factory: Any,
    *,
    debounce: float,
    actor: str = "beat",
    client: httpx.Client | None = None,
) -> list[dict[str, Any]]:
    """Redeploy every server whose pending changes are older than `debounce` seconds; each
    server is called with no transaction open (`_send_one`)."""
    done: list[dict[str, Any]] = []
    cutoff = utcnow() - timedelta(seconds=debounce)
    with session_factory() as session:
        due = session.exec(
            select(Redeploy.id).where(
                Redeploy.state == "pending", col(Redeploy.last_change_at) <= cutoff
            )
        ).all()
    if not due:
        return done
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    try:
        with autocommit_engine().connect() as sending:
            for redeploy_id in due:
                outcome = _send_one(session_factory, sending, redeploy_id, http=http, actor=actor)
                if outcome is not None:
                    done.append(outcome)
    finally:
        if own:
            http.close()
    return done


def find_server(session: Session, name: str) -> PreannotationServer:
    server = session.exec(
        select(PreannotationServer).where(PreannotationServer.name == name)
    ).first()
    if server is None:
        raise NotFound(f"pre-annotation server {name} not found")
    return server


def list_servers(session: Session) -> list[PreannotationServer]:
    """Every configured pre-annotation server."""
    return list(session.exec(select(PreannotationServer)).all())


def list_redeploys(
    session: Session, *, pending_only: bool = True
) -> list[tuple[Redeploy, PreannotationServer]]:
    """Redeploys with their server, the latest requested first (only pending ones by default)."""
    query = (
        select(Redeploy, PreannotationServer)
        .where(Redeploy.server_id == PreannotationServer.id)
        .order_by(col(Redeploy.requested_at).desc())
    )
    if pending_only:
        query = query.where(Redeploy.state == "pending")
    return list(session.exec(query).all())


def server_ids(session: Session) -> list[uuid.UUID]:
    return list(session.exec(select(PreannotationServer.id)).all())

"""Secrets bound to endpoints (security issue, item b): a payload's `api_key_ref` names a
credential the operator declared (`NLPHUB_CREDENTIALS`), never a worker environment variable,
and the key goes only to the endpoints declared for it — checked before any request is made.
Embedding more records, or a query for search, uses the embedding's stored endpoint.

The endpoints are real HTTP servers on 127.0.0.1 (the OpenAI wire format of the platform
tests' fake server): `provider` is the one the operator allowed, `attacker` one a tenant names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session

import nlphub
from nlphub.embeddings.records import import_records
from schemas.db import get_engine, session_scope
from schemas.settings import SettingsError, get_settings
from schemas.states import JobState
from tests.unit.nlphub.embeddings.platforms.conftest import KEY, FakeAPI, serve_fake_api

pytestmark = pytest.mark.integration

#: The variable the operator keeps the provider's key in (the tenant never names it).
KEY_ENV = "NLPHUB_SECURITY_PROVIDER_KEY"
TEXTS = ["the cat sat on the mat", "stock markets fell", "a dog chased the cat", "bread and soup"]


@pytest.fixture
def provider() -> Iterator[FakeAPI]:
    """The endpoint the operator declared for the credential."""
    yield from serve_fake_api()


@pytest.fixture
def attacker() -> Iterator[FakeAPI]:
    """An endpoint a tenant names in a payload, hoping to receive the key."""
    yield from serve_fake_api()


@pytest.fixture
def declare(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Declare credentials (as the operator would, in the workers' environment)."""
    monkeypatch.setenv(KEY_ENV, KEY)

    def set_credentials(**credentials: dict[str, Any]) -> None:
        monkeypatch.setenv("NLPHUB_CREDENTIALS", json.dumps(credentials))
        get_settings.cache_clear()

    return set_credentials


@pytest.fixture
def dataset(env: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "news.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS))
    )
    with session_scope() as session:
        import_records(session, path, dataset="news", actor="t")
    return "news"


def _compute(wait_job: Callable[..., Any], **payload: Any) -> Any:
    body = {"dataset": "news", "attribute": "text", "platform": "openai", "model": "m", **payload}
    return wait_job(nlphub.enqueue("nlphub.compute_embeddings", body), timeout=120)


def _stored_text() -> str:
    """Everything a job row, an embedding row or the audit log holds, as one string."""
    with Session(get_engine()) as session:
        rows = session.execute(
            text(
                "SELECT payload::text || coalesce(error, '') || coalesce(result::text, '') "
                "FROM job UNION ALL SELECT details::text FROM audit_event "
                "UNION ALL SELECT coalesce(error, '') || coalesce(base_url, '') FROM embedding"
            )
        ).scalars()
        return "\n".join(rows)


def _embeddings() -> int:
    with Session(get_engine()) as session:
        return int(session.execute(text("SELECT count(*) FROM embedding")).scalar_one())


def test_a_ref_naming_a_worker_variable_is_refused(
    env: dict[str, Any],
    worker: Any,
    wait_job: Callable[..., Any],
    dataset: str,
    declare: Callable[..., None],
    provider: FakeAPI,
    attacker: FakeAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`DATABASE_URL` (and the variable holding a declared key) are not credentials."""
    caplog.set_level(logging.DEBUG)
    declare(provider={"env": KEY_ENV, "base_urls": [f"{provider.url}/v1"], "allow_http": True})
    for ref in ("DATABASE_URL", KEY_ENV):
        job = _compute(wait_job, api_key_ref=ref, base_url=f"{attacker.url}/v1")
        assert job.state == JobState.FAILED
        assert f"api_key_ref '{ref}' is not a declared credential" in job.error, job.error
        assert "provider" not in job.error  # other credentials are never listed
    assert attacker.seen == [] and provider.seen == []
    assert _embeddings() == 0
    stored = _stored_text()
    assert env["database_url"] not in stored and KEY not in stored
    assert env["database_url"] not in caplog.text and KEY not in caplog.text


def test_a_declared_credential_is_never_sent_to_an_undeclared_endpoint(
    env: dict[str, Any],
    worker: Any,
    wait_job: Callable[..., Any],
    dataset: str,
    declare: Callable[..., None],
    provider: FakeAPI,
    attacker: FakeAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    declare(provider={"env": KEY_ENV, "base_urls": [f"{provider.url}/v1"], "allow_http": True})
    for platform, base_url in [
        ("openai", f"{attacker.url}/v1"),
        ("openai", f"{provider.url}/v1/../../v1"),  # another path on the right server
        ("azure", attacker.url),
        ("cohere", f"{attacker.url}/v1"),
    ]:
        job = _compute(wait_job, platform=platform, api_key_ref="provider", base_url=base_url)
        assert job.state == JobState.FAILED
        assert "credential 'provider' may not be sent to http://127.0.0.1:" in job.error, job.error
        assert "not an endpoint the operator allowed for this credential" in job.error
        if base_url.startswith(attacker.url):  # the allowed endpoints are not revealed
            assert provider.url not in job.error
    # No base_url: the platform's default endpoint is not allowed for this credential either.
    job = _compute(wait_job, api_key_ref="provider")
    assert job.state == JobState.FAILED
    assert "may not be sent to https://api.openai.com/v1 (openai's default endpoint)" in job.error
    assert attacker.seen == [] and provider.seen == []  # refused before any request
    assert _embeddings() == 0
    assert KEY not in _stored_text() and KEY_ENV not in _stored_text()
    assert KEY not in caplog.text


def test_plain_http_is_refused_unless_the_operator_allows_it(
    env: dict[str, Any],
    worker: Any,
    wait_job: Callable[..., Any],
    dataset: str,
    declare: Callable[..., None],
    provider: FakeAPI,
) -> None:
    tls = f"https://{provider.url.removeprefix('http://')}/v1"
    plain = f"{provider.url}/v1"
    # Declared for https only: the same host and path over plain http is refused.
    declare(tls_only={"env": KEY_ENV, "base_urls": [tls]})
    job = _compute(wait_job, api_key_ref="tls_only", base_url=plain)
    assert job.state == JobState.FAILED
    assert "credential 'tls_only' may not be sent over plain http" in job.error, job.error
    # An http endpoint listed without allow_http: the setting itself is refused (a worker, or
    # `nlphub.enqueue`, with it does not start).
    declare(listed={"env": KEY_ENV, "base_urls": [plain]})
    with pytest.raises(SettingsError, match=r"credential 'listed': base_url .* is plain http"):
        get_settings()
    assert provider.seen == []  # nothing reached the server
    # Allowed by the operator for this credential: the key goes over http to that endpoint.
    declare(plain={"env": KEY_ENV, "base_urls": [plain], "allow_http": True})
    job = _compute(wait_job, api_key_ref="plain", base_url=plain)
    assert job.state == JobState.SUCCEEDED, job.error
    assert provider.seen and provider.seen[0].headers["authorization"] == f"Bearer {KEY}"


def test_embed_records_and_search_use_the_stored_endpoint(
    env: dict[str, Any],
    worker: Any,
    wait_job: Callable[..., Any],
    dataset: str,
    declare: Callable[..., None],
    provider: FakeAPI,
    attacker: FakeAPI,
) -> None:
    declare(provider={"env": KEY_ENV, "base_urls": [f"{provider.url}/v1"], "allow_http": True})
    job = _compute(wait_job, api_key_ref="provider", base_url=f"{provider.url}/v1/")
    assert job.state == JobState.SUCCEEDED, job.error
    emb_id = job.result["embedding"]
    with Session(get_engine()) as session:
        stored = session.execute(
            text("SELECT api_key_ref, base_url FROM embedding WHERE id = :e"), {"e": emb_id}
        ).one()
    assert tuple(stored) == ("provider", f"{provider.url}/v1")
    sent = len(provider.seen)

    # A tenant asks for the same embedding's records to be embedded at its own server.
    job = wait_job(
        nlphub.enqueue(
            "nlphub.embed_records",
            {"embedding_id": emb_id, "records": ["r0", "r1"], "base_url": f"{attacker.url}/v1"},
        )
    )
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["records"] == 2
    assert "base_url ignored" in job.result["note"]
    assert attacker.seen == []
    assert len(provider.seen) == sent + 1
    assert provider.seen[-1].headers["authorization"] == f"Bearer {KEY}"

    # A redelivered / repeated compute of that embedding cannot move it either.
    job = _compute(
        wait_job, api_key_ref="provider", base_url=f"{attacker.url}/v1", embedding_id=emb_id
    )
    assert job.state == JobState.SUCCEEDED, job.error
    assert attacker.seen == []

    # A query text for search is embedded at the stored endpoint too.
    job = wait_job(nlphub.enqueue("nlphub.similar", {"dataset": "news", "text": "a cat", "k": 2}))
    assert job.state == JobState.SUCCEEDED, job.error
    assert len(job.result["hits"]) == 2
    assert len(provider.seen) == sent + 2 and attacker.seen == []
    assert provider.seen[-1].body["input"] == ["a cat"]


def test_an_embedding_whose_credential_was_withdrawn_sends_nothing(
    env: dict[str, Any],
    worker: Any,
    wait_job: Callable[..., Any],
    dataset: str,
    declare: Callable[..., None],
    provider: FakeAPI,
) -> None:
    """The policy is checked again at every use: an endpoint the operator no longer allows
    for the credential gets nothing, even for an embedding stored with it."""
    declare(provider={"env": KEY_ENV, "base_urls": [f"{provider.url}/v1"], "allow_http": True})
    job = _compute(wait_job, api_key_ref="provider", base_url=f"{provider.url}/v1")
    assert job.state == JobState.SUCCEEDED, job.error
    sent = len(provider.seen)
    declare(provider={"env": KEY_ENV, "base_urls": ["https://api.openai.com/v1"]})
    job = wait_job(
        nlphub.enqueue(
            "nlphub.embed_records", {"embedding_id": job.result["embedding"], "records": ["r0"]}
        )
    )
    assert job.state == JobState.FAILED
    assert "credential 'provider' may not be sent over plain http" in job.error, job.error
    assert len(provider.seen) == sent

"""What the HTTP platforms share: retries and backoff, permanent errors, key hygiene."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime

import httpx
import pytest

from nlphub.embeddings import (
    EmbeddingError,
    TemporaryEmbeddingError,
    make_encoder,
    parse_retry_after,
)
from nlphub.errors import TemporaryError
from tests.unit.nlphub.embeddings.platforms.conftest import DIM, KEY, FakeAPI, Sleeps


def test_429_honours_retry_after(api: FakeAPI) -> None:
    api.script.append((429, {"Retry-After": "0.1"}, {"error": {"message": "Rate limit reached"}}))
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1")
    vectors = enc.encode(["x"])
    assert vectors.shape == (1, DIM)
    assert len(api.seen) == 2
    assert enc.requests_sent == 2  # type: ignore[attr-defined]
    assert api.seen[1].at - api.seen[0].at >= 0.1


def test_429_retry_after_uses_the_providers_wait_not_backoff(api: FakeAPI) -> None:
    api.script.append((429, {"retry-after": "0.25"}, {"message": "slow down"}))
    sleeps = Sleeps()
    enc = make_encoder("cohere", "m", api_key=KEY, base_url=f"{api.url}/v1", sleep=sleeps)
    enc.encode(["x"])
    assert sleeps.delays == [0.25]


def test_500_then_success_backs_off(api: FakeAPI, caplog: pytest.LogCaptureFixture) -> None:
    api.script.append((500, {}, {"error": {"message": "The server had an error"}}))
    sleeps = Sleeps()
    enc = make_encoder(
        "openai", "m", api_key=KEY, base_url=f"{api.url}/v1", sleep=sleeps, backoff_base=2.0
    )
    with caplog.at_level(logging.WARNING, logger="embeddings"):
        vectors = enc.encode(["x", "y"])
    assert vectors.shape == (2, DIM)
    assert len(api.seen) == 2
    assert len(sleeps.delays) == 1
    assert 1.0 <= sleeps.delays[0] <= 2.0  # base 2 s with jitter in [50 %, 100 %]
    assert "HTTP 500" in caplog.text
    assert KEY not in caplog.text


def test_5xx_exhausts_attempts_with_exponential_backoff(api: FakeAPI) -> None:
    api.script.extend([(503, {}, {"error": {"message": "overloaded"}})] * 3)
    sleeps = Sleeps()
    enc = make_encoder(
        "openai",
        "m",
        api_key=KEY,
        base_url=f"{api.url}/v1",
        sleep=sleeps,
        max_attempts=3,
        backoff_base=1.0,
        seed=7,
    )
    with pytest.raises(TemporaryEmbeddingError, match="HTTP 503: overloaded") as info:
        enc.encode(["x"])
    assert "gave up after 3 attempts" in str(info.value)
    assert len(api.seen) == 3
    assert len(sleeps.delays) == 2
    assert 0.5 <= sleeps.delays[0] <= 1.0
    assert 1.0 <= sleeps.delays[1] <= 2.0
    assert isinstance(info.value, TemporaryError)  # the task base retries these


def test_retry_after_longer_than_allowed_is_left_to_the_task(api: FakeAPI) -> None:
    api.script.append((429, {"Retry-After": "120"}, {"error": {"message": "Rate limit"}}))
    sleeps = Sleeps()
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1", sleep=sleeps)
    with pytest.raises(TemporaryEmbeddingError) as info:
        enc.encode(["x"])
    assert info.value.retry_after == 120.0
    assert sleeps.delays == []
    assert len(api.seen) == 1


def test_network_errors_become_temporary(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    sleeps = Sleeps()
    enc = make_encoder(
        "openai",
        "m",
        api_key=KEY,
        base_url=f"http://127.0.0.1:{port}/v1",
        sleep=sleeps,
        max_attempts=2,
    )
    with caplog.at_level(logging.WARNING), pytest.raises(TemporaryEmbeddingError) as info:
        enc.encode(["x"])
    assert "ConnectError" in str(info.value)
    assert len(sleeps.delays) == 1
    assert KEY not in str(info.value) and KEY not in caplog.text


def test_parse_retry_after_formats() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "3"}, now=now) == 3.0
    assert parse_retry_after({"retry-after": "0.1"}, now=now) == pytest.approx(0.1)
    http_date = "Wed, 01 Jan 2025 12:00:05 GMT"
    assert parse_retry_after({"Retry-After": http_date}, now=now) == pytest.approx(5.0)
    past = "Wed, 01 Jan 2025 11:00:00 GMT"
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == pytest.approx(0.25)
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "-1"}) is None
    assert parse_retry_after({}) is None


def test_401_is_permanent_and_never_shows_the_key(api: FakeAPI) -> None:
    wrong = "sk-wrong-key-9876543210zyxwvu"
    enc = make_encoder("openai", "m", api_key=wrong, base_url=f"{api.url}/v1")
    with pytest.raises(EmbeddingError) as info:
        enc.encode(["x"])
    message = str(info.value)
    assert "HTTP 401" in message
    assert "Incorrect API key provided" in message
    assert wrong not in message
    assert wrong not in repr(info.value)
    assert info.value.__cause__ is None
    assert len(api.seen) == 1  # not retried
    assert api.seen[0].headers["authorization"] == f"Bearer {wrong}"  # the key was sent
    assert wrong not in repr(enc)
    assert wrong not in repr(vars(enc))


def test_echoed_keys_of_any_shape_are_scrubbed(api: FakeAPI) -> None:
    azure_key = "0123456789abcdef0123456789abcdef"  # no "sk-" prefix to recognise
    api.script.append((403, {}, {"error": {"message": f"key {azure_key} is disabled"}}))
    enc = make_encoder("azure", "dep", api_key=azure_key, base_url=api.url)
    with pytest.raises(EmbeddingError, match="HTTP 403") as info:
        enc.encode(["x"])
    assert azure_key not in str(info.value)
    # A provider echoing part of a key (OpenAI masks the middle) is scrubbed too.
    api.script.append((401, {}, {"error": {"message": "Incorrect key: sk-test-012345****CRET"}}))
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1")
    with pytest.raises(EmbeddingError, match="HTTP 401") as info:
        enc.encode(["x"])
    assert "sk-test-012345" not in str(info.value)


def test_quota_exhausted_429_is_permanent(api: FakeAPI) -> None:
    quota = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}
    api.script.append((429, {}, quota))
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1", sleep=Sleeps())
    with pytest.raises(EmbeddingError, match="exceeded your current quota"):
        enc.encode(["x"])
    assert len(api.seen) == 1


@pytest.mark.parametrize("platform", ["openai", "azure", "cohere"])
@pytest.mark.parametrize("key", [None, ""])
def test_missing_key(platform: str, key: str | None) -> None:
    with pytest.raises(EmbeddingError) as info:
        make_encoder(platform, "m", api_key=key, base_url="https://example.invalid")
    message = str(info.value)
    assert message.startswith(f"no API key for {platform}: set it in ")
    assert "keys are passed by reference, never in task arguments" in message


def test_missing_key_message_names_the_source() -> None:
    with pytest.raises(EmbeddingError, match="set it in NLPHUB_OPENAI_API_KEY"):
        make_encoder("openai", "m", key_source="NLPHUB_OPENAI_API_KEY")


def test_injected_client_is_used_and_left_open(api: FakeAPI) -> None:
    client = httpx.Client(headers={"x-test": "injected"})
    enc = make_encoder("openai", "m", api_key=KEY, base_url=f"{api.url}/v1", client=client)
    enc.encode(["x"])
    enc.close()
    assert api.seen[0].headers["x-test"] == "injected"
    assert not client.is_closed
    client.close()

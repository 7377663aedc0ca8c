"""The credential policy (`nlphub.credentials`) and its setting (`NLPHUB_CREDENTIALS`): a key
reference names a declared credential, whose key goes only to the endpoints declared for it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from nlphub.credentials import CredentialRefused, endpoint, normalize_url, resolve
from schemas.settings import Settings, SettingsError, load_settings

KEY = "sk-unit-0123456789abcdefSECRET"
OPENAI = "https://api.openai.com/v1"
LOCAL = "http://127.0.0.1:8080/v1"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NLPHUB_CREDENTIALS", raising=False)
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NLPHUB_UNIT_OPENAI_KEY", KEY)
    monkeypatch.setenv("NLPHUB_UNIT_LOCAL_KEY", KEY)
    monkeypatch.delenv("NLPHUB_UNIT_UNSET_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def _settings(**credentials: dict[str, Any]) -> Settings:
    return load_settings(credentials=json.dumps(credentials))


@pytest.fixture
def settings() -> Settings:
    return _settings(
        openai={"env": "NLPHUB_UNIT_OPENAI_KEY", "base_urls": [OPENAI]},
        local={"env": "NLPHUB_UNIT_LOCAL_KEY", "base_urls": [LOCAL], "allow_http": True},
        unset={"env": "NLPHUB_UNIT_UNSET_KEY", "base_urls": [OPENAI]},
        zz_secret_team={"env": "NLPHUB_UNIT_OPENAI_KEY", "base_urls": ["https://team.example"]},
    )


def _endpoint(settings: Settings, ref: str | None, base_url: str | None = None) -> str:
    return endpoint(settings, ref, platform="openai", base_url=base_url, default_base_url=OPENAI)


# -- refs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["DATABASE_URL", "NLPHUB_UNIT_OPENAI_KEY", "PATH", "nobody"])
def test_a_ref_must_name_a_declared_credential_not_a_variable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, ref: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:dbpassword@h/db")
    with pytest.raises(CredentialRefused) as info:
        resolve(settings, ref, platform="openai", base_url=None, default_base_url=OPENAI)
    message = str(info.value)
    assert f"api_key_ref {ref!r} is not a declared credential" in message
    assert "NLPHUB_CREDENTIALS" in message
    # Nothing about the server: no value, no other credential, no declared variable.
    for leak in ("dbpassword", KEY, "zz_secret_team", "team.example", "openai'", "local"):
        assert leak not in message


def test_the_refusal_is_the_same_whether_or_not_the_variable_exists(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = []
    for present in (True, False):
        if present:
            monkeypatch.setenv("NLPHUB_UNIT_PROBE", "x")
        else:
            monkeypatch.delenv("NLPHUB_UNIT_PROBE")
        with pytest.raises(CredentialRefused) as info:
            _endpoint(settings, "NLPHUB_UNIT_PROBE")
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_no_ref_is_refused_for_an_http_platform(settings: Settings) -> None:
    with pytest.raises(CredentialRefused, match="openai needs api_key_ref"):
        _endpoint(settings, None)


def test_no_credentials_declared_refuses_every_ref() -> None:
    empty = load_settings()
    assert empty.credentials == {}
    with pytest.raises(CredentialRefused, match="is not a declared credential"):
        _endpoint(empty, "openai")


# -- endpoints --------------------------------------------------------------------------------


def test_the_platform_default_is_used_when_allowed(settings: Settings) -> None:
    grant = resolve(settings, "openai", platform="openai", base_url=None, default_base_url=OPENAI)
    assert grant.base_url == OPENAI
    assert grant.key == KEY
    assert grant.credential == "openai"
    assert KEY not in repr(grant)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1/",
        "HTTPS://API.OpenAI.com/v1",
        "https://api.openai.com:443/v1",
        " https://api.openai.com/v1 ",
    ],
)
def test_the_same_endpoint_written_differently_is_allowed(settings: Settings, url: str) -> None:
    assert _endpoint(settings, "openai", url) == OPENAI


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/v1",
        "https://api.openai.com.evil.example/v1",
        "https://api.openai.com/v2",
        "https://api.openai.com/v1/../../evil",
        "https://api.openai.com/v1/extra",
        "https://api.openai.com:8443/v1",
        "https://api.openai.com",
    ],
)
def test_an_undeclared_endpoint_is_refused(settings: Settings, url: str) -> None:
    with pytest.raises(CredentialRefused) as info:
        _endpoint(settings, "openai", url)
    message = str(info.value)
    assert message.startswith("credential 'openai' may not be sent to ")
    assert "not an endpoint the operator allowed" in message
    assert "zz_secret_team" not in message and KEY not in message


def test_a_credential_declared_for_another_endpoint_refuses_the_platform_default(
    settings: Settings,
) -> None:
    with pytest.raises(CredentialRefused, match=r"openai's default endpoint"):
        _endpoint(settings, "local")


def test_a_platform_with_no_default_needs_a_base_url(settings: Settings) -> None:
    with pytest.raises(CredentialRefused, match="azure needs base_url"):
        endpoint(settings, "openai", platform="azure", base_url=None, default_base_url=None)


def test_plain_http_is_refused_unless_the_credential_allows_it(settings: Settings) -> None:
    with pytest.raises(CredentialRefused) as info:
        _endpoint(settings, "openai", "http://api.openai.com/v1")
    assert "credential 'openai' may not be sent over plain http" in str(info.value)
    assert _endpoint(settings, "local", LOCAL) == LOCAL
    # allow_http allows the http endpoints listed, not any http endpoint.
    with pytest.raises(CredentialRefused, match=r"may not be sent to http://127\.0\.0\.1:9/v1"):
        _endpoint(settings, "local", "http://127.0.0.1:9/v1")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://user:hunter2@api.openai.com/v1", "must not carry a user name or password"),
        ("https://api.openai.com/v1?api-key=hunter2", "must not have a query or a fragment"),
        ("https://api.openai.com/v1#hunter2", "must not have a query or a fragment"),
        ("file:///etc/passwd", "must be an http:// or https:// URL"),
        ("https://", "must be an http:// or https:// URL"),
        ("https://api.openai.com:99999/v1", "is not a valid http(s) URL"),
    ],
)
def test_malformed_endpoints_are_refused_without_echoing_them(
    settings: Settings, url: str, problem: str
) -> None:
    with pytest.raises(CredentialRefused) as info:
        _endpoint(settings, "openai", url)
    assert problem in str(info.value)
    assert "hunter2" not in str(info.value)


def test_normalize_url() -> None:
    assert normalize_url("HTTPS://Example.COM:443/A/b/") == "https://example.com/A/b"
    assert normalize_url("http://example.com:80") == "http://example.com"
    assert normalize_url("http://[::1]:8080/v1") == "http://[::1]:8080/v1"


# -- the key ----------------------------------------------------------------------------------


def test_a_declared_credential_without_its_key_names_neither_variable_nor_value(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(CredentialRefused) as info:
        resolve(settings, "unset", platform="openai", base_url=None, default_base_url=OPENAI)
    assert (
        str(info.value)
        == "credential 'unset' has no key on the workers: ask the operator to set it"
    )
    assert "NLPHUB_UNIT_UNSET_KEY" in caplog.text  # the operator's log says which variable


def test_the_endpoint_is_checked_before_the_key_is_read(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []

    def read_key(env: str) -> str:
        read.append(env)
        return KEY

    monkeypatch.setattr("nlphub.credentials._read_key", read_key)
    with pytest.raises(CredentialRefused, match="may not be sent to"):
        resolve(
            settings,
            "openai",
            platform="openai",
            base_url="https://evil.example/v1",
            default_base_url=OPENAI,
        )
    assert read == []
    resolve(settings, "openai", platform="openai", base_url=None, default_base_url=OPENAI)
    assert read == ["NLPHUB_UNIT_OPENAI_KEY"]


# -- the setting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "must be a JSON object"),
        ("[1]", "must be a JSON object"),
        ('{"a": {"base_urls": ["https://x"]}}', "credential 'a': env must name"),
        ('{"a": {"env": "K", "base_urls": []}}', "base_urls must be a non-empty list"),
        ('{"a": {"env": "K", "base_urls": "https://x"}}', "base_urls must be a non-empty list"),
        ('{"a": {"env": "K", "base_urls": ["ftp://x"]}}', "must be http(s)://host"),
        (
            '{"a": {"env": "K", "base_urls": ["http://x/v1"]}}',
            "base_url http://x/v1 is plain http; use https, or set",
        ),
        (
            '{"a": {"env": "K", "base_urls": ["http://x"], "allow_http": "yes"}}',
            "allow_http must be true or false",
        ),
        (
            '{"a": {"env": "K", "base_urls": ["https://u:hunter2@x"]}}',
            "a base_url carries a user or password",
        ),
        ('{"a": {"env": "K", "base_urls": ["https://x?k=hunter2"]}}', "query or fragment"),
        ('{"a": {"env": "K", "base_urls": ["https://x"], "key": "v"}}', "unknown key 'key'"),
        ('{"a b": {"env": "K", "base_urls": ["https://x"]}}', "credential name 'a b'"),
        ('{"a": {"env": "DATABASE_URL", "base_urls": ["https://x"]}}', "nlphub's own settings"),
        (
            '{"a": {"env": "NLPHUB_FLOWER_PASSWORD", "base_urls": ["https://x"]}}',
            "nlphub's own settings",
        ),
    ],
)
def test_a_malformed_setting_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("NLPHUB_CREDENTIALS", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("setting NLPHUB_CREDENTIALS is invalid")
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_the_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    declared = {"env": "NLPHUB_UNIT_LOCAL_KEY", "base_urls": [LOCAL], "allow_http": True}
    monkeypatch.setenv("NLPHUB_CREDENTIALS", json.dumps({"local": declared}))
    settings = load_settings()
    assert settings.credentials == {"local": declared}
    assert KEY not in repr(settings)
    assert _endpoint(settings, "local", LOCAL) == LOCAL

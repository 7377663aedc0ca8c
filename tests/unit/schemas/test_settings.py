from __future__ import annotations

from pathlib import Path

import pytest

from schemas.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "DATABASE_URL",
        "REDIS_URL",
        "NLPHUB_HUB_URLS",
        "NLPHUB_LIBRARY_VERSIONS",
        "NLPHUB_FLOWER_PORT",
        "NLPHUB_VISIBILITY_TIMEOUT",
        "NLPHUB_LOG_LEVEL",
        "NLPHUB_HUB_TIMEOUT",
        "NLPHUB_RETRY_BACKOFF",
        "NLPHUB_RETRY_BACKOFF_MAX",
        "NLPHUB_STUCK_AFTER",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "DATABASE_URL",
            "mysql://x",
            "setting DATABASE_URL is invalid: must be a postgresql:// URL",
        ),
        ("REDIS_URL", "http://x", "setting REDIS_URL is invalid: must be a redis://"),
        ("NLPHUB_HUB_URLS", "ftp://mirror/models", "setting NLPHUB_HUB_URLS is invalid: 'ftp://"),
        ("NLPHUB_FLOWER_PORT", "99999", "setting NLPHUB_FLOWER_PORT is invalid"),
        ("NLPHUB_FLOWER_PORT", "many", "setting NLPHUB_FLOWER_PORT is invalid"),
        ("NLPHUB_VISIBILITY_TIMEOUT", "3", "setting NLPHUB_VISIBILITY_TIMEOUT is invalid"),
        ("NLPHUB_HUB_TIMEOUT", "0", "setting NLPHUB_HUB_TIMEOUT is invalid"),
        ("NLPHUB_RETRY_BACKOFF", "0", "setting NLPHUB_RETRY_BACKOFF is invalid"),
        ("NLPHUB_RETRY_BACKOFF_MAX", "soon", "setting NLPHUB_RETRY_BACKOFF_MAX is invalid"),
        (
            "NLPHUB_LIBRARY_VERSIONS",
            "spark-nlp",
            "setting NLPHUB_LIBRARY_VERSIONS is invalid: 'spark-nlp' is not LIBRARY=VERSION",
        ),
        ("NLPHUB_LIBRARY_VERSIONS", "sparknlp=5.0", "unknown library 'sparknlp'"),
        ("NLPHUB_LOG_LEVEL", "LOUD", "setting NLPHUB_LOG_LEVEL is invalid: must be one of"),
    ],
)
def test_malformed_setting_fails_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_urls_are_named_when_needed() -> None:
    settings = load_settings()
    with pytest.raises(SettingsError, match="DATABASE_URL is not set"):
        settings.require_database_url()
    with pytest.raises(SettingsError, match="REDIS_URL is not set"):
        settings.require_redis_url()


def test_runtime_file_of_a_running_stack_supplies_urls(tmp_path: Path) -> None:
    settings = load_settings()
    run = settings.home / "run"
    run.mkdir(parents=True)
    (run / "embedded.json").write_text(
        '{"database_url": "postgresql://u@/db?host=/s", "redis_url": "redis://127.0.0.1:1/0"}'
    )
    assert settings.require_database_url() == "postgresql+psycopg://u@/db?host=/s"
    assert settings.require_redis_url() == "redis://127.0.0.1:1/0"


def test_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPHUB_HUB_URLS", "http://a/models/, file:///srv/mirror")
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", "spark-nlp=5.4.1,healthcare-nlp=5.4.0")
    monkeypatch.setenv("NLPHUB_FLOWER_PASSWORD", "s3cret-marker")
    settings = load_settings()
    assert settings.hub_urls == ["http://a/models", "file:///srv/mirror"]
    assert settings.library_version("spark-nlp") == "5.4.1"
    assert settings.library_version("visual-nlp") is None  # not installed here
    assert "s3cret-marker" not in repr(settings)


def test_task_time_limit_is_always_below_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NLPHUB_VISIBILITY_TIMEOUT", "100")
    monkeypatch.setenv("NLPHUB_STUCK_AFTER", "60")  # below it, as it must be
    monkeypatch.setenv("NLPHUB_TASK_TIME_LIMIT", "500")
    settings = load_settings()
    assert settings.effective_time_limit < settings.visibility_timeout


@pytest.mark.parametrize(
    ("stuck_after", "visibility", "message"),
    [
        ("0", None, "must be a positive number of seconds, at least 3 (got 0)"),
        ("-5", None, "must be a positive number of seconds, at least 3 (got -5)"),
        ("2", None, "at least 3 (got 2)"),
        ("soon", None, "Input should be a valid integer"),
        ("21600", None, "must be below NLPHUB_VISIBILITY_TIMEOUT (21600 s)"),
        ("600", "600", "must be below NLPHUB_VISIBILITY_TIMEOUT (600 s)"),
        ("900", "600", "or Redis delivers a stuck job again before the reconciler would"),
        # A visibility timeout at or below the default needs NLPHUB_STUCK_AFTER set too.
        (None, "180", "below NLPHUB_VISIBILITY_TIMEOUT (180 s), or Redis delivers a stuck job"),
    ],
)
def test_stuck_after_must_be_short_but_below_the_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch, stuck_after: str | None, visibility: str | None, message: str
) -> None:
    if stuck_after is not None:
        monkeypatch.setenv("NLPHUB_STUCK_AFTER", stuck_after)
    if visibility is not None:
        monkeypatch.setenv("NLPHUB_VISIBILITY_TIMEOUT", visibility)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("setting NLPHUB_STUCK_AFTER is invalid: "), info.value
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("stuck_after", "visibility", "expected"),
    [
        (None, None, 180),  # the defaults: 180 s, 6 h
        ("3", None, 3),  # the fault tests' value, with the default visibility timeout
        ("599", "600", 599),
        (None, "181", 180),
    ],
)
def test_valid_stuck_after(
    monkeypatch: pytest.MonkeyPatch, stuck_after: str | None, visibility: str | None, expected: int
) -> None:
    if stuck_after is not None:
        monkeypatch.setenv("NLPHUB_STUCK_AFTER", stuck_after)
    if visibility is not None:
        monkeypatch.setenv("NLPHUB_VISIBILITY_TIMEOUT", visibility)
    settings = load_settings()
    assert settings.stuck_after_seconds == expected
    assert settings.stuck_after_seconds < settings.visibility_timeout


def test_retry_backoff_follows_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas.settings import get_settings
    from tasks.base import backoff

    get_settings.cache_clear()
    try:
        waits = [backoff(retries) for retries in range(12) for _ in range(20)]
        assert min(waits) >= 1.0 and max(waits) <= 300.0  # defaults: 2 s base, 5 min cap
        monkeypatch.setenv("NLPHUB_RETRY_BACKOFF", "0.5")
        monkeypatch.setenv("NLPHUB_RETRY_BACKOFF_MAX", "4")
        get_settings.cache_clear()
        first = [backoff(0) for _ in range(50)]
        assert all(0.25 <= w <= 0.5 for w in first)
        late = [backoff(retries) for retries in (5, 8, 1000) for _ in range(50)]
        assert all(0.25 <= w <= 4.0 for w in late) and max(late) > 2.0
    finally:
        get_settings.cache_clear()

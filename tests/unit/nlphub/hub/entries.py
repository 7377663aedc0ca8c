"""Hub entries for the metadata tests: a parsed `HubEntry` from a few fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import settings

from nlphub.hub.metadata import HubEntry
from nlphub.versions import Version

PROPERTY = settings(database=None, max_examples=200, deadline=None)
BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)


def v(text: str) -> Version:
    return Version.parse(text)


def entry(
    *,
    name: str = "ner_dl",
    language: str = "en",
    lib: str | Version | None = "5.0.0",
    spark: str | Version | None = "3.0",
    minutes: int = 0,
    ready: bool = True,
    **extra: Any,
) -> HubEntry:
    return HubEntry.model_validate(
        {
            "name": name,
            "language": language,
            "lib_version": lib if lib is None or isinstance(lib, Version) else v(lib),
            "spark_version": spark if spark is None or isinstance(spark, Version) else v(spark),
            "ready_to_use": ready,
            "time": BASE_TIME + timedelta(minutes=minutes),
            **extra,
        }
    )

"""Unit tests for nlphub.hub.licence: the licence file and which editions it allows."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from nlphub.hub.licence import (
    Licence,
    LicenceError,
    licence_problem,
    licence_refusal,
    load_licence,
    unusable_licence,
)

KEY = "sk-very-secret-key-123"


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "licence.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def valid(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "licensee": "Example Hospital",
        "license_key": KEY,
        "editions": ["Healthcare NLP"],
        "expires_at": "2025-01-31",
    }
    data.update(changes)
    return data


def test_load_valid_licence(tmp_path: Path) -> None:
    licence = load_licence(write(tmp_path, valid(editions=["healthcare nlp", "Finance NLP"])))

    assert licence is not None
    assert licence.licensee == "Example Hospital"
    assert licence.editions == ("Healthcare NLP", "Finance NLP")
    assert licence.expires_at == date(2025, 1, 31)
    assert licence.license_key.get_secret_value() == KEY


def test_no_path_means_no_licence() -> None:
    assert load_licence(None) is None


def test_key_never_in_repr_str_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    licence = load_licence(write(tmp_path, valid()))
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("licence %s %r", licence, licence)

    assert KEY not in repr(licence)
    assert KEY not in str(licence)
    assert KEY not in caplog.text
    assert "Example Hospital" in repr(licence)


def test_key_not_in_error_messages(tmp_path: Path) -> None:
    broken = json.dumps(valid())[:-5]  # cut: the key is in the text
    with pytest.raises(LicenceError) as caught:
        load_licence(write(tmp_path, broken))
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON: Expecting property name enclosed in double quotes"),
        ("[1, 2]", "must hold a JSON object"),
        (valid(license_key=None), "is missing 'license_key' (it needs licensee, license_key"),
        ({"licensee": "x"}, "is missing 'license_key', 'editions', 'expires_at'"),
        (valid(expires_at="2025-13-01"), "bad expires_at '2025-13-01': expected an ISO date"),
        (valid(expires_at=20250131), "bad expires_at 20250131"),
        (valid(editions=["Spark OCR"]), "unknown edition 'Spark OCR' (known: Open Source,"),
        (valid(editions=[]), "editions must be a non-empty list"),
        (valid(license_key=" "), "license_key must be a non-empty string"),
    ],
)
def test_invalid_files_name_the_file(tmp_path: Path, content: Any, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(LicenceError) as caught:
        load_licence(path)
    assert str(caught.value).startswith(f"licence file {path}")
    assert message in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(LicenceError) as caught:
        load_licence(path)
    assert str(caught.value) == f"licence file {path} cannot be read: No such file or directory"


def test_datetime_expiry(tmp_path: Path) -> None:
    licence = load_licence(write(tmp_path, valid(expires_at="2025-01-31T12:00:00Z")))
    assert licence is not None
    assert licence.expires_at == datetime(2025, 1, 31, 12, tzinfo=UTC)
    before = datetime(2025, 1, 31, 11, 59, tzinfo=UTC)
    after = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert licence_problem("Healthcare NLP", licence, now=before) is None
    assert licence_problem("Healthcare NLP", licence, now=after) == (
        "the licence for Healthcare NLP expired on 2025-01-31 12:00 UTC"
    )


# -- licence_problem ---------------------------------------------------------------------------

LICENCE = Licence(
    licensee="Example Hospital",
    editions=("Healthcare NLP",),
    expires_at=date(2025, 1, 31),
    license_key=SecretStr(KEY),
)
DURING = datetime(2025, 1, 31, 23, 59, tzinfo=UTC)  # the last day is still valid
AFTER = datetime(2025, 2, 1, 0, 0, tzinfo=UTC)


def test_open_source_needs_nothing() -> None:
    assert licence_problem("Open Source", None) is None
    assert licence_problem("Open Source", LICENCE, now=AFTER) is None


def test_covered_and_valid() -> None:
    assert licence_problem("Healthcare NLP", LICENCE, now=DURING) is None


def test_no_licence_configured() -> None:
    assert licence_problem("Healthcare NLP", None) == (
        "Healthcare NLP needs a licence: none is configured (set NLPHUB_LICENSE_FILE)"
    )


def test_expired() -> None:
    assert licence_problem("Healthcare NLP", LICENCE, now=AFTER) == (
        "the licence for Healthcare NLP expired on 2025-01-31"
    )


def test_not_covered() -> None:
    assert licence_problem("Finance NLP", LICENCE, now=DURING) == (
        "the licence does not cover Finance NLP (it covers: Healthcare NLP)"
    )


def test_naive_now_is_utc() -> None:
    assert licence_problem("Healthcare NLP", LICENCE, now=datetime(2025, 2, 1)) is not None
    assert licence_problem("Healthcare NLP", LICENCE, now=datetime(2025, 1, 31)) is None


# -- licence_refusal / unusable_licence: what a tenant is told ---------------------------------


def test_a_tenant_is_told_the_problem_not_the_licence(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="nlphub.hub.licence")
    assert licence_refusal("Open Source", None) is None
    assert licence_refusal("Healthcare NLP", LICENCE, now=DURING) is None
    assert licence_refusal("Healthcare NLP", None) == (
        "Healthcare NLP needs a licence: none is configured (set NLPHUB_LICENSE_FILE)"
    )
    assert licence_refusal("Finance NLP", LICENCE, now=DURING) == (
        "the configured licence does not cover Finance NLP"
    )
    assert licence_refusal("Healthcare NLP", LICENCE, now=AFTER) == (
        "the configured licence for Healthcare NLP has expired"
    )
    # the details are for the operator: in the log
    assert "it covers: Healthcare NLP" in caplog.text and "expired on 2025-01-31" in caplog.text


def test_an_unusable_licence_file_is_not_named_to_a_tenant(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nlphub.hub.licence")
    path = tmp_path / "absent.json"
    with pytest.raises(LicenceError) as caught:
        load_licence(path)
    told = unusable_licence("Healthcare NLP", caught.value)
    assert told == (
        "Healthcare NLP needs a valid licence: the configured licence cannot be used "
        "(an administrator must check NLPHUB_LICENSE_FILE)"
    )
    assert str(path) in caplog.text  # logged for the operator

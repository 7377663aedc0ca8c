"""Unit tests for nlphub.hub.metadata: metadata.json lines, archive names, entry kinds and
hub naming (resource choice: test_metadata_selection.py)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from nlphub.hub.metadata import (
    HubEntry,
    check_hub_name,
    embedding_type_of,
    parse_metadata,
)
from nlphub.versions import Version
from tests.unit.nlphub.hub.entries import PROPERTY, entry

SOURCE = "https://hub/x/metadata.json"

ALBERT_LINE = (
    '{"name": "albert_base_uncased", "language": "en", "libVersion": {"parts": [2, 5, 0]}, '
    '"sparkVersion": {"parts": [2, 4]}, "readyToUse": true, "time": "2020-04-28T11:29:23.475Z", '
    '"isZipped": true, "category": "ml", "checksum": "", "annotator": "AlbertEmbeddings"}'
)
BERT_LINE = (
    '{"name": "bert_base_uncased", "language": "en", "libVersion": {"parts": [6, 1, 5]}, '
    '"sparkVersion": {"parts": [3]}, "readyToUse": true, "time": "2025-03-27T20:09:07.222Z", '
    '"isZipped": true, "checksum": "", "annotator": "BertEmbeddings", "engine": "onnx"}'
)


def line(**fields: Any) -> str:
    data: dict[str, Any] = {
        "name": "ner_dl",
        "language": "en",
        "libVersion": {"parts": [5, 0, 0]},
        "sparkVersion": {"parts": [3, 0]},
        "readyToUse": True,
        "time": "2024-01-01T00:00:00.000Z",
        "isZipped": True,
        "category": "ml",
        "checksum": "",
        "annotator": "NerDLModel",
    }
    for key, value in fields.items():
        if value is _DROP:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data)


_DROP = object()


# --- HubEntry -----------------------------------------------------------------------------


def test_parses_the_real_hub_lines() -> None:
    entries, warnings = parse_metadata(f"{ALBERT_LINE}\n{BERT_LINE}\n", source=SOURCE)
    assert warnings == []
    albert, bert = entries
    assert albert.name == "albert_base_uncased"
    assert albert.language == "en"
    assert albert.lib_version == Version((2, 5, 0))
    assert albert.spark_version == Version((2, 4))
    assert albert.ready_to_use is True
    assert albert.time == datetime(2020, 4, 28, 11, 29, 23, 475000, tzinfo=UTC)
    assert albert.time.tzinfo is not None
    assert albert.is_zipped is True
    assert albert.category == "ml"
    assert albert.checksum is None
    assert albert.annotator == "AlbertEmbeddings"
    assert albert.engine is None
    assert albert.size is None
    assert albert.edition == "Open Source"
    assert bert.category is None
    assert bert.engine == "onnx"
    assert bert.spark_version == Version((3,))


def test_archive_name_of_the_real_lines() -> None:
    entries, _ = parse_metadata(f"{ALBERT_LINE}\n{BERT_LINE}", source=SOURCE)
    assert [e.archive_name for e in entries] == [
        "albert_base_uncased_en_2.5.0_2.4_1588073363475.zip",
        "bert_base_uncased_en_6.1.5_3_1743106147222.zip",
    ]


def test_archive_name_design_example() -> None:
    found = HubEntry.model_validate(
        {
            "name": "deidentify_dl",
            "language": "en",
            "libVersion": {"parts": [2, 0, 2]},
            "sparkVersion": {"parts": [2, 4]},
            "time": "2019-06-04T17:24:54.458Z",
            "isZipped": True,
        }
    )
    assert found.time_ms == 1559669094458
    assert found.archive_name == "deidentify_dl_en_2.0.2_2.4_1559669094458.zip"


def test_archive_name_without_zip_or_versions() -> None:
    unzipped = entry(is_zipped=False)
    assert unzipped.archive_name == f"ner_dl_en_5.0.0_3.0_{unzipped.time_ms}"
    bare = entry(lib=None, spark=None, language="")
    assert bare.archive_name == f"ner_dl____{bare.time_ms}.zip"


def test_archive_name_uses_utc_epoch_of_an_offset_time() -> None:
    found = HubEntry.model_validate(
        {"name": "a", "language": "de", "time": "2019-06-04T19:24:54.458+02:00"}
    )
    assert found.time_ms == 1559669094458


@PROPERTY
@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_archive_name_ends_with_the_epoch_millis(millis: int) -> None:
    time = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    iso = time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    found = HubEntry.model_validate({"name": "m", "language": "xx", "time": iso})
    assert found.time_ms == millis
    assert found.archive_name == f"m_xx___{millis}.zip"


def test_naive_time_is_read_as_utc() -> None:
    found = HubEntry.model_validate({"name": "a", "language": "en", "time": "2020-01-01T00:00:00"})
    assert found.time == datetime(2020, 1, 1, tzinfo=UTC)


def test_defaults_when_optional_fields_are_missing() -> None:
    found = HubEntry.model_validate({"name": "a", "language": "en", "time": "2020-01-01T00:00Z"})
    assert found.ready_to_use is True
    assert found.is_zipped is True
    assert found.lib_version is None
    assert found.spark_version is None
    assert found.category is None
    assert found.checksum is None
    assert found.edition == "Open Source"


def test_checksum_is_stored_upper_case() -> None:
    found = HubEntry.model_validate(
        {
            "name": "a",
            "language": "en",
            "time": "2020-01-01T00:00Z",
            "checksum": "d41d8cd98f00b204e9800998ecf8427e",
        }
    )
    assert found.checksum == "D41D8CD98F00B204E9800998ECF8427E"


@pytest.mark.parametrize("checksum", ["abc", "Z" * 32, "D41D8CD98F00B204E9800998ECF8427E0", 42])
def test_bad_checksum_is_rejected(checksum: object) -> None:
    with pytest.raises(ValidationError):
        HubEntry.model_validate(
            {"name": "a", "language": "en", "time": "2020-01-01T00:00Z", "checksum": checksum}
        )


@pytest.mark.parametrize(
    "fields",
    [
        {"size": -1},
        {"size": True},
        {"size": "big"},
        {"category": "zz"},
        {"name": ""},
        {"name": "   "},
        {"libVersion": {"parts": [1, "a"]}},
        {"sparkVersion": "not a version"},
        {"time": "yesterday"},
        {"edition": ""},
    ],
)
def test_bad_fields_are_rejected(fields: dict[str, Any]) -> None:
    data: dict[str, Any] = {"name": "a", "language": "en", "time": "2020-01-01T00:00Z"}
    data.update(fields)
    with pytest.raises(ValidationError):
        HubEntry.model_validate(data)


def test_size_and_blank_fields() -> None:
    found = HubEntry.model_validate(
        {
            "name": "a",
            "language": "en",
            "time": "2020-01-01T00:00Z",
            "size": 1234,
            "category": " PL ",
            "annotator": "",
            "engine": " ",
        }
    )
    assert found.size == 1234
    assert found.category == "pl"
    assert found.annotator is None
    assert found.engine is None


def test_versions_accept_strings_and_lists() -> None:
    found = HubEntry.model_validate(
        {
            "name": "a",
            "language": "en",
            "time": "2020-01-01T00:00Z",
            "libVersion": "5.4.0-rc1",
            "sparkVersion": [3, 4],
        }
    )
    assert found.lib_version == Version((5, 4, 0))
    assert found.spark_version == Version((3, 4))


def test_entries_are_frozen() -> None:
    found = entry()
    with pytest.raises(ValidationError):
        found.name = "other"


def test_dump_round_trips_through_the_hub_shape() -> None:
    (albert,), _ = parse_metadata(ALBERT_LINE, source=SOURCE)
    dumped = albert.model_dump(mode="json", by_alias=True)
    assert dumped["libVersion"] == {"parts": [2, 5, 0]}
    assert dumped["sparkVersion"] == {"parts": [2, 4]}
    assert HubEntry.model_validate(dumped) == albert
    assert HubEntry.model_validate_json(albert.model_dump_json(by_alias=True)) == albert


# --- kind and embedding type --------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotator", "expected"),
    [
        ("WordEmbeddingsModel", "word"),
        ("BertEmbeddings", "word"),
        ("AlbertEmbeddings", "word"),
        ("ElmoEmbeddings", "word"),
        ("XlnetEmbeddings", "word"),
        ("RoBertaEmbeddings", "word"),
        ("XlmRoBertaEmbeddings", "word"),
        ("DeBertaEmbeddings", "word"),
        ("Word2VecModel", "word"),
        ("com.johnsnowlabs.nlp.embeddings.BertEmbeddings", "word"),
        ("BertSentenceEmbeddings", "sentence"),
        ("RoBertaSentenceEmbeddings", "sentence"),
        ("XlmRoBertaSentenceEmbeddings", "sentence"),
        ("SentenceEmbeddings", "sentence"),
        ("UniversalSentenceEncoder", "sentence"),
        ("E5Embeddings", "sentence"),
        ("InstructorEmbeddings", "sentence"),
        ("MPNetEmbeddings", "sentence"),
        ("BGEEmbeddings", "sentence"),
        ("Doc2VecModel", "document"),
        ("DocumentEmbeddings", "document"),
        ("ChunkEmbeddings", "document"),
        ("EmbeddingsFinisher", "document"),
        ("NerDLModel", None),
        ("ClassifierDLModel", None),
        ("PerceptronModel", None),
        ("", None),
        (None, None),
    ],
)
def test_embedding_type_from_annotator(annotator: str | None, expected: str | None) -> None:
    assert embedding_type_of(annotator) == expected
    assert entry(annotator=annotator).embedding_type == expected


@pytest.mark.parametrize(
    ("category", "annotator", "kind"),
    [
        ("pl", None, "pipeline"),
        ("pl", "BertEmbeddings", "pipeline"),
        ("ml", "BertEmbeddings", "embeddings"),
        (None, "UniversalSentenceEncoder", "embeddings"),
        ("ml", "Doc2VecModel", "embeddings"),
        ("ml", "NerDLModel", "model"),
        ("nd", None, "model"),
        (None, None, "model"),
    ],
)
def test_kind(category: str | None, annotator: str | None, kind: str) -> None:
    assert entry(category=category, annotator=annotator).kind == kind


# --- parse_metadata -----------------------------------------------------------------------


def test_blank_lines_are_skipped_without_warnings() -> None:
    text = f"\n{ALBERT_LINE}\n\n   \n{BERT_LINE}\r\n\n"
    entries, warnings = parse_metadata(text, source=SOURCE)
    assert [e.name for e in entries] == ["albert_base_uncased", "bert_base_uncased"]
    assert warnings == []


def test_empty_text_gives_nothing() -> None:
    assert parse_metadata("", source=SOURCE) == ([], [])


def test_malformed_lines_are_skipped_with_numbered_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "\n".join(
        [
            line(name="good_1"),  # 1
            "",  # 2
            line(name=_DROP),  # 3
            "{not json",  # 4
            line(language=_DROP),  # 5
            line(libVersion={"parts": ["x"]}),  # 6
            line(time="not a time"),  # 7
            "[1, 2]",  # 8
            line(name="good_2"),  # 9
            line(sparkVersion={"parts": [-1]}),  # 10
            line(checksum="nothex"),  # 11
            line(name=None),  # 12
        ]
    )
    with caplog.at_level(logging.WARNING, logger="nlphub.hub.metadata"):
        entries, warnings = parse_metadata(text, source=SOURCE)
    assert [e.name for e in entries] == ["good_1", "good_2"]
    assert [w.split(":", 2)[1] for w in warnings] == [
        "//hub/x/metadata.json line 3",
        "//hub/x/metadata.json line 4",
        "//hub/x/metadata.json line 5",
        "//hub/x/metadata.json line 6",
        "//hub/x/metadata.json line 7",
        "//hub/x/metadata.json line 8",
        "//hub/x/metadata.json line 10",
        "//hub/x/metadata.json line 11",
        "//hub/x/metadata.json line 12",
    ]
    assert warnings[0] == f"{SOURCE} line 3: missing field 'name'"
    assert warnings[1].startswith(f"{SOURCE} line 4: invalid JSON")
    assert warnings[2] == f"{SOURCE} line 5: missing field 'language'"
    assert "libVersion" in warnings[3]
    assert "time" in warnings[4]
    assert "expected a JSON object" in warnings[5]
    assert "sparkVersion" in warnings[6]
    assert "checksum" in warnings[7]
    assert warnings[8] == f"{SOURCE} line 12: missing field 'name'"
    logged = [r.getMessage() for r in caplog.records if r.name == "nlphub.hub.metadata"]
    assert logged == warnings
    assert all(
        r.levelno == logging.WARNING for r in caplog.records if r.name == "nlphub.hub.metadata"
    )


def test_missing_time_is_a_malformed_line() -> None:
    entries, warnings = parse_metadata(line(time=_DROP), source="s")
    assert entries == []
    assert warnings == ["s line 1: missing field 'time'"]


def test_edition_is_the_callers() -> None:
    text = f"{ALBERT_LINE}\n{line(edition='Open Source')}"
    entries, _ = parse_metadata(text, source=SOURCE, edition="Healthcare")
    assert [e.edition for e in entries] == ["Healthcare", "Healthcare"]


def test_unknown_keys_are_ignored() -> None:
    entries, warnings = parse_metadata(line(somethingNew=[1, 2]), source=SOURCE)
    assert warnings == []
    assert len(entries) == 1


@PROPERTY
@given(
    st.lists(st.sampled_from(["good", "bad", "blank"]), max_size=20),
)
def test_parse_keeps_good_lines_and_warns_for_each_bad_one(kinds: list[str]) -> None:
    texts = {"good": line(), "bad": "{oops", "blank": "  "}
    entries, warnings = parse_metadata("\n".join(texts[k] for k in kinds), source="src")
    assert len(entries) == kinds.count("good")
    expected = [f"src line {i}:" for i, k in enumerate(kinds, start=1) if k == "bad"]
    assert [w[: w.index(":") + 1] for w in warnings] == expected


# --- names and languages: the hub's naming (security: hub input) --------------------------

UNSAFE_NAMES = [
    "../etc/passwd",
    "..",
    ".",
    ".hidden",
    "a/b",
    "a\\b",
    "a?b",
    "a#b",
    "a%2Fb",
    "a b",
    "a\x00b",
    "caf\u00e9",
    "..%2F..%2Fsecret",
    "x" * 80 + "/",
]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_a_name_outside_the_hubs_naming_is_a_skipped_line(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    text = "\n".join([line(name="good_1"), line(name=name), line(name="good_2")])
    with caplog.at_level(logging.WARNING, logger="nlphub.hub.metadata"):
        entries, warnings = parse_metadata(text, source=SOURCE)
    assert [e.name for e in entries] == ["good_1", "good_2"]
    [warning] = warnings
    assert warning.startswith(f"{SOURCE} line 2: bad field 'name': ")
    assert "does not follow the hub's naming" in warning
    assert [r.getMessage() for r in caplog.records] == [warning]


@pytest.mark.parametrize("language", ["../en", "e?n", "en/..", ".en", "..", "e n"])
def test_a_language_outside_the_hubs_naming_is_a_skipped_line(language: str) -> None:
    entries, warnings = parse_metadata(line(language=language), source=SOURCE)
    assert entries == []
    [warning] = warnings
    assert warning.startswith(f"{SOURCE} line 1: bad field 'language': ")
    assert "does not follow the hub's naming" in warning


def test_the_warning_says_what_is_wrong_and_shortens_a_long_name() -> None:
    _, [dots] = parse_metadata(line(name=".x"), source="s")
    assert (
        dots
        == "s line 1: bad field 'name': '.x' does not follow the hub's naming (it starts with '.')"
    )
    _, [slash] = parse_metadata(line(name="../" + "y" * 100), source="s")
    assert slash == (
        "s line 1: bad field 'name': '../" + "y" * 57 + "...' does not follow the hub's naming "
        "(letters, digits, '_', '.' and '-' only)"
    )


@pytest.mark.parametrize("name", ["ner_dl", "bert-base.cased_v2", "A1", "x..y", "a-"])
def test_hub_names_are_accepted(name: str) -> None:
    assert check_hub_name(name) == name
    assert entry(name=name, language="en").name == name


def test_an_empty_language_is_the_hubs_any_language() -> None:
    assert entry(language="").language == ""
    with pytest.raises(ValueError, match="does not follow the hub's naming"):
        check_hub_name("")


def test_model_validate_refuses_an_unsafe_name_too() -> None:
    with pytest.raises(ValidationError, match="does not follow the hub's naming"):
        entry(name="../x")


@PROPERTY
@given(st.text(max_size=12), st.text(max_size=4))
def test_an_accepted_entry_has_a_plain_archive_name(name: str, language: str) -> None:
    data = {"name": name, "language": language, "time": "2024-01-01T00:00:00Z"}
    entries, warnings = parse_metadata(json.dumps(data), source="s")
    if not entries:
        assert len(warnings) == 1
        return
    archive = entries[0].archive_name
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", archive), archive
    assert not archive.startswith(".")
    assert quote(archive, safe="") == archive

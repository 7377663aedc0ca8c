"""Unit tests for nlphub.hub.metadata's resource choice: select_newest and explain_no_match."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nlphub.hub.metadata import HubEntry, explain_no_match, select_newest
from nlphub.versions import Version, is_compatible
from tests.unit.nlphub.hub.entries import PROPERTY, entry, v

# --- select_newest ------------------------------------------------------------------------


def choose(entries: list[HubEntry], **request: Any) -> HubEntry | None:
    params: dict[str, Any] = {
        "name": "ner_dl",
        "language": "en",
        "lib_version": v("5.4.0"),
        "spark_version": v("3.5.1"),
    }
    params.update(request)
    return select_newest(entries, **params)


def test_spark_version_outranks_lib_version_and_time() -> None:
    old_spark = entry(lib="5.4.0", spark="3.0", minutes=100)
    new_spark = entry(lib="5.0.0", spark="3.4", minutes=0)
    assert choose([old_spark, new_spark]) is new_spark
    assert choose([new_spark, old_spark]) is new_spark


def test_lib_version_outranks_time() -> None:
    newer_lib = entry(lib="5.3.0", minutes=0)
    later = entry(lib="5.1.0", minutes=100)
    assert choose([newer_lib, later]) is newer_lib
    assert choose([later, newer_lib]) is newer_lib


def test_time_breaks_ties() -> None:
    first = entry(minutes=0)
    second = entry(minutes=5)
    assert choose([second, first]) is second


def test_equal_keys_pick_the_last_in_file_order() -> None:
    a = entry(checksum="A" * 32)
    b = entry(checksum="B" * 32)
    assert choose([a, b]) is b
    assert choose([b, a]) is a


def test_incompatible_versions_are_skipped() -> None:
    usable = entry(lib="5.0.0", spark="3.0")
    too_new_lib = entry(lib="5.5.0", spark="3.0", minutes=10)
    too_new_spark = entry(lib="5.0.0", spark="3.6", minutes=10)
    too_many_parts = entry(lib="5.0.0", spark=Version((3, 0, 0, 0)), minutes=10)
    assert choose([usable, too_new_lib, too_new_spark, too_many_parts]) is usable
    assert choose([too_new_lib, too_new_spark]) is None


def test_the_design_examples_drive_the_choice() -> None:
    on_spark_32 = entry(spark="3.2.1")
    assert choose([on_spark_32], spark_version=v("3.4.0")) is on_spark_32
    assert choose([entry(spark="3.2")], spark_version=v("3.1")) is None
    on_12 = entry(lib="1.2")
    assert choose([on_12], lib_version=v("1.2.3")) is on_12
    assert choose([entry(lib="1.2.3")], lib_version=v("1.2")) is None


def test_entries_without_versions_are_compatible() -> None:
    unversioned = entry(lib=None, spark=None)
    assert choose([unversioned]) is unversioned
    versioned = entry()
    assert choose([unversioned, versioned]) is versioned


def test_unknown_installed_versions_only_match_unversioned_entries() -> None:
    unversioned = entry(lib=None, spark=None)
    assert choose([entry(), unversioned], lib_version=None, spark_version=None) is unversioned


def test_not_ready_and_other_names_are_skipped() -> None:
    not_ready = entry(ready=False, minutes=10)
    other = entry(name="ner_dl_bert", minutes=10)
    ready = entry()
    assert choose([not_ready, other, ready]) is ready
    assert choose([not_ready, other]) is None


def test_language_must_match_unless_one_is_empty() -> None:
    german = entry(language="de", minutes=10)
    english = entry(language="en")
    assert choose([german, english]) is english
    assert choose([german, english], language="de") is german
    assert choose([german, english], language="") is german  # any language; newest wins
    unspecified = entry(language="", minutes=20)
    assert choose([german, unspecified], language="fr") is unspecified
    assert choose([german], language="xx") is None


def test_select_newest_accepts_any_iterable() -> None:
    newest = entry(minutes=3)
    assert choose(iter([entry(), newest])) is newest  # type: ignore[arg-type]


entries_st = st.lists(
    st.builds(
        entry,
        name=st.sampled_from(["a", "b"]),
        language=st.sampled_from(["en", "de", ""]),
        lib=st.sampled_from([None, "4.4", "5.0.0", "5.4.0", "5.4.1", "6.0"]),
        spark=st.sampled_from(
            [None, "3", "3.0", "3.4", "3.5.1", "3.5.2", Version((3, 5, 1, 0)), "4.0"]
        ),
        minutes=st.integers(min_value=0, max_value=50),
        ready=st.booleans(),
    ),
    max_size=12,
)


@PROPERTY
@given(entries_st, st.sampled_from(["en", "de", ""]), st.sampled_from(["5.4.0", "6.0.0"]))
def test_selection_is_an_eligible_entry_and_none_newer_is_eligible(
    entries: list[HubEntry], language: str, lib: str
) -> None:
    installed_lib, installed_spark = v(lib), v("3.5.1")

    def eligible(e: HubEntry) -> bool:
        return (
            e.ready_to_use
            and e.name == "a"
            and (not language or not e.language or e.language == language)
            and is_compatible(installed_lib, e.lib_version)
            and is_compatible(installed_spark, e.spark_version)
        )

    def rank(e: HubEntry) -> tuple[Any, ...]:
        def ver(x: Version | None) -> tuple[int, ...]:
            return (-1,) if x is None else x.parts

        return (ver(e.spark_version), ver(e.lib_version), e.time)

    chosen = select_newest(
        entries,
        name="a",
        language=language,
        lib_version=installed_lib,
        spark_version=installed_spark,
    )
    candidates = [e for e in entries if eligible(e)]
    if not candidates:
        assert chosen is None
        return
    assert chosen is not None
    assert eligible(chosen)
    assert all(rank(e) <= rank(chosen) for e in candidates)


# --- explain_no_match ---------------------------------------------------------------------


def explain(entries: list[HubEntry], **request: Any) -> str:
    params: dict[str, Any] = {
        "name": "ner_dl",
        "language": "en",
        "lib_version": v("5.1.2"),
        "spark_version": v("3.5.1"),
    }
    params.update(request)
    return explain_no_match(entries, **params)


def test_explains_an_unknown_name() -> None:
    assert (
        explain([entry(name="other")]) == "no resource named 'ner_dl' for language 'en' in the hub"
    )
    assert explain([]) == "no resource named 'ner_dl' for language 'en' in the hub"


def test_explains_a_missing_language() -> None:
    message = explain([entry(language="de"), entry(language="fr")], language="es")
    assert message.startswith("no resource named 'ner_dl' for language 'es' in the hub")
    assert "de, fr" in message


def test_explains_not_ready() -> None:
    message = explain([entry(ready=False)])
    assert "not ready to use" in message
    assert "'ner_dl'" in message


def test_explains_the_blocking_lib_version_of_the_newest() -> None:
    old = entry(lib="5.3.0", minutes=0)
    newest = entry(lib="5.4.0", minutes=10)
    message = explain([old, newest])
    assert newest.archive_name in message
    assert "needs Spark NLP >= 5.4.0 (resource built for 5.4.0), installed 5.1.2" in message
    assert "Spark >=" not in message
    assert old.archive_name not in message


def test_explains_the_blocking_spark_version() -> None:
    blocked = entry(lib="5.0.0", spark="4.0")
    message = explain([blocked])
    assert "needs Spark >= 4.0 (resource built for 4.0), installed 3.5.1" in message
    assert "Spark NLP" not in message


def test_explains_both_blocking_versions() -> None:
    message = explain([entry(lib="6.0.0", spark="4.0")])
    assert "needs Spark NLP >= 6.0.0" in message
    assert "needs Spark >= 4.0" in message
    assert "installed 5.1.2" in message
    assert "installed 3.5.1" in message


def test_explains_an_unknown_installed_version() -> None:
    message = explain([entry()], spark_version=None)
    assert "needs Spark >= 3.0" in message
    assert "unknown" in message


def test_says_when_something_does_match() -> None:
    usable = entry(lib="5.0.0")
    message = explain([usable])
    assert usable.archive_name in message
    assert "available" in message

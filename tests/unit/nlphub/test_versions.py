"""Unit tests for nlphub.versions: parsing, Spark NLP compatibility and version specs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlphub.versions import (
    Version,
    VersionError,
    VersionSpec,
    incompatibility_reason,
    is_compatible,
)

PROPERTY = settings(database=None, max_examples=300, deadline=None)

parts_st = st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=4).map(tuple)
short_parts_st = st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=3).map(
    tuple
)
versions_st = parts_st.map(Version)


def v(text: str) -> Version:
    return Version.parse(text)


# --- Version ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("5.4.0", (5, 4, 0)),
        ("2.4", (2, 4)),
        ("3", (3,)),
        ("5.4.0-rc2", (5, 4, 0)),
        ("5.4.0-RC10", (5, 4, 0)),
        ("3.5.1-amzn-0", (3, 5, 1)),
        ("3.3-1", (3, 3, 1)),
        ("3.3.0.1", (3, 3, 0)),
        ("1.2.3.4.5", (1, 2, 3)),
        ("5.4.0-beta", (5, 4, 0)),
        ("5.x.1", (5,)),
        ("  6.1.5\n", (6, 1, 5)),
        ("010.02", (10, 2)),
    ],
)
def test_parse_reads_like_spark_nlp(text: str, parts: tuple[int, ...]) -> None:
    assert Version.parse(text).parts == parts


@pytest.mark.parametrize("text", ["", "   ", "abc", "v5.4.0", ".5", "-rc1", "x.1.2", "-1.2"])
def test_parse_rejects_text_without_a_leading_integer(text: str) -> None:
    with pytest.raises(VersionError) as info:
        Version.parse(text)
    assert repr(text) in str(info.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(VersionError):
        Version.parse(5.4)  # type: ignore[arg-type]


def test_version_error_is_a_value_error() -> None:
    assert issubclass(VersionError, ValueError)


def test_str_joins_parts_with_dots() -> None:
    assert str(Version((2, 4))) == "2.4"
    assert str(Version((6, 1, 5))) == "6.1.5"
    assert str(Version((3,))) == "3"


def test_versions_are_ordered_by_parts() -> None:
    assert v("2.4") < v("2.4.0") < v("2.5") < v("10.0")
    assert sorted([v("3.0"), v("2.10"), v("2.9.9")]) == [v("2.9.9"), v("2.10"), v("3.0")]


def test_versions_are_frozen_and_hashable() -> None:
    version = v("5.4.0")
    with pytest.raises(AttributeError):
        version.parts = (1,)  # type: ignore[misc]
    assert {version, v("5.4.0")} == {version}


@pytest.mark.parametrize("parts", [(), (1, -1), (1, True), (1.0, 2), [1, 2], ("1",)])
def test_version_rejects_bad_parts(parts: object) -> None:
    with pytest.raises(VersionError):
        Version(parts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"parts": [2, 5, 0]}, Version((2, 5, 0))),
        ({"parts": [3]}, Version((3,))),
        ([2, 4], Version((2, 4))),
        ({"parts": [1, 2, 3, 4]}, Version((1, 2, 3, 4))),
        (None, None),
        ({}, None),
        ({"parts": None}, None),
        ({"parts": []}, None),
        ([], None),
    ],
)
def test_from_parts_reads_the_hub_shape(obj: object, expected: Version | None) -> None:
    assert Version.from_parts(obj) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "obj", [{"parts": ["a"]}, {"parts": "2.4"}, {"parts": 2}, "2.4", {"parts": [2, -1]}]
)
def test_from_parts_rejects_bad_parts(obj: object) -> None:
    with pytest.raises(VersionError):
        Version.from_parts(obj)  # type: ignore[arg-type]


@PROPERTY
@given(short_parts_st)
def test_parse_round_trips_str(parts: tuple[int, ...]) -> None:
    version = Version(parts)
    assert Version.parse(str(version)) == version


@PROPERTY
@given(short_parts_st, st.integers(min_value=0, max_value=99))
def test_parse_ignores_rc_suffix(parts: tuple[int, ...], rc: int) -> None:
    version = Version(parts)
    assert Version.parse(f"{version}-rc{rc}") == version


@PROPERTY
@given(st.lists(st.integers(min_value=0, max_value=99), min_size=4, max_size=8))
def test_parse_keeps_at_most_three_parts(parts: list[int]) -> None:
    assert Version.parse(".".join(map(str, parts))).parts == tuple(parts[:3])


# --- is_compatible ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("installed", "found", "expected"),
    [
        # The examples of design.md section 1.
        ("3.4.0", "3.2.1", True),
        ("3.1", "3.2", False),
        ("1.2.3", "1.2", True),
        ("1.2", "1.2.3", False),
        # More.
        ("5.4.0", "5.4.0", True),
        ("5.4.0", "5.4.1", False),
        ("5.4.1", "5.4.0", True),
        ("6.0", "5.9.9", False),  # found states more parts than installed
        ("6.0.0", "5.9.9", True),  # after the first greater part anything goes
        ("3.5.1", "3", True),
        ("3.5.1", "4", False),
        ("2.4", "3", False),
        ("3", "3", True),
        ("3.0.0", "2.4", True),
        ("10.0", "9.9", True),
    ],
)
def test_is_compatible_examples(installed: str, found: str, expected: bool) -> None:
    assert is_compatible(v(installed), v(found)) is expected


def test_no_found_version_is_always_compatible() -> None:
    assert is_compatible(v("1.0"), None) is True
    assert is_compatible(None, None) is True


def test_unknown_installed_version_cannot_use_a_stated_one() -> None:
    assert is_compatible(None, v("2.4")) is False


@PROPERTY
@given(versions_st)
def test_is_compatible_is_reflexive(version: Version) -> None:
    assert is_compatible(version, version)


@PROPERTY
@given(parts_st, st.data())
def test_a_version_can_use_any_prefix_of_itself(
    parts: tuple[int, ...], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(min_value=1, max_value=len(parts)))
    assert is_compatible(Version(parts), Version(parts[:cut]))


@PROPERTY
@given(parts_st, parts_st)
def test_cannot_use_a_version_stating_more_parts(
    installed: tuple[int, ...], extra: tuple[int, ...]
) -> None:
    # Even when the found version is lower, e.g. 6.0 cannot use 5.9.9.
    found = tuple(max(part - 1, 0) for part in installed) + extra
    assert not is_compatible(Version(installed), Version(found))


@PROPERTY
@given(parts_st, parts_st)
def test_same_length_compatibility_is_ordering(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    width = min(len(a), len(b))
    installed, found = Version(a[:width]), Version(b[:width])
    assert is_compatible(installed, found) is (installed >= found)


@PROPERTY
@given(parts_st, parts_st)
def test_compatible_iff_installed_prefix_is_at_least_found(
    installed: tuple[int, ...], found: tuple[int, ...]
) -> None:
    expected = len(found) <= len(installed) and installed[: len(found)] >= found
    assert is_compatible(Version(installed), Version(found)) is expected


@PROPERTY
@given(parts_st, parts_st)
def test_distinct_same_length_versions_are_compatible_one_way(
    a: tuple[int, ...], b: tuple[int, ...]
) -> None:
    width = min(len(a), len(b))
    first, second = Version(a[:width]), Version(b[:width])
    if first != second:
        assert is_compatible(first, second) != is_compatible(second, first)


# --- incompatibility_reason ---------------------------------------------------------------


def test_reason_names_both_versions() -> None:
    assert (
        incompatibility_reason(v("5.1.2"), v("5.4.0"), "Spark NLP")
        == "needs Spark NLP >= 5.4.0 (resource built for 5.4.0), installed 5.1.2"
    )


def test_reason_explains_extra_parts() -> None:
    reason = incompatibility_reason(v("6.0"), v("5.9.9"), "Spark")
    assert reason is not None
    assert "Spark" in reason
    assert "5.9.9" in reason
    assert "installed 6.0" in reason
    assert "3 version parts" in reason


def test_reason_for_unknown_installed_version() -> None:
    reason = incompatibility_reason(None, v("3.4"), "Spark")
    assert reason is not None
    assert "3.4" in reason
    assert "unknown" in reason


def test_no_reason_when_compatible() -> None:
    assert incompatibility_reason(v("3.4.0"), v("3.2.1"), "Spark NLP") is None
    assert incompatibility_reason(v("3.4.0"), None, "Spark NLP") is None


@PROPERTY
@given(versions_st, versions_st, st.sampled_from(["Spark", "Spark NLP"]))
def test_reason_exactly_when_incompatible(installed: Version, found: Version, what: str) -> None:
    reason = incompatibility_reason(installed, found, what)
    assert (reason is None) is is_compatible(installed, found)
    if reason is not None:
        assert reason.startswith(f"needs {what} >= {found} ")
        assert f"installed {installed}" in reason


# --- VersionSpec --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "version", "expected"),
    [
        (">=5.0,<6", "5.0", True),
        (">=5.0,<6", "5.9.9", True),
        (">=5.0,<6", "6.0.0", False),
        (">=5.0,<6", "6", False),
        (">=5.0,<6", "4.4.4", False),
        ("==5.1.2", "5.1.2", True),
        ("==5.1.2", "5.1.3", False),
        ("5.1", "5.1", True),
        ("5.1", "5.1.0", True),
        ("5.1", "5.1.2", False),
        ("5", "5.0.0", True),
        ("==5.1.0", "5.1", True),
        ("==5.1.0", "5", False),
        ("<6.0.0", "6", False),
        ("<6.0.1", "6", True),
        (">=5.0.1", "5", False),
        ("!=5.1", "5.1.0", False),
        ("!=5.1", "5.1.1", True),
        (">5.1", "5.1.0", False),
        (">5.1", "5.1.1", True),
        ("<=5.1", "5.1.0", True),
        ("<=5.1", "5.1.1", False),
        ("  >= 5.0 , < 6 ", "5.5", True),
    ],
)
def test_spec_contains(spec: str, version: str, expected: bool) -> None:
    assert VersionSpec.parse(spec).contains(v(version)) is expected


def test_spec_in_operator() -> None:
    spec = VersionSpec.parse(">=5.0,<6")
    assert v("5.4") in spec
    assert v("6.1") not in spec
    assert "5.4" not in spec


def test_spec_str_and_clauses() -> None:
    spec = VersionSpec.parse(">=5.0, <6")
    assert spec.clauses == ((">=", v("5.0")), ("<", v("6")))
    assert str(spec) == ">=5.0,<6"
    assert VersionSpec.parse("5.1").clauses == (("==", v("5.1")),)


@pytest.mark.parametrize(
    "text", ["", "   ", ">=", ">=5.0,", ",<6", "=>5", "~=5.1", "5.x", ">=5.0-rc1", "abc", "<<6"]
)
def test_spec_rejects_bad_text(text: str) -> None:
    with pytest.raises(VersionError) as info:
        VersionSpec.parse(text)
    assert repr(text) in str(info.value)


def test_spec_needs_a_clause() -> None:
    with pytest.raises(VersionError):
        VersionSpec(())


@PROPERTY
@given(versions_st, st.integers(min_value=0, max_value=3))
def test_spec_pads_with_zeros(version: Version, zeros: int) -> None:
    padded = Version(version.parts + (0,) * zeros)
    spec = VersionSpec.parse(f"=={version}")
    assert spec.contains(padded)
    assert VersionSpec.parse(f">={version},<={version}").contains(padded)
    assert not VersionSpec.parse(f"!={version}").contains(padded)
    # And the other way round: a longer bound against a shorter version.
    assert VersionSpec.parse(f"=={padded}").contains(version)
    assert not VersionSpec.parse(f"<{padded}").contains(version)


@PROPERTY
@given(versions_st, versions_st)
def test_spec_bounds_agree_with_padded_ordering(version: Version, bound: Version) -> None:
    width = max(len(version.parts), len(bound.parts))
    left = version.parts + (0,) * (width - len(version.parts))
    right = bound.parts + (0,) * (width - len(bound.parts))
    assert VersionSpec.parse(f">={bound}").contains(version) is (left >= right)
    assert VersionSpec.parse(f"<{bound}").contains(version) is (left < right)
    assert VersionSpec.parse(f">{bound}").contains(version) is (left > right)

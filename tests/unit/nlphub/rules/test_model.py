"""RuleSpec validation, its error messages, and dictionary CSV parsing."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nlphub.rules.model import (
    MAX_DICTIONARY_ENTRIES,
    RuleError,
    RuleSpec,
    parse_dictionary_csv,
    rule_file_name,
    rule_key,
    validate_rule,
)

HEIGHT_REGEX = "[0-7]'((0?[0-9])|(1(0|1)))"


def regex_rule(**changes: Any) -> dict[str, Any]:
    return {"name": "height", "type": "regex", "entity": "HEIGHT", "regex": HEIGHT_REGEX} | changes


def dictionary_rule(**changes: Any) -> dict[str, Any]:
    rule = {
        "name": "female",
        "type": "dictionary",
        "entity": "FEMALE",
        "dictionary": ["woman", "lady", "girl"],
    }
    return rule | changes


def problems_of(data: object, source: str = "r.json") -> list[str]:
    with pytest.raises(RuleError) as caught:
        validate_rule(data, source=source)
    return caught.value.problems


# --- valid rules ---------------------------------------------------------------------------


def test_regex_rule_from_the_docs_with_defaults() -> None:
    rule = validate_rule(regex_rule(), source="height.json")
    assert rule == RuleSpec(name="height", type="regex", entity="HEIGHT", regex=HEIGHT_REGEX)
    assert rule.dictionary is None
    assert (rule.description, rule.version) == ("", 1)
    assert (rule.match_scope, rule.rule_scope) == ("token", "sentence")
    assert (rule.case_sensitive, rule.complete_match_regex) == (False, False)


def test_dictionary_rule_entries_are_stripped_and_deduplicated_in_order() -> None:
    rule = validate_rule(
        dictionary_rule(dictionary=[" woman", "lady ", "woman", "girl", "lady"]), source="f.json"
    )
    assert rule.dictionary == ["woman", "lady", "girl"]
    assert rule.regex is None


def test_all_options_are_accepted() -> None:
    data = regex_rule(
        description="Heights like 5'11",
        version=7,
        match_scope="sub-token",
        rule_scope="document",
        case_sensitive=True,
        complete_match_regex=True,
    )
    rule = validate_rule(data, source="h.json")
    assert rule.to_json_dict() == data


def test_validating_a_validated_rule_changes_nothing() -> None:
    rule = validate_rule(dictionary_rule(dictionary=[" a ", "a", "b"]), source="f.json")
    assert validate_rule(rule.to_json_dict(), source="f.json") == rule


def test_json_dict_leaves_out_the_unused_half() -> None:
    assert "dictionary" not in validate_rule(regex_rule(), source="h.json").to_json_dict()
    assert "regex" not in validate_rule(dictionary_rule(), source="f.json").to_json_dict()


def test_json_bytes_are_sorted_and_indented() -> None:
    rule = validate_rule(regex_rule(entity="HÖHE"), source="h.json")
    text = rule.to_json_bytes().decode("utf-8")
    assert text.startswith('{\n  "case_sensitive": false,\n  "complete_match_regex": false,\n')
    assert '"entity": "HÖHE"' in text
    assert text.endswith("}\n")


def test_rule_is_immutable() -> None:
    rule = validate_rule(regex_rule(), source="h.json")
    with pytest.raises(ValidationError):
        rule.name = "other"


def test_names_keys_and_file_names() -> None:
    assert rule_key("Blood Pressure") == rule_key("blood_pressure") == "blood_pressure"
    assert rule_key("a-b") != rule_key("a_b")
    assert rule_file_name("Blood Pressure v2.1") == "Blood_Pressure_v2.1.json"
    rule = validate_rule(regex_rule(name="My rule"), source="h.json")
    assert (rule.key, rule.file_name) == ("my_rule", "My_rule.json")


# --- invalid rules: every message exact ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            regex_rule(regex="abcde)"),
            ["r.json: regex: unbalanced parenthesis at position 5"],
            id="regex-unbalanced",
        ),
        pytest.param(
            regex_rule(regex="(ab"),
            ["r.json: regex: missing ), unterminated subpattern at position 0"],
            id="regex-unterminated",
        ),
        pytest.param(
            regex_rule(regex="[z-a]"),
            ["r.json: regex: bad character range z-a at position 1"],
            id="regex-bad-range",
        ),
        pytest.param(
            regex_rule(regex="a{99999999999}"),
            ["r.json: regex: the repetition number is too large"],
            id="regex-overflow",
        ),
        pytest.param(
            regex_rule(regex="(" * 999 + ")" * 999),
            ["r.json: regex: nested too deeply"],
            id="regex-too-deep",
        ),
        pytest.param(
            regex_rule(regex="x" * 2001),
            ["r.json: regex: must be at most 2,000 characters (got 2,001)"],
            id="regex-too-long",
        ),
        pytest.param(regex_rule(regex=""), ["r.json: regex: must not be empty"], id="regex-empty"),
        pytest.param(
            regex_rule(regex="a\x00"),
            ["r.json: regex: contains a NUL character"],
            id="regex-nul",
        ),
        pytest.param(
            regex_rule(regex=None),
            ["r.json: regex: required for a regex rule"],
            id="regex-missing",
        ),
        pytest.param(
            regex_rule(dictionary=["woman"]),
            ["r.json: dictionary: a regex rule must not have a dictionary"],
            id="regex-rule-with-dictionary",
        ),
        pytest.param(
            dictionary_rule(regex="x"),
            ["r.json: regex: a dictionary rule must not have a regex"],
            id="dictionary-rule-with-regex",
        ),
        pytest.param(
            dictionary_rule(dictionary=[]),
            ["r.json: dictionary: must not be empty"],
            id="dictionary-empty",
        ),
        pytest.param(
            dictionary_rule(dictionary=None),
            ["r.json: dictionary: required for a dictionary rule"],
            id="dictionary-missing",
        ),
        pytest.param(
            dictionary_rule(dictionary=["a", " ", "b\tc", "x" * 501, "d\x00"]),
            [
                "r.json: dictionary: entry 2 is empty; entry 3 contains a control character "
                "(U+0009); entry 4 is longer than 500 characters (501); "
                "entry 5 contains a NUL character"
            ],
            id="dictionary-bad-entries",
        ),
        pytest.param(
            dictionary_rule(dictionary=[""] * 8),
            [
                "r.json: dictionary: entry 1 is empty; entry 2 is empty; entry 3 is empty; "
                "entry 4 is empty; entry 5 is empty (and 3 more)"
            ],
            id="dictionary-many-bad-entries",
        ),
        pytest.param(
            dictionary_rule(dictionary=["a", 3]),
            ["r.json: dictionary: entry 2: must be a string (got number)"],
            id="dictionary-entry-not-string",
        ),
        pytest.param(
            dictionary_rule(dictionary="woman,lady"),
            ["r.json: dictionary: must be an array (got string)"],
            id="dictionary-not-array",
        ),
        pytest.param(
            regex_rule(type="lookup"),
            ["r.json: type: must be 'regex' or 'dictionary' (got 'lookup')"],
            id="unknown-type",
        ),
        pytest.param(
            regex_rule(type=1),
            ["r.json: type: must be 'regex' or 'dictionary' (got 1)"],
            id="type-not-string",
        ),
        pytest.param(
            {"type": "regex"},
            [
                "r.json: name: required",
                "r.json: entity: required",
                "r.json: regex: required for a regex rule",
            ],
            id="missing-fields",
        ),
        pytest.param(
            {},
            ["r.json: name: required", "r.json: type: required", "r.json: entity: required"],
            id="empty-object",
        ),
        pytest.param(
            regex_rule(name="_height"),
            [
                "r.json: name: must start with a letter or digit and hold only letters, digits, "
                "spaces, '_', '.', '-'"
            ],
            id="name-bad-start",
        ),
        pytest.param(
            regex_rule(name="a/b"),
            [
                "r.json: name: must start with a letter or digit and hold only letters, digits, "
                "spaces, '_', '.', '-'"
            ],
            id="name-slash",
        ),
        pytest.param(
            regex_rule(name="a" * 129),
            ["r.json: name: must be at most 128 characters (got 129)"],
            id="name-too-long",
        ),
        pytest.param(regex_rule(name=""), ["r.json: name: must not be empty"], id="name-empty"),
        pytest.param(
            regex_rule(entity="E" * 65),
            ["r.json: entity: must be at most 64 characters (got 65)"],
            id="entity-too-long",
        ),
        pytest.param(
            regex_rule(entity="HEIGHT "),
            ["r.json: entity: must not start or end with whitespace"],
            id="entity-whitespace",
        ),
        pytest.param(
            regex_rule(entity="A\nB"),
            ["r.json: entity: contains a control character (U+000A)"],
            id="entity-control",
        ),
        pytest.param(
            regex_rule(description="x" * 2001),
            ["r.json: description: must be at most 2,000 characters (got 2,001)"],
            id="description-too-long",
        ),
        pytest.param(
            regex_rule(description="bad \ud800"),
            ["r.json: description: contains an unpaired surrogate (not valid Unicode text)"],
            id="description-surrogate",
        ),
        pytest.param(
            regex_rule(version=0),
            ["r.json: version: must be at least 1 (got 0)"],
            id="version-zero",
        ),
        pytest.param(
            regex_rule(version=2**31),
            ["r.json: version: must be at most 2,147,483,647 (got 2147483648)"],
            id="version-too-big",
        ),
        pytest.param(
            regex_rule(version="1"),
            ["r.json: version: must be a whole number (got string)"],
            id="version-string-is-not-coerced",
        ),
        pytest.param(
            regex_rule(version=1.5),
            ["r.json: version: must be a whole number (got number)"],
            id="version-float",
        ),
        pytest.param(
            regex_rule(case_sensitive="yes"),
            ["r.json: case_sensitive: must be true or false (got string)"],
            id="bool-string-is-not-coerced",
        ),
        pytest.param(
            regex_rule(match_scope="word"),
            ["r.json: match_scope: must be 'token' or 'sub-token' (got 'word')"],
            id="match-scope",
        ),
        pytest.param(
            regex_rule(ruleScope="sentence"),
            ["r.json: ruleScope: unknown field"],
            id="unknown-field",
        ),
        pytest.param(
            regex_rule(name=5, entity=None, regex=["a"]),
            [
                "r.json: name: must be a string (got number)",
                "r.json: entity: must be a string (got null)",
                "r.json: regex: must be a string (got array)",
            ],
            id="wrong-types",
        ),
        pytest.param([], ["r.json: must be a JSON object (got array)"], id="not-an-object"),
    ],
)
def test_invalid_rule_is_rejected_with_exact_problems(data: object, expected: list[str]) -> None:
    assert problems_of(data) == expected


def test_too_many_dictionary_entries() -> None:
    entries = [str(n) for n in range(MAX_DICTIONARY_ENTRIES + 1)]
    assert problems_of(dictionary_rule(dictionary=entries)) == [
        "r.json: dictionary: has 100,001 distinct entries, above the 100,000 limit"
    ]


def test_entry_limit_counts_distinct_entries() -> None:
    entries = [str(n) for n in range(MAX_DICTIONARY_ENTRIES)] + ["0", " 1 "]
    rule = validate_rule(dictionary_rule(dictionary=entries), source="f.json")
    assert rule.dictionary is not None
    assert len(rule.dictionary) == MAX_DICTIONARY_ENTRIES


def test_rule_too_large_to_export_is_rejected() -> None:
    entries = [f"{n:060d}" for n in range(MAX_DICTIONARY_ENTRIES)]
    assert problems_of(dictionary_rule(dictionary=entries)) == [
        "r.json: dictionary: too large: the rule's JSON would be 6.5 MB, above the 5 MB limit"
    ]


def test_python_construction_raises_pydantic_errors() -> None:
    with pytest.raises(ValidationError):
        RuleSpec(name="x", type="regex", entity="X", regex="(")


def test_rule_error_lists_problems_one_per_line() -> None:
    error = RuleError(["a.json: name: required", "b.json: type: required"])
    assert isinstance(error, ValueError)
    assert str(error) == "a.json: name: required\nb.json: type: required"


def test_rule_error_message_is_capped_but_problems_are_complete() -> None:
    error = RuleError([f"p{n}" for n in range(150)])
    assert len(error.problems) == 150
    assert str(error).splitlines()[-1] == "... and 50 more problems"
    assert len(str(error).splitlines()) == 101


def test_rule_error_needs_a_problem() -> None:
    with pytest.raises(ValueError, match="at least one problem"):
        RuleError([])


# --- dictionary CSV ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("woman\nlady\ngirl\n", ["woman", "lady", "girl"], id="plain"),
        pytest.param(
            "woman\r\nlady\r\ngirl", ["woman", "lady", "girl"], id="crlf-no-final-newline"
        ),
        pytest.param("\ufeffkeyword\nwoman\n", ["woman"], id="bom-and-header"),
        pytest.param("Term,notes\nwoman,adult\n", ["woman"], id="header-any-case-extra-column"),
        pytest.param("\n ,\nENTITY\nwoman\n", ["woman"], id="header-after-blank-rows"),
        pytest.param("woman\nkeyword\n", ["woman", "keyword"], id="header-only-first"),
        pytest.param(' woman ,x\n"lady, young"\n\n\nwoman\n', ["woman", "lady, young"], id="mix"),
    ],
)
def test_dictionary_csv(text: str, expected: list[str]) -> None:
    assert parse_dictionary_csv(text, source="female.csv") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "woman\nlady\ngi\x00rl\n",
            ["female.csv row 3: contains a NUL character"],
            id="nul",
        ),
        pytest.param(
            "keyword\nwoman\n,lady\n" + "x" * 501 + '\n"a\nb"\n',
            [
                "female.csv row 3: the first column is empty",
                "female.csv row 4: keyword is longer than 500 characters",
                "female.csv row 5: contains a control character (U+000A)",
            ],
            id="several-bad-rows",
        ),
        pytest.param("keyword\n\n", ["female.csv: holds no keywords"], id="header-only"),
        pytest.param("", ["female.csv: holds no keywords"], id="empty"),
        pytest.param(
            '"' + "x" * 200_000 + '"\n',
            ["female.csv row 1: not valid CSV (field larger than field limit (131072))"],
            id="huge-field",
        ),
    ],
)
def test_bad_dictionary_csv(text: str, expected: list[str]) -> None:
    with pytest.raises(RuleError) as caught:
        parse_dictionary_csv(text, source="female.csv")
    assert caught.value.problems == expected


def test_dictionary_csv_with_too_many_keywords() -> None:
    text = "\n".join(str(n) for n in range(MAX_DICTIONARY_ENTRIES + 1))
    with pytest.raises(RuleError) as caught:
        parse_dictionary_csv(text, source="big.csv")
    assert caught.value.problems == [
        "big.csv: holds 100,001 distinct keywords, above the 100,000 limit"
    ]


def test_dictionary_csv_feeds_a_rule() -> None:
    keywords = parse_dictionary_csv("keyword\nwoman\nlady\ngirl\n", source="female.csv")
    rule = validate_rule(dictionary_rule(dictionary=keywords), source="female.json")
    assert rule.dictionary == ["woman", "lady", "girl"]

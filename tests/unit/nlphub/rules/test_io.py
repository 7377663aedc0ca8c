"""Rule import (JSON, JSON arrays, ZIPs, hostile ZIPs) and export, with a round-trip property."""

from __future__ import annotations

import io
import json
import re
import stat
import struct
import warnings
import zipfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlphub.rules.io import (
    DEFAULT_LIMITS,
    MB,
    ZIP_DATE_TIME,
    ImportLimits,
    export_rules,
    load_rules,
)
from nlphub.rules.model import MAX_VERSION, RuleError, RuleSpec

HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def regex(name: str = "height", **changes: Any) -> dict[str, Any]:
    rule = {"name": name, "type": "regex", "entity": "HEIGHT", "regex": "[0-7]'(0?[0-9]|1[01])"}
    return rule | changes


def dictionary(name: str = "female", **changes: Any) -> dict[str, Any]:
    rule = {"name": name, "type": "dictionary", "entity": "FEMALE", "dictionary": ["woman"]}
    return rule | changes


def dumps(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


Entry = tuple[str | zipfile.ZipInfo, bytes]


def make_zip(*entries: Entry) -> bytes:
    """A ZIP holding ``entries`` exactly as given (repeated names and odd modes included)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buffer.getvalue()


def entry_info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def problems(data: bytes, filename: str, limits: ImportLimits = DEFAULT_LIMITS) -> list[str]:
    with pytest.raises(RuleError) as caught:
        load_rules(data, filename=filename, limits=limits)
    return caught.value.problems


# --- what is accepted ---------------------------------------------------------------------


def test_single_json_object() -> None:
    [rule] = load_rules(dumps(regex()), filename="height.json")
    assert rule == RuleSpec.model_validate(regex())


def test_json_array_keeps_order() -> None:
    loaded = load_rules(dumps([regex("b"), dictionary("a")]), filename="rules.json")
    assert [rule.name for rule in loaded] == ["b", "a"]


def test_json_with_bom_and_pretty_printing() -> None:
    data = b"\xef\xbb\xbf" + json.dumps(regex(), indent=4).encode()
    assert load_rules(data, filename="height.json")[0].name == "height"


def test_zip_of_files_at_any_depth_with_arrays_in_archive_order() -> None:
    data = make_zip(
        ("one.json", dumps(regex("one"))),
        ("dir/", b""),
        ("dir/deeper/two.JSON", dumps([dictionary("two"), dictionary("three")])),
    )
    loaded = load_rules(data, filename="rules.zip")
    assert [rule.name for rule in loaded] == ["one", "two", "three"]


def test_zip_ignores_macos_metadata_and_dotfiles() -> None:
    data = make_zip(
        ("__MACOSX/._a.json", b"\x00\x05\x16\x07 not json"),
        ("__MACOSX/", b""),
        (".DS_Store", b"\x00\x00"),
        ("rules/.hidden.json", b"garbage"),
        (".git/config", b"[core]"),
        ("rules/a.json", dumps(regex("a"))),
    )
    assert [rule.name for rule in load_rules(data, filename="rules.zip")] == ["a"]


def test_format_is_detected_by_content_not_name() -> None:
    assert load_rules(make_zip(("a.json", dumps(regex()))), filename="rules.json")
    assert load_rules(dumps(regex()), filename="rules.zip")


def test_windows_upload_path_is_reduced_to_its_base_name() -> None:
    assert problems(b"{", "C:\\fakepath\\height.json") == [
        "height.json: not valid JSON (Expecting property name enclosed in double quotes "
        "at line 1, column 2)"
    ]


# --- what is refused, with exact messages ---------------------------------------------------


def test_oversized_input() -> None:
    assert problems(b"x" * (25 * MB), "rules.zip") == [
        "rules.zip is 25.0 MB, above the 20 MB limit"
    ]


def test_one_byte_over_the_limit_is_shown_exactly() -> None:
    assert problems(b" " * (20 * MB + 1), "rules.json") == [
        "rules.json is 20,971,521 bytes, above the 20 MB limit"
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            b'{"name": "height",}',
            [
                "r.json: not valid JSON (Expecting property name enclosed in double quotes "
                "at line 1, column 19)"
            ],
            id="trailing-comma",
        ),
        pytest.param(
            b"name: height\ntype: regex\n",
            ["r.json: not valid JSON (Expecting value at line 1, column 1)"],
            id="yaml",
        ),
        pytest.param(b"", ["r.json: is empty"], id="empty"),
        pytest.param(b" \n\t", ["r.json: is empty"], id="blank"),
        pytest.param(
            b'{"name": "caf\xe9"}',
            ["r.json: not UTF-8 text (byte 0xe9 at position 13)"],
            id="latin-1",
        ),
        pytest.param(
            b'\xef\xbb\xbf{"name": "caf\xe9"}',
            ["r.json: not UTF-8 text (byte 0xe9 at position 16)"],
            id="latin-1-after-bom",
        ),
        pytest.param(
            "{}".encode("utf-16"),
            ["r.json: not UTF-8 text (it looks like UTF-16; save it as UTF-8)"],
            id="utf-16",
        ),
        pytest.param(
            b'{"name": "a", "name": "b"}', ["r.json: duplicate key 'name'"], id="duplicate-key"
        ),
        pytest.param(
            b'{"version": NaN}', ["r.json: not valid JSON (NaN is not allowed)"], id="nan"
        ),
        pytest.param(b"[" * 100_000, ["r.json: not valid JSON (nested too deeply)"], id="deep"),
        pytest.param(
            b'"height"',
            ["r.json: must be a rule object or an array of rules (got string)"],
            id="string",
        ),
        pytest.param(b"[]", ["r.json: holds no rules (an empty array)"], id="empty-array"),
        pytest.param(
            dumps([regex(), 7, None]),
            [
                "r.json[1]: must be a JSON object (got number)",
                "r.json[2]: must be a JSON object (got null)",
            ],
            id="array-of-non-objects",
        ),
        pytest.param(
            dumps(regex(regex="abcde)")),
            ["r.json: regex: unbalanced parenthesis at position 5"],
            id="bad-regex",
        ),
        pytest.param(
            dumps(dictionary(dictionary=[])),
            ["r.json: dictionary: must not be empty"],
            id="empty-dictionary",
        ),
        pytest.param(
            dumps(regex(type="lookup")),
            ["r.json: type: must be 'regex' or 'dictionary' (got 'lookup')"],
            id="unknown-type",
        ),
        pytest.param(
            dumps(regex(dictionary=["woman"])),
            ["r.json: dictionary: a regex rule must not have a dictionary"],
            id="regex-with-dictionary",
        ),
        pytest.param(
            dumps({"type": "dictionary"}),
            [
                "r.json: name: required",
                "r.json: entity: required",
                "r.json: dictionary: required for a dictionary rule",
            ],
            id="missing-fields",
        ),
        pytest.param(
            dumps([regex("a"), regex("b"), regex("a")]),
            ["r.json[2]: name: duplicate of r.json[0]"],
            id="duplicate-in-array",
        ),
        pytest.param(
            dumps([regex("Blood pressure"), regex("blood_Pressure")]),
            [
                "r.json[1]: name: duplicate of r.json[0] (named 'Blood pressure' there; names must "
                "differ by more than case or spaces vs underscores)"
            ],
            id="duplicate-by-key",
        ),
        pytest.param(
            dumps([regex("a", regex="("), regex("a")]),
            [
                "r.json[0]: regex: missing ), unterminated subpattern at position 0",
                "r.json[1]: name: duplicate of r.json[0]",
            ],
            id="duplicate-of-an-invalid-rule",
        ),
    ],
)
def test_bad_json_input(data: bytes, expected: list[str]) -> None:
    assert problems(data, "r.json") == expected


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param(
            [("a.json", dumps(regex("a"))), ("../evil.json", dumps(regex("e")))],
            ["rules.zip/../evil.json: path contains '..'"],
            id="zip-slip",
        ),
        pytest.param(
            [("a/../../evil.json", dumps(regex("e")))],
            ["rules.zip/a/../../evil.json: path contains '..'", "rules.zip: holds no .json files"],
            id="zip-slip-nested",
        ),
        pytest.param(
            [("/etc/evil.json", dumps(regex("e"))), ("C:/evil.json", dumps(regex("f")))],
            [
                "rules.zip//etc/evil.json: is an absolute path",
                "rules.zip/C:/evil.json: is an absolute path",
                "rules.zip: holds no .json files",
            ],
            id="absolute",
        ),
        pytest.param(
            [
                ("a\\b.json", dumps(regex("e"))),
                ("a//b.json", dumps(regex("f"))),
                ("./c.json", dumps(regex("g"))),
            ],
            [
                "rules.zip/a\\b.json: name contains a backslash",
                "rules.zip/a//b.json: path has '.' or empty segments",
                "rules.zip/./c.json: path has '.' or empty segments",
                "rules.zip: holds no .json files",
            ],
            id="odd-paths",
        ),
        pytest.param(
            [
                ("a.json", dumps(regex("a"))),
                (entry_info("link.json", stat.S_IFLNK | 0o777), b"/etc/passwd"),
            ],
            ["rules.zip/link.json: is a symbolic link, not a plain file"],
            id="symlink",
        ),
        pytest.param(
            [("a.json", dumps(regex("a"))), (entry_info("fifo.json", stat.S_IFIFO | 0o644), b"")],
            ["rules.zip/fifo.json: is a special file, not a plain file"],
            id="fifo",
        ),
        pytest.param(
            [("a.json", dumps(regex("a"))), ("README.md", b"# rules")],
            ["rules.zip/README.md: is not a .json file (a rules ZIP holds only .json files)"],
            id="not-json",
        ),
        pytest.param(
            [("a.json", dumps(regex("a"))), ("a.json", dumps(regex("b")))],
            ["rules.zip/a.json: appears more than once in the archive"],
            id="repeated-entry",
        ),
        pytest.param([], ["rules.zip: holds no .json files"], id="empty-zip"),
        pytest.param(
            [("docs/", b""), ("__MACOSX/._a.json", b"x")],
            ["rules.zip: holds no .json files"],
            id="no-json",
        ),
        pytest.param(
            [("a.json", dumps(regex("a"))), ("b.json", b"{oops")],
            [
                "rules.zip/b.json: not valid JSON (Expecting property name enclosed in double "
                "quotes at line 1, column 2)"
            ],
            id="bad-json-inside",
        ),
        pytest.param(
            [("a.json", dumps(regex("height"))), ("sub/b.json", dumps(regex("height")))],
            ["rules.zip/sub/b.json: name: duplicate of rules.zip/a.json"],
            id="duplicate-across-files",
        ),
    ],
)
def test_bad_zip_input(entries: list[Entry], expected: list[str]) -> None:
    assert problems(make_zip(*entries), "rules.zip") == expected


def test_encrypted_entry() -> None:
    data = bytearray(make_zip(("a.json", dumps(regex("a"))), ("secret.json", dumps(regex("s")))))
    # zipfile cannot write encrypted entries: set the flag in the last entry's two headers.
    data[data.rfind(b"PK\x03\x04") + 6] |= 0x1
    data[data.rfind(b"PK\x01\x02") + 8] |= 0x1
    assert problems(bytes(data), "rules.zip") == ["rules.zip/secret.json: is encrypted"]


def test_unreadable_zip() -> None:
    assert problems(b"PK\x03\x04 and then nothing useful", "rules.zip") == [
        "rules.zip: not a readable ZIP archive (File is not a zip file)"
    ]


def test_corrupted_entry_fails_its_crc_check() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.json", dumps(regex("aaaa")))
    data = buffer.getvalue().replace(b'"aaaa"', b'"aaab"', 1)
    assert problems(data, "rules.zip") == [
        "rules.zip/a.json: cannot be read (Bad CRC-32 for file 'a.json')"
    ]


def test_entry_that_understates_its_size_is_refused() -> None:
    data = bytearray(make_zip(("a.json", dumps(regex("a", description="x" * 500)))))
    # Claim 10 bytes in both headers: reading stops there and the CRC check catches the lie.
    struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, 10)
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, 10)
    assert problems(bytes(data), "rules.zip", ImportLimits(max_file_bytes=100)) == [
        "rules.zip/a.json: cannot be read (Bad CRC-32 for file 'a.json')"
    ]


def test_too_many_files() -> None:
    data = make_zip(*[(f"r{n}.json", dumps(regex(f"r{n}"))) for n in range(4)])
    assert problems(data, "rules.zip", ImportLimits(max_files=3)) == [
        "rules.zip holds 4 .json files, above the 3 limit"
    ]
    assert len(load_rules(data, filename="rules.zip", limits=ImportLimits(max_files=4))) == 4


def test_too_many_files_at_the_default_limit() -> None:
    data = make_zip(*[(f"r{n}.json", b"{}") for n in range(1_001)])
    assert problems(data, "rules.zip") == [
        "rules.zip holds 1,001 .json files, above the 1,000 limit"
    ]


def test_file_too_large() -> None:
    big = dumps(regex("big", description="x" * 200))
    data = make_zip(("small.json", dumps(regex("s"))), ("big.json", big))
    assert problems(data, "rules.zip", ImportLimits(max_file_bytes=200)) == [
        f"rules.zip/big.json is {len(big)} bytes, above the 200 bytes limit"
    ]


def test_too_much_uncompressed_data() -> None:
    files = [(f"r{n}.json", dumps(regex(f"r{n}", description="x" * 800))) for n in range(3)]
    assert problems(make_zip(*files), "rules.zip", ImportLimits(max_total_bytes=2 * 1024)) == [
        "rules.zip expands to 2.6 KB of .json files, above the 2 KB limit"
    ]


def test_too_many_rules() -> None:
    data = dumps([regex(f"r{n}") for n in range(3)])
    assert problems(data, "rules.json", ImportLimits(max_rules=2)) == [
        "rules.json holds 3 rules, above the 2 limit"
    ]


def test_all_or_nothing_one_bad_file_in_five() -> None:
    files: list[Entry] = [(f"{name}.json", dumps(regex(name))) for name in "abde"]
    files.insert(2, ("c.json", dumps(regex("c", regex="abcde)"))))
    data = make_zip(*files)
    assert problems(data, "rules.zip") == [
        "rules.zip/c.json: regex: unbalanced parenthesis at position 5"
    ]
    good = make_zip(*(files[:2] + files[3:]))
    assert [rule.name for rule in load_rules(good, filename="rules.zip")] == list("abde")


def test_every_problem_in_every_file_is_reported_together() -> None:
    data = make_zip(
        ("a.json", dumps(regex("a"))),
        ("b.json", dumps(regex("b", type="lookup", version=0))),
        ("c.json", b"not json"),
        ("d.json", dumps([dictionary("A"), dictionary("d", dictionary=[])])),
        (entry_info("e.json", stat.S_IFLNK | 0o777), b"a.json"),
        ("f.txt", b""),
    )
    assert problems(data, "upload.zip") == [
        "upload.zip/e.json: is a symbolic link, not a plain file",
        "upload.zip/f.txt: is not a .json file (a rules ZIP holds only .json files)",
        "upload.zip/c.json: not valid JSON (Expecting value at line 1, column 1)",
        "upload.zip/b.json: type: must be 'regex' or 'dictionary' (got 'lookup')",
        "upload.zip/b.json: version: must be at least 1 (got 0)",
        "upload.zip/d.json[0]: name: duplicate of upload.zip/a.json (named 'a' there; names "
        "must differ by more than case or spaces vs underscores)",
        "upload.zip/d.json[1]: dictionary: must not be empty",
    ]


# --- export ----------------------------------------------------------------------------------


def spec(data: dict[str, Any]) -> RuleSpec:
    return RuleSpec.model_validate(data)


def test_export_writes_one_sorted_pretty_file_per_rule() -> None:
    rules = [spec(regex("b")), spec(dictionary("Blood pressure")), spec(dictionary("a"))]
    with zipfile.ZipFile(io.BytesIO(export_rules(rules))) as archive:
        infos = archive.infolist()
        assert [info.filename for info in infos] == ["Blood_pressure.json", "a.json", "b.json"]
        for info, rule in zip(infos, sorted(rules, key=lambda r: r.name), strict=True):
            assert info.date_time == ZIP_DATE_TIME
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert stat.S_ISREG(info.external_attr >> 16)
            content = archive.read(info)
            assert content == rule.to_json_bytes()
            assert json.loads(content) == rule.to_json_dict()
            assert content.startswith(b'{\n  "case_sensitive": false,\n')


def test_export_is_deterministic_and_order_independent() -> None:
    rules = [spec(regex("b")), spec(dictionary("a")), spec(regex("c", description="é"))]
    assert export_rules(rules) == export_rules(list(reversed(rules))) == export_rules(rules)


def test_export_round_trips_sorted_by_name() -> None:
    rules = [
        spec(regex("z rule", match_scope="sub-token", case_sensitive=True, version=3)),
        spec(dictionary("female", dictionary=["woman", "lady", "girl"], description="F")),
    ]
    loaded = load_rules(export_rules(rules), filename="x.zip")
    assert loaded == sorted(rules, key=lambda rule: rule.name)


def test_export_refuses_names_that_would_share_a_file() -> None:
    with pytest.raises(RuleError) as caught:
        export_rules([spec(regex("a b")), spec(regex("A_b"))])
    assert caught.value.problems == [
        "export: rules 'A_b' and 'a b' would both be written as a_b.json"
    ]


def test_export_refuses_nothing() -> None:
    with pytest.raises(RuleError) as caught:
        export_rules([])
    assert caught.value.problems == ["export: no rules selected"]


def test_export_refuses_what_could_not_be_imported_again() -> None:
    rules = [spec(regex(f"r{n}")) for n in range(3)]
    with pytest.raises(RuleError) as caught:
        export_rules(rules, limits=ImportLimits(max_files=2))
    assert caught.value.problems == ["export: 3 rules selected, above the 2 a rules ZIP may hold"]
    size = len(rules[0].to_json_bytes())
    with pytest.raises(RuleError) as caught:
        export_rules(rules[:1], limits=ImportLimits(max_file_bytes=100))
    assert caught.value.problems == [f"export: r0.json is {size} bytes, above the 100 bytes limit"]


# --- round-trip property ---------------------------------------------------------------------

_TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
_PLAIN = st.characters(exclude_categories=["Cs", "Cc"])
_PATTERNS = [r"[0-7]'((0?[0-9])|(1(0|1)))", r"\d+(\.\d+)? ?(mg|ml)", r"(?i)b\.?p\.?", r"^\w+$"]


@st.composite
def rule_specs(draw: st.DrawFn) -> RuleSpec:
    kind = draw(st.sampled_from(["regex", "dictionary"]))
    data: dict[str, Any] = {
        "name": draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_ .-]{0,40}\Z")),
        "type": kind,
        "entity": draw(st.text(_PLAIN, min_size=1, max_size=64).filter(lambda s: s == s.strip())),
        "description": draw(st.text(_TEXT, max_size=60)),
        "version": draw(st.integers(1, MAX_VERSION)),
        "match_scope": draw(st.sampled_from(["token", "sub-token"])),
        "rule_scope": draw(st.sampled_from(["sentence", "document"])),
        "case_sensitive": draw(st.booleans()),
        "complete_match_regex": draw(st.booleans()),
    }
    if kind == "regex":
        escaped = st.text(_PLAIN, min_size=1, max_size=40).map(re.escape)
        data["regex"] = draw(st.one_of(st.sampled_from(_PATTERNS), escaped))
    else:
        entries = st.text(_PLAIN, min_size=1, max_size=30).filter(lambda s: bool(s.strip()))
        data["dictionary"] = draw(st.lists(entries, min_size=1, max_size=12))
    return RuleSpec.model_validate(data)


@HYPOTHESIS
@given(st.lists(rule_specs(), min_size=1, max_size=8, unique_by=lambda rule: rule.key))
def test_any_valid_rules_round_trip_through_export(rules: list[RuleSpec]) -> None:
    exported = export_rules(rules)
    assert load_rules(exported, filename="x.zip") == sorted(rules, key=lambda rule: rule.name)
    assert export_rules(list(reversed(rules))) == exported


@HYPOTHESIS
@given(rule_specs())
def test_any_valid_rule_round_trips_as_a_single_json_file(rule: RuleSpec) -> None:
    assert load_rules(rule.to_json_bytes(), filename=rule.file_name) == [rule]

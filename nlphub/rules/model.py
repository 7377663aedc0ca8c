"""ContextualParser rules: the validated `RuleSpec`, dictionary CSV parsing and `RuleError`.

Spark NLP for Healthcare's ContextualParser pre-annotates chunks of text with an entity label,
either because they match a regular expression (a *regex* rule, e.g. ``[0-7]'((0?[0-9])|(1(0|1)))``
for HEIGHT) or because they are one of a list of keywords (a *dictionary* rule, e.g. woman, lady,
girl for FEMALE; the keywords are uploaded as a CSV file, see `parse_dictionary_csv`).

`RuleSpec` is the one shape a rule has everywhere: in an import file, in the database and in an
export. Its fields are plain scalars plus one list of strings, so a SQLModel table can be built
from the same names, types and the ``MAX_*`` limits below. Validation is strict (a JSON ``"1"``
is not the number 1, ``"yes"`` is not ``true``) and problems are reported as human-readable
lines ``"<source>: <field>: <what is wrong>"`` collected in one `RuleError`.

Two names are the same rule when they are equal ignoring case with spaces and underscores treated
alike (`rule_key`): they would export to the same file name (``<name with spaces as _>.json``,
see `rule_file_name`), also on case-insensitive file systems.

Regular expressions are checked with Python's `re`; Spark runs them with Java's
``java.util.regex``, whose syntax agrees for everything but exotic constructs, so this check
catches typos (unbalanced parentheses, bad escapes) rather than guaranteeing Java accepts them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

__all__ = [
    "DICTIONARY_HEADERS",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_DICTIONARY_ENTRIES",
    "MAX_DICTIONARY_ENTRY_LENGTH",
    "MAX_ENTITY_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_REGEX_LENGTH",
    "MAX_RULE_JSON_BYTES",
    "MAX_VERSION",
    "NAME_PATTERN",
    "RuleError",
    "RuleSpec",
    "RuleType",
    "format_validation_error",
    "json_type_name",
    "parse_dictionary_csv",
    "printable",
    "rule_file_name",
    "rule_key",
    "validate_rule",
]

RuleType = Literal["regex", "dictionary"]

MAX_NAME_LENGTH = 128
MAX_ENTITY_LENGTH = 64
MAX_REGEX_LENGTH = 2_000
MAX_DESCRIPTION_LENGTH = 2_000
MAX_DICTIONARY_ENTRIES = 100_000
MAX_DICTIONARY_ENTRY_LENGTH = 500
MAX_VERSION = 2_147_483_647
"""Largest version: fits a signed 32-bit database integer."""
MAX_RULE_JSON_BYTES = 5 * 2**20
"""Largest rule file (`RuleSpec.to_json_bytes`), so that every valid rule can be exported and
imported again under the default import limits. Only a large dictionary gets near it."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_ .-]*$")
DICTIONARY_HEADERS = frozenset({"keyword", "term", "entity"})
"""First-column values (any case) that mark the first non-blank CSV row as a header."""

_NAME_RULE = (
    "must start with a letter or digit and hold only letters, digits, spaces, '_', '.', '-'"
)
_MAX_SHOWN_PROBLEMS = 100
_MAX_ENTRY_PROBLEMS = 5
_SHOWN_INPUT = 40


class RuleError(ValueError):
    """One or more problems with rules; ``problems`` lists every one, each naming source and field.

    ``str()`` shows the problems one per line (the first 100, then a count of the rest).
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        if not self.problems:
            raise ValueError("RuleError needs at least one problem")
        shown = self.problems[:_MAX_SHOWN_PROBLEMS]
        rest = len(self.problems) - len(shown)
        lines = shown + ([f"... and {rest:,} more problems"] if rest else [])
        super().__init__("\n".join(lines))


def rule_key(name: str) -> str:
    """The identity of a rule name: case-folded, spaces and underscores treated alike.

    Two rules whose keys are equal would export to the same file (or to files differing only in
    case), so a collection of rules (an import, the database) must hold each key at most once.
    """
    return name.replace(" ", "_").casefold()


def rule_file_name(name: str) -> str:
    """The file a rule is exported as: its name with spaces as ``_`` plus ``.json``."""
    return name.replace(" ", "_") + ".json"


def printable(text: str, limit: int = 80) -> str:
    """``text`` safe to show in a message: control characters and unpaired surrogates escaped,
    cut to ``limit`` characters."""
    shown = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def json_type_name(value: object) -> str:
    """How JSON calls the type of a parsed value: object, array, string, number, boolean, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: object) -> str:
    """A short rendering of an offending input value for a message."""
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= _SHOWN_INPUT else text[: _SHOWN_INPUT - 4] + "...'"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= _SHOWN_INPUT else json_type_name(value)
    kind = json_type_name(value)
    return f"an {kind}" if kind in {"object", "array"} else kind


def _text_problem(value: str, *, control_chars: bool) -> str | None:
    """What makes ``value`` unstorable: NUL, unpaired surrogates, optionally any control char."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (not valid Unicode text)"
    if control_chars:
        for char in value:
            if unicodedata.category(char) == "Cc":
                return f"contains a control character (U+{ord(char):04X})"
    return None


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        return f"{exc.msg}{where}"
    except OverflowError as exc:  # e.g. a{99999999999}
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    return None


def _clean_dictionary(entries: list[str]) -> list[str]:
    """Strip entries, drop duplicates keeping the first; raise ValueError listing bad entries."""
    problems: list[str] = []
    seen: dict[str, None] = {}
    for number, raw in enumerate(entries, 1):
        entry = raw.strip()
        problem: str | None
        if not entry:
            problem = "is empty"
        elif len(entry) > MAX_DICTIONARY_ENTRY_LENGTH:
            problem = f"is longer than {MAX_DICTIONARY_ENTRY_LENGTH} characters ({len(entry):,})"
        else:
            problem = _text_problem(entry, control_chars=True)
        if problem is not None:
            problems.append(f"entry {number} {problem}")
        else:
            seen.setdefault(entry, None)
    if problems:
        shown = problems[:_MAX_ENTRY_PROBLEMS]
        rest = len(problems) - len(shown)
        raise ValueError("; ".join(shown) + (f" (and {rest:,} more)" if rest else ""))
    if len(seen) > MAX_DICTIONARY_ENTRIES:
        raise ValueError(
            f"has {len(seen):,} distinct entries, above the {MAX_DICTIONARY_ENTRIES:,} limit"
        )
    return list(seen)


class RuleSpec(BaseModel):
    """One ContextualParser rule, validated.

    Exactly one of ``regex`` (for ``type="regex"``) and ``dictionary`` (for
    ``type="dictionary"``) is set. ``dictionary`` entries are stripped and de-duplicated (first
    occurrence kept), so a validated rule never changes when validated again.

    ContextualParser options (a deliberately small set; all apply to both rule types):

    - ``match_scope``: ``"token"`` labels whole tokens that match; ``"sub-token"`` labels only
      the matching part of a token (ContextualParser ``matchScope``).
    - ``rule_scope``: look for matches within each ``"sentence"`` or across the whole
      ``"document"`` (``ruleScope``).
    - ``case_sensitive``: match case exactly (``caseSensitive``; default: ignore case).
    - ``complete_match_regex``: the regex must match the whole token rather than part of it
      (``completeMatchRegex``).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    type: RuleType
    entity: str = Field(min_length=1, max_length=MAX_ENTITY_LENGTH)
    regex: str | None = Field(
        default=None, min_length=1, max_length=MAX_REGEX_LENGTH, validate_default=True
    )
    dictionary: list[str] | None = Field(default=None, validate_default=True)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)
    version: int = Field(default=1, ge=1, le=MAX_VERSION)
    match_scope: Literal["token", "sub-token"] = "token"
    rule_scope: Literal["sentence", "document"] = "sentence"
    case_sensitive: bool = False
    complete_match_regex: bool = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(_NAME_RULE)
        return value

    @field_validator("entity")
    @classmethod
    def _check_entity(cls, value: str) -> str:
        problem = _text_problem(value, control_chars=True)
        if problem is not None:
            raise ValueError(problem)
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        return value

    @field_validator("description")
    @classmethod
    def _check_description(cls, value: str) -> str:
        problem = _text_problem(value, control_chars=False)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("regex")
    @classmethod
    def _check_regex(cls, value: str | None, info: ValidationInfo) -> str | None:
        rule_type = info.data.get("type")
        if value is None:
            if rule_type == "regex":
                raise ValueError("required for a regex rule")
            return None
        if rule_type == "dictionary":
            raise ValueError("a dictionary rule must not have a regex")
        problem = _text_problem(value, control_chars=False) or _regex_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("dictionary")
    @classmethod
    def _check_dictionary(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        rule_type = info.data.get("type")
        if value is None:
            if rule_type == "dictionary":
                raise ValueError("required for a dictionary rule")
            return None
        if rule_type == "regex":
            raise ValueError("a regex rule must not have a dictionary")
        if not value:
            raise ValueError("must not be empty")
        return _clean_dictionary(value)

    @property
    def key(self) -> str:
        """`rule_key` of the name: unique within any collection of rules."""
        return rule_key(self.name)

    @property
    def file_name(self) -> str:
        """`rule_file_name` of the name: the file this rule is exported as."""
        return rule_file_name(self.name)

    @model_validator(mode="after")
    def _check_size(self) -> RuleSpec:
        size = len(self.to_json_bytes())
        if size > MAX_RULE_JSON_BYTES:
            raise ValueError(
                f"dictionary: too large: the rule's JSON would be {size / 2**20:.1f} MB, "
                f"above the {MAX_RULE_JSON_BYTES // 2**20} MB limit"
            )
        return self

    def to_json_dict(self) -> dict[str, Any]:
        """The rule as its JSON file holds it: every field, minus the unused regex/dictionary."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_json_bytes(self) -> bytes:
        """The rule's export file: UTF-8 JSON, keys sorted, indented by 2, ending in a newline."""
        text = json.dumps(self.to_json_dict(), indent=2, sort_keys=True, ensure_ascii=False)
        return (text + "\n").encode("utf-8")


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    got = json_type_name(value)
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')} (got {_show(value)})"
    if kind == "string_type":
        return f"must be a string (got {got})"
    if kind == "string_unicode":
        return "contains an unpaired surrogate (not valid Unicode text)"
    if kind == "bool_type":
        return f"must be true or false (got {got})"
    if kind == "int_type":
        return f"must be a whole number (got {got})"
    if kind == "list_type":
        return f"must be an array (got {got})"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"must be a JSON object (got {got})"
    if kind == "string_too_short":
        minimum = int(ctx.get("min_length", 1))
        return "must not be empty" if minimum == 1 else f"must be at least {minimum} characters"
    if kind == "string_too_long":
        length = len(value) if isinstance(value, str) else 0
        return f"must be at most {int(ctx['max_length']):,} characters (got {length:,})"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']} (got {_show(value)})"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']:,} (got {_show(value)})"
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    message = error["msg"]
    return message[:1].lower() + message[1:]


def _where(loc: tuple[int | str, ...]) -> str:
    return ": ".join(
        f"entry {part + 1}" if isinstance(part, int) else printable(part, 60) for part in loc
    )


def format_validation_error(error: ValidationError, source: str) -> list[str]:
    """Pydantic's errors for one rule as ``"<source>: <field>: <problem>"`` lines."""
    lines = []
    for detail in error.errors(include_url=False):
        where = _where(tuple(detail["loc"]))
        prefix = f"{source}: {where}: " if where else f"{source}: "
        lines.append(prefix + _describe(detail))
    return lines


def validate_rule(data: object, *, source: str) -> RuleSpec:
    """Validate one parsed JSON value as a rule; `RuleError` lists every problem found.

    ``source`` names where the value came from (``"height.json"``, ``"rules.zip/a.json[2]"``)
    and starts every problem line.
    """
    if not isinstance(data, dict):
        raise RuleError([f"{source}: must be a JSON object (got {json_type_name(data)})"])
    try:
        return RuleSpec.model_validate(data)
    except ValidationError as exc:
        raise RuleError(format_validation_error(exc, source)) from None


def parse_dictionary_csv(text: str, *, source: str) -> list[str]:
    """Keywords from a dictionary CSV: the first column of each row, stripped, de-duplicated.

    ``text`` is the decoded file (decoding, and refusing what is not UTF-8, is the caller's
    job); a leading BOM is dropped. Blank rows are skipped, and so is the first non-blank row
    when its first cell is a header (``keyword``, ``term`` or ``entity``, any case). Further
    columns are ignored. Row numbers in problems count CSV records from 1, as a spreadsheet
    shows them (a quoted cell spanning lines is one row). Raises `RuleError` listing every bad
    row, e.g. ``"female.csv row 3: contains a NUL character"``.
    """
    text = text.removeprefix("\ufeff")
    problems: list[str] = []
    keywords: dict[str, None] = {}
    header_checked = False
    reader = csv.reader(io.StringIO(text, newline=""))
    row_number = 0
    while True:
        row_number += 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"{source} row {row_number}: not valid CSV ({exc})")
            break
        if not any(cell.strip() for cell in row):
            continue
        first = row[0].strip()
        if not header_checked:
            header_checked = True
            if first.casefold() in DICTIONARY_HEADERS:
                continue
        problem: str | None
        if not first:
            problem = "the first column is empty"
        elif len(first) > MAX_DICTIONARY_ENTRY_LENGTH:
            problem = f"keyword is longer than {MAX_DICTIONARY_ENTRY_LENGTH} characters"
        else:
            problem = _text_problem(first, control_chars=True)
        if problem is not None:
            problems.append(f"{source} row {row_number}: {problem}")
        else:
            keywords.setdefault(first, None)
    if not problems:
        if not keywords:
            problems.append(f"{source}: holds no keywords")
        elif len(keywords) > MAX_DICTIONARY_ENTRIES:
            problems.append(
                f"{source}: holds {len(keywords):,} distinct keywords, "
                f"above the {MAX_DICTIONARY_ENTRIES:,} limit"
            )
    if problems:
        raise RuleError(problems)
    return list(keywords)

"""Import and export of rules: JSON files, JSON arrays and ZIP archives of JSON files.

Import (`load_rules`) accepts what a user uploads on the Rules tab:

- a JSON object: one rule;
- a JSON array of rule objects;
- a ZIP archive of ``.json`` files (at any depth), each holding one rule object or an array.

The input is a ZIP when it starts with a ZIP signature (``PK\\x03\\x04``, or ``PK\\x05\\x06`` for
an empty archive), whatever its file name; otherwise it is JSON (UTF-8, with or without BOM).
Import is all-or-nothing: everything is read and validated, and either every rule is returned
or one `RuleError` lists every problem found (file, and field where there is one), including
names used twice across files. Rules come back in input order (archive entry order, then array
order).

ZIP entries are never extracted, only read in memory with bounded reads. Refused: names that are
absolute or hold ``..``, ``.`` or empty segments, backslashes or control characters; symbolic
links and other special files; names repeated in the archive; encrypted entries; files that do
not end in ``.json``; more files or bytes than `ImportLimits` allows. Ignored: directories,
anything under ``__MACOSX/`` and dot files or anything inside dot folders.

Export (`export_rules`) writes one ``<name with spaces as _>.json`` per rule into a ZIP, sorted
by name, each file `RuleSpec.to_json_bytes` (pretty-printed, sorted keys), with fixed
timestamps and attributes so the same rules always give the same bytes. Because loading keeps
archive order, ``load_rules(export_rules(rules), filename="x.zip") == sorted(rules, key=name)``.
"""

from __future__ import annotations

import io
import json
import lzma
import re
import stat
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from nlphub.rules.model import (
    MAX_NAME_LENGTH,
    MAX_RULE_JSON_BYTES,
    NAME_PATTERN,
    RuleError,
    RuleSpec,
    json_type_name,
    printable,
    rule_key,
    validate_rule,
)

__all__ = [
    "DEFAULT_LIMITS",
    "MB",
    "ZIP_DATE_TIME",
    "ImportLimits",
    "export_rules",
    "format_size",
    "load_rules",
]

MB = 2**20

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
"""Timestamp of every exported entry (the earliest a ZIP can state), for reproducible bytes."""

_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_DRIVE = re.compile(r"^[A-Za-z]:")
_FLAG_ENCRYPTED = 0x1
_UNIX = 3
_READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    RuntimeError,  # encrypted entries
    NotImplementedError,  # unsupported compression methods
    ValueError,
)


@dataclass(frozen=True)
class ImportLimits:
    """Bounds on what `load_rules` reads; sizes in bytes (``MB`` is 2**20 bytes)."""

    max_input_bytes: int = 20 * MB
    """The uploaded file itself (JSON, or ZIP as uploaded)."""
    max_files: int = 1_000
    """``.json`` files in a ZIP."""
    max_file_bytes: int = MAX_RULE_JSON_BYTES
    """One ``.json`` file in a ZIP, uncompressed (5 MB)."""
    max_total_bytes: int = 50 * MB
    """All ``.json`` files in a ZIP together, uncompressed."""
    max_rules: int = 1_000
    """Rules in one import, all files and arrays together (as many as an export can hold)."""


DEFAULT_LIMITS = ImportLimits()


def format_size(n: int, *, exact: bool = False) -> str:
    """``25 * MB`` -> ``"25.0 MB"``; with ``exact``, ``20 * MB`` -> ``"20 MB"`` (binary units)."""
    if n < 1024:
        return f"{n:,} bytes"
    value, unit = n / 1024, "KB"
    if value >= 1024:
        value, unit = value / 1024, "MB"
    if value >= 1024:
        value, unit = value / 1024, "GB"
    text = f"{value:.1f}"
    return f"{text.removesuffix('.0') if exact else text} {unit}"


def _too_big(label: str, size: int, limit: int) -> str:
    shown = format_size(size)
    if shown == format_size(limit):  # e.g. a byte above the limit: show it exactly
        shown = f"{size:,} bytes"
    return f"{label} is {shown}, above the {format_size(limit, exact=True)} limit"


def _label(filename: str) -> str:
    """The upload's base name, printable; ``"upload"`` when there is none."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return printable(base, 120) or "upload"


def _unsafe_name(name: str) -> str | None:
    if not name:
        return "has an empty name"
    if not name.isprintable():
        return "name contains control characters"
    if "\\" in name:
        return "name contains a backslash"
    if name.startswith("/") or _DRIVE.match(name):
        return "is an absolute path"
    segments = name.removesuffix("/").split("/")
    if ".." in segments:
        return "path contains '..'"
    if "." in segments or "" in segments:
        return "path has '.' or empty segments"
    return None


def _is_ignored(name: str) -> bool:
    return any(
        segment.startswith(".") or segment == "__MACOSX"
        for segment in name.removesuffix("/").split("/")
    )


def _special_kind(info: zipfile.ZipInfo) -> str | None:
    """What a non-plain entry is, from the Unix mode that Unix zip tools record."""
    mode = info.external_attr >> 16
    # No file-type bits at all (Python's own ``writestr`` writes just 0o600) means a plain file.
    if info.create_system != _UNIX or stat.S_IFMT(mode) == 0 or stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a special file"


def _read_zip(
    data: bytes, label: str, limits: ImportLimits
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The ``.json`` files of a ZIP as ``(source label, bytes)``, and the problems found."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _READ_ERRORS as exc:
        return [], [f"{label}: not a readable ZIP archive ({exc})"]
    problems: list[str] = []
    documents: list[tuple[str, bytes]] = []
    with archive:
        wanted: list[tuple[str, zipfile.ZipInfo]] = []
        seen: set[str] = set()
        for info in archive.infolist():
            name = info.filename
            where = f"{label}/{printable(name, 200)}"
            problem = _unsafe_name(name)
            if problem is None and name in seen:
                problem = "appears more than once in the archive"
            seen.add(name)
            if problem is None and (info.is_dir() or _is_ignored(name)):
                continue
            if problem is None and (kind := _special_kind(info)) is not None:
                problem = f"is {kind}, not a plain file"
            if problem is None and not name.lower().endswith(".json"):
                problem = "is not a .json file (a rules ZIP holds only .json files)"
            if problem is None and info.flag_bits & _FLAG_ENCRYPTED:
                problem = "is encrypted"
            if problem is not None:
                problems.append(f"{where}: {problem}")
            else:
                wanted.append((where, info))
        if not wanted:
            problems.append(f"{label}: holds no .json files")
        if len(wanted) > limits.max_files:
            problems.append(
                f"{label} holds {len(wanted):,} .json files, above the {limits.max_files:,} limit"
            )
            return [], problems
        declared = sum(info.file_size for _, info in wanted)
        if declared > limits.max_total_bytes:
            problems.append(
                f"{label} expands to {format_size(declared)} of .json files, "
                f"above the {format_size(limits.max_total_bytes, exact=True)} limit"
            )
            return [], problems
        total = 0
        for where, info in wanted:
            if info.file_size > limits.max_file_bytes:
                problems.append(_too_big(where, info.file_size, limits.max_file_bytes))
                continue
            budget = min(limits.max_file_bytes, limits.max_total_bytes - total)
            try:
                with archive.open(info) as stream:
                    raw = stream.read(budget + 1)
            except _READ_ERRORS as exc:
                problems.append(f"{where}: cannot be read ({exc})")
                continue
            if len(raw) > budget:  # the archive understated the size
                problems.append(f"{where}: holds more data than the archive declares")
                break
            total += len(raw)
            documents.append((where, raw))
    return documents, problems


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key '{printable(key, 60)}'")
        result[key] = value
    return result


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def _decode_json(raw: bytes, source: str) -> object:
    """Parse one JSON document; `RuleError` with one line saying what is wrong."""
    offset = 0
    if raw.startswith(_UTF8_BOM):
        raw, offset = raw[len(_UTF8_BOM) :], len(_UTF8_BOM)
    if raw.startswith(_UTF16_BOMS):
        raise RuleError([f"{source}: not UTF-8 text (it looks like UTF-16; save it as UTF-8)"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleError(
            [
                f"{source}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at position "
                f"{exc.start + offset})"
            ]
        ) from None
    if not text.strip():
        raise RuleError([f"{source}: is empty"])
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except _DuplicateKeyError as exc:
        problem = str(exc)
    except ValueError as exc:
        problem = f"not valid JSON ({exc})"
    except RecursionError:
        problem = "not valid JSON (nested too deeply)"
    raise RuleError([f"{source}: {problem}"])


def _candidates(value: object, source: str) -> list[tuple[str, object]]:
    """The rule objects in one parsed document, each with its source label."""
    if isinstance(value, dict):
        return [(source, value)]
    if isinstance(value, list):
        if not value:
            raise RuleError([f"{source}: holds no rules (an empty array)"])
        return [(f"{source}[{index}]", item) for index, item in enumerate(value)]
    raise RuleError(
        [f"{source}: must be a rule object or an array of rules (got {json_type_name(value)})"]
    )


def _claimed_name(value: object) -> str | None:
    """The rule's name when it is a valid one, even if the rest of the rule is not."""
    name = value.get("name") if isinstance(value, dict) else None
    if isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and NAME_PATTERN.match(name):
        return name
    return None


def load_rules(
    data: bytes, *, filename: str, limits: ImportLimits = DEFAULT_LIMITS
) -> list[RuleSpec]:
    """Rules from an uploaded JSON file or ZIP; all of them, or a `RuleError` listing every problem.

    ``filename`` (the upload's name; only its base name is used) labels every problem:
    ``"height.json: regex: ..."``, ``"rules.zip/a.json: type: ..."``, and ``"rules.json[2]: ..."``
    for the third rule of an array.
    """
    label = _label(filename)
    if len(data) > limits.max_input_bytes:
        raise RuleError([_too_big(label, len(data), limits.max_input_bytes)])
    problems: list[str] = []
    if data.startswith(_ZIP_SIGNATURES):
        documents, problems = _read_zip(data, label, limits)
    else:
        documents = [(label, data)]
    candidates: list[tuple[str, object]] = []
    for source, raw in documents:
        try:
            candidates.extend(_candidates(_decode_json(raw, source), source))
        except RuleError as exc:
            problems.extend(exc.problems)
    if len(candidates) > limits.max_rules:
        problems.append(
            f"{label} holds {len(candidates):,} rules, above the {limits.max_rules:,} limit"
        )
        raise RuleError(problems)
    rules: list[RuleSpec] = []
    first: dict[str, tuple[str, str]] = {}
    for source, value in candidates:
        try:
            rules.append(validate_rule(value, source=source))
        except RuleError as exc:
            problems.extend(exc.problems)
        name = _claimed_name(value)
        if name is None:
            continue
        key = rule_key(name)
        if key not in first:
            first[key] = (source, name)
            continue
        first_source, first_name = first[key]
        problem = f"{source}: name: duplicate of {first_source}"
        if name != first_name:
            problem += (
                f" (named '{first_name}' there; names must differ by more than case"
                " or spaces vs underscores)"
            )
        problems.append(problem)
    if problems:
        raise RuleError(problems)
    return rules


def export_rules(rules: Iterable[RuleSpec], *, limits: ImportLimits = DEFAULT_LIMITS) -> bytes:
    """A ZIP with one ``<name>.json`` per rule, sorted by name; identical rules, identical bytes.

    Raises `RuleError` when the export could not be imported again under ``limits`` (no rules,
    two rules with the same `rule_key`, too many rules or too much data), so every export
    round-trips through `load_rules`.
    """
    ordered = sorted(rules, key=lambda rule: rule.name)
    if not ordered:
        raise RuleError(["export: no rules selected"])
    problems: list[str] = []
    by_key: dict[str, RuleSpec] = {}
    for rule in ordered:
        if (other := by_key.setdefault(rule.key, rule)) is not rule:
            problems.append(
                f"export: rules '{other.name}' and '{rule.name}' would both be written as "
                f"{rule.file_name}"
            )
    if len(ordered) > min(limits.max_files, limits.max_rules):
        problems.append(
            f"export: {len(ordered):,} rules selected, above the "
            f"{min(limits.max_files, limits.max_rules):,} a rules ZIP may hold"
        )
    if problems:
        raise RuleError(problems)
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w") as archive:
        for rule in ordered:
            content = rule.to_json_bytes()
            total += len(content)
            if len(content) > limits.max_file_bytes:
                problems.append(
                    _too_big(f"export: {rule.file_name}", len(content), limits.max_file_bytes)
                )
            info = zipfile.ZipInfo(rule.file_name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = _UNIX
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, content, compresslevel=9)
    if total > limits.max_total_bytes:
        problems.append(_too_big("export: the rules' JSON", total, limits.max_total_bytes))
    if buffer.tell() > limits.max_input_bytes:
        problems.append(_too_big("export: the ZIP", buffer.tell(), limits.max_input_bytes))
    if problems:
        raise RuleError(problems)
    return buffer.getvalue()

"""Entries of a Models Hub ``metadata.json`` and Spark NLP's choice among them.

A hub folder's ``metadata.json`` is JSON Lines, one resource per line (design.md section 1).
``parse_metadata`` reads it leniently: a malformed line is skipped with a warning naming the
source and line, so one bad line never hides the rest of the hub. ``select_newest`` makes
exactly the choice Spark NLP's downloader makes, and ``explain_no_match`` says why it found
nothing.

Pure apart from logging the warnings of ``parse_metadata``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
)

from nlphub.versions import Version, VersionError, incompatibility_reason, is_compatible
from schemas.editions import OPEN_SOURCE

__all__ = [
    "EmbeddingType",
    "HubEntry",
    "ResourceKind",
    "check_hub_name",
    "embedding_type_of",
    "explain_no_match",
    "parse_metadata",
    "select_newest",
]

logger = logging.getLogger(__name__)

Category = Literal["ml", "pl", "nd"]
ResourceKind = Literal["model", "pipeline", "embeddings"]
EmbeddingType = Literal["word", "sentence", "document"]

DEFAULT_EDITION = OPEN_SOURCE
LIB_NAME = "Spark NLP"
SPARK_NAME = "Spark"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MD5_HEX_LENGTH = 32
_HEX_DIGITS = frozenset("0123456789ABCDEF")
# The hub's naming: ASCII letters, digits, "_", "." and "-", not starting with "." (so never
# "." or ".."). An archive name is built from the name and language, and becomes one segment
# of a URL and a file name: nothing else may reach it ("/", "?", "%", "\\", spaces, ...).
_HUB_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SHOWN_CHARS = 60


def check_hub_name(value: str, *, allow_empty: bool = False) -> str:
    """``value`` if it follows the hub's naming, else ``ValueError`` saying what is wrong.

    Letters (ASCII), digits, ``_``, ``.`` and ``-`` only, and no leading ``.`` (``.`` and
    ``..`` included). ``allow_empty`` accepts ``""`` (a language that matches any).
    """
    if value == "" and allow_empty:
        return value
    shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
    if not _HUB_NAME.fullmatch(value):
        raise ValueError(
            f"{shown!r} does not follow the hub's naming (letters, digits, '_', '.' and '-' only)"
        )
    if value.startswith("."):
        raise ValueError(f"{shown!r} does not follow the hub's naming (it starts with '.')")
    return value


def _to_version(value: Any) -> Version | None:
    """Accept the hub's ``{"parts": [...]}``, a list of parts, a string or a ``Version``."""
    if value is None or isinstance(value, Version):
        return value
    if isinstance(value, str):
        return Version.parse(value) if value.strip() else None
    if isinstance(value, dict | list | tuple):
        return Version.from_parts(value)
    raise VersionError(f"expected {{'parts': [...]}}, got {value!r}")


def _version_to_json(value: Version | None) -> dict[str, list[int]] | None:
    return None if value is None else {"parts": list(value.parts)}


HubVersion = Annotated[
    Version | None,
    PlainValidator(_to_version),
    PlainSerializer(_version_to_json),
]
"""A ``Version`` read from and written as the hub's ``{"parts": [...]}`` shape."""


# Annotators whose output is one vector per sentence (Spark NLP class names).
_SENTENCE_ANNOTATORS = frozenset(
    {
        "UniversalSentenceEncoder",
        "SentenceEmbeddings",
        "E5Embeddings",
        "E5VEmbeddings",
        "InstructorEmbeddings",
        "MPNetEmbeddings",
        "BGEEmbeddings",
        "UAEEmbeddings",
        "NomicEmbeddings",
        "SnowFlakeEmbeddings",
        "MxbaiEmbeddings",
        "AutoGGUFEmbeddings",
    }
)
# Annotators that pool into one vector per document or chunk.
_DOCUMENT_ANNOTATORS = frozenset(
    {"Doc2VecModel", "Doc2VecApproach", "DocumentEmbeddings", "ChunkEmbeddings"}
)
# Word-level annotators whose class name does not end in "Embeddings".
_WORD_ANNOTATORS = frozenset(
    {"WordEmbeddingsModel", "WordEmbeddings", "Word2VecModel", "Word2VecApproach"}
)


def embedding_type_of(annotator: str | None) -> EmbeddingType | None:
    """The embedding type an annotator produces, or ``None`` when it is no embeddings one.

    ``WordEmbeddingsModel``, ``BertEmbeddings`` and the other ``*Embeddings`` transformers
    give word vectors; ``*SentenceEmbeddings``, ``UniversalSentenceEncoder`` and the sentence
    encoders (E5, Instructor, MPNet, BGE, ...) give sentence vectors; ``Doc2VecModel`` and
    document or chunk pooling give document vectors. A fully qualified class name is read by
    its last segment.
    """
    if not annotator:
        return None
    simple = annotator.strip().rsplit(".", 1)[-1]
    if not simple:
        return None
    if simple in _DOCUMENT_ANNOTATORS or simple.startswith("Doc2Vec"):
        return "document"
    if (
        simple in _SENTENCE_ANNOTATORS
        or "SentenceEmbeddings" in simple
        or "SentenceEncoder" in simple
    ):
        return "sentence"
    if simple in _WORD_ANNOTATORS or simple.endswith(("Embeddings", "EmbeddingsModel")):
        return "word"
    if "Embeddings" in simple and "Finisher" in simple:
        return "document"
    return None


class HubEntry(BaseModel):
    """One line of a hub folder's ``metadata.json``.

    Field aliases are the hub's camelCase keys; Python names work too. ``edition`` is not in
    the hub's file: the caller states the edition of the folder the line came from. ``name``
    and ``language`` follow the hub's naming (``check_hub_name``; the language may be empty),
    so ``archive_name`` is always one plain file name.
    """

    model_config = ConfigDict(
        frozen=True,
        populate_by_name=True,
        extra="ignore",
        str_strip_whitespace=True,
    )

    name: str = Field(min_length=1)
    language: str
    lib_version: HubVersion = Field(default=None, alias="libVersion")
    spark_version: HubVersion = Field(default=None, alias="sparkVersion")
    ready_to_use: bool = Field(default=True, alias="readyToUse")
    time: datetime
    is_zipped: bool = Field(default=True, alias="isZipped")
    category: Category | None = None
    checksum: str | None = None
    annotator: str | None = None
    engine: str | None = None
    size: int | None = Field(default=None, ge=0)
    edition: str = Field(default=DEFAULT_EDITION, min_length=1)

    @field_validator("time")
    @classmethod
    def _aware_time(cls, value: datetime) -> datetime:
        # The hub writes UTC ("...Z"); a naive time is read as UTC too.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    @field_validator("name")
    @classmethod
    def _hub_name(cls, value: str) -> str:
        return check_hub_name(value)

    @field_validator("language")
    @classmethod
    def _hub_language(cls, value: str) -> str:
        # An empty language is the hub's "any language".
        return check_hub_name(value, allow_empty=True)

    @field_validator("annotator", "engine", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("category", mode="before")
    @classmethod
    def _category(cls, value: Any) -> Any:
        # Missing or blank -> None; "ML" -> "ml". Unknown values are an error.
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator("checksum", mode="before")
    @classmethod
    def _md5(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("checksum must be a string of hex digits")
        text = value.strip().upper()
        if not text:
            return None
        if len(text) != _MD5_HEX_LENGTH or not set(text) <= _HEX_DIGITS:
            raise ValueError(f"checksum {value!r} is not an MD5 hex digest")
        return text

    @field_validator("size", mode="before")
    @classmethod
    def _no_bool_size(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("size must be an integer number of bytes")
        return value

    @property
    def time_ms(self) -> int:
        """``time`` as milliseconds since the epoch, as in the archive name."""
        return (self.time - _EPOCH) // timedelta(milliseconds=1)

    @property
    def embedding_type(self) -> EmbeddingType | None:
        """``"word"``, ``"sentence"`` or ``"document"`` from ``annotator``; ``None`` if none."""
        return embedding_type_of(self.annotator)

    @property
    def kind(self) -> ResourceKind:
        """``"pipeline"`` for category ``pl``, ``"embeddings"`` for embeddings annotators."""
        if self.category == "pl":
            return "pipeline"
        if self.embedding_type is not None:
            return "embeddings"
        return "model"

    @property
    def key(self) -> str:
        """``<name>_<language>_<libVersion>_<sparkVersion>_<time in ms>``, as Spark NLP names it.

        A missing version is written as an empty string, as Spark NLP does.
        """
        lib = "" if self.lib_version is None else str(self.lib_version)
        spark = "" if self.spark_version is None else str(self.spark_version)
        return f"{self.name}_{self.language}_{lib}_{spark}_{self.time_ms}"

    @property
    def archive_name(self) -> str:
        """The file name in the hub folder: ``key`` plus ``.zip`` when ``is_zipped``.

        E.g. ``deidentify_dl_en_2.0.2_2.4_1559669094458.zip``.
        """
        return f"{self.key}.zip" if self.is_zipped else self.key


def _describe_errors(error: ValidationError) -> str:
    problems: list[str] = []
    for detail in error.errors():
        field = ".".join(str(part) for part in detail["loc"]) or "line"
        if detail["type"] == "missing":
            problems.append(f"missing field {field!r}")
        else:
            message = str(detail["msg"]).removeprefix("Value error, ")
            problems.append(f"bad field {field!r}: {message}")
    return "; ".join(problems)


_REQUIRED = ("name", "language", "time")


def _parse_line(line: str, edition: str) -> HubEntry | str:
    """The entry for one non-blank line, or the problem with it."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    missing = [field for field in _REQUIRED if data.get(field) is None]
    if missing:
        return "; ".join(f"missing field {field!r}" for field in missing)
    data["edition"] = edition
    try:
        return HubEntry.model_validate(data)
    except ValidationError as exc:
        return _describe_errors(exc)


def parse_metadata(
    text: str, *, source: str, edition: str = DEFAULT_EDITION
) -> tuple[list[HubEntry], list[str]]:
    """Read a ``metadata.json`` (JSON Lines) into entries, skipping malformed lines.

    Blank lines are skipped silently. A malformed line (bad JSON, not an object, missing
    ``name``/``language``/``time``, a ``name`` or ``language`` outside the hub's naming (see
    ``check_hub_name``), a bad version, time or checksum) is skipped and gives a
    warning ``"<source> line <n>: <problem>"`` (1-based), also logged at WARNING level.
    Every entry gets ``edition``, the edition of the folder the file came from.

    Returns:
        The entries in file order, and the warnings.
    """
    entries: list[HubEntry] = []
    warnings: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        result = _parse_line(line, edition)
        if isinstance(result, HubEntry):
            entries.append(result)
            continue
        warning = f"{source} line {number}: {result}"
        logger.warning("%s", warning)
        warnings.append(warning)
    return entries, warnings


def _languages_match(requested: str, offered: str) -> bool:
    return not requested or not offered or requested == offered


def _version_key(version: Version | None) -> tuple[bool, tuple[int, ...]]:
    # A missing version sorts before any stated one.
    return (version is not None, () if version is None else version.parts)


def _newest_first_key(entry: HubEntry) -> tuple[Any, ...]:
    return (_version_key(entry.spark_version), _version_key(entry.lib_version), entry.time)


def _newest(entries: Iterable[HubEntry]) -> HubEntry | None:
    # A stable sort and the last item: among equal keys the last in file order wins,
    # as Spark NLP's ``sortBy(...).lastOption`` does.
    ordered = sorted(entries, key=_newest_first_key)
    return ordered[-1] if ordered else None


def _compatible(
    entry: HubEntry, lib_version: Version | None, spark_version: Version | None
) -> bool:
    return is_compatible(lib_version, entry.lib_version) and is_compatible(
        spark_version, entry.spark_version
    )


def select_newest(
    entries: Iterable[HubEntry],
    *,
    name: str,
    language: str,
    lib_version: Version | None,
    spark_version: Version | None,
) -> HubEntry | None:
    """The resource Spark NLP's downloader would pick for this request, or ``None``.

    Keeps ``ready_to_use`` entries named ``name``, in ``language`` (an empty language on
    either side matches any), whose lib and Spark versions are compatible with the installed
    ``lib_version`` and ``spark_version`` (see ``is_compatible``); sorts them by Spark
    version, then lib version, then time; and takes the newest.
    """
    return _newest(
        entry
        for entry in entries
        if entry.ready_to_use
        and entry.name == name
        and _languages_match(language, entry.language)
        and _compatible(entry, lib_version, spark_version)
    )


def explain_no_match(
    entries: Iterable[HubEntry],
    *,
    name: str,
    language: str,
    lib_version: Version | None,
    spark_version: Version | None,
) -> str:
    """A sentence saying why ``select_newest`` finds nothing for this request.

    Distinguishes an unknown name, a name not offered in the language, entries that are not
    ready to use, and entries that the installed versions cannot run (naming the newest one
    and the installed version that blocks it). When something does match, says which.
    """
    named = [entry for entry in entries if entry.name == name]
    where = f"for language {language!r}" if language else "for any language"
    if not named:
        return f"no resource named {name!r} {where} in the hub"
    in_language = [entry for entry in named if _languages_match(language, entry.language)]
    if not in_language:
        offered = ", ".join(sorted({entry.language for entry in named}))
        return f"no resource named {name!r} {where} in the hub (languages offered: {offered})"
    ready = [entry for entry in in_language if entry.ready_to_use]
    if not ready:
        return (
            f"resource {name!r} {where} is in the hub but not ready to use "
            f"({len(in_language)} entr{'y' if len(in_language) == 1 else 'ies'})"
        )
    chosen = select_newest(
        ready,
        name=name,
        language=language,
        lib_version=lib_version,
        spark_version=spark_version,
    )
    if chosen is not None:
        return f"resource {name!r} {where} is available as {chosen.archive_name}"
    newest = _newest(ready)
    assert newest is not None  # ready is not empty
    reasons = [
        reason
        for reason in (
            incompatibility_reason(lib_version, newest.lib_version, LIB_NAME),
            incompatibility_reason(spark_version, newest.spark_version, SPARK_NAME),
        )
        if reason is not None
    ]
    count = len(ready)
    return (
        f"no compatible version of {name!r} {where}: none of the {count} ready "
        f"entr{'y' if count == 1 else 'ies'} fits the installed versions; the newest, "
        f"{newest.archive_name}, {' and '.join(reasons)}"
    )

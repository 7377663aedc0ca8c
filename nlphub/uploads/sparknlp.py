"""Validate an unpacked Spark NLP resource (model, embeddings or pipeline) before it is used.

A resource on disk is a Spark ML persistence folder (design.md section 2):

- ``metadata/part-00000`` (Spark 4: ``metadata/part-00000-<uuid>-c000.txt``) holds one JSON
  object with ``class``, ``timestamp``, ``sparkVersion``, ``uid``, ``paramMap`` and
  ``defaultParamMap``;
- a pipeline (``org.apache.spark.ml.PipelineModel``) lists its stages in
  ``paramMap.stageUids`` and stores stage *i* in ``stages/<i>_<uid>/`` (*i* zero-padded to the
  number of digits of the stage count, as Spark's ``getStagePath`` does);
- Spark NLP adds ``fields/`` (serialized features), ``storage/`` (the RocksDB index of storage
  models such as ``WordEmbeddingsModel``) and graph files.

`validate_resource` reads only metadata and folder listings, never model data, collects every
problem it finds and raises them together as a `ResourceProblem`. `check_compatibility` then
compares the resource with the installed library and Spark versions.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nlphub.uploads.archive import DEFAULT_LIMITS, ArchiveLimits, ProblemError, format_size
from nlphub.uploads.sparknlp_classes import OPEN_SOURCE_CLASSES
from nlphub.versions import Version, VersionError, incompatibility_reason
from schemas.editions import LIBRARY_LABEL

__all__ = [
    "LIBRARY_BY_CLASS_PREFIX",
    "NER_MODELS",
    "OPEN_SOURCE_CLASSES",
    "PIPELINE_CLASS",
    "STORAGE_MODELS",
    "UNLISTED_LIBRARY",
    "Kind",
    "Library",
    "ResourceInfo",
    "ResourceProblem",
    "SparkMetadata",
    "check_compatibility",
    "library_of",
    "validate_resource",
]

logger = logging.getLogger(__name__)

Kind = Literal["model", "embeddings", "pipeline"]
Library = Literal["spark-nlp", "healthcare-nlp", "visual-nlp", "finance-nlp", "legal-nlp"]


SPARK_NLP_PREFIX = "com.johnsnowlabs."
SPARK_ML_PREFIX = "org.apache.spark.ml."
PIPELINE_CLASS = "org.apache.spark.ml.PipelineModel"
MAX_PIPELINE_DEPTH = 8

LIBRARY_BY_CLASS_PREFIX: tuple[tuple[str, Library], ...] = (
    # Healthcare NLP ships some classes inside Spark NLP's own packages.
    ("com.johnsnowlabs.nlp.annotators.ner.MedicalNer", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.ner.NerConverterInternal", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.ner.ZeroShotNerModel", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.deid.", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.resolution.", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.assertion.", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.re.", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.context.", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.chunker.ChunkMerge", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.merge.", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.classification.Medical", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.annotators.classification.GenericClassifier", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.embeddings.BertSentenceChunkEmbeddings", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.embeddings.EntityChunkEmbeddings", "healthcare-nlp"),
    ("com.johnsnowlabs.nlp.", "spark-nlp"),
    ("com.johnsnowlabs.ml.", "spark-nlp"),
    ("com.johnsnowlabs.reader.", "spark-nlp"),
    ("com.johnsnowlabs.partition.", "spark-nlp"),
    ("com.johnsnowlabs.finance.", "finance-nlp"),
    ("com.johnsnowlabs.legacy.", "finance-nlp"),
    ("com.johnsnowlabs.legal.", "legal-nlp"),
    ("com.johnsnowlabs.ocr.", "visual-nlp"),
)
"""The one class -> library table: ``(class-name prefix, library)``, the longest matching
prefix wins. Prefixes ending in ``.`` are packages, others match class names. A ``spark-nlp``
row covers only the classes of `OPEN_SOURCE_CLASSES` (`library_of`)."""

_PREFIXES_LONGEST_FIRST = sorted(LIBRARY_BY_CLASS_PREFIX, key=lambda row: -len(row[0]))

_LICENSED_NAMES: tuple[tuple[str, Library], ...] = (
    ("Medical", "healthcare-nlp"),
    ("Clinical", "healthcare-nlp"),
    ("Finance", "finance-nlp"),
    ("Legal", "legal-nlp"),
)
"""Simple-name prefixes of licensed classes found in Spark NLP's own packages."""

UNLISTED_LIBRARY: Library = "healthcare-nlp"
"""The library of a ``com.johnsnowlabs`` class on no list: licensed (Healthcare NLP is the one
that ships classes inside Spark NLP's packages), so it never installs without a licence."""

NER_MODELS = frozenset({"NerDLModel", "NerCrfModel", "MedicalNerModel", "ZeroShotNerModel"})
_NER_SUFFIXES = ("ForTokenClassification", "ForTokenClassifier")

STORAGE_MODELS = frozenset({"WordEmbeddingsModel", "BigTextMatcherModel"})
"""Models that keep their data in a RocksDB ``storage/`` folder next to ``metadata/``."""

_EMBEDDINGS_NAMES = frozenset({"UniversalSentenceEncoder", "Word2VecModel", "Doc2VecModel"})
_HELPER_CLASSES = frozenset(
    {
        "DocumentAssembler",
        "MultiDocumentAssembler",
        "TokenAssembler",
        "Finisher",
        "EmbeddingsFinisher",
        "GraphFinisher",
        "Doc2Chunk",
        "Chunk2Doc",
        "ImageAssembler",
        "AudioAssembler",
        "TableAssembler",
    }
)
_JAVA_CLASS = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)+")
_PART_FILE = re.compile(
    r"part-00000(-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"-c000\.txt)?"
)

_STAGE_DIR = re.compile(r"(\d+)_(.+)")
_LIB_VERSION_KEYS = ("libVersion", "sparkNlpVersion")
_TYPE_MESSAGES = {
    "missing": "is missing",
    "dict_type": "must be a JSON object",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "string_too_short": "must not be empty",
}


class ResourceProblem(ProblemError):
    """An unpacked resource is not a valid Spark NLP resource of the declared kind."""


class SparkMetadata(BaseModel):
    """The JSON object in ``metadata/part-00000`` as Spark's ``DefaultParamsWriter`` writes it."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    class_name: str = Field(alias="class", min_length=1)
    spark_version: str = Field(alias="sparkVersion")
    uid: str = Field(min_length=1)
    param_map: dict[str, Any] = Field(alias="paramMap")
    default_param_map: dict[str, Any] = Field(default_factory=dict, alias="defaultParamMap")
    timestamp: Any = None
    """Milliseconds since the epoch; informative only, so not validated."""


@dataclass
class ResourceInfo:
    """What `validate_resource` learned about a resource (and, recursively, its stages).

    For a pipeline: ``library`` is the first library other than Spark NLP among its stages
    (else ``"spark-nlp"``), ``is_ner`` / ``needs_storage`` tell whether any stage is an NER /
    storage model, ``is_embeddings`` is False. Plain Spark ML stages inside a pipeline are
    attributed to ``"spark-nlp"``, the runtime that loads them.
    """

    class_name: str
    uid: str
    spark_version: str | None
    lib_version: str | None
    """From an optional top-level ``libVersion`` / ``sparkNlpVersion`` metadata key; Spark NLP
    itself writes none."""
    storage_refs: list[str]
    """Every ``paramMap.storageRef`` of the resource and its stages, first seen first."""
    stages: list[ResourceInfo]
    library: Library
    is_ner: bool
    is_embeddings: bool
    needs_storage: bool
    path: str = ""
    """Location relative to the validated root (``""`` for the root, else ``stages/...``)."""
    timestamp: int | None = None
    param_map: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def simple_name(self) -> str:
        return self.class_name.rsplit(".", 1)[-1]

    @property
    def is_pipeline(self) -> bool:
        return self.class_name == PIPELINE_CLASS

    @property
    def is_spark_nlp(self) -> bool:
        return self.class_name.startswith(SPARK_NLP_PREFIX)

    def walk(self) -> Iterator[ResourceInfo]:
        """This resource, then all stages depth-first."""
        yield self
        for stage in self.stages:
            yield from stage.walk()

    @property
    def licensed_classes(self) -> list[str]:
        """Simple names of the licensed classes (all but Spark NLP's open-source ones),
        first seen first: refusals name what made an upload need a licence."""
        seen: list[str] = []
        for node in self.walk():
            if node.is_spark_nlp and node.library != "spark-nlp" and node.simple_name not in seen:
                seen.append(node.simple_name)
        return seen

    @property
    def libraries(self) -> list[Library]:
        """Libraries of the Spark NLP classes in this resource, first seen first."""
        seen: list[Library] = []
        for node in self.walk():
            if node.is_spark_nlp and node.library not in seen:
                seen.append(node.library)
        return seen


def library_of(class_name: str) -> Library | None:
    """The library that provides a ``com.johnsnowlabs`` class (None for any other class).

    Fails closed: `LIBRARY_BY_CLASS_PREFIX` says which licensed library a package or class is;
    Spark NLP (open source) is only a class in its packages whose simple name is on
    `OPEN_SOURCE_CLASSES`. ``Medical*``/``Clinical*``/``Finance*``/``Legal*`` names are their
    licensed library's, and any other class is `UNLISTED_LIBRARY` (licensed)."""
    if not class_name.startswith(SPARK_NLP_PREFIX):
        return None
    library = next(
        (lib for prefix, lib in _PREFIXES_LONGEST_FIRST if class_name.startswith(prefix)), None
    )
    if library is not None and library != "spark-nlp":
        return library
    simple = _simple(class_name)
    for start, licensed in _LICENSED_NAMES:
        if simple.startswith(start):
            return licensed
    if library == "spark-nlp" and simple in OPEN_SOURCE_CLASSES:
        return "spark-nlp"
    return UNLISTED_LIBRARY


def _simple(class_name: str) -> str:
    return class_name.rsplit(".", 1)[-1]


def _is_ner(class_name: str) -> bool:
    simple = _simple(class_name)
    return simple in NER_MODELS or simple.endswith(_NER_SUFFIXES)


def _is_embeddings(class_name: str) -> bool:
    simple = _simple(class_name)
    return (
        ".embeddings." in class_name
        or simple.endswith(("Embeddings", "EmbeddingsModel"))
        or simple in _EMBEDDINGS_NAMES
    )


def _describe(class_name: str) -> str:
    if class_name == PIPELINE_CLASS:
        return "a pipeline"
    if _is_embeddings(class_name):
        return "embeddings"
    return "a model"


def _type_message(error: Mapping[str, Any]) -> str:
    text = _TYPE_MESSAGES.get(str(error["type"]))
    if text is None:
        text = str(error["msg"]).lower()
    if error["type"] not in ("missing", "string_too_short"):
        text += f", got {type(error['input']).__name__}"
    return text


def _read_metadata(
    root: Path, limits: ArchiveLimits
) -> tuple[SparkMetadata | None, str, list[str]]:
    """The parsed metadata (None when unusable), its label and the problems found."""
    meta_dir = root / "metadata"
    label = "metadata/part-00000"
    if meta_dir.is_symlink():
        return None, label, ["metadata/ is a symbolic link"]
    if not meta_dir.is_dir():
        return None, label, ["metadata/ folder is missing"]
    parts = sorted(p.name for p in meta_dir.iterdir() if p.name.startswith("part-"))
    matching = [name for name in parts if _PART_FILE.fullmatch(name)]
    if not parts:
        return None, label, ["metadata/: no part-00000 file (Spark writes the metadata JSON there)"]
    if len(parts) > 1 or not matching:
        found = ", ".join(parts[:5])
        return None, label, [f"metadata/: expected exactly one part-00000 file, found {found}"]
    label = f"metadata/{parts[0]}"
    path = meta_dir / parts[0]
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        return None, label, [f"{label} is {kind}"]
    if st.st_size > limits.max_metadata_bytes:
        return (
            None,
            label,
            [
                f"{label} is {format_size(st.st_size)}, above the "
                f"{format_size(limits.max_metadata_bytes)} limit"
            ],
        )
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limits.max_metadata_bytes + 1)
    if len(data) > limits.max_metadata_bytes:  # grew since lstat
        return None, label, [f"{label} is above the {format_size(limits.max_metadata_bytes)} limit"]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, label, [f"{label}: not valid UTF-8 (byte {exc.start})"]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return (
            None,
            label,
            [f"{label}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"],
        )
    except RecursionError:
        return None, label, [f"{label}: not valid JSON (nested too deeply)"]
    if not isinstance(obj, dict):
        return None, label, [f"{label}: not a JSON object (found {type(obj).__name__})"]
    try:
        meta = SparkMetadata.model_validate(obj)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"])
            if error["type"] == "missing":
                problems.append(f"{label}: missing key {loc!r}")
            else:
                problems.append(f"{label}: key {loc!r} {_type_message(error)}")
        return None, label, problems
    problems = []
    try:
        Version.parse(meta.spark_version)
    except VersionError:
        problems.append(f"{label}: sparkVersion {meta.spark_version!r} is not a version")
    return meta, label, problems


def _lib_version(meta: SparkMetadata, label: str) -> tuple[str | None, list[str]]:
    extra = meta.model_extra or {}
    for key in _LIB_VERSION_KEYS:
        if key not in extra:
            continue
        value = extra[key]
        try:
            if isinstance(value, str):
                return str(Version.parse(value)), []
            parsed = Version.from_parts(value)
            return (None if parsed is None else str(parsed)), []
        except VersionError:
            return None, [f"{label}: {key} {value!r} is not a version"]
    return None, []


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        return ["labels: expected a list of labels, got one string"]
    if not labels:
        return ["labels: the list is empty; pass the labels the NER model predicts"]
    problems: list[str] = []
    seen: set[str] = set()
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            problems.append(f"labels: {label!r} is not a label (empty or not text)")
        elif not label.isprintable():
            problems.append(f"labels: {label!r} contains non-printable characters")
        elif label in seen:
            problems.append(f"labels: duplicate label {label!r}")
        else:
            seen.add(label)
    return problems


def _prefixed(prefix: str, problems: list[str]) -> list[str]:
    return [f"{prefix}: {p}" for p in problems]


def _inspect(
    root: Path, rel: str, limits: ArchiveLimits, depth: int
) -> tuple[ResourceInfo | None, list[str]]:
    """Read one resource folder; problems are relative to ``root`` (no prefix)."""
    meta, label, problems = _read_metadata(root, limits)
    if meta is None:
        return None, problems
    cls = meta.class_name
    if not _JAVA_CLASS.fullmatch(cls):
        problems.append(f"{label}: class {cls!r} is not a valid Java class name")
    lib_version, lib_problems = _lib_version(meta, label)
    problems += lib_problems
    storage_ref = meta.param_map.get("storageRef")
    refs = [storage_ref] if isinstance(storage_ref, str) and storage_ref else []
    stages: list[ResourceInfo] = []
    simple = _simple(cls)
    is_storage_model = simple in STORAGE_MODELS and cls.startswith(SPARK_NLP_PREFIX)
    if is_storage_model:
        storage = root / "storage"
        if storage.is_symlink() or not storage.is_dir():
            problems.append(f"{simple} needs a storage/ folder, none found")
        elif not any(storage.iterdir()):
            problems.append(f"{simple}: storage/ folder is empty")
    if cls == PIPELINE_CLASS:
        if depth >= MAX_PIPELINE_DEPTH:
            problems.append(f"pipelines nested deeper than {MAX_PIPELINE_DEPTH} levels")
        else:
            stages, stage_problems = _inspect_stages(root, rel, meta, label, limits, depth)
            problems += stage_problems
        for stage in stages:
            refs += [r for r in stage.storage_refs if r not in refs]
    library = library_of(cls) or "spark-nlp"
    if cls == PIPELINE_CLASS:
        others = [n.library for s in stages for n in s.walk() if n.is_spark_nlp]
        library = next((lib for lib in others if lib != "spark-nlp"), "spark-nlp")
    is_pipeline = cls == PIPELINE_CLASS
    info = ResourceInfo(
        class_name=cls,
        uid=meta.uid,
        spark_version=meta.spark_version,
        lib_version=lib_version,
        storage_refs=refs,
        stages=stages,
        library=library,
        is_ner=any(s.is_ner for s in stages) if is_pipeline else _is_ner(cls),
        is_embeddings=not is_pipeline and _is_embeddings(cls),
        needs_storage=(any(s.needs_storage for s in stages) if is_pipeline else is_storage_model),
        path=rel,
        timestamp=meta.timestamp if type(meta.timestamp) is int else None,
        param_map=dict(meta.param_map),
    )
    return info, problems


def _inspect_stages(
    root: Path, rel: str, meta: SparkMetadata, label: str, limits: ArchiveLimits, depth: int
) -> tuple[list[ResourceInfo], list[str]]:
    uids = meta.param_map.get("stageUids")
    if uids is None:
        return [], [f"{label}: paramMap.stageUids is missing (a pipeline lists its stages there)"]
    if not isinstance(uids, list) or not all(isinstance(u, str) and u for u in uids):
        return [], [f"{label}: paramMap.stageUids must be a list of stage uids"]
    if not uids:
        return [], ["pipeline has no stages (paramMap.stageUids is empty)"]
    stages_dir = root / "stages"
    if stages_dir.is_symlink() or not stages_dir.is_dir():
        return [], [f"stages/ folder is missing (the pipeline lists {len(uids)} stages)"]
    problems: list[str] = []
    folders: dict[str, Path] = {}
    for child in sorted(stages_dir.iterdir()):
        if child.name.startswith("."):  # .DS_Store, Hadoop .crc files
            continue
        if child.is_symlink() or not child.is_dir():
            problems.append(f"stages/{child.name}: not a folder")
        else:
            folders[child.name] = child
    width = len(str(len(uids)))
    used: set[str] = set()
    stages: list[ResourceInfo] = []
    for index, uid in enumerate(uids):
        expected = f"{index:0{width}d}_{uid}"
        if expected not in folders:
            misnamed = [
                name
                for name, m in ((n, _STAGE_DIR.fullmatch(n)) for n in folders)
                if m and int(m.group(1)) == index and m.group(2) == uid
            ]
            if misnamed:
                used.update(misnamed)
                problems.append(
                    f"stages/{misnamed[0]}: should be named {expected} (Spark pads stage "
                    f"numbers to {width} digits)"
                )
            else:
                problems.append(f"stages/{expected}: missing (stage {index} of paramMap.stageUids)")
            continue
        used.add(expected)
        stage_rel = f"{rel}/stages/{expected}".lstrip("/")
        stage, stage_problems = _inspect(folders[expected], stage_rel, limits, depth + 1)
        if stage is not None:
            cls = stage.class_name
            if not cls.startswith((SPARK_NLP_PREFIX, SPARK_ML_PREFIX)):
                stage_problems.append(
                    f"class {cls} is not a Spark NLP or Spark ML class "
                    "(expected com.johnsnowlabs.* or org.apache.spark.ml.*)"
                )
            elif cls.startswith(SPARK_NLP_PREFIX) and _simple(cls).endswith("Approach"):
                stage_problems.append(f"class {cls} is an untrained approach, not a trained model")
            if stage.uid != uid:
                stage_problems.append(
                    f"metadata uid {stage.uid!r} does not match the folder's uid {uid!r}"
                )
            stages.append(stage)
        problems += _prefixed(f"stages/{expected}", stage_problems)
    for name in sorted(set(folders) - used):
        problems.append(f"stages/{name}: not listed in paramMap.stageUids")
    return stages, problems


def _check_kind(info: ResourceInfo, kind: Kind) -> list[str]:
    cls = info.class_name
    declared = f"but the upload was declared as {kind}"
    if kind == "pipeline":
        if info.is_pipeline:
            if not any(node.is_spark_nlp for node in info.walk()):
                return ["pipeline has no Spark NLP stage (no com.johnsnowlabs.* class)"]
            return []
        if info.is_spark_nlp:
            return [f"class {cls} is {_describe(cls)}, {declared}"]
        return [f"class {cls} is not a Spark pipeline (expected {PIPELINE_CLASS})"]
    if info.is_pipeline:
        return [f"class {cls} is a pipeline, {declared}"]
    if not info.is_spark_nlp:
        return [f"class {cls} is not a Spark NLP class (expected com.johnsnowlabs.*)"]
    simple = info.simple_name
    if simple.endswith("Approach"):
        return [f"class {cls} is an untrained approach, not a trained model"]
    if simple in _HELPER_CLASSES:
        return [f"class {cls} is a helper transformer with nothing trained, not a model"]
    if kind == "embeddings" and not info.is_embeddings:
        return [f"class {cls} is {_describe(cls)}, {declared}"]
    if kind == "model" and info.is_embeddings:
        return [f"class {cls} is {_describe(cls)}, {declared}"]
    return []


def validate_resource(
    root: Path,
    *,
    kind: Kind,
    labels: Sequence[str] | None = None,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    require_labels: bool = True,
) -> ResourceInfo:
    """Check that ``root`` holds a Spark NLP resource of the declared ``kind``.

    ``labels`` are the labels an NER model predicts; they are required when the resource (or
    a pipeline stage) is an NER model, unless ``require_labels`` is false (hub downloads:
    the hub's models carry their labels). Reads metadata files (each at most
    ``limits.max_metadata_bytes``) and folder listings only.

    Raises:
        ResourceProblem: with every problem found, each naming the file or field concerned.
        ValueError: ``kind`` is not one of `Kind` (a programming error).
    """
    if kind not in get_args(Kind):
        raise ValueError(f"kind must be one of {get_args(Kind)}, got {kind!r}")
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        raise ResourceProblem([f"{root.name}: not a directory"])
    info, problems = _inspect(root, "", limits, depth=0)
    if info is not None:
        problems += _check_kind(info, kind)
        if labels is None:
            if info.is_ner and require_labels:
                problems.append("NER model needs its labels: pass --labels")
        else:
            problems += _check_labels(labels)
    if problems or info is None:
        raise ResourceProblem(problems)
    logger.debug("validated %s %s (%s)", kind, info.class_name, info.uid)
    return info


def check_compatibility(
    info: ResourceInfo,
    installed: Mapping[str, Version | None],
    spark_installed: Version | None,
) -> list[str]:
    """Why ``info`` cannot run on the installed software; empty when it can.

    ``installed`` maps a `Library` name to its installed version; a missing key or ``None``
    means that library is not installed. Every library of the resource's Spark NLP classes
    (and Spark NLP itself, which the others run on) must be installed; stated library versions
    are checked against the installed ones and every stated Spark version against
    ``spark_installed`` with `nlphub.versions.is_compatible` (an unknown installed Spark version
    cannot satisfy a stated one).
    """
    problems: list[str] = []

    def add(problem: str | None) -> None:
        if problem and problem not in problems:
            problems.append(problem)

    needed = info.libraries
    if needed and "spark-nlp" not in needed:
        needed = ["spark-nlp", *needed]
    for library in needed:
        if installed.get(library) is None:
            add(f"needs {LIBRARY_LABEL[library]}, which is not installed")
    for node in info.walk():
        if node.lib_version is not None and installed.get(node.library) is not None:
            try:
                found = Version.parse(node.lib_version)
            except VersionError:
                add(f"library version {node.lib_version!r} is not a version")
            else:
                add(
                    incompatibility_reason(
                        installed.get(node.library), found, LIBRARY_LABEL[node.library]
                    )
                )
        if node.spark_version is not None:
            try:
                spark_found = Version.parse(node.spark_version)
            except VersionError:
                add(f"Spark version {node.spark_version!r} is not a version")
            else:
                add(incompatibility_reason(spark_installed, spark_found, "Spark"))
    return problems

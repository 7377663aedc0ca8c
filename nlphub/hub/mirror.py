"""Build a Models Hub mirror folder: what a hub serves (design.md sections 1 and 2).

A mirror folder holds ``metadata.json`` (JSON Lines, one resource per line, in the hub's own
format) and, next to it, one zip archive per line named as Spark NLP names it
(``<name>_<language>_<libVersion>_<sparkVersion>_<time in ms>.zip``). Each archive holds a
Spark ML persistence folder that `nlphub.uploads.sparknlp.validate_resource` accepts: the
``metadata/part-00000`` JSON line Spark writes, ``storage/`` for storage models such as
``WordEmbeddingsModel``, ``fields/`` for the other features, and ``stages/<i>_<uid>/`` for
pipelines.

The model data is a deterministic pseudo-random blob of ``payload_bytes`` (SHAKE-256 in
counter mode, seeded by the resource), generated and zipped in chunks, so archives of any size
(gigabytes for benchmarks) can be built without holding them in memory, and building the same
resources twice gives the same bytes and the same MD5.

None of this is a real model: it is test and demo data with the real shapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from nlphub.hub.metadata import DEFAULT_EDITION, HubEntry, parse_metadata
from nlphub.uploads.sparknlp import PIPELINE_CLASS, STORAGE_MODELS, library_of
from nlphub.versions import Version

__all__ = [
    "DEMO_README",
    "LICENSED_FOLDER",
    "MirrorResource",
    "MirrorStage",
    "build_demo_mirror",
    "build_mirror",
    "demo_resources",
    "write_resource_dir",
]

LICENSED_FOLDER = "clinical/models"
"""Where the demo mirror keeps licensed (Healthcare) resources, inside the public folder."""

METADATA_FILE = "metadata.json"
CHUNK_SIZE = 1 << 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

KNOWN_CLASSES: dict[str, str] = {
    "WordEmbeddingsModel": "com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel",
    "BertEmbeddings": "com.johnsnowlabs.nlp.embeddings.BertEmbeddings",
    "BertSentenceEmbeddings": "com.johnsnowlabs.nlp.embeddings.BertSentenceEmbeddings",
    "UniversalSentenceEncoder": "com.johnsnowlabs.nlp.embeddings.UniversalSentenceEncoder",
    "NerDLModel": "com.johnsnowlabs.nlp.annotators.ner.dl.NerDLModel",
    "NerCrfModel": "com.johnsnowlabs.nlp.annotators.ner.crf.NerCrfModel",
    "MedicalNerModel": "com.johnsnowlabs.nlp.annotators.ner.MedicalNerModel",
    "NerConverter": "com.johnsnowlabs.nlp.annotators.ner.NerConverter",
    "DocumentAssembler": "com.johnsnowlabs.nlp.DocumentAssembler",
    "SentenceDetector": "com.johnsnowlabs.nlp.annotators.sbd.pragmatic.SentenceDetector",
    "TokenizerModel": "com.johnsnowlabs.nlp.annotators.TokenizerModel",
    "PipelineModel": PIPELINE_CLASS,
}
"""Full Spark NLP class names for annotators, used when ``class_name`` is not given."""


def _class_for(annotator: str, class_name: str) -> str:
    if class_name:
        return class_name
    try:
        return KNOWN_CLASSES[annotator]
    except KeyError:
        raise ValueError(
            f"no known class for annotator {annotator!r}: pass class_name "
            "(e.g. 'com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel')"
        ) from None


@dataclass(kw_only=True)
class MirrorStage:
    """One stage of a mirrored pipeline: a Spark ML folder under ``stages/<i>_<uid>/``.

    ``annotator`` (a simple name from `KNOWN_CLASSES`) or ``class_name`` names the class;
    ``payload_bytes`` of model data (0 for helpers such as ``DocumentAssembler``); ``labels``
    for NER stages; ``stages`` when the stage is itself a pipeline.
    """

    annotator: str
    class_name: str = ""
    storage_ref: str | None = None
    payload_bytes: int = 0
    labels: list[str] = field(default_factory=list)
    stages: list[MirrorStage | MirrorResource] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.class_name = _class_for(self.annotator, self.class_name)
        _check_spec(self.class_name, self.payload_bytes, self.stages)


@dataclass(kw_only=True)
class MirrorResource:
    """One resource of a mirror: a ``metadata.json`` line and its archive.

    ``lib_version`` / ``spark_version`` are version strings (``"5.4.1"``, ``"3.4"``);
    ``time`` must be timezone-aware (it is written to the millisecond). ``class_name``
    defaults from ``annotator`` via `KNOWN_CLASSES`. ``storage_ref`` goes into
    ``paramMap.storageRef``; ``labels`` into ``fields/labels/part-00000``; ``payload_bytes``
    is the size of the pseudo-random model data (under ``storage/`` for storage models such
    as ``WordEmbeddingsModel``, else under ``fields/``). ``checksum`` chooses the checksum on
    the line: the real MD5, an empty one, or a wrong one. A pipeline (class
    ``org.apache.spark.ml.PipelineModel``, category ``"pl"``) needs ``stages``; its own
    ``payload_bytes`` is ignored (the stages carry the data).
    """

    name: str
    language: str
    lib_version: str
    spark_version: str
    annotator: str
    time: datetime
    class_name: str = ""
    category: Literal["ml", "pl", "nd"] | None = "ml"
    storage_ref: str | None = None
    payload_bytes: int = 4096
    ready_to_use: bool = True
    checksum: Literal["md5", "empty", "wrong"] = "md5"
    labels: list[str] = field(default_factory=list)
    stages: list[MirrorStage | MirrorResource] = field(default_factory=list)
    engine: str | None = None
    #: A resource folder written elsewhere (e.g. by pyspark) to zip as it is, instead of
    #: generating one.
    source_dir: Path | None = None

    def __post_init__(self) -> None:
        self.class_name = _class_for(self.annotator, self.class_name)
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError(f"{self.name}: time must be timezone-aware, got {self.time!r}")
        if self.checksum not in ("md5", "empty", "wrong"):
            raise ValueError(f"{self.name}: checksum must be md5, empty or wrong")
        Version.parse(self.lib_version)
        Version.parse(self.spark_version)
        _check_spec(self.class_name, self.payload_bytes, self.stages)

    @property
    def time_ms(self) -> int:
        """``time`` in whole milliseconds since the epoch (what the archive name uses)."""
        return (self.time - _EPOCH) // timedelta(milliseconds=1)

    @property
    def is_pipeline(self) -> bool:
        return self.class_name == PIPELINE_CLASS


def _check_spec(class_name: str, payload_bytes: int, stages: Sequence[object]) -> None:
    if isinstance(payload_bytes, bool) or payload_bytes < 0:
        raise ValueError(f"payload_bytes must be a non-negative integer, got {payload_bytes!r}")
    if class_name == PIPELINE_CLASS and not stages:
        raise ValueError("a pipeline needs at least one stage")
    if stages and class_name != PIPELINE_CLASS:
        raise ValueError(f"only a pipeline ({PIPELINE_CLASS}) has stages, not {class_name}")


# --- the resource folder --------------------------------------------------------------------


def _payload_chunks(seed: str, size: int) -> Iterator[bytes]:
    """``size`` deterministic pseudo-random bytes, in chunks of at most `CHUNK_SIZE`."""
    key = hashlib.sha256(seed.encode()).digest()
    counter = 0
    remaining = size
    while remaining > 0:
        n = min(CHUNK_SIZE, remaining)
        yield hashlib.shake_256(key + counter.to_bytes(8, "big")).digest(n)
        counter += 1
        remaining -= n


def _write_payload(path: Path, seed: str, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for chunk in _payload_chunks(seed, size):
            fh.write(chunk)


def _uid(class_name: str, seed: str) -> str:
    simple = class_name.rsplit(".", 1)[-1]
    return f"{simple}_{hashlib.sha256(seed.encode()).hexdigest()[:12]}"


def _full_spark_version(spark_version: str) -> str:
    """The ``sparkVersion`` Spark writes: ``"3.4"`` -> ``"3.4.1"``."""
    parts = Version.parse(spark_version).parts
    if len(parts) < 3:
        parts = (parts[0], parts[1] if len(parts) > 1 else 0, 1)
    return ".".join(str(p) for p in parts)


def _params(class_name: str, storage_ref: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    simple = class_name.rsplit(".", 1)[-1]
    param_map: dict[str, Any]
    if class_name == PIPELINE_CLASS:
        return {}, {}
    if simple == "DocumentAssembler":
        param_map = {"inputCol": "text", "outputCol": "document"}
    elif "Embeddings" in simple or "Encoder" in simple:
        param_map = {
            "inputCols": ["document", "token"],
            "outputCol": "embeddings",
            "dimension": 100,
            "caseSensitive": False,
        }
    elif simple in ("NerConverter",):
        param_map = {"inputCols": ["document", "token", "ner"], "outputCol": "ner_chunk"}
    elif "Ner" in simple:
        param_map = {"inputCols": ["sentence", "token", "embeddings"], "outputCol": "ner"}
    else:
        param_map = {"inputCols": ["document"], "outputCol": simple.lower()}
    if storage_ref:
        param_map["storageRef"] = storage_ref
    default_param_map = {"lazyAnnotator": False}
    return param_map, default_param_map


def _write_spark_dir(
    dest: Path,
    *,
    class_name: str,
    uid: str,
    seed: str,
    timestamp_ms: int,
    spark_version: str,
    storage_ref: str | None,
    payload_bytes: int,
    labels: Sequence[str],
    stages: Sequence[MirrorStage | MirrorResource],
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    param_map, default_param_map = _params(class_name, storage_ref)
    stage_uids: list[str] = []
    if class_name == PIPELINE_CLASS:
        width = len(str(len(stages)))
        for index, stage in enumerate(stages):
            stage_seed = f"{seed}/stage{index}"
            stage_uid = _uid(stage.class_name, stage_seed)
            stage_uids.append(stage_uid)
            _write_spark_dir(
                dest / "stages" / f"{index:0{width}d}_{stage_uid}",
                class_name=stage.class_name,
                uid=stage_uid,
                seed=stage_seed,
                timestamp_ms=timestamp_ms,
                spark_version=spark_version,
                storage_ref=stage.storage_ref,
                payload_bytes=stage.payload_bytes,
                labels=stage.labels,
                stages=stage.stages,
            )
        param_map = {"stageUids": stage_uids}
    elif payload_bytes:
        simple = class_name.rsplit(".", 1)[-1]
        if simple in STORAGE_MODELS:
            db = dest / "storage" / f"EMBEDDINGS_{storage_ref or uid}"
            db.mkdir(parents=True, exist_ok=True)
            (db / "CURRENT").write_text("MANIFEST-000004\n", encoding="ascii")
            _write_payload(db / "000005.sst", seed, payload_bytes)
        else:
            _write_payload(dest / "fields" / "weights" / "part-00000", seed, payload_bytes)
    if labels:
        labels_file = dest / "fields" / "labels" / "part-00000"
        labels_file.parent.mkdir(parents=True, exist_ok=True)
        labels_file.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    metadata = {
        "class": class_name,
        "timestamp": timestamp_ms,
        "sparkVersion": spark_version,
        "uid": uid,
        "paramMap": param_map,
        "defaultParamMap": default_param_map,
    }
    meta_dir = dest / "metadata"
    meta_dir.mkdir(parents=True, exist_ok=True)
    (meta_dir / "part-00000").write_text(
        json.dumps(metadata, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    (meta_dir / "_SUCCESS").write_bytes(b"")


def write_resource_dir(res: MirrorResource, dest: Path) -> Path:
    """Write ``res`` as an unpacked Spark NLP resource folder at ``dest`` (created).

    The folder passes `nlphub.uploads.sparknlp.validate_resource` for the resource's kind (with
    ``labels=res.labels`` for NER models). Model data is streamed to disk in chunks.

    Returns:
        ``dest``.
    """
    dest = Path(dest)
    seed = f"{res.name}|{res.language}|{res.lib_version}|{res.spark_version}|{res.time_ms}"
    _write_spark_dir(
        dest,
        class_name=res.class_name,
        uid=_uid(res.class_name, seed),
        seed=seed,
        timestamp_ms=res.time_ms,
        spark_version=_full_spark_version(res.spark_version),
        storage_ref=res.storage_ref,
        payload_bytes=res.payload_bytes,
        labels=res.labels,
        stages=res.stages,
    )
    return dest


# --- the mirror folder ----------------------------------------------------------------------


def _hub_time(time: datetime) -> str:
    t = time.astimezone(UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


def _hub_line(res: MirrorResource) -> dict[str, Any]:
    line: dict[str, Any] = {
        "name": res.name,
        "language": res.language,
        "libVersion": {"parts": list(Version.parse(res.lib_version).parts)},
        "sparkVersion": {"parts": list(Version.parse(res.spark_version).parts)},
        "readyToUse": res.ready_to_use,
        "time": _hub_time(res.time),
        "isZipped": True,
    }
    if res.category is not None:
        line["category"] = res.category
    line["checksum"] = ""
    line["annotator"] = res.annotator
    if res.engine is not None:
        line["engine"] = res.engine
    return line


def _zip_dir(source: Path, archive: Path, time: datetime) -> None:
    """Zip the files under ``source`` (relative names, sorted) into ``archive``.

    Every file gets mode 0644 and ``time`` as its date, so the same resource always gives the
    same archive bytes (and MD5). Symbolic links and empty folders are left out.
    """
    stamp = max(time.timestamp(), datetime(1980, 1, 2, tzinfo=UTC).timestamp())
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            path.chmod(0o644)
            os.utime(path, (stamp, stamp))
            # Model data is incompressible: deflate level 0 (stored blocks) is as small as
            # level 6 and much faster (see docs/decisions.md, Mirror archives: model data
            # stored, not deflated).
            level = 0 if path.stat().st_size > CHUNK_SIZE else 6
            zf.write(path, path.relative_to(source).as_posix(), compresslevel=level)


def _md5_hex(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest().upper()


def build_mirror(
    folder: Path,
    resources: list[MirrorResource],
    *,
    edition_folder: str | None = None,
    edition: str | None = None,
) -> list[HubEntry]:
    """Add ``resources`` to the hub folder ``folder`` (or ``folder/edition_folder``).

    For each resource: writes its folder to a temporary place inside the hub folder, zips it
    (``ZIP_DEFLATED``, names relative to the resource root, no symbolic links) into
    ``<archive_name>`` and appends its line to ``metadata.json`` in the hub's format, with
    ``checksum`` (upper-case MD5 of the archive, ``""`` or a wrong MD5 as the resource asks)
    and ``size`` (archive bytes). Existing lines are kept, so several calls add up.

    ``edition`` is the edition given to the returned entries (default: ``"Healthcare"`` for
    a ``clinical/...`` folder, else ``"Open Source"``).

    Returns:
        The entries written by this call, parsed back with `nlphub.hub.metadata.parse_metadata`.

    Raises:
        FileExistsError: an archive of the same name is already in the folder.
        ValueError: the lines written do not parse back (a bug).
    """
    target = Path(folder) / edition_folder if edition_folder else Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    if edition is None:
        is_clinical = (edition_folder or "").strip("/").startswith("clinical")
        edition = "Healthcare" if is_clinical else DEFAULT_EDITION
    lines: list[str] = []
    for res in resources:
        line = _hub_line(res)
        archive_name = HubEntry.model_validate(line).archive_name
        archive = target / archive_name
        if archive.exists():
            raise FileExistsError(f"{archive} already exists")
        with tempfile.TemporaryDirectory(prefix=".build-", dir=target) as tmp:
            resource_dir = (
                res.source_dir
                if res.source_dir is not None
                else write_resource_dir(res, Path(tmp) / "resource")
            )
            partial = Path(tmp) / "archive.zip"
            _zip_dir(resource_dir, partial, res.time)
            md5 = _md5_hex(partial)
            size = partial.stat().st_size
            os.replace(partial, archive)
        if res.checksum == "md5":
            line["checksum"] = md5
        elif res.checksum == "wrong":
            line["checksum"] = (
                hashlib.md5(f"wrong:{md5}".encode(), usedforsecurity=False).hexdigest().upper()
            )
        line["size"] = size
        lines.append(json.dumps(line))
    metadata = target / METADATA_FILE
    prefix = ""
    if metadata.exists() and metadata.stat().st_size:
        with metadata.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            prefix = "" if fh.read(1) == b"\n" else "\n"
    with metadata.open("a", encoding="utf-8") as fh:
        fh.write(prefix + "".join(f"{text}\n" for text in lines))
    entries, warnings = parse_metadata("\n".join(lines), source=str(metadata), edition=edition)
    if warnings or len(entries) != len(lines):
        raise ValueError(f"mirror lines do not parse back: {warnings}")
    return entries


# --- the demo mirror ------------------------------------------------------------------------

DEMO_README = """\
nlphub DEMO hub mirror -- GENERATED DEMO DATA, NOT REAL MODELS
================================================================

This folder was generated by nlphub (nlphub/hub/mirror.py, build_demo_mirror). It has the layout and
file formats of the Spark NLP Models Hub, but every archive holds pseudo-random bytes in
place of model weights: nothing here can annotate text. Use it to try nlphub without network
access or a licence.

  metadata.json, *.zip   open-source resources (this folder is the public hub folder)
  clinical/models/       a licensed (Healthcare NLP) resource, with its own metadata.json

Serve it with:   nlphub hub serve {folder}
then point nlphub at it, e.g.
  NLPHUB_HUB_URLS=http://127.0.0.1:PORT
  NLPHUB_LICENSED_HUB_URLS=http://127.0.0.1:PORT/clinical/models
"""

_DEMO_TIME = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
_DEMO_PAYLOAD = 4096
_CONLL_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
_CLINICAL_DE_LABELS = ["O", "B-DIAGNOSIS", "I-DIAGNOSIS", "B-MEDICATION", "I-MEDICATION"]


def _demo_resource(name: str, annotator: str, **kwargs: Any) -> MirrorResource:
    """A demo resource: English, Spark NLP 5.4.0 on Spark 3.4, at `_DEMO_TIME`, unless told."""
    values: dict[str, Any] = {
        "language": "en",
        "lib_version": "5.4.0",
        "spark_version": "3.4",
        "time": _DEMO_TIME,
        "payload_bytes": _DEMO_PAYLOAD,
    }
    values.update(kwargs)
    return MirrorResource(name=name, annotator=annotator, **values)


def _demo_embeddings() -> list[MirrorResource]:
    """The demo embeddings: ``glove_100d`` in three versions, then three others."""
    res = _demo_resource
    day = timedelta(days=1)
    return [
        res(
            "glove_100d",
            "WordEmbeddingsModel",
            lib_version="4.4.0",
            spark_version="3.2",
            time=datetime(2023, 1, 10, 9, 30, tzinfo=UTC),
            storage_ref="glove_100d",
        ),
        res("glove_100d", "WordEmbeddingsModel", storage_ref="glove_100d"),
        res(
            "glove_100d",
            "WordEmbeddingsModel",
            lib_version="99.0.0",
            time=_DEMO_TIME + 30 * day,
            storage_ref="glove_100d",
        ),
        res("bert_base_cased", "BertEmbeddings", time=_DEMO_TIME + day, engine="tensorflow"),
        res("tfhub_use", "UniversalSentenceEncoder", time=_DEMO_TIME + 2 * day),
        res(
            "w2v_cc_300d",
            "WordEmbeddingsModel",
            language="de",
            time=_DEMO_TIME + 3 * day,
            storage_ref="w2v_cc_300d",
        ),
    ]


def _demo_ner_models() -> list[MirrorResource]:
    """The demo NER models: an open-source one and a Healthcare NLP one."""
    res = _demo_resource
    day = timedelta(days=1)
    return [
        res(
            "ner_dl",
            "NerDLModel",
            time=_DEMO_TIME + 4 * day,
            storage_ref="glove_100d",
            labels=list(_CONLL_LABELS),
        ),
        res(
            "ner_healthcare_de",
            "MedicalNerModel",
            language="de",
            time=_DEMO_TIME + 5 * day,
            storage_ref="w2v_cc_300d",
            labels=list(_CLINICAL_DE_LABELS),
        ),
    ]


def _demo_pipeline() -> MirrorResource:
    """The demo pipeline ``explain_document_dl`` (``glove_100d`` embeddings, ``ner_dl``)."""
    return _demo_resource(
        "explain_document_dl",
        "PipelineModel",
        category="pl",
        time=_DEMO_TIME + 6 * timedelta(days=1),
        stages=[
            MirrorStage(annotator="DocumentAssembler"),
            MirrorStage(annotator="SentenceDetector"),
            MirrorStage(annotator="TokenizerModel", payload_bytes=512),
            MirrorStage(
                annotator="WordEmbeddingsModel",
                storage_ref="glove_100d",
                payload_bytes=_DEMO_PAYLOAD,
            ),
            MirrorStage(
                annotator="NerDLModel",
                storage_ref="glove_100d",
                payload_bytes=_DEMO_PAYLOAD,
                labels=list(_CONLL_LABELS),
            ),
            MirrorStage(annotator="NerConverter"),
        ],
    )


def demo_resources() -> list[MirrorResource]:
    """The demo mirror's resources (compatible with Spark NLP 5.x on Spark 3.4+).

    ``glove_100d`` comes in three versions: an older compatible one (4.4.0 / Spark 3.2), the
    current one (5.4.0 / Spark 3.4) and a newer one no installed Spark NLP can run (99.0.0).
    ``ner_healthcare_de`` is a Healthcare NLP model (it belongs in the licensed folder).
    """
    return [*_demo_embeddings(), *_demo_ner_models(), _demo_pipeline()]


def build_demo_mirror(folder: Path) -> Path:
    """Build the demo mirror in ``folder``, with a README.txt saying it is generated data.

    ``folder`` itself is the public hub folder (``metadata.json`` and archives); resources of
    a licensed library (Healthcare NLP, ...) go to ``folder/clinical/models`` (`LICENSED_FOLDER`).
    Builds in well under a second.

    Returns:
        ``folder``.

    Raises:
        FileExistsError: ``folder`` already holds a mirror with these archives.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    resources = demo_resources()
    public: list[MirrorResource] = []
    licensed: list[MirrorResource] = []
    for res in resources:
        is_open = library_of(res.class_name) in (None, "spark-nlp")
        (public if is_open else licensed).append(res)
    build_mirror(folder, public)
    build_mirror(folder, licensed, edition_folder=LICENSED_FOLDER, edition="Healthcare")
    (folder / "README.txt").write_text(DEMO_README.format(folder=folder), encoding="utf-8")
    return folder

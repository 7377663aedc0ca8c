"""Fixture builders: realistic Spark ML / Spark NLP folders and zips, including malicious ones.

Metadata is written the way Spark's ``DefaultParamsWriter`` writes it (one compact JSON line in
``metadata/part-00000`` next to ``_SUCCESS`` and Hadoop ``.crc`` files); pipelines use Spark's
stage folder naming ``stages/<zero-padded index>_<uid>``. `raw_zip` writes zip files byte by
byte so that tests can state anything a hostile archive could: raw name bytes, flags, file
types, compression methods and lying sizes or CRCs.

Constants and builders used by more than one test module (``LABELS``, ``SMALL``, ``HYPOTHESIS``,
`eleven_stages`, `nested`, `valid_zip`) live here too.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from nlphub.uploads.archive import ArchiveLimits

SPARK_VERSION = "3.4.1"
TIMESTAMP = 1_700_000_000_000

NER_DL = "com.johnsnowlabs.nlp.annotators.ner.dl.NerDLModel"
MEDICAL_NER = "com.johnsnowlabs.nlp.annotators.ner.MedicalNerModel"
WORD_EMBEDDINGS = "com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel"
BERT_EMBEDDINGS = "com.johnsnowlabs.nlp.embeddings.BertEmbeddings"
PIPELINE = "org.apache.spark.ml.PipelineModel"

NER_UID = "NerDLModel_6a7c3f1e2b4d"
EMB_UID = "WORD_EMBEDDINGS_MODEL_48cffc8b9a76"

LABELS = ["PER", "LOC", "ORG", "MISC"]

SMALL = ArchiveLimits(max_entries=5, max_total_bytes=1000, max_entry_bytes=500)
HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class Stage:
    """One stage of a pipeline built by `SparkBuilder.pipeline`."""

    cls: str
    uid: str
    param_map: dict[str, Any] = field(default_factory=dict)
    storage: bool = False


def default_stages() -> list[Stage]:
    """A realistic NER pipeline (the shape of ``recognize_entities_dl``) plus a Spark ML stage."""
    return [
        Stage(
            "com.johnsnowlabs.nlp.DocumentAssembler",
            "DocumentAssembler_3b8e5f2a1c9d",
            {"inputCol": "text", "outputCol": "document", "cleanupMode": "disabled"},
        ),
        Stage(
            "com.johnsnowlabs.nlp.annotators.sbd.pragmatic.SentenceDetector",
            "SentenceDetector_9c2d4e6f8a1b",
            {"inputCols": ["document"], "outputCol": "sentence"},
        ),
        Stage(
            "com.johnsnowlabs.nlp.annotators.TokenizerModel",
            "REGEX_TOKENIZER_5e7f9a1b3c2d",
            {"inputCols": ["sentence"], "outputCol": "token", "targetPattern": "\\S+"},
        ),
        Stage(
            WORD_EMBEDDINGS,
            EMB_UID,
            {
                "inputCols": ["sentence", "token"],
                "outputCol": "embeddings",
                "dimension": 100,
                "storageRef": "glove_100d",
            },
            storage=True,
        ),
        Stage(
            NER_DL,
            NER_UID,
            {
                "inputCols": ["sentence", "token", "embeddings"],
                "outputCol": "ner",
                "storageRef": "glove_100d",
            },
        ),
        Stage(
            "com.johnsnowlabs.nlp.annotators.ner.NerConverter",
            "NerConverter_1d3f5a7c9e2b",
            {"inputCols": ["sentence", "token", "ner"], "outputCol": "entities"},
        ),
        Stage(
            "org.apache.spark.ml.feature.SQLTransformer",
            "SQLTransformer_7b9d1f3a5c8e",
            {"statement": "SELECT * FROM __THIS__"},
        ),
    ]


def eleven_stages() -> list[Stage]:
    """`default_stages` plus four normalizers: 11 stages, so stage numbers get 2 digits."""
    extra = [
        Stage("com.johnsnowlabs.nlp.annotators.Normalizer", f"NORMALIZER_{i}") for i in range(4)
    ]
    return default_stages() + extra


def metadata_json(
    cls: str,
    uid: str,
    param_map: dict[str, Any] | None = None,
    *,
    spark_version: str = SPARK_VERSION,
    extra: dict[str, Any] | None = None,
    drop: Iterable[str] = (),
) -> bytes:
    obj: dict[str, Any] = {
        "class": cls,
        "timestamp": TIMESTAMP,
        "sparkVersion": spark_version,
        "uid": uid,
        "paramMap": {} if param_map is None else param_map,
        "defaultParamMap": {"lazyAnnotator": False},
    }
    obj.update(extra or {})
    for key in drop:
        obj.pop(key, None)
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def write_metadata(
    folder: Path,
    cls: str,
    uid: str,
    param_map: dict[str, Any] | None = None,
    *,
    spark4: bool = False,
    raw: bytes | None = None,
    **kwargs: Any,
) -> Path:
    """Write ``folder/metadata/`` as Spark does; returns the part file."""
    meta = folder / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    name = f"part-00000-{uuid.UUID(int=7)}-c000.txt" if spark4 else "part-00000"
    part = meta / name
    part.write_bytes(raw if raw is not None else metadata_json(cls, uid, param_map, **kwargs))
    (meta / "_SUCCESS").write_bytes(b"")
    (meta / f".{name}.crc").write_bytes(b"crc\x00\x00\x02\x00")
    (meta / "._SUCCESS.crc").write_bytes(b"crc\x00\x00\x02\x00")
    return part


def write_storage(folder: Path, ref: str = "glove_100d") -> None:
    db = folder / "storage" / f"EMBEDDINGS_{ref}"
    db.mkdir(parents=True)
    (db / "CURRENT").write_text("MANIFEST-000001\n")
    (db / "MANIFEST-000001").write_bytes(b"\x00" * 64)
    (db / "000005.sst").write_bytes(os.urandom(512))
    (db / "OPTIONS-000007").write_text("[Version]\n  rocksdb_version=6.29.5\n")


class SparkBuilder:
    """Writes Spark NLP resource folders below ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def _new(self, name: str) -> Path:
        folder = self.base / name
        folder.mkdir(parents=True)
        return folder

    def ner_model(
        self,
        name: str = "ner_dl",
        *,
        cls: str = NER_DL,
        uid: str = NER_UID,
        storage_ref: str | None = "glove_100d",
        **meta: Any,
    ) -> Path:
        folder = self._new(name)
        params: dict[str, Any] = {
            "inputCols": ["sentence", "token", "embeddings"],
            "outputCol": "ner",
            "includeConfidence": True,
            "batchSize": 32,
        }
        if storage_ref is not None:
            params["storageRef"] = storage_ref
        write_metadata(folder, cls, uid, params, **meta)
        (folder / "fields" / "datasetParams").mkdir(parents=True)
        (folder / "fields" / "datasetParams" / "part-00000").write_bytes(os.urandom(256))
        (folder / "nerdl_tensorflow").write_bytes(os.urandom(1024))
        return folder

    def embeddings(
        self,
        name: str = "glove_100d",
        *,
        cls: str = WORD_EMBEDDINGS,
        uid: str = EMB_UID,
        storage: bool = True,
        **meta: Any,
    ) -> Path:
        folder = self._new(name)
        params = {
            "inputCols": ["document", "token"],
            "outputCol": "embeddings",
            "dimension": 100,
            "caseSensitive": False,
            "storageRef": "glove_100d",
        }
        write_metadata(folder, cls, uid, params, **meta)
        if storage:
            write_storage(folder)
        return folder

    def resource(
        self, name: str, cls: str, uid: str = "Annotator_0a1b2c3d4e5f", **meta: Any
    ) -> Path:
        folder = self._new(name)
        write_metadata(folder, cls, uid, {"inputCols": ["document"], "outputCol": "out"}, **meta)
        return folder

    def pipeline(
        self,
        name: str = "pipeline",
        stages: list[Stage] | None = None,
        *,
        uid: str = "PipelineModel_4f3a9b1d7c2e",
        stage_uids: Any = None,
        **meta: Any,
    ) -> Path:
        folder = self._new(name)
        self.fill_pipeline(
            folder,
            default_stages() if stages is None else stages,
            uid=uid,
            stage_uids=stage_uids,
            **meta,
        )
        return folder

    def fill_pipeline(
        self,
        folder: Path,
        stages: list[Stage],
        *,
        uid: str = "PipelineModel_4f3a9b1d7c2e",
        stage_uids: Any = None,
        **meta: Any,
    ) -> None:
        uids = [s.uid for s in stages] if stage_uids is None else stage_uids
        write_metadata(folder, PIPELINE, uid, {"stageUids": uids}, **meta)
        width = len(str(len(stages)))
        for index, stage in enumerate(stages):
            stage_dir = folder / "stages" / f"{index:0{width}d}_{stage.uid}"
            write_metadata(stage_dir, stage.cls, stage.uid, stage.param_map)
            if stage.storage:
                write_storage(stage_dir)
        (folder / "stages").mkdir(exist_ok=True)


def nested(depth: int) -> Callable[[SparkBuilder], Path]:
    """A builder of pipelines nested ``depth`` levels deep around `default_stages`."""

    def build(b: SparkBuilder) -> Path:
        root = b.base / "nested"
        folder = root
        for level in range(depth):
            uid = f"PipelineModel_{level}"
            write_metadata(folder, PIPELINE, uid, {"stageUids": [f"PipelineModel_{level + 1}"]})
            folder = folder / "stages" / f"0_PipelineModel_{level + 1}"
        b.fill_pipeline(folder, default_stages(), uid=f"PipelineModel_{depth}")
        return root

    return build


def zip_dir(src: Path, dest: Path, *, prefix: str = "") -> Path:
    """Zip ``src`` the way ``zip -r`` / ``shutil.make_archive`` would (directories included)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*")):
            arcname = prefix + path.relative_to(src).as_posix()
            zf.write(path, arcname)
    return dest


def valid_zip(tmp: Path) -> Path:
    """A zipped NER model at ``tmp/upload.zip`` (its folder under ``tmp/src``)."""
    src = SparkBuilder(tmp / "src").ner_model()
    return zip_dir(src, tmp / "upload.zip")


@dataclass
class RawEntry:
    """A zip entry written byte by byte by `raw_zip`; ``None`` fields take honest values."""

    name: str | bytes
    data: bytes = b""
    method: int = zipfile.ZIP_DEFLATED
    flags: int | None = None
    external_attr: int = 0o100644 << 16
    create_system: int = 3
    file_size: int | None = None
    compress_size: int | None = None
    crc: int | None = None
    payload: bytes | None = None


def _compress(data: bytes, method: int) -> bytes:
    if method == zipfile.ZIP_DEFLATED:
        co = zlib.compressobj(9, zlib.DEFLATED, -15)
        return co.compress(data) + co.flush()
    return data


def raw_zip(path: Path, entries: Iterable[RawEntry]) -> Path:
    """Write a zip from `RawEntry` records without zipfile's sanitizing."""
    local = bytearray()
    central = bytearray()
    count = 0
    for entry in entries:
        count += 1
        if isinstance(entry.name, str):
            name = entry.name.encode("utf-8")
            default_flags = 0 if entry.name.isascii() else 0x800
        else:
            name = entry.name
            default_flags = 0
        flags = default_flags if entry.flags is None else entry.flags
        payload = _compress(entry.data, entry.method) if entry.payload is None else entry.payload
        crc = zlib.crc32(entry.data) if entry.crc is None else entry.crc
        csize = len(payload) if entry.compress_size is None else entry.compress_size
        fsize = len(entry.data) if entry.file_size is None else entry.file_size
        offset = len(local)
        extra = b""
        if fsize >= 0xFFFFFFFF or csize >= 0xFFFFFFFF:  # zip64: real sizes in an extra field
            extra = struct.pack("<HHQQ", 1, 16, fsize, csize)
            fsize = csize = 0xFFFFFFFF
        date, time = (2023 - 1980) << 9 | 11 << 5 | 14, 0
        local += struct.pack(
            "<4s2B4HL2L2H",
            b"PK\x03\x04",
            20,
            0,
            flags,
            entry.method,
            time,
            date,
            crc,
            csize,
            fsize,
            len(name),
            len(extra),
        )
        local += name + extra + payload
        central += struct.pack(
            "<4s4B4HL2L5H2L",
            b"PK\x01\x02",
            20,
            entry.create_system,
            20,
            0,
            flags,
            entry.method,
            time,
            date,
            crc,
            csize,
            fsize,
            len(name),
            len(extra),
            0,
            0,
            0,
            entry.external_attr,
            offset,
        )
        central += name + extra
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path


def tree_snapshot(base: Path) -> set[str]:
    """Every path below ``base`` (files, folders, links), relative, for leak checks."""
    return {p.relative_to(base).as_posix() for p in base.rglob("*")}


@pytest.fixture
def spark(tmp_path: Path) -> SparkBuilder:
    """Builds Spark NLP resource folders under ``tmp_path/src``."""
    return SparkBuilder(tmp_path / "src")

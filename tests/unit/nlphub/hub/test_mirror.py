"""Unit tests for nlphub.hub.mirror: mirror folders in the hub's format, with valid resources."""

from __future__ import annotations

import hashlib
import json
import time
import tracemalloc
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from nlphub.hub.metadata import HubEntry, parse_metadata, select_newest
from nlphub.hub.mirror import (
    LICENSED_FOLDER,
    MirrorResource,
    MirrorStage,
    build_demo_mirror,
    build_mirror,
    demo_resources,
    write_resource_dir,
)
from nlphub.uploads.archive import resource_root, safe_extract
from nlphub.uploads.sparknlp import ResourceInfo, validate_resource
from nlphub.versions import Version

T0 = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)


def glove(**overrides: object) -> MirrorResource:
    values: dict[str, object] = {
        "name": "glove_100d",
        "language": "en",
        "lib_version": "5.4.1",
        "spark_version": "3.4",
        "annotator": "WordEmbeddingsModel",
        "time": T0,
        "storage_ref": "glove_100d",
    }
    values.update(overrides)
    return MirrorResource(**values)  # type: ignore[arg-type]


def ner(**overrides: object) -> MirrorResource:
    values: dict[str, object] = {
        "name": "ner_dl",
        "language": "en",
        "lib_version": "5.4.1",
        "spark_version": "3.4",
        "annotator": "NerDLModel",
        "time": T0 + timedelta(hours=1),
        "storage_ref": "glove_100d",
        "labels": ["O", "B-PER", "I-PER"],
    }
    values.update(overrides)
    return MirrorResource(**values)  # type: ignore[arg-type]


def pipeline() -> MirrorResource:
    return MirrorResource(
        name="recognize_entities_dl",
        language="en",
        lib_version="5.4.1",
        spark_version="3.4",
        annotator="PipelineModel",
        category="pl",
        time=T0 + timedelta(hours=2),
        stages=[
            MirrorStage(annotator="DocumentAssembler"),
            MirrorStage(annotator="TokenizerModel", payload_bytes=100),
            MirrorStage(
                annotator="WordEmbeddingsModel", storage_ref="glove_100d", payload_bytes=1000
            ),
            MirrorStage(
                annotator="NerDLModel",
                storage_ref="glove_100d",
                payload_bytes=1000,
                labels=["O", "B-LOC"],
            ),
        ],
    )


def md5_upper(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest().upper()


def validate_archive(archive: Path, entry: HubEntry, tmp: Path, labels: list[str]) -> ResourceInfo:
    tmp.mkdir(parents=True, exist_ok=True)
    dest = tmp / archive.stem
    safe_extract(archive, dest)
    return validate_resource(resource_root(dest), kind=entry.kind, labels=labels or None)


# --- build_mirror -------------------------------------------------------------------------------


def test_round_trip_metadata_archives_and_checksums(tmp_path: Path) -> None:
    resources = [glove(), ner(), pipeline()]
    entries = build_mirror(tmp_path / "hub", resources)

    text = (tmp_path / "hub" / "metadata.json").read_text()
    parsed, warnings = parse_metadata(text, source="metadata.json")
    assert warnings == []
    assert parsed == entries
    assert [e.name for e in entries] == ["glove_100d", "ner_dl", "recognize_entities_dl"]
    for res, entry in zip(resources, entries, strict=True):
        archive = tmp_path / "hub" / entry.archive_name
        assert archive.is_file()
        assert entry.archive_name == (f"{res.name}_en_5.4.1_3.4_{res.time_ms}.zip")
        assert entry.checksum == md5_upper(archive)
        assert entry.size == archive.stat().st_size
        assert entry.lib_version == Version((5, 4, 1))
        assert entry.spark_version == Version((3, 4))
        assert entry.annotator == res.annotator
    assert [e.kind for e in entries] == ["embeddings", "model", "pipeline"]
    assert entries[2].category == "pl"
    # No temporary build folders are left behind.
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == sorted(
        ["metadata.json", *(e.archive_name for e in entries)]
    )


def test_lines_use_the_hub_format(tmp_path: Path) -> None:
    build_mirror(tmp_path, [glove(engine="onnx")])
    line = json.loads((tmp_path / "metadata.json").read_text().splitlines()[0])
    assert line == {
        "name": "glove_100d",
        "language": "en",
        "libVersion": {"parts": [5, 4, 1]},
        "sparkVersion": {"parts": [3, 4]},
        "readyToUse": True,
        "time": "2024-05-01T10:00:00.123Z",
        "isZipped": True,
        "category": "ml",
        "checksum": md5_upper(tmp_path / f"glove_100d_en_5.4.1_3.4_{glove().time_ms}.zip"),
        "annotator": "WordEmbeddingsModel",
        "engine": "onnx",
        "size": line["size"],
    }


def test_time_in_another_zone_is_written_in_utc(tmp_path: Path) -> None:
    local = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    [entry] = build_mirror(tmp_path, [glove(time=local)])
    assert entry.time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert '"time": "2024-05-01T10:00:00.000Z"' in (tmp_path / "metadata.json").read_text()


def test_every_archive_is_a_valid_resource_of_its_kind(tmp_path: Path) -> None:
    resources = [glove(), ner(), pipeline()]
    entries = build_mirror(tmp_path / "hub", resources)
    infos = [
        validate_archive(
            tmp_path / "hub" / entry.archive_name,
            entry,
            tmp_path / "x",
            res.labels or [label for s in res.stages for label in s.labels],
        )
        for res, entry in zip(resources, entries, strict=True)
    ]
    glove_info, ner_info, pipe_info = infos
    assert glove_info.class_name == "com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel"
    assert glove_info.needs_storage and glove_info.is_embeddings
    assert glove_info.spark_version == "3.4.1"
    assert glove_info.timestamp == resources[0].time_ms
    assert glove_info.uid.startswith("WordEmbeddingsModel_")
    assert len(glove_info.uid.split("_")[-1]) == 12
    assert ner_info.is_ner and ner_info.storage_refs == ["glove_100d"]
    assert pipe_info.is_pipeline and len(pipe_info.stages) == 4
    assert pipe_info.storage_refs == ["glove_100d"]
    assert pipe_info.needs_storage and pipe_info.is_ner


def test_archive_entries_are_relative_files_without_links(tmp_path: Path) -> None:
    [entry] = build_mirror(tmp_path, [glove()])
    with zipfile.ZipFile(tmp_path / entry.archive_name) as zf:
        infos = zf.infolist()
    names = [info.filename for info in infos]
    assert "metadata/part-00000" in names
    assert any(name.startswith("storage/") for name in names)
    for info in infos:
        assert not info.filename.startswith(("/", "..")) and ".." not in info.filename.split("/")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert (info.external_attr >> 16) & 0o170000 == 0o100000  # regular file


def test_metadata_part_is_one_spark_json_line(tmp_path: Path) -> None:
    root = write_resource_dir(ner(), tmp_path / "ner")
    text = (root / "metadata" / "part-00000").read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    meta = json.loads(text)
    assert list(meta) == [
        "class",
        "timestamp",
        "sparkVersion",
        "uid",
        "paramMap",
        "defaultParamMap",
    ]
    assert meta["class"] == "com.johnsnowlabs.nlp.annotators.ner.dl.NerDLModel"
    assert meta["paramMap"]["storageRef"] == "glove_100d"
    assert (root / "fields" / "labels" / "part-00000").read_text().split() == [
        "O",
        "B-PER",
        "I-PER",
    ]
    assert (root / "fields" / "weights" / "part-00000").stat().st_size == 4096
    assert not (root / "storage").exists()


def test_checksum_modes(tmp_path: Path) -> None:
    entries = build_mirror(
        tmp_path,
        [glove(checksum="md5"), ner(checksum="empty"), glove(name="g2", checksum="wrong")],
    )
    real = [md5_upper(tmp_path / e.archive_name) for e in entries]
    assert entries[0].checksum == real[0]
    assert entries[1].checksum is None
    assert '"checksum": ""' in (tmp_path / "metadata.json").read_text().splitlines()[1]
    assert entries[2].checksum is not None and len(entries[2].checksum) == 32
    assert entries[2].checksum != real[2]


def test_appends_to_existing_metadata(tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text('{"name": "old", "language": "en", "time": 0}')
    first = build_mirror(tmp_path, [glove()])
    second = build_mirror(tmp_path, [ner(), glove(lib_version="5.5.0")])
    parsed, warnings = parse_metadata(
        (tmp_path / "metadata.json").read_text(), source="metadata.json"
    )
    assert warnings == []
    assert [e.name for e in parsed] == ["old", "glove_100d", "ner_dl", "glove_100d"]
    assert parsed[1:] == first + second
    assert [e.name for e in second] == ["ner_dl", "glove_100d"]


def test_same_archive_twice_is_refused(tmp_path: Path) -> None:
    build_mirror(tmp_path, [glove()])
    with pytest.raises(FileExistsError):
        build_mirror(tmp_path, [glove()])
    assert len((tmp_path / "metadata.json").read_text().splitlines()) == 1


def test_edition_folder(tmp_path: Path) -> None:
    entries = build_mirror(tmp_path, [ner()], edition_folder="clinical/models")
    assert (tmp_path / "clinical" / "models" / "metadata.json").is_file()
    assert (tmp_path / "clinical" / "models" / entries[0].archive_name).is_file()
    assert not (tmp_path / "metadata.json").exists()
    assert entries[0].edition == "Healthcare"
    assert build_mirror(tmp_path, [glove()], edition_folder="public/models")[0].edition == (
        "Open Source"
    )


def test_archives_are_reproducible(tmp_path: Path) -> None:
    a = build_mirror(tmp_path / "a", [glove(), pipeline()])
    time.sleep(0.01)
    b = build_mirror(tmp_path / "b", [glove(), pipeline()])
    assert [e.checksum for e in a] == [e.checksum for e in b]
    c = build_mirror(tmp_path / "c", [glove(name="other")])
    assert c[0].checksum != a[0].checksum


def test_payload_size_is_controlled_and_incompressible(tmp_path: Path) -> None:
    [small] = build_mirror(tmp_path, [glove(payload_bytes=1000)])
    [big] = build_mirror(tmp_path, [glove(name="big", payload_bytes=3_000_000)])
    assert small.size is not None and big.size is not None
    assert small.size < 3000
    assert 3_000_000 < big.size < 3_000_000 * 1.01 + 2000


def test_payload_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    size = 16 * 1024 * 1024
    tracemalloc.start()
    try:
        write_resource_dir(glove(payload_bytes=size), tmp_path / "r")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [sst] = (tmp_path / "r" / "storage").rglob("*.sst")
    assert sst.stat().st_size == size
    assert peak < size // 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"time": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"annotator": "SomethingNew"}, "class_name"),
        ({"annotator": "PipelineModel", "category": "pl"}, "stage"),
        ({"stages": [MirrorStage(annotator="DocumentAssembler")]}, "only a pipeline"),
        ({"payload_bytes": -1}, "payload_bytes"),
    ],
)
def test_bad_specs_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        glove(**overrides)


# --- the demo mirror ----------------------------------------------------------------------------


def test_demo_mirror(tmp_path: Path) -> None:
    started = time.monotonic()
    root = build_demo_mirror(tmp_path / "demo")
    assert time.monotonic() - started < 2
    assert root == tmp_path / "demo"
    readme = (root / "README.txt").read_text()
    assert "DEMO" in readme and "NOT REAL MODELS" in readme
    assert (root / "metadata.json").is_file()
    assert (root / LICENSED_FOLDER / "metadata.json").is_file()
    assert any(root.glob("glove_100d_en_5.4.0_3.4_*.zip"))
    assert any((root / LICENSED_FOLDER).glob("ner_healthcare_de_de_*.zip"))

    public, public_warnings = parse_metadata((root / "metadata.json").read_text(), source="public")
    licensed, licensed_warnings = parse_metadata(
        (root / LICENSED_FOLDER / "metadata.json").read_text(), source="clinical"
    )
    assert public_warnings == licensed_warnings == []
    assert [e.name for e in licensed] == ["ner_healthcare_de"]
    assert "ner_healthcare_de" not in {e.name for e in public}
    assert {e.name for e in public} == {
        "glove_100d",
        "bert_base_cased",
        "tfhub_use",
        "w2v_cc_300d",
        "ner_dl",
        "explain_document_dl",
    }
    by_name = {e.name: e for e in public + licensed}
    assert by_name["tfhub_use"].embedding_type == "sentence"
    assert by_name["explain_document_dl"].kind == "pipeline"
    assert by_name["w2v_cc_300d"].language == "de"
    assert sum(1 for e in public if e.name == "glove_100d") == 3

    chosen = select_newest(
        public,
        name="glove_100d",
        language="en",
        lib_version=Version.parse("5.5.0"),
        spark_version=Version.parse("3.5.1"),
    )
    assert chosen is not None and chosen.lib_version == Version((5, 4, 0))
    old = select_newest(
        public,
        name="glove_100d",
        language="en",
        lib_version=Version.parse("5.5.0"),
        spark_version=Version.parse("3.3"),
    )
    assert old is not None and old.lib_version == Version((4, 4, 0))


def test_demo_mirror_is_not_built_twice_into_one_folder(tmp_path: Path) -> None:
    build_demo_mirror(tmp_path)
    with pytest.raises(FileExistsError):
        build_demo_mirror(tmp_path)


def test_demo_archives_validate(tmp_path: Path) -> None:
    root = build_demo_mirror(tmp_path / "demo")
    specs = {(r.name, r.lib_version): r for r in demo_resources()}
    seen = 0
    for folder in ("", LICENSED_FOLDER):
        text = (root / folder / "metadata.json").read_text()
        entries, _ = parse_metadata(text, source=folder or "public")
        for entry in entries:
            res = specs[(entry.name, str(entry.lib_version))]
            labels = res.labels or [label for s in res.stages for label in s.labels]
            archive = root / folder / entry.archive_name
            assert entry.checksum == md5_upper(archive)
            info = validate_archive(archive, entry, tmp_path / "x", labels)
            seen += 1
            if entry.name == "ner_healthcare_de":
                assert info.library == "healthcare-nlp"
                assert info.storage_refs == ["w2v_cc_300d"]
            elif entry.name == "explain_document_dl":
                assert info.is_pipeline and info.library == "spark-nlp"
    assert seen == len(specs)

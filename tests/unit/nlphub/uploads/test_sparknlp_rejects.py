"""Spark NLP resource validation: a corpus of broken resources and how problems are reported."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nlphub.uploads.archive import DEFAULT_LIMITS, ArchiveLimits
from nlphub.uploads.sparknlp import Kind, ResourceProblem, validate_resource
from tests.unit.nlphub.uploads.conftest import (
    LABELS,
    MEDICAL_NER,
    NER_DL,
    NER_UID,
    PIPELINE,
    SparkBuilder,
    Stage,
    eleven_stages,
    metadata_json,
    nested,
    write_metadata,
)


@dataclass(frozen=True)
class BadResource:
    id: str
    build: Callable[[SparkBuilder], Path]
    kind: Kind
    expected: str
    labels: list[str] | None = None
    limits: ArchiveLimits = DEFAULT_LIMITS


def raw_metadata(data: bytes, *, name: str = "part-00000") -> Callable[[SparkBuilder], Path]:
    def build(b: SparkBuilder) -> Path:
        root = b.ner_model()
        part = root / "metadata" / "part-00000"
        part.unlink()
        (root / "metadata" / name).write_bytes(data)
        return root

    return build


def model_meta(**kwargs: Any) -> Callable[[SparkBuilder], Path]:
    """A NerDLModel whose metadata is written with ``metadata_json(**kwargs)``."""

    def build(b: SparkBuilder) -> Path:
        root = b.ner_model()
        (root / "metadata" / "part-00000").write_bytes(
            metadata_json(NER_DL, NER_UID, {"storageRef": "glove_100d"}, **kwargs)
        )
        return root

    return build


def removing(build: Callable[[SparkBuilder], Path], rel: str) -> Callable[[SparkBuilder], Path]:
    def inner(b: SparkBuilder) -> Path:
        root = build(b)
        target = root / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        return root

    return inner


def resource(cls: str) -> Callable[[SparkBuilder], Path]:
    return lambda b: b.resource("res", cls)


def pipeline(stages: list[Stage] | None = None, **kwargs: Any) -> Callable[[SparkBuilder], Path]:
    return lambda b: b.pipeline(stages=stages, **kwargs)


def ner(b: SparkBuilder) -> Path:
    return b.ner_model()


def emb(b: SparkBuilder) -> Path:
    return b.embeddings()


def two_part_files(b: SparkBuilder) -> Path:
    root = b.ner_model()
    write_metadata(root, NER_DL, NER_UID, {}, spark4=True)
    return root


def part_symlink(b: SparkBuilder) -> Path:
    root = b.ner_model()
    part = root / "metadata" / "part-00000"
    real = root / "real.json"
    part.rename(real)
    part.symlink_to(real)
    return root


def metadata_dir_symlink(b: SparkBuilder) -> Path:
    root = b.ner_model()
    (root / "metadata").rename(root / "elsewhere")
    (root / "metadata").symlink_to(root / "elsewhere")
    return root


def huge_metadata(b: SparkBuilder) -> Path:
    root = b.ner_model()
    padding = "x" * (12 * 2**20)
    (root / "metadata" / "part-00000").write_bytes(
        metadata_json(NER_DL, NER_UID, {"pad": padding})[: 12 * 2**20]
    )
    return root


def empty_storage(b: SparkBuilder) -> Path:
    root = b.embeddings(storage=False)
    (root / "storage").mkdir()
    return root


def stage_broken(b: SparkBuilder) -> Path:
    stages = [
        Stage("com.johnsnowlabs.nlp.DocumentAssembler", "DocumentAssembler_1"),
        Stage(NER_DL, "NerDLModel_abc"),
    ]
    root = b.pipeline(stages=stages)
    part = root / "stages" / "1_NerDLModel_abc" / "metadata" / "part-00000"
    part.write_bytes(metadata_json(NER_DL, "NerDLModel_abc", drop=["paramMap"]))
    return root


def stage_uid_mismatch(b: SparkBuilder) -> Path:
    root = b.pipeline()
    part = root / "stages" / "4_NerDLModel_6a7c3f1e2b4d" / "metadata" / "part-00000"
    part.write_bytes(metadata_json(NER_DL, "NerDLModel_other"))
    return root


def extra_stage_dir(b: SparkBuilder) -> Path:
    root = b.pipeline()
    write_metadata(root / "stages" / "7_Extra_abc", NER_DL, "Extra_abc")
    return root


def stage_is_file(b: SparkBuilder) -> Path:
    root = b.pipeline()
    (root / "stages" / "README").write_text("hi")
    return root


def unpadded(b: SparkBuilder) -> Path:
    root = b.pipeline(stages=eleven_stages())
    (root / "stages" / "03_WORD_EMBEDDINGS_MODEL_48cffc8b9a76").rename(
        root / "stages" / "3_WORD_EMBEDDINGS_MODEL_48cffc8b9a76"
    )
    return root


def pipeline_params(params: dict[str, object]) -> Callable[[SparkBuilder], Path]:
    def build(b: SparkBuilder) -> Path:
        root = b.pipeline()
        (root / "metadata" / "part-00000").write_bytes(
            metadata_json(PIPELINE, "PipelineModel_4f3a9b1d7c2e", params)
        )
        return root

    return build


def not_a_dir(b: SparkBuilder) -> Path:
    b.base.mkdir(parents=True)
    path = b.base / "model.zip"
    path.write_bytes(b"PK")
    return path


STAGES_SPARK_ML_ONLY = [
    Stage("org.apache.spark.ml.feature.Tokenizer", "tok_1"),
    Stage("org.apache.spark.ml.feature.HashingTF", "tf_2"),
]
STAGE_FOREIGN = [Stage("com.example.Foo", "Foo_1"), Stage(NER_DL, NER_UID)]
STAGE_APPROACH = [Stage("com.johnsnowlabs.nlp.annotators.ner.dl.NerDLApproach", "NerDLApproach_1")]

RESOURCE_CASES = [
    BadResource("root-not-a-directory", not_a_dir, "model", "not a directory"),
    BadResource("no-metadata", removing(ner, "metadata"), "model", "metadata/ folder is missing"),
    BadResource(
        "metadata-dir-symlink", metadata_dir_symlink, "model", "metadata/ is a symbolic link"
    ),
    BadResource(
        "no-part-file", removing(ner, "metadata/part-00000"), "model", "no part-00000 file"
    ),
    BadResource(
        "two-part-files", two_part_files, "model", "expected exactly one part-00000 file, found"
    ),
    BadResource(
        "other-part-file",
        raw_metadata(b"{}", name="part-00001"),
        "model",
        "expected exactly one part-00000 file, found part-00001",
    ),
    BadResource(
        "part-file-symlink", part_symlink, "model", "metadata/part-00000 is a symbolic link"
    ),
    BadResource(
        "metadata-12mb",
        huge_metadata,
        "model",
        "metadata/part-00000 is 12 MB, above the 10 MB limit",
    ),
    BadResource(
        "metadata-over-small-limit",
        raw_metadata(metadata_json(NER_DL, NER_UID).rjust(2048)),
        "model",
        "metadata/part-00000 is 2 KB, above the 1 KB limit",
        limits=ArchiveLimits(max_metadata_bytes=1024),
    ),
    BadResource(
        "metadata-not-utf8",
        raw_metadata(b'{"class": "caf\xe9"}'),
        "model",
        "metadata/part-00000: not valid UTF-8",
    ),
    BadResource(
        "metadata-not-json", raw_metadata(b"class=NerDLModel\n"), "model", "not valid JSON"
    ),
    BadResource(
        "metadata-empty", raw_metadata(b""), "model", "metadata/part-00000: not valid JSON"
    ),
    BadResource(
        "metadata-json-array",
        raw_metadata(b"[1, 2]"),
        "model",
        "metadata/part-00000: not a JSON object (found list)",
    ),
    BadResource(
        "missing-paramMap",
        model_meta(drop=["paramMap"]),
        "model",
        "metadata/part-00000: missing key 'paramMap'",
    ),
    BadResource(
        "missing-class",
        model_meta(drop=["class"]),
        "model",
        "metadata/part-00000: missing key 'class'",
    ),
    BadResource("missing-uid", model_meta(drop=["uid"]), "model", "missing key 'uid'"),
    BadResource(
        "missing-sparkVersion",
        model_meta(drop=["sparkVersion"]),
        "model",
        "missing key 'sparkVersion'",
    ),
    BadResource(
        "paramMap-is-list",
        model_meta(extra={"paramMap": ["storageRef"]}),
        "model",
        "key 'paramMap' must be a JSON object, got list",
    ),
    BadResource(
        "class-is-number",
        model_meta(extra={"class": 42}),
        "model",
        "key 'class' must be a string, got int",
    ),
    BadResource("uid-empty", model_meta(extra={"uid": ""}), "model", "key 'uid' must not be empty"),
    BadResource(
        "sparkVersion-garbage",
        model_meta(spark_version="unknown"),
        "model",
        "sparkVersion 'unknown' is not a version",
    ),
    BadResource(
        "libVersion-garbage",
        model_meta(extra={"libVersion": "abc"}),
        "model",
        "libVersion 'abc' is not a version",
    ),
    BadResource(
        "class-not-java-name",
        resource("com.johnsnowlabs.nlp.Bad Name"),
        "model",
        "class 'com.johnsnowlabs.nlp.Bad Name' is not a valid Java class name",
    ),
    BadResource(
        "spark-ml-class-as-model",
        resource("org.apache.spark.ml.feature.Tokenizer"),
        "model",
        "class org.apache.spark.ml.feature.Tokenizer is not a Spark NLP class "
        "(expected com.johnsnowlabs.*)",
    ),
    BadResource(
        "foreign-class-as-embeddings",
        resource("ai.example.Embeddings"),
        "embeddings",
        "is not a Spark NLP class",
    ),
    BadResource(
        "model-declared-embeddings",
        ner,
        "embeddings",
        "class com.johnsnowlabs.nlp.annotators.ner.dl.NerDLModel is a model, but the upload "
        "was declared as embeddings",
        labels=LABELS,
    ),
    BadResource(
        "embeddings-declared-model",
        emb,
        "model",
        "class com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel is embeddings, but the upload "
        "was declared as model",
    ),
    BadResource(
        "approach-not-model",
        resource("com.johnsnowlabs.nlp.annotators.ner.dl.NerDLApproach"),
        "model",
        "is an untrained approach, not a trained model",
    ),
    BadResource(
        "helper-not-model",
        resource("com.johnsnowlabs.nlp.DocumentAssembler"),
        "model",
        "helper transformer with nothing trained",
    ),
    BadResource(
        "embeddings-without-storage",
        lambda b: b.embeddings(storage=False),
        "embeddings",
        "WordEmbeddingsModel needs a storage/ folder, none found",
    ),
    BadResource(
        "embeddings-empty-storage",
        empty_storage,
        "embeddings",
        "WordEmbeddingsModel: storage/ folder is empty",
    ),
    BadResource("ner-without-labels", ner, "model", "NER model needs its labels: pass --labels"),
    BadResource(
        "medical-ner-without-labels",
        lambda b: b.ner_model(cls=MEDICAL_NER, uid="MedicalNerModel_1"),
        "model",
        "NER model needs its labels",
    ),
    BadResource("labels-empty", ner, "model", "labels: the list is empty", labels=[]),
    BadResource(
        "labels-duplicate",
        ner,
        "model",
        "labels: duplicate label 'PER'",
        labels=["PER", "LOC", "PER"],
    ),
    BadResource("labels-blank", ner, "model", "labels: '  ' is not a label", labels=["PER", "  "]),
    BadResource(
        "pipeline-declared-model",
        pipeline(),
        "model",
        "class org.apache.spark.ml.PipelineModel is a pipeline, but the upload was declared as "
        "model",
        labels=LABELS,
    ),
    BadResource(
        "pipeline-declared-embeddings", pipeline(), "embeddings", "is a pipeline", labels=LABELS
    ),
    BadResource(
        "model-declared-pipeline",
        ner,
        "pipeline",
        "is a model, but the upload was declared as pipeline",
        labels=LABELS,
    ),
    BadResource(
        "spark-ml-declared-pipeline",
        resource("org.apache.spark.ml.feature.Tokenizer"),
        "pipeline",
        "is not a Spark pipeline (expected org.apache.spark.ml.PipelineModel)",
    ),
    BadResource(
        "unfitted-pipeline",
        resource("org.apache.spark.ml.Pipeline"),
        "pipeline",
        "class org.apache.spark.ml.Pipeline is not a Spark pipeline",
    ),
    BadResource("pipeline-no-stages", pipeline([]), "pipeline", "pipeline has no stages"),
    BadResource(
        "pipeline-no-stageUids",
        pipeline_params({}),
        "pipeline",
        "metadata/part-00000: paramMap.stageUids is missing",
    ),
    BadResource(
        "pipeline-stageUids-not-list",
        pipeline_params({"stageUids": "DocumentAssembler_3b8e5f2a1c9d"}),
        "pipeline",
        "paramMap.stageUids must be a list of stage uids",
    ),
    BadResource(
        "pipeline-stages-folder-missing",
        removing(pipeline(), "stages"),
        "pipeline",
        "stages/ folder is missing (the pipeline lists 7 stages)",
    ),
    BadResource(
        "pipeline-stage-missing",
        removing(pipeline(), "stages/2_REGEX_TOKENIZER_5e7f9a1b3c2d"),
        "pipeline",
        "stages/2_REGEX_TOKENIZER_5e7f9a1b3c2d: missing (stage 2 of paramMap.stageUids)",
        labels=LABELS,
    ),
    BadResource(
        "pipeline-extra-stage",
        extra_stage_dir,
        "pipeline",
        "stages/7_Extra_abc: not listed in paramMap.stageUids",
        labels=LABELS,
    ),
    BadResource(
        "pipeline-stage-is-file",
        stage_is_file,
        "pipeline",
        "stages/README: not a folder",
        labels=LABELS,
    ),
    BadResource(
        "pipeline-stage-broken-metadata",
        stage_broken,
        "pipeline",
        "stages/1_NerDLModel_abc: metadata/part-00000: missing key 'paramMap'",
    ),
    BadResource(
        "pipeline-stage-foreign-class",
        pipeline(STAGE_FOREIGN),
        "pipeline",
        "stages/0_Foo_1: class com.example.Foo is not a Spark NLP or Spark ML class",
        labels=LABELS,
    ),
    BadResource(
        "pipeline-stage-approach",
        pipeline(STAGE_APPROACH),
        "pipeline",
        "stages/0_NerDLApproach_1: class com.johnsnowlabs.nlp.annotators.ner.dl.NerDLApproach "
        "is an untrained approach",
    ),
    BadResource(
        "pipeline-stage-uid-mismatch",
        stage_uid_mismatch,
        "pipeline",
        "stages/4_NerDLModel_6a7c3f1e2b4d: metadata uid 'NerDLModel_other' does not match the "
        "folder's uid 'NerDLModel_6a7c3f1e2b4d'",
        labels=LABELS,
    ),
    BadResource(
        "pipeline-spark-ml-only",
        pipeline(STAGES_SPARK_ML_ONLY),
        "pipeline",
        "pipeline has no Spark NLP stage (no com.johnsnowlabs.* class)",
    ),
    BadResource(
        "pipeline-stage-embeddings-without-storage",
        removing(pipeline(), "stages/3_WORD_EMBEDDINGS_MODEL_48cffc8b9a76/storage"),
        "pipeline",
        "stages/3_WORD_EMBEDDINGS_MODEL_48cffc8b9a76: WordEmbeddingsModel needs a storage/ "
        "folder, none found",
        labels=LABELS,
    ),
    BadResource(
        "pipeline-stage-unpadded",
        unpadded,
        "pipeline",
        "stages/3_WORD_EMBEDDINGS_MODEL_48cffc8b9a76: should be named "
        "03_WORD_EMBEDDINGS_MODEL_48cffc8b9a76 (Spark pads stage numbers to 2 digits)",
        labels=LABELS,
    ),
    BadResource(
        "pipeline-with-ner-without-labels",
        pipeline(),
        "pipeline",
        "NER model needs its labels: pass --labels",
    ),
    BadResource(
        "pipeline-nested-too-deep", nested(9), "pipeline", "pipelines nested deeper than 8 levels"
    ),
]


@pytest.mark.parametrize("case", RESOURCE_CASES, ids=[c.id for c in RESOURCE_CASES])
def test_validate_resource_rejects(case: BadResource, spark: SparkBuilder) -> None:
    root = case.build(spark)
    with pytest.raises(ResourceProblem) as info:
        validate_resource(root, kind=case.kind, labels=case.labels, limits=case.limits)
    problems = info.value.problems
    assert problems and all(isinstance(p, str) and p for p in problems)
    assert any(case.expected in p for p in problems), problems
    assert case.expected in str(info.value)


def test_every_problem_is_reported(spark: SparkBuilder) -> None:
    root = spark.embeddings(storage=False, extra={"libVersion": "x"})
    with pytest.raises(ResourceProblem) as info:
        validate_resource(root, kind="model", labels=[])
    assert info.value.problems == [
        "metadata/part-00000: libVersion 'x' is not a version",
        "WordEmbeddingsModel needs a storage/ folder, none found",
        "class com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel is embeddings, but the upload "
        "was declared as model",
        "labels: the list is empty; pass the labels the NER model predicts",
    ]


def test_pipeline_reports_problems_of_several_stages(spark: SparkBuilder) -> None:
    root = spark.pipeline()
    shutil.rmtree(root / "stages" / "3_WORD_EMBEDDINGS_MODEL_48cffc8b9a76" / "storage")
    (root / "stages" / "5_NerConverter_1d3f5a7c9e2b" / "metadata" / "part-00000").write_bytes(b"")
    with pytest.raises(ResourceProblem) as info:
        validate_resource(root, kind="pipeline", labels=LABELS)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "stages/3_WORD_EMBEDDINGS_MODEL_48cffc8b9a76",
        "stages/5_NerConverter_1d3f5a7c9e2b",
    ]


def test_unknown_kind_is_a_programming_error(spark: SparkBuilder) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        validate_resource(spark.ner_model(), kind="rules", labels=LABELS)  # type: ignore[arg-type]

"""Spark NLP resource validation: valid resources, the class -> library table, classification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlphub.uploads.archive import resource_root, safe_extract
from nlphub.uploads.sparknlp import (
    LIBRARY_BY_CLASS_PREFIX,
    Kind,
    library_of,
    validate_resource,
)
from tests.unit.nlphub.uploads.conftest import (
    BERT_EMBEDDINGS,
    EMB_UID,
    LABELS,
    MEDICAL_NER,
    NER_DL,
    NER_UID,
    SparkBuilder,
    Stage,
    default_stages,
    eleven_stages,
    nested,
    zip_dir,
)

# ---------------------------------------------------------------------------------------------
# Valid resources


def test_valid_ner_model(spark: SparkBuilder) -> None:
    info = validate_resource(spark.ner_model(), kind="model", labels=LABELS)
    assert info.class_name == NER_DL
    assert info.simple_name == "NerDLModel"
    assert info.uid == NER_UID
    assert info.spark_version == "3.4.1"
    assert info.lib_version is None
    assert info.storage_refs == ["glove_100d"]
    assert info.stages == []
    assert info.library == "spark-nlp"
    assert (info.is_ner, info.is_embeddings, info.needs_storage) == (True, False, False)


def test_valid_model_with_spark4_metadata_name(spark: SparkBuilder) -> None:
    root = spark.ner_model(spark4=True, spark_version="4.0.0")
    (part,) = (root / "metadata").glob("part-*")
    assert part.name.endswith("-c000.txt")
    info = validate_resource(root, kind="model", labels=LABELS)
    assert info.spark_version == "4.0.0"


def test_valid_healthcare_model_with_lib_version(spark: SparkBuilder) -> None:
    root = spark.ner_model(
        cls=MEDICAL_NER, uid="MedicalNerModel_9f8e7d", extra={"libVersion": {"parts": [5, 1, 0]}}
    )
    info = validate_resource(root, kind="model", labels=["PROBLEM", "TEST", "TREATMENT"])
    assert info.library == "healthcare-nlp"
    assert info.lib_version == "5.1.0"
    assert info.is_ner


def test_spark_nlp_version_key_is_read(spark: SparkBuilder) -> None:
    root = spark.ner_model(extra={"sparkNlpVersion": "5.3.3-rc1"})
    assert validate_resource(root, kind="model", labels=LABELS).lib_version == "5.3.3"


def test_labels_given_to_a_non_ner_model_are_accepted(spark: SparkBuilder) -> None:
    root = spark.resource("cls", "com.johnsnowlabs.nlp.annotators.classifier.dl.ClassifierDLModel")
    info = validate_resource(root, kind="model", labels=["pos", "neg"])
    assert not info.is_ner


def test_valid_word_embeddings_with_storage(spark: SparkBuilder) -> None:
    info = validate_resource(spark.embeddings(), kind="embeddings")
    assert info.uid == EMB_UID
    assert (info.is_embeddings, info.needs_storage, info.is_ner) == (True, True, False)
    assert info.storage_refs == ["glove_100d"]


def test_valid_transformer_embeddings_need_no_storage(spark: SparkBuilder) -> None:
    info = validate_resource(
        spark.embeddings(cls=BERT_EMBEDDINGS, uid="BERT_EMBEDDINGS_1", storage=False),
        kind="embeddings",
    )
    assert info.is_embeddings and not info.needs_storage


def test_valid_pipeline(spark: SparkBuilder) -> None:
    info = validate_resource(spark.pipeline(), kind="pipeline", labels=LABELS)
    assert info.is_pipeline
    assert info.library == "spark-nlp"
    assert [s.uid for s in info.stages] == [s.uid for s in default_stages()]
    assert info.stages[3].path == "stages/3_WORD_EMBEDDINGS_MODEL_48cffc8b9a76"
    assert info.storage_refs == ["glove_100d"]
    assert (info.is_ner, info.needs_storage, info.is_embeddings) == (True, True, False)
    assert info.libraries == ["spark-nlp"]
    assert info.stages[6].class_name == "org.apache.spark.ml.feature.SQLTransformer"


def test_pipeline_tolerates_hidden_files_and_odd_timestamps(spark: SparkBuilder) -> None:
    root = spark.pipeline(extra={"timestamp": "yesterday"})
    (root / "stages" / ".DS_Store").write_bytes(b"\0")
    info = validate_resource(root, kind="pipeline", labels=LABELS)
    assert info.timestamp is None
    assert info.stages[0].timestamp == 1_700_000_000_000


def test_valid_pipeline_with_padded_stage_numbers(spark: SparkBuilder) -> None:
    root = spark.pipeline(stages=eleven_stages())
    assert (root / "stages" / "00_DocumentAssembler_3b8e5f2a1c9d").is_dir()
    info = validate_resource(root, kind="pipeline", labels=LABELS)
    assert len(info.stages) == 11


def test_valid_nested_pipeline(spark: SparkBuilder) -> None:
    info = validate_resource(nested(3)(spark), kind="pipeline", labels=LABELS)
    assert [n.uid for n in info.walk()][:4] == [f"PipelineModel_{i}" for i in range(4)]
    assert info.stages[0].stages[0].stages[0].path == (
        "stages/0_PipelineModel_1/stages/0_PipelineModel_2/stages/0_PipelineModel_3"
    )
    assert info.storage_refs == ["glove_100d"]


def test_pipeline_library_and_storage_refs_come_from_stages(spark: SparkBuilder) -> None:
    stages = [
        Stage("com.johnsnowlabs.nlp.DocumentAssembler", "DocumentAssembler_1"),
        Stage(NER_DL, "NerDLModel_1", {"storageRef": "glove_100d"}),
        Stage(MEDICAL_NER, "MedicalNerModel_1", {"storageRef": "embeddings_clinical"}),
        Stage(NER_DL, "NerDLModel_2", {"storageRef": "glove_100d"}),
    ]
    info = validate_resource(spark.pipeline(stages=stages), kind="pipeline", labels=LABELS)
    assert info.library == "healthcare-nlp"
    assert info.storage_refs == ["glove_100d", "embeddings_clinical"]
    assert info.libraries == ["spark-nlp", "healthcare-nlp"]
    assert not info.needs_storage


def test_extracted_zip_end_to_end(spark: SparkBuilder, tmp_path: Path) -> None:
    src = spark.pipeline()
    archive = zip_dir(src, tmp_path / "pipeline.zip", prefix="recognize_entities_dl/")
    safe_extract(archive, tmp_path / "out")
    root = resource_root(tmp_path / "out")
    info = validate_resource(root, kind="pipeline", labels=LABELS)
    assert info.uid == "PipelineModel_4f3a9b1d7c2e"


def test_metadata_is_read_as_spark_writes_it(spark: SparkBuilder) -> None:
    part = spark.ner_model() / "metadata" / "part-00000"
    obj = json.loads(part.read_text())
    assert list(obj) == ["class", "timestamp", "sparkVersion", "uid", "paramMap", "defaultParamMap"]
    assert sorted(p.name for p in part.parent.iterdir()) == [
        "._SUCCESS.crc",
        ".part-00000.crc",
        "_SUCCESS",
        "part-00000",
    ]


# ---------------------------------------------------------------------------------------------
# Class -> library table and classification


@pytest.mark.parametrize(
    ("cls", "library"),
    [
        ("com.johnsnowlabs.nlp.annotators.ner.dl.NerDLModel", "spark-nlp"),
        ("com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel", "spark-nlp"),
        ("com.johnsnowlabs.nlp.annotators.ner.dl.ZeroShotNerModel", "spark-nlp"),
        ("com.johnsnowlabs.nlp.annotators.ner.MedicalNerModel", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.ner.ZeroShotNerModel", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.deid.DeIdentificationModel", "healthcare-nlp"),
        (
            "com.johnsnowlabs.nlp.annotators.resolution.SentenceEntityResolverModel",
            "healthcare-nlp",
        ),
        ("com.johnsnowlabs.nlp.annotators.assertion.dl.AssertionDLModel", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.re.RelationExtractionModel", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.context.ContextualParserModel", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.chunker.ChunkMergeModel", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.chunker.Chunker", "spark-nlp"),
        (
            "com.johnsnowlabs.nlp.annotators.classification.MedicalBertForTokenClassifier",
            "healthcare-nlp",
        ),
        ("com.johnsnowlabs.legacy.ner.FinanceNerModel", "finance-nlp"),
        ("com.johnsnowlabs.finance.token_classification.ner.FinanceNerModel", "finance-nlp"),
        ("com.johnsnowlabs.legal.token_classification.ner.LegalNerModel", "legal-nlp"),
        ("com.johnsnowlabs.ocr.transformers.ImageToText", "visual-nlp"),
        ("org.apache.spark.ml.feature.Tokenizer", None),
        ("com.johnsnowlabsX.nlp.Foo", None),
    ],
)
def test_library_of(cls: str, library: str | None) -> None:
    assert library_of(cls) == library


@pytest.mark.parametrize(
    ("cls", "library"),
    [
        ("com.johnsnowlabs.nlp.annotators.seq2seq.MedicalTextGenerator", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.seq2seq.MedicalSummarizer", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.qa.MedicalQuestionAnswering", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.classifier.dl.ClinicalThing", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.ner.FinanceNerModel", "finance-nlp"),
        ("com.johnsnowlabs.ml.LegalSomething", "legal-nlp"),
        ("com.johnsnowlabs.nlp.annotators.SomethingNew", "healthcare-nlp"),
        ("com.johnsnowlabs.unknown.Tokenizer", "healthcare-nlp"),
        ("com.johnsnowlabs.nlp.annotators.seq2seq.T5Transformer", "spark-nlp"),
        ("com.johnsnowlabs.nlp.embeddings.BertEmbeddings", "spark-nlp"),
        ("com.johnsnowlabs.reader.Reader2Doc", "spark-nlp"),
    ],
)
def test_library_of_fails_closed(cls: str, library: str) -> None:
    """Only Spark NLP's listed open-source classes are open source; any other class in its
    packages is licensed (no install without a licence)."""
    assert library_of(cls) == library


def test_licensed_classes_are_named(spark: SparkBuilder) -> None:
    generator = "com.johnsnowlabs.nlp.annotators.seq2seq.MedicalTextGenerator"
    info = validate_resource(spark.resource("gen", generator), kind="model")
    assert info.library == "healthcare-nlp" and info.libraries == ["healthcare-nlp"]
    assert info.licensed_classes == ["MedicalTextGenerator"]
    new = "com.johnsnowlabs.nlp.annotators.SomethingNew"
    assert validate_resource(spark.resource("new", new), kind="model").licensed_classes == [
        "SomethingNew"
    ]
    assert validate_resource(spark.ner_model(), kind="model", labels=LABELS).licensed_classes == []


def test_library_table_has_no_duplicate_prefixes() -> None:
    prefixes = [prefix for prefix, _ in LIBRARY_BY_CLASS_PREFIX]
    assert len(prefixes) == len(set(prefixes))
    assert all(p.startswith("com.johnsnowlabs.") for p in prefixes)


@pytest.mark.parametrize(
    ("cls", "is_ner", "is_embeddings", "needs_storage"),
    [
        (NER_DL, True, False, False),
        ("com.johnsnowlabs.nlp.annotators.ner.crf.NerCrfModel", True, False, False),
        (MEDICAL_NER, True, False, False),
        (
            "com.johnsnowlabs.nlp.annotators.classifier.dl.BertForTokenClassification",
            True,
            False,
            False,
        ),
        (
            "com.johnsnowlabs.nlp.annotators.classifier.dl.BertForSequenceClassification",
            False,
            False,
            False,
        ),
        ("com.johnsnowlabs.nlp.embeddings.BertSentenceEmbeddings", False, True, False),
        ("com.johnsnowlabs.nlp.embeddings.UniversalSentenceEncoder", False, True, False),
        ("com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel", False, True, True),
        ("com.johnsnowlabs.nlp.annotators.btm.BigTextMatcherModel", False, False, True),
    ],
)
def test_classification(
    cls: str, is_ner: bool, is_embeddings: bool, needs_storage: bool, spark: SparkBuilder
) -> None:
    root = spark.resource("r", cls)
    if needs_storage:
        (root / "storage" / "db").mkdir(parents=True)
        (root / "storage" / "db" / "CURRENT").write_text("x")
    kind: Kind = "embeddings" if is_embeddings else "model"
    info = validate_resource(root, kind=kind, labels=LABELS)
    assert (info.is_ner, info.is_embeddings, info.needs_storage) == (
        is_ner,
        is_embeddings,
        needs_storage,
    )

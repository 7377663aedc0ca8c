"""Spark NLP resources: compatibility with the installed Spark and Spark NLP libraries."""

from __future__ import annotations

import pytest

from nlphub.uploads.sparknlp import ResourceInfo, check_compatibility, validate_resource
from nlphub.versions import Version
from tests.unit.nlphub.uploads.conftest import LABELS, MEDICAL_NER, NER_DL, PIPELINE, SparkBuilder

V = Version.parse


INSTALLED = {"spark-nlp": V("5.3.3"), "healthcare-nlp": None, "visual-nlp": None}


def info_of(
    cls: str = NER_DL,
    *,
    lib: str | None = None,
    spark: str | None = "3.4.1",
    stages: list[ResourceInfo] | None = None,
) -> ResourceInfo:
    from nlphub.uploads.sparknlp import library_of as lib_of

    return ResourceInfo(
        class_name=cls,
        uid="x",
        spark_version=spark,
        lib_version=lib,
        storage_refs=[],
        stages=stages or [],
        library=lib_of(cls) or "spark-nlp",
        is_ner=False,
        is_embeddings=False,
        needs_storage=False,
    )


@pytest.mark.parametrize(
    ("info", "installed", "spark", "expected"),
    [
        pytest.param(info_of(), INSTALLED, V("3.5.0"), [], id="compatible"),
        pytest.param(info_of(lib="5.3.0"), INSTALLED, V("3.4.1"), [], id="same-and-older"),
        pytest.param(
            info_of(MEDICAL_NER),
            INSTALLED,
            V("3.5.0"),
            ["needs Healthcare NLP, which is not installed"],
            id="healthcare-not-installed",
        ),
        pytest.param(
            info_of("com.johnsnowlabs.legal.token_classification.ner.LegalNerModel"),
            {"spark-nlp": V("5.3.3")},
            V("3.5.0"),
            ["needs Legal NLP, which is not installed"],
            id="legal-missing-key",
        ),
        pytest.param(
            info_of(MEDICAL_NER),
            {"healthcare-nlp": V("5.3.0")},
            V("3.5.0"),
            ["needs Spark NLP, which is not installed"],
            id="healthcare-without-spark-nlp",
        ),
        pytest.param(
            info_of(lib="5.4.0"),
            INSTALLED,
            V("3.5.0"),
            ["needs Spark NLP >= 5.4.0 (resource built for 5.4.0), installed 5.3.3"],
            id="lib-too-new",
        ),
        pytest.param(
            info_of(spark="3.5.1"),
            INSTALLED,
            V("3.4.1"),
            ["needs Spark >= 3.5.1 (resource built for 3.5.1), installed 3.4.1"],
            id="spark-too-new",
        ),
        pytest.param(
            info_of(),
            INSTALLED,
            None,
            ["needs Spark >= 3.4.1 (resource built for 3.4.1), installed Spark version unknown"],
            id="spark-unknown",
        ),
        pytest.param(
            info_of(PIPELINE, stages=[info_of(spark="3.5.1"), info_of(spark="3.5.1")]),
            INSTALLED,
            V("3.4.1"),
            ["needs Spark >= 3.5.1 (resource built for 3.5.1), installed 3.4.1"],
            id="pipeline-stages-deduplicated",
        ),
        pytest.param(
            info_of(
                PIPELINE,
                stages=[info_of(), info_of("com.johnsnowlabs.ocr.transformers.ImageToText")],
            ),
            INSTALLED,
            V("3.4.1"),
            ["needs Visual NLP, which is not installed"],
            id="pipeline-stage-library",
        ),
        pytest.param(
            info_of(spark="garbage"),
            INSTALLED,
            V("3.4.1"),
            ["Spark version 'garbage' is not a version"],
            id="unreadable-version",
        ),
    ],
)
def test_check_compatibility(
    info: ResourceInfo,
    installed: dict[str, Version | None],
    spark: Version | None,
    expected: list[str],
) -> None:
    assert check_compatibility(info, installed, spark) == expected


def test_compatibility_of_a_validated_pipeline(spark: SparkBuilder) -> None:
    info = validate_resource(spark.pipeline(), kind="pipeline", labels=LABELS)
    assert check_compatibility(info, {"spark-nlp": V("5.3.3")}, V("3.4.1")) == []
    assert check_compatibility(info, {"spark-nlp": V("5.3.3")}, V("3.3.2")) == [
        "needs Spark >= 3.4.1 (resource built for 3.4.1), installed 3.3.2"
    ]

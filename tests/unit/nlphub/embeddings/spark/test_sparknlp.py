# mypy: disable-error-code="attr-defined,arg-type,unused-ignore"
"""Spark NLP: the availability check, the refusal, and everything around the pipeline.

Spark NLP's jar cannot run here: its availability check, refusal and everything around the
pipeline (resource reading, stage wiring, pooling) are tested with a stand-in ``sparknlp``
package whose stages are plain pyspark Transformers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nlphub.embeddings.platforms.base import EmbeddingError, Encoder
from nlphub.embeddings.spark import sparknlp as sp
from nlphub.embeddings.spark.sparknlp import (
    SparkNLPEncoder,
    make_spark_encoder,
    sparknlp_available,
    sparknlp_pipeline,
)
from tests.sparkml import write_spark_nlp_resource

pytestmark = pytest.mark.slow

WORD_EMBEDDINGS = "com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel"
SENTENCE_EMBEDDINGS = "com.johnsnowlabs.nlp.embeddings.BertSentenceEmbeddings"

FAKE_BASE = '''
from pyspark.ml import Transformer
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F


class Stage(Transformer):
    """Records its settings; transforms nothing (the finisher adds fixed vectors)."""

    def __init__(self, path=None):
        super().__init__()
        self.path = path
        self.settings = {}

    def _set(self, key, value):
        self.settings[key] = value
        return self

    def setInputCol(self, value):
        return self._set("inputCol", value)

    def setOutputCol(self, value):
        return self._set("outputCol", value)

    def setInputCols(self, value):
        return self._set("inputCols", value)

    def setOutputCols(self, value):
        return self._set("outputCols", value)

    def _transform(self, dataset):
        return dataset


class DocumentAssembler(Stage):
    pass


class EmbeddingsFinisher(Stage):
    def setOutputAsVector(self, value):
        return self._set("outputAsVector", value)

    def setCleanAnnotations(self, value):
        return self._set("cleanAnnotations", value)

    def _transform(self, dataset):
        first = array_to_vector(F.array(F.length("text").cast("double"), F.lit(1.0)))
        second = array_to_vector(F.array(F.lit(0.0), F.lit(3.0)))
        return dataset.withColumn("finished_embeddings", F.array(first, second))
'''

FAKE_ANNOTATOR = """
from sparknlp.base import Stage


class Tokenizer(Stage):
    pass


class Embeddings(Stage):
    @classmethod
    def load(cls, path):
        return cls(path)

    def setStorageRef(self, value):
        return self._set("storageRef", value)


class WordEmbeddingsModel(Embeddings):
    pass


class BertSentenceEmbeddings(Embeddings):
    pass
"""


@pytest.fixture
def fake_sparknlp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A stand-in ``sparknlp`` package (no JVM classes) on sys.path for one test."""
    package = tmp_path / "fakes" / "sparknlp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(textwrap.dedent(FAKE_BASE))
    (package / "annotator.py").write_text(textwrap.dedent(FAKE_ANNOTATOR))
    monkeypatch.syspath_prepend(str(tmp_path / "fakes"))
    yield
    for name in [n for n in sys.modules if n == "sparknlp" or n.startswith("sparknlp.")]:
        del sys.modules[name]


def embeddings_resource(spark: Any, dest: Path, class_name: str, dimension: int = 2) -> Path:
    path = write_spark_nlp_resource(
        spark, dest, class_name=class_name, storage_ref="glove_100d", storage=True
    )
    part = next(p for p in (path / "metadata").iterdir() if p.name.startswith("part-"))
    meta = json.loads(part.read_text())
    meta["paramMap"]["dimension"] = dimension
    part.write_text(json.dumps(meta) + "\n")
    return path


def installed(monkeypatch: pytest.MonkeyPatch, **folders: Path) -> None:
    """`installed_embeddings` (a database lookup) answering for these names only."""

    def lookup(ref: str) -> Path:
        if ref not in folders:
            raise sp._not_installed(ref)
        return folders[ref]

    monkeypatch.setattr(sp, "installed_embeddings", lookup)


def test_sparknlp_missing_package_is_a_clear_refusal(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("sparknlp") is not None:
        pytest.fail("spark-nlp is installed here; this test expects it not to be")
    reason = sparknlp_available(spark)
    assert reason == "python package spark-nlp is not installed"
    resource = embeddings_resource(spark, tmp_path / "glove", WORD_EMBEDDINGS)
    installed(monkeypatch, glove=resource)
    with pytest.raises(EmbeddingError) as refused:
        make_spark_encoder("sparknlp:glove", spark=spark)
    assert str(refused.value) == f"spark:sparknlp:glove cannot run: {reason}"
    with pytest.raises(EmbeddingError, match="Spark NLP cannot be used"):
        sparknlp_pipeline(spark, embeddings_path=str(resource), kind="word")


def test_sparknlp_paths_are_refused_before_anything_is_asked(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sparknlp:`` names an installed resource, never a folder: a path (one that exists,
    one that does not) gets the one refusal, before the database or a folder is read."""
    import schemas.db

    def no_database() -> None:
        raise AssertionError("the database was asked")

    monkeypatch.setattr(schemas.db, "session_scope", no_database)
    word = embeddings_resource(spark, tmp_path / "glove", WORD_EMBEDDINGS)
    for ref in (str(word), "/etc", "/nope", "../resources/x", "~/x"):
        with pytest.raises(EmbeddingError) as refused:
            make_spark_encoder(f"sparknlp:{ref}", spark=spark)
        assert str(refused.value) == (
            f"sparknlp:{ref} is not an installed embeddings resource (name one by its name or "
            "id, never a path)"
        )


def test_sparknlp_without_its_jar_names_the_missing_class(
    spark: Any, tmp_path: Path, fake_sparknlp: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = sparknlp_available(spark)
    assert reason == (
        "the Spark NLP jar is not on the classpath "
        "(com.johnsnowlabs.nlp.DocumentAssembler not found)"
    )
    resource = embeddings_resource(spark, tmp_path / "glove", WORD_EMBEDDINGS)
    with pytest.raises(EmbeddingError, match=r"cannot run: the Spark NLP jar is not on the class"):
        SparkNLPEncoder(resource, spark=spark)
    # The check itself passes for a class the JVM has.
    monkeypatch.setattr(sp, "SPARKNLP_CHECK_CLASS", "org.apache.spark.ml.feature.PCA")
    assert sparknlp_available(spark) is None


def test_sparknlp_pipeline_wiring(spark: Any, tmp_path: Path, fake_sparknlp: None) -> None:
    word = embeddings_resource(spark, tmp_path / "glove", WORD_EMBEDDINGS)
    model = sparknlp_pipeline(spark, embeddings_path=str(word), kind="word", storage_ref="w2v")
    names = [type(s).__name__ for s in model.stages]
    assert names == ["DocumentAssembler", "Tokenizer", "WordEmbeddingsModel", "EmbeddingsFinisher"]
    document, tokenizer, embeddings, finisher = (s.settings for s in model.stages)
    assert document == {"inputCol": "text", "outputCol": "document"}
    assert tokenizer == {"inputCols": ["document"], "outputCol": "token"}
    assert model.stages[2].path == str(word)
    assert embeddings == {
        "inputCols": ["document", "token"],
        "outputCol": "embeddings",
        "storageRef": "w2v",
    }
    assert finisher["inputCols"] == ["embeddings"] and finisher["outputAsVector"] is True
    sentence = embeddings_resource(spark, tmp_path / "bert", SENTENCE_EMBEDDINGS)
    model = sparknlp_pipeline(spark, embeddings_path=str(sentence), kind="sentence")
    names = [type(s).__name__ for s in model.stages]
    assert names == ["DocumentAssembler", "BertSentenceEmbeddings", "EmbeddingsFinisher"]
    assert model.stages[1].settings == {"inputCols": ["document"], "outputCol": "embeddings"}
    with pytest.raises(EmbeddingError, match="kind must be"):
        sparknlp_pipeline(spark, embeddings_path=str(word), kind="token")  # type: ignore[arg-type]


def test_sparknlp_encoder_around_the_jar(
    spark: Any, tmp_path: Path, fake_sparknlp: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sp, "SPARKNLP_CHECK_CLASS", "org.apache.spark.ml.feature.PCA")
    with pytest.raises(EmbeddingError, match="not an installed resource folder"):
        SparkNLPEncoder(tmp_path / "missing", spark=spark)
    word = embeddings_resource(spark, tmp_path / "glove", WORD_EMBEDDINGS)
    installed(monkeypatch, glove=word)
    encoder = make_spark_encoder("sparknlp:glove", spark=spark)
    assert isinstance(encoder, SparkNLPEncoder) and isinstance(encoder, Encoder)
    assert (encoder.model, encoder.install_path) == ("sparknlp:glove", word)
    assert (encoder.kind, encoder.storage_ref, encoder.dimension) == ("word", "glove_100d", 2)
    assert (encoder.platform, encoder.requires_fit) == ("spark", False)
    texts = ["abc", "", "hello world"]
    vectors = encoder.encode(texts)
    # Token vectors averaged, rows in input order: ([len, 1] + [0, 3]) / 2.
    expected = [[len(t) / 2, 2.0] for t in texts]
    np.testing.assert_array_equal(vectors, np.array(expected, dtype=np.float32))
    assert vectors.dtype == np.float32
    encoder.close()
    with pytest.raises(EmbeddingError, match="closed"):
        encoder.encode(["x"])
    sentence = embeddings_resource(spark, tmp_path / "bert", SENTENCE_EMBEDDINGS)
    encoder = SparkNLPEncoder(sentence, spark=spark)
    assert encoder.kind == "sentence"
    np.testing.assert_array_equal(encoder.encode(["abcd"]), [[4.0, 1.0]])  # the first vector
    encoder.close()

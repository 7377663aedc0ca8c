# mypy: disable-error-code="attr-defined,arg-type,unused-ignore"
"""Spark embeddings: `SparkEncoder`, the whole-DataFrame path with Spark's PCA, Spark NLP checks.

One local Spark session (``get_spark("local[2]")``, or the one already running) serves the whole
module; fitted encoders are module-scoped to keep the number of Spark jobs small.
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
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

import nlphub.embeddings.spark as sp
from nlphub.embeddings.platforms import EmbeddingError, Encoder
from nlphub.embeddings.reduce import Reducer
from nlphub.embeddings.spark import (
    SparkEncoder,
    SparkNLPEncoder,
    fit_spark_embedding,
    get_spark,
    make_spark_encoder,
    spark_embed_dataframe,
    spark_embeddings,
    sparknlp_available,
    sparknlp_pipeline,
)
from tests.sparkml import write_spark_nlp_resource

pytestmark = pytest.mark.slow

CORPUS = [
    "The cat sat on the mat.",
    "A dog chased the cat around the garden.",
    "Stock markets fell sharply; investors sold.",
    "Investors sold shares as markets tumbled.",
    "The kitten slept on a warm rug near the cat.",
    "Markets rallied as investors bought shares.",
    "Café au lait, naïve résumé — über 2024 l'école!",
    "",
]
WORD_EMBEDDINGS = "com.johnsnowlabs.nlp.embeddings.WordEmbeddingsModel"
SENTENCE_EMBEDDINGS = "com.johnsnowlabs.nlp.embeddings.BertSentenceEmbeddings"


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def gram(x: np.ndarray) -> np.ndarray:
    """Cosine similarities between rows: invariant to column order and to PCA sign flips."""
    u = unit_rows(np.asarray(x, dtype=np.float64))
    return u @ u.T


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """The running session when another module started one, else one for this module (with a
    JVM tuned for short jobs: C1 only, serial GC), stopped after it."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        yield get_spark()
        return
    session = get_spark(
        "local[2]",
        conf={
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            "spark.sql.shuffle.partitions": "2",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def tfidf(spark: Any) -> Iterator[SparkEncoder]:
    encoder = SparkEncoder("tfidf", spark=spark)
    encoder.fit(CORPUS)
    yield encoder
    encoder.close()


@pytest.fixture(scope="module")
def counts(spark: Any) -> Iterator[SparkEncoder]:
    encoder = SparkEncoder("count", spark=spark)
    encoder.fit(CORPUS)
    yield encoder
    encoder.close()


# -- model strings and the factory (no Spark job) -------------------------------------------------


def test_model_strings_and_factory() -> None:
    assert SparkEncoder("TF-IDF").model == "tfidf"
    assert SparkEncoder("count").name == "spark:count"
    hashed = SparkEncoder("tfidf:1024")
    assert (hashed.model, hashed.hashed, hashed.dimension) == ("tfidf:1024", True, None)
    encoder = make_spark_encoder("count:64", max_features=10)
    assert isinstance(encoder, SparkEncoder) and isinstance(encoder, Encoder)
    assert (encoder.platform, encoder.requires_fit, encoder.model) == ("spark", True, "count:64")
    for bad in ("word2vec", "tfidf:x", "tfidf:0", f"tfidf:{sp.MAX_DENSE_FEATURES + 1}"):
        with pytest.raises(EmbeddingError):
            SparkEncoder(bad)
    with pytest.raises(EmbeddingError, match=r"unknown option.*api_key"):
        make_spark_encoder("tfidf", api_key="x")
    with pytest.raises(EmbeddingError, match=r"unknown option.*max_features"):
        make_spark_encoder("sparknlp:/nowhere", max_features=3)
    with pytest.raises(EmbeddingError, match="install path"):
        make_spark_encoder("sparknlp:")
    with pytest.raises(EmbeddingError, match="max_features"):
        SparkEncoder("tfidf", max_features=0)


# -- SparkEncoder ---------------------------------------------------------------------------------


def test_encode_shapes_dtype_and_norms(tfidf: SparkEncoder) -> None:
    vectors = tfidf.encode(CORPUS)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(CORPUS), tfidf.dimension)
    assert tfidf.dimension == len(tfidf.vocabulary or [])
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms[:-1], 1.0, rtol=1e-5)  # tf-idf rows are l2-normalised
    assert norms[-1] == 0.0  # the empty text
    assert tfidf.encode([]).shape == (0, tfidf.dimension)
    with pytest.raises(EmbeddingError, match="not a single string"):
        tfidf.encode("a text")  # type: ignore[arg-type]


def test_unfitted_and_unfittable(spark: Any) -> None:
    encoder = SparkEncoder("tfidf", spark=spark)
    assert encoder.dimension is None
    with pytest.raises(EmbeddingError, match="must be fitted"):
        encoder.encode(["x"])
    with pytest.raises(EmbeddingError, match="not fitted"):
        encoder.to_bytes()
    with pytest.raises(EmbeddingError, match="no texts"):
        encoder.fit([])
    with pytest.raises(EmbeddingError, match="not str"):
        encoder.fit(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(EmbeddingError, match="empty vocabulary"):
        encoder.fit(["", "! ?", "a"])  # no token of two or more word characters


def test_counts_equal_sklearn_on_the_same_tokens(counts: SparkEncoder) -> None:
    sk = CountVectorizer().fit(CORPUS)  # the default token pattern, lower-cased
    vocabulary = counts.vocabulary or []
    assert set(vocabulary) == set(sk.vocabulary_)  # café, naïve, école, 2024 included
    expected = sk.transform(CORPUS).toarray()[:, [sk.vocabulary_[t] for t in vocabulary]]
    np.testing.assert_array_equal(counts.encode(CORPUS), expected.astype(np.float32))


def test_tfidf_is_spark_idf_on_sklearn_counts_and_ranks_like_sklearn(
    tfidf: SparkEncoder,
) -> None:
    sk = CountVectorizer().fit(CORPUS)
    vocabulary = tfidf.vocabulary or []
    tf = sk.transform(CORPUS).toarray()[:, [sk.vocabulary_[t] for t in vocabulary]]
    df = (tf > 0).sum(axis=0)
    idf = np.log((len(CORPUS) + 1) / (df + 1))  # Spark's formula
    np.testing.assert_allclose(tfidf.idf, idf, rtol=1e-12)
    expected = unit_rows(tf * idf)
    vectors = tfidf.encode(CORPUS)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    # Nearest neighbours agree with scikit-learn's tf-idf (its idf adds 1) on the topical texts.
    topical = slice(0, 6)
    ours = gram(vectors[topical])
    theirs = gram(TfidfVectorizer().fit_transform(CORPUS).toarray()[topical])
    np.fill_diagonal(ours, -1)
    np.fill_diagonal(theirs, -1)
    assert ours.argmax(axis=1).tolist() == theirs.argmax(axis=1).tolist()
    assert ours.argmax(axis=1).tolist() == [4, 0, 3, 5, 0, 3]


def test_deterministic_and_independent_of_batching(spark: Any, tfidf: SparkEncoder) -> None:
    full = tfidf.encode(CORPUS)
    np.testing.assert_array_equal(tfidf.encode(CORPUS), full)
    np.testing.assert_array_equal(tfidf.encode(CORPUS[::-1]), full[::-1])
    np.testing.assert_array_equal(tfidf.encode(CORPUS[2:4]), full[2:4])
    frame = spark.createDataFrame([(i, t) for i, t in enumerate(CORPUS)], "id long, text string")
    rows = tfidf.transform_dataframe(frame).orderBy("id").collect()
    np.testing.assert_array_equal(np.array([r.vector for r in rows], dtype=np.float32), full)
    again = SparkEncoder("tfidf", spark=spark)
    again.fit(CORPUS)
    assert set(again.vocabulary or []) == set(tfidf.vocabulary or [])
    np.testing.assert_allclose(gram(again.encode(CORPUS)), gram(full), atol=1e-6)


def test_state_round_trip(spark: Any, tfidf: SparkEncoder, counts: SparkEncoder) -> None:
    for fitted in (tfidf, counts):
        restored = SparkEncoder.from_bytes(fitted.to_bytes(), spark=spark)
        assert (restored.model, restored.dimension) == (fitted.model, fitted.dimension)
        assert restored.vocabulary == fitted.vocabulary
        texts = ["the cat and the markets", "unseen words only", *CORPUS[:2]]
        np.testing.assert_array_equal(restored.encode(texts), fitted.encode(texts))
    via_factory = make_spark_encoder("tfidf", spark=spark, state=tfidf.to_bytes())
    assert via_factory.dimension == tfidf.dimension
    with pytest.raises(EmbeddingError, match="unreadable"):
        SparkEncoder.from_bytes(b"not an npz")
    with pytest.raises(EmbeddingError, match="stored spark state is 'count'"):
        SparkEncoder("tfidf", state=counts.to_bytes())


def test_hashed_counts_and_stop_words(spark: Any) -> None:
    hashed = SparkEncoder("count:16", spark=spark)
    hashed.fit(CORPUS)
    assert hashed.vocabulary is None and hashed.dimension == 16
    vectors = hashed.encode(CORPUS)
    assert vectors.shape == (len(CORPUS), 16)
    analyzer = CountVectorizer().build_analyzer()
    assert vectors.sum(axis=1).tolist() == [float(len(analyzer(t))) for t in CORPUS]
    filtered = SparkEncoder("count", spark=spark, stop_words="english")
    filtered.fit(CORPUS)
    terms = set(filtered.vocabulary or [])
    assert {"cat", "markets"} <= terms and not {"the", "on", "as"} & terms
    restored = SparkEncoder.from_bytes(filtered.to_bytes(), spark=spark)
    np.testing.assert_array_equal(restored.encode(["the cat"]), filtered.encode(["the cat"]))


# -- sessions -------------------------------------------------------------------------------------


def test_running_session_is_reused_and_never_stopped(spark: Any) -> None:
    assert get_spark("local[2]").sparkContext is spark.sparkContext
    encoder = SparkEncoder("count")  # no session given: it finds the running one
    encoder.fit(["alpha beta", "beta gamma"])
    assert encoder.spark.sparkContext is spark.sparkContext
    encoder.close()
    assert spark.range(3).count() == 3


class FakeSession:
    def __init__(self) -> None:
        self.sparkContext = type("Ctx", (), {"_jsc": object()})()
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1
        self.sparkContext._jsc = None


def test_only_a_session_started_for_encoders_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    state: dict[str, Any] = {"session": None}

    def start_or_reuse(master: Any, conf: Any) -> tuple[FakeSession, bool]:
        current = state["session"]
        if current is not None and current.sparkContext._jsc is not None:
            return current, False
        state["session"] = FakeSession()
        return state["session"], True

    monkeypatch.setattr(sp, "_start_or_reuse", start_or_reuse)
    monkeypatch.setattr(sp, "_encoder_session", None)
    monkeypatch.setattr(sp, "_users", 0)
    first, second = SparkEncoder("count"), SparkEncoder("count")
    session = first.spark
    assert second.spark is session
    first.close()
    assert session.stopped == 0  # the second encoder still uses it
    second.close()
    assert session.stopped == 1  # started for encoders, last one closed
    # A session a get_spark caller holds (or one passed in) is never stopped by encoders.
    third = SparkEncoder("count")
    held = third.spark
    assert get_spark() is held
    third.close()
    given = FakeSession()
    fourth = SparkEncoder("count", spark=given)  # type: ignore[arg-type]
    assert fourth.spark is given
    fourth.close()
    assert (held.stopped, given.stopped) == (0, 0)


# -- the whole DataFrame in Spark -----------------------------------------------------------------


def test_embed_dataframe_with_pca(spark: Any) -> None:
    texts = [f"{text} {extra}" for extra in ("one", "two", "three", "four") for text in CORPUS]
    frame = spark.createDataFrame(
        [(i, t) for i, t in enumerate(texts)] + [(len(texts), None)], "id long, body string"
    )
    fitted = fit_spark_embedding(frame, text_col="body", model="tfidf", n_components=4)
    assert fitted.reduced and fitted.output_dim == 4
    out = fitted.transform(frame, text_col="body")
    assert out.columns == ["id", "body", "vector"]
    assert out.schema["vector"].dataType.simpleString() == "array<float>"
    rows = sorted(out.collect(), key=lambda r: r.id)
    assert len(rows) == len(texts) + 1 and {len(r.vector) for r in rows} == {4}
    ours = np.array([r.vector for r in rows], dtype=np.float64)
    # The batch path (SparkEncoder, then the sklearn Reducer) gives the same vectors up to the
    # sign of each component, so the same dot products.
    encoder = SparkEncoder("tfidf", spark=spark)
    encoder.fit_dataframe(frame, text_col="body")  # the null text counts as ""
    assert encoder.dimension == fitted.input_dim
    reference = Reducer(4).fit_transform(encoder.encode([*texts, ""])).astype(np.float64)
    np.testing.assert_allclose(ours @ ours.T, reference @ reference.T, atol=1e-5)
    # Centred like sklearn (Spark's PCAModel alone is not): coordinates average to zero.
    np.testing.assert_allclose(ours.mean(axis=0), 0.0, atol=1e-6)


def test_embedding_pipeline_saves_and_loads(spark: Any, tmp_path: Path) -> None:
    """The fitted pipeline is plain Spark ML stages (PCAModel and StandardScalerModel built
    from the driver's eigenvectors): PipelineModel saves and loads it, same vectors after."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import PCAModel, StandardScalerModel

    texts = [f"{text} {extra}" for extra in ("red", "green", "blue") for text in CORPUS]
    frame = spark.createDataFrame([(t,) for t in texts], "text string")
    fitted = fit_spark_embedding(frame, text_col="text", model="tfidf:64", n_components=3)
    assert fitted.reduced and fitted.input_dim == 64
    pca, centre = fitted.pipeline.stages[-2:]
    assert isinstance(pca, PCAModel) and isinstance(centre, StandardScalerModel)
    assert pca.pc.numRows == 64 and pca.pc.numCols == 3
    ratios = pca.explainedVariance.toArray()
    assert np.all(np.diff(ratios) <= 1e-12) and 0 < ratios.sum() <= 1 + 1e-9
    assert centre.getWithMean() and not centre.getWithStd()
    fitted.pipeline.write().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert [type(s).__name__ for s in loaded.stages] == [
        type(s).__name__ for s in fitted.pipeline.stages
    ]
    again = sp.SparkEmbeddingModel(loaded, fitted.model, 64, 3, True)
    before = np.array([r.vector for r in fitted.transform(frame, text_col="text").collect()])
    after = np.array([r.vector for r in again.transform(frame, text_col="text").collect()])
    assert before.shape == (len(texts), 3)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(before.mean(axis=0), 0.0, atol=1e-6)


def test_embed_dataframe_skips_pca_for_tiny_data(spark: Any, tfidf: SparkEncoder) -> None:
    frame = spark.createDataFrame([(t,) for t in CORPUS[:3]], "text string")
    out = spark_embed_dataframe(frame, text_col="text", model="tfidf", n_components=8)
    vectors = np.array([r.vector for r in out.collect()])
    small = SparkEncoder("tfidf", spark=spark)
    small.fit(CORPUS[:3])
    assert vectors.shape == (3, small.dimension) and (small.dimension or 0) > 3
    np.testing.assert_allclose(gram(vectors), gram(small.encode(CORPUS[:3])), atol=1e-6)
    with pytest.raises(EmbeddingError, match="no column 'body'"):
        spark_embed_dataframe(frame, text_col="body", model="tfidf", n_components=8)
    numbers = spark.createDataFrame([(1,)], "text long")
    with pytest.raises(EmbeddingError, match="is bigint, not string"):
        spark_embed_dataframe(numbers, text_col="text", model="tfidf", n_components=8)
    with pytest.raises(EmbeddingError, match="already has a column 'vector'"):
        spark_embed_dataframe(out, text_col="text", model="tfidf", n_components=8)
    with pytest.raises(EmbeddingError, match="n_components"):
        spark_embed_dataframe(frame, text_col="text", model="tfidf", n_components=0)


def _uses_cache(frame: Any) -> bool:
    """Whether a new query over `frame` would read a cached (persisted) relation."""
    return "InMemoryRelation" in frame.select("*")._jdf.queryExecution().withCachedData().toString()


def test_spark_embeddings_reads_the_texts_once(spark: Any) -> None:
    """The fit's cached term frequencies (with the DataFrame's columns) give the vectors: the
    same vectors as fitting, then transforming from the texts; the cache goes with the block."""
    texts = [f"{text} {extra}" for extra in ("one", "two", "three") for text in CORPUS]
    frame = spark.createDataFrame(
        [(i, t, i % 2 == 0) for i, t in enumerate(texts)] + [(len(texts), None, True)],
        "id long, body string, even boolean",
    )
    with spark_embeddings(frame, text_col="body", model="tfidf", n_components=4) as (out, fitted):
        assert out.columns == ["id", "body", "even", "vector"]
        assert _uses_cache(out)
        rows = sorted(out.collect(), key=lambda r: r.id)
    assert not _uses_cache(out)
    assert fitted.reduced and fitted.output_dim == 4
    assert [(r.id, r.body, r.even) for r in rows] == sorted(frame.collect())
    ours = np.array([r.vector for r in rows])
    again = sorted(fitted.transform(frame, text_col="body").collect(), key=lambda r: r.id)
    np.testing.assert_allclose(ours, np.array([r.vector for r in again]), atol=1e-6)
    np.testing.assert_allclose(ours.mean(axis=0), 0.0, atol=1e-6)
    # Too few rows for the PCA: the features themselves, still from the cache.
    small = frame.limit(3)
    with spark_embeddings(small, text_col="body", model="count", n_components=8) as (out, fitted):
        assert not fitted.reduced and _uses_cache(out)
        assert {len(r.vector) for r in out.collect()} == {fitted.input_dim}
    with pytest.raises(RuntimeError, match="while writing"):  # released on an error too
        with spark_embeddings(small, text_col="body", model="count", n_components=8) as (
            out,
            _,
        ):
            assert _uses_cache(out)
            raise RuntimeError("while writing")
    assert not _uses_cache(out)
    with pytest.raises(EmbeddingError, match="already has a column 'vector'"):
        with spark_embeddings(out, text_col="body", model="tfidf", n_components=4):
            pass
    with pytest.raises(EmbeddingError, match="no column 'text'"):
        with spark_embeddings(frame, text_col="text", model="tfidf", n_components=4):
            pass
    assert not _uses_cache(frame)


# -- Spark NLP ------------------------------------------------------------------------------------

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


def test_sparknlp_missing_package_is_a_clear_refusal(spark: Any, tmp_path: Path) -> None:
    if importlib.util.find_spec("sparknlp") is not None:
        pytest.fail("spark-nlp is installed here; this test expects it not to be")
    reason = sparknlp_available(spark)
    assert reason == "python package spark-nlp is not installed"
    resource = embeddings_resource(spark, tmp_path / "glove", WORD_EMBEDDINGS)
    with pytest.raises(EmbeddingError) as refused:
        make_spark_encoder(f"sparknlp:{resource}", spark=spark)
    assert str(refused.value) == f"spark:sparknlp:{resource} cannot run: {reason}"
    with pytest.raises(EmbeddingError, match="Spark NLP cannot be used"):
        sparknlp_pipeline(spark, embeddings_path=str(resource), kind="word")


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
    encoder = make_spark_encoder(f"sparknlp:{word}", spark=spark)
    assert isinstance(encoder, SparkNLPEncoder) and isinstance(encoder, Encoder)
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

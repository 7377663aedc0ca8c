"""Spark NLP embeddings (`SparkNLPEncoder`, model ``sparknlp:<resource name or id>``), and
`make_spark_encoder`, the ``spark`` platform's factory.

A word or sentence embeddings resource installed by nlphub runs through `sparknlp_pipeline`.
The model string names the resource, never a folder (`installed_embeddings`): only a resource
in state installed, whose files lie in the resources folder, is used, so one that never passed
the upload or licence checks cannot be, and a caller learns nothing about server paths.
Spark NLP needs its JVM jar on the Spark classpath (it is not on PyPI); `sparknlp_available`
says why it cannot run when it cannot.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from nlphub.embeddings.platforms.base import EmbeddingError, Encoder, Vectors, check_texts
from nlphub.embeddings.spark.encoder import SparkEncoder
from nlphub.embeddings.spark.features import _INDEX
from nlphub.embeddings.spark.session import _SessionHandle

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import SparkSession

__all__ = [
    "SPARKNLP_CHECK_CLASS",
    "SparkNLPEncoder",
    "installed_embeddings",
    "make_spark_encoder",
    "sparknlp_available",
    "sparknlp_pipeline",
]

log = logging.getLogger(__name__)

#: The class `sparknlp_available` looks for on the JVM classpath.
SPARKNLP_CHECK_CLASS = "com.johnsnowlabs.nlp.DocumentAssembler"

#: Spark NLP annotators giving one vector per text (input: the document), by simple class name.
_SENTENCE_HINTS = ("Sentence", "UniversalSentenceEncoder", "Doc2Vec")
_SENTENCE_CLASSES = frozenset(
    {"E5Embeddings", "InstructorEmbeddings", "MPNetEmbeddings", "BGEEmbeddings", "UAEEmbeddings"}
)
EmbeddingKind = Literal["word", "sentence"]


def _embedding_kind(class_name: str) -> EmbeddingKind:
    simple = class_name.rsplit(".", 1)[-1]
    if simple in _SENTENCE_CLASSES or any(hint in simple for hint in _SENTENCE_HINTS):
        return "sentence"
    return "word"


def sparknlp_available(spark: SparkSession | None = None) -> str | None:
    """None when Spark NLP can run here, else why not.

    Checks the ``sparknlp`` Python package first (no JVM needed), then that the Spark NLP jar
    is on the classpath of `spark` (else of the running session, else of one started for the
    check and stopped after it).
    """
    if importlib.util.find_spec("sparknlp") is None:
        return "python package spark-nlp is not installed"
    handle = _SessionHandle(spark, None, None)
    try:
        session = handle.get()
        return _jar_missing(session)
    except EmbeddingError as exc:
        return str(exc)
    finally:
        handle.release()


def _jar_missing(session: SparkSession) -> str | None:
    jvm = getattr(session, "_jvm", None) or getattr(session.sparkContext, "_jvm", None)
    if jvm is None:
        return "this Spark session has no local JVM (Spark Connect?): Spark NLP cannot be loaded"
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(SPARKNLP_CHECK_CLASS, False, loader)
    except Exception:
        return f"the Spark NLP jar is not on the classpath ({SPARKNLP_CHECK_CLASS} not found)"
    return None


_RESOURCE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def _not_installed(ref: str) -> EmbeddingError:
    """The one refusal for a ``sparknlp:`` model that cannot be used, whatever the reason (a
    path, an unknown name, a resource not installed): it tells nothing about the server."""
    shown = ref if len(ref) <= 200 else ref[:200] + "..."
    return EmbeddingError(
        f"sparknlp:{shown} is not an installed embeddings resource (name one by its name or id, "
        "never a path)"
    )


def installed_embeddings(ref: str) -> Path:
    """The folder of the installed embeddings resource named `ref` (its name or its id).

    The resource must be in state installed (so it passed the upload or download checks and
    its licence) and its folder must lie in the resources folder (``NLPHUB_HOME/resources``).
    `ref` is checked on its text first: a path is refused before the database or the file
    system is asked anything. A name several installed resources share must be given as an
    id. The session is closed before the caller loads anything."""
    from sqlmodel import col, select

    from schemas.db import session_scope
    from schemas.models import Resource, ResourceKind
    from schemas.settings import get_settings
    from schemas.states import ResourceState

    if not _RESOURCE_REF.fullmatch(ref):
        raise _not_installed(ref)
    try:
        by: Any = col(Resource.id) == uuid.UUID(ref)
    except ValueError:
        by = col(Resource.name) == ref
    query = select(Resource.install_path).where(
        by,
        col(Resource.kind) == ResourceKind.EMBEDDINGS,
        col(Resource.state) == ResourceState.INSTALLED,
    )
    with session_scope() as session:
        paths = list(session.exec(query.limit(2)).all())
    if len(paths) > 1:
        raise EmbeddingError(
            f"sparknlp:{ref}: several installed embeddings resources have this name; "
            "name one by its id"
        )
    if not paths or not paths[0]:
        raise _not_installed(ref)
    root = get_settings().resources_dir.resolve()
    folder = Path(paths[0]).resolve()
    if not folder.is_relative_to(root) or folder == root:
        raise _not_installed(ref)
    return folder


def _resource(path: str | os.PathLike[str], label: str) -> tuple[str, str | None, dict[str, Any]]:
    """(class name, first storageRef, paramMap) of an installed embeddings resource; refusals
    name it by `label`, not by its folder."""
    from nlphub.uploads.sparknlp import ResourceProblem, validate_resource

    root = Path(path)
    if not root.is_dir():
        raise EmbeddingError(f"{label} is not an installed resource folder")
    try:
        info = validate_resource(root, kind="embeddings", require_labels=False)
    except ResourceProblem as exc:  # the problems name its folder: for the server's log
        log.warning("%s (%s) is not usable: %s", label, root, exc)
        raise EmbeddingError(f"{label} is not a usable Spark NLP embeddings resource") from None
    ref = info.storage_refs[0] if info.storage_refs else None
    return info.class_name, ref, dict(info.param_map)


def sparknlp_pipeline(
    spark: SparkSession,
    *,
    embeddings_path: str,
    kind: EmbeddingKind,
    storage_ref: str | None = None,
) -> PipelineModel:
    """DocumentAssembler → Tokenizer (word kind) → the embeddings at `embeddings_path` →
    EmbeddingsFinisher, fitted (nothing to learn) on an empty frame.

    Input column ``text``; output ``finished_embeddings``: one vector per token (``word``) or
    per document (``sentence``). The annotator is the one the resource's metadata names
    (``WordEmbeddingsModel``, ``BertSentenceEmbeddings``, ``UniversalSentenceEncoder``, ...),
    else ``WordEmbeddingsModel`` / ``BertSentenceEmbeddings`` by `kind`. `storage_ref`
    overrides the name later annotators look the embeddings up by.
    """
    from pyspark.ml import Pipeline

    if kind not in ("word", "sentence"):
        raise EmbeddingError(f"kind must be 'word' or 'sentence', not {kind!r}")
    try:
        base = importlib.import_module("sparknlp.base")
        annotator = importlib.import_module("sparknlp.annotator")
    except ImportError as exc:
        raise EmbeddingError(f"Spark NLP cannot be used: {exc}") from None
    class_name = _read_class_name(embeddings_path)
    simple = class_name.rsplit(".", 1)[-1] if class_name else ""
    loader = getattr(annotator, simple, None) if simple else None
    if loader is None:
        loader = getattr(
            annotator, "WordEmbeddingsModel" if kind == "word" else "BertSentenceEmbeddings"
        )
    document = base.DocumentAssembler().setInputCol("text").setOutputCol("document")
    stages: list[Any] = [document]
    if kind == "word":
        stages.append(annotator.Tokenizer().setInputCols(["document"]).setOutputCol("token"))
        inputs = ["document", "token"]
    else:
        inputs = ["document"]
    embeddings = loader.load(str(embeddings_path)).setInputCols(inputs).setOutputCol("embeddings")
    if storage_ref:
        if not hasattr(embeddings, "setStorageRef"):
            raise EmbeddingError(f"{simple or loader.__name__} has no storageRef to set")
        embeddings = embeddings.setStorageRef(storage_ref)
    stages.append(embeddings)
    stages.append(
        base.EmbeddingsFinisher()
        .setInputCols(["embeddings"])
        .setOutputCols(["finished_embeddings"])
        .setOutputAsVector(True)
        .setCleanAnnotations(False)
    )
    empty = spark.createDataFrame([("",)], "text string")
    return Pipeline(stages=stages).fit(empty)


def _read_class_name(path: str | os.PathLike[str]) -> str | None:
    """The ``class`` in a Spark ML folder's metadata JSON, None when unreadable."""
    meta_dir = Path(path) / "metadata"
    try:
        part = next(p for p in sorted(meta_dir.iterdir()) if p.name.startswith("part-"))
        value = json.loads(part.read_text(encoding="utf-8")).get("class")
    except (OSError, StopIteration, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _pool(rows: Sequence[Sequence[Any]], kind: EmbeddingKind, dimension: int | None) -> Vectors:
    """One float32 row per text from Spark NLP's per-annotation vectors: the mean of the token
    vectors (word), the first vector (sentence); zeros for a text with none."""
    width = dimension
    if width is None:
        width = next((len(v) for vectors in rows for v in vectors), 0)
    out = np.zeros((len(rows), width), dtype=np.float32)
    for i, vectors in enumerate(rows):
        if not vectors:
            continue
        matrix = np.asarray([np.asarray(v, dtype=np.float64) for v in vectors])
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise EmbeddingError(
                f"Spark NLP returned vectors of shape {matrix.shape} for text #{i}"
            )
        out[i] = matrix.mean(axis=0) if kind == "word" else matrix[0]
    return out


class SparkNLPEncoder:
    """Pre-trained Spark NLP word or sentence embeddings installed by nlphub (`install_path`,
    a trusted folder: `make_spark_encoder` finds it with `installed_embeddings`; `resource` is
    the name the model string gave, used in its name and messages).

    Word embeddings are averaged over a text's tokens. Refuses (EmbeddingError, with the reason
    of `sparknlp_available`) when Spark NLP cannot run here.
    """

    platform = "spark"
    requires_fit = False
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"master", "spark", "conf", "kind", "storage_ref"}
    )

    def __init__(
        self,
        install_path: str | os.PathLike[str],
        *,
        master: str | None = None,
        spark: SparkSession | None = None,
        conf: Mapping[str, str] | None = None,
        kind: EmbeddingKind | None = None,
        storage_ref: str | None = None,
        resource: str | None = None,
    ) -> None:
        self.install_path = Path(install_path)
        self.model = f"sparknlp:{resource if resource is not None else install_path}"
        self.name = f"spark:{self.model}"
        if kind is not None and kind not in ("word", "sentence"):
            raise EmbeddingError(f"kind must be 'word' or 'sentence', not {kind!r}")
        if importlib.util.find_spec("sparknlp") is None:  # no JVM needed to know that
            raise EmbeddingError(
                f"{self.name} cannot run: python package spark-nlp is not installed"
            )
        self._session = _SessionHandle(spark, master, conf)
        try:
            session = self._session.get()
            reason = _jar_missing(session)
            if reason is not None:
                raise EmbeddingError(f"{self.name} cannot run: {reason}")
            class_name, ref, params = _resource(self.install_path, self.name)
            self.kind: EmbeddingKind = kind or _embedding_kind(class_name)
            self.storage_ref = storage_ref or ref
            dim = params.get("dimension")
            self._dimension = int(dim) if isinstance(dim, int) and dim > 0 else None
            self._pipeline: PipelineModel | None = sparknlp_pipeline(
                session,
                embeddings_path=str(self.install_path),
                kind=self.kind,
                storage_ref=storage_ref,
            )
        except BaseException:
            self._session.release()
            raise

    def __repr__(self) -> str:
        return f"SparkNLPEncoder({str(self.install_path)!r}, kind={self.kind!r})"

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def fit(self, texts: Iterable[str]) -> None:
        return None

    def encode(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if self._pipeline is None:
            raise EmbeddingError(f"{self.name} is closed")
        if not items:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        frame = self._session.get().createDataFrame(
            list(enumerate(items)), f"{_INDEX} long, text string"
        )
        rows = self._pipeline.transform(frame).select(_INDEX, "finished_embeddings").collect()
        ordered: list[Sequence[Any]] = [[] for _ in items]
        for index, vectors in rows:
            ordered[int(index)] = [v.toArray() for v in (vectors or [])]
        out = _pool(ordered, self.kind, self._dimension)
        if self._dimension is None and out.shape[1]:
            self._dimension = int(out.shape[1])
        return out

    def close(self) -> None:
        self._pipeline = None
        self._session.release()


# -- the factory ----------------------------------------------------------------------------------


def make_spark_encoder(model: str, **options: Any) -> Encoder:
    """`SparkEncoder` for ``tfidf``/``count``/``tfidf:<n>``/``count:<n>``, `SparkNLPEncoder` for
    ``sparknlp:<name or id of an installed embeddings resource>`` (`installed_embeddings`;
    never a path); unknown options are refused."""
    text = model.strip()
    nlp = text.lower().startswith("sparknlp:")
    cls: Any = SparkNLPEncoder if nlp else SparkEncoder
    unknown = sorted(set(options) - cls.OPTIONS)
    if unknown:
        raise EmbeddingError(
            f"unknown option(s) for spark ({cls.__name__}): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(cls.OPTIONS))}"
        )
    if not nlp:
        return SparkEncoder(text, **options)
    ref = text[len("sparknlp:") :]
    if not ref:
        raise EmbeddingError("'sparknlp:' needs the name or id of an installed embeddings resource")
    encoder: Encoder = SparkNLPEncoder(installed_embeddings(ref), resource=ref, **options)
    return encoder

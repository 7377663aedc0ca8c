"""Item (embeddings models): a compute payload's model is a name, never a server path. A
huggingface model is a hub id or a model the operator put in the models cache; a Spark NLP
model is an installed embeddings resource named by its name or id. A path gets one refusal
whether or not it exists (no existence oracle), and nothing is read.

Each test fails with its check removed (`ComputeEmbeddingsPayload`, `installed_embeddings`).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

import nlphub
from nlphub.embeddings.platforms import EmbeddingError
from nlphub.embeddings.spark.sparknlp import installed_embeddings
from schemas.db import get_engine
from schemas.models import Resource, ResourceKind
from schemas.payloads import PayloadError, validate_payload
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.conftest import wait_for
from tests.unit.nlphub.uploads.conftest import SparkBuilder

pytestmark = pytest.mark.integration

PATHS = ("/etc", "/nope", "~/.ssh", "./x", "../../etc", "/etc/../etc")


def _payload(platform: str, model: str) -> dict[str, Any]:
    return {"dataset": "d", "attribute": "text", "platform": platform, "model": model}


def _refusal(platform: str, model: str) -> str:
    with pytest.raises(PayloadError) as refused:
        nlphub.enqueue("nlphub.compute_embeddings", _payload(platform, model))
    return str(refused.value)


def test_a_model_path_gets_one_refusal_whatever_exists(env, worker, job_state) -> None:
    """From the API and around it (a delivery sent straight to the broker): refused alike
    for a folder that exists and one that does not, before any file is looked at."""
    assert Path("/etc").is_dir() and not Path("/nope").exists()
    for platform, prefix in (("huggingface", ""), ("spark", "sparknlp:")):
        messages = {_refusal(platform, prefix + path) for path in PATHS}
        assert len(messages) == 1, messages
        (message,) = messages
        assert "model: a model name, not a path" in message
        assert "/etc" not in message and "/nope" not in message
    for platform, ok in (
        ("huggingface", "all-MiniLM-L6-v2?backend=onnx"),
        ("huggingface", "sentence-transformers/all-MiniLM-L6-v2"),
        ("spark", "sparknlp:glove_100d"),
        ("spark", "tfidf:1024"),
        ("azure", "my-deployment.v2"),
    ):
        assert validate_payload("nlphub.compute_embeddings", _payload(platform, ok))
    from workers.app import app

    errors = []
    for path in ("/etc", "/nope"):
        sent = uuid.uuid4()
        app.send_task(
            "nlphub.compute_embeddings", kwargs=_payload("huggingface", path), task_id=str(sent)
        )

        def refused(sent: uuid.UUID = sent) -> Any:
            job = job_state(sent)
            return job if job is not None and job.state == JobState.FAILED else None

        job = wait_for(refused, 30, what="the delivery to be refused")
        errors.append(job.error or "")
    assert errors[0] == errors[1] and "a model name, not a path" in errors[0]


def _resource(name: str, path: Path, state: ResourceState) -> Resource:
    res = Resource(
        name=name,
        kind=ResourceKind.EMBEDDINGS,
        version=str(uuid.uuid4())[:8],
        state=state,
        install_path=str(path),
    )
    with Session(get_engine(), expire_on_commit=False) as session:
        session.add(res)
        session.commit()
    return res


def test_sparknlp_models_are_installed_resources_only(env, tmp_path: Path) -> None:
    """By name or id, installed and inside the resources folder: anything else (a path, an
    unknown name, a resource that never passed its checks, a row pointing outside) gets the
    one refusal."""
    resources = get_settings().resources_dir
    glove = _resource(
        "glove", SparkBuilder(resources / "embeddings").embeddings("glove"), ResourceState.INSTALLED
    )
    assert installed_embeddings("glove") == Path(glove.install_path or "").resolve()
    assert installed_embeddings(str(glove.id)) == Path(glove.install_path or "").resolve()
    staged = SparkBuilder(resources / "embeddings").embeddings("staged")
    _resource("staged", staged, ResourceState.FAILED)
    _resource("outside", SparkBuilder(tmp_path).embeddings("outside"), ResourceState.INSTALLED)
    for ref in ("/etc", "/nope", str(staged), "nope", "staged", "outside", str(uuid.uuid4())):
        with pytest.raises(EmbeddingError) as refused:
            installed_embeddings(ref)
        assert str(refused.value) == (
            f"sparknlp:{ref} is not an installed embeddings resource (name one by its name or "
            "id, never a path)"
        )
    _resource(
        "glove", SparkBuilder(resources / "other").embeddings("glove"), ResourceState.INSTALLED
    )
    with pytest.raises(EmbeddingError, match="several installed embeddings resources"):
        installed_embeddings("glove")
    assert installed_embeddings(str(glove.id)) == Path(glove.install_path or "").resolve()
    with pytest.raises(EmbeddingError) as refused:
        installed_embeddings(str(glove.id)[:-1] + "/")
    assert "never a path" in str(refused.value)

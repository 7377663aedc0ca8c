"""The huggingface platform (PyTorch), offline, with the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nlphub.embeddings import (
    EmbeddingError,
    Encoder,
    HuggingFaceEncoder,
    bundled_model_path,
    make_encoder,
    models_cache_path,
)
from tests.unit.nlphub.embeddings.platforms.conftest import CORPUS, cosine


@pytest.fixture(scope="module")
def minilm() -> Iterator[Encoder]:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        yield make_encoder("huggingface", "sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    finally:
        mp.undo()


def test_huggingface_matches_bare_sentence_transformers(minilm: Encoder) -> None:
    from sentence_transformers import SentenceTransformer

    path = bundled_model_path("all-MiniLM-L6-v2")
    bare = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    expected = bare.encode(CORPUS)
    vectors = minilm.encode(CORPUS)
    assert vectors.shape == (5, 384) and minilm.dimension == 384
    assert vectors.dtype == np.float32
    assert cosine(vectors, expected).min() >= 0.9999
    np.testing.assert_allclose(minilm.encode(CORPUS), vectors, atol=1e-6)  # deterministic
    assert minilm.encode([]).shape == (0, 384)


def test_huggingface_vectors_mean_something(minilm: Encoder) -> None:
    cat, _, stocks, investors, kitten = minilm.encode(CORPUS)
    assert cosine(cat, kitten) > cosine(cat, stocks) + 0.2
    assert cosine(stocks, investors) > cosine(stocks, kitten) + 0.2


def test_huggingface_small_batches_agree(minilm: Encoder) -> None:
    small = make_encoder("huggingface", "all-MiniLM-L6-v2", device="cpu", batch_size=2)
    assert cosine(small.encode(CORPUS), minilm.encode(CORPUS)).min() >= 0.9999


def test_huggingface_uses_the_shared_models_cache(
    minilm: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = models_cache_path(tmp_path, "acme/mini-model")
    assert folder == tmp_path / "acme__mini-model"
    bundled = bundled_model_path("all-MiniLM-L6-v2")
    assert bundled is not None
    folder.symlink_to(bundled, target_is_directory=True)
    enc = make_encoder("huggingface", "acme/mini-model", cache_dir=tmp_path, device="cpu")
    assert isinstance(enc, HuggingFaceEncoder)
    assert enc.source == str(folder)
    assert cosine(enc.encode(CORPUS[:2]), minilm.encode(CORPUS[:2])).min() >= 0.9999


def test_huggingface_unknown_model_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(EmbeddingError) as info:
        make_encoder("huggingface", "acme/no-such-model", cache_dir=tmp_path, device="cpu")
    assert str(info.value) == (
        "model acme/no-such-model is not in the local models cache "
        "(add it with `nlphub models add acme/no-such-model`)"
    )


@pytest.mark.parametrize("model", ["../outside", "a/b/c", "bad name", "/no/such/folder"])
def test_huggingface_bad_model_names(model: str, tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match=r"not a valid model name|does not exist"):
        make_encoder("huggingface", model, cache_dir=tmp_path, device="cpu", offline=True)


def test_huggingface_paths_get_one_refusal_and_nothing_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model is a name, never a path: ``/etc`` (exists) and ``/nope`` (does not) get the same
    refusal, decided on the text before any file is looked at or any model loaded."""
    import os

    from nlphub.embeddings.platforms import huggingface

    looked: list[str] = []
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        looked.append(os.fsdecode(path) if isinstance(path, str | bytes) else str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    def load(*args: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(huggingface, "_load_sentence_transformer", load)
    messages = []
    for model in ("/etc", "/nope", "~root", "./x", "/etc/../nope"):
        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setattr(os, "lstat", stat)
        with pytest.raises(EmbeddingError) as refused:
            make_encoder("huggingface", model, cache_dir=tmp_path, device="cpu", offline=False)
        monkeypatch.setattr(os, "stat", real_stat)
        monkeypatch.setattr(os, "lstat", real_stat)
        messages.append(str(refused.value).replace(repr(model), "M"))
        assert not [p for p in looked if p.startswith(("/etc", "/nope", "./x", "~"))], looked
    assert len(set(messages)) == 1, messages
    assert messages[0].startswith("M is not a valid model name")


def test_huggingface_ids_naming_a_local_folder_are_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sentence-transformers reads an id that names a folder relative to the working directory
    as that folder: such an id is refused exactly like one that is nowhere."""
    from nlphub.embeddings.platforms import huggingface

    loaded: list[str] = []

    def load(source: str, *args: object) -> None:
        loaded.append(source)
        raise OSError(f"Unrecognized model in {source} (a detail for the server's log)")

    monkeypatch.setattr(huggingface, "_load_sentence_transformer", load)
    (tmp_path / "work" / "acme" / "local").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    errors = []
    for model in ("acme/local", "acme/elsewhere"):
        with pytest.raises(EmbeddingError) as refused:
            make_encoder(
                "huggingface", model, cache_dir=tmp_path / "cache", device="cpu", offline=False
            )
        errors.append(str(refused.value).replace(model, "M"))
    assert loaded == ["acme/elsewhere"]  # the id naming a local folder was never loaded
    assert errors == ["model M could not be loaded (add it with `nlphub models add M`)"] * 2


def test_huggingface_default_device_follows_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from nlphub.embeddings import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == "cpu"
    enc = make_encoder("huggingface", "all-MiniLM-L6-v2")
    assert isinstance(enc, HuggingFaceEncoder) and enc.device == "cpu"
    assert enc.batch_size == 32


def test_huggingface_batch_size_follows_the_device() -> None:
    from nlphub.embeddings.platforms.huggingface import default_batch_size

    assert default_batch_size("cpu") == 32  # sentence-transformers' own default
    assert default_batch_size("cuda") == default_batch_size("cuda:1") == 128
    assert default_batch_size("mps") == 128
    small = make_encoder("huggingface", "all-MiniLM-L6-v2", device="cpu", batch_size=5)
    assert isinstance(small, HuggingFaceEncoder) and small.batch_size == 5
    with pytest.raises(EmbeddingError, match="batch_size must be at least 1"):
        make_encoder("huggingface", "all-MiniLM-L6-v2", device="cpu", batch_size=0)

"""The huggingface platform's ONNX Runtime backend (``backend=onnx``, nlphub/embeddings/onnx.py).

The export of all-MiniLM-L6-v2 is made once per run (`onnx_models_cache`, tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nlphub.embeddings.onnx as onnx_backend
from nlphub.embeddings import EmbeddingError, HuggingFaceEncoder, make_encoder, split_model_options
from nlphub.embeddings.tokens import token_vectors

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "The cat sat on the mat.",
    "A dog chased the cat around the garden.",
    "Stock markets fell sharply on Monday.",
    "Investors sold shares as markets tumbled.",
    "The kitten slept on a warm rug.",
    "the team won the football match",
    "a recipe for tomato soup with basil",
    "Install the software update tonight before the server restarts, or it will crash again.",
    "The phone battery lasts two days.",
    "A bug in the database server crashed it during the night shift, and nobody noticed until "
    "the morning when the reports were empty.",
    "Bake the bread in a hot oven.",
    "WHY IS EVERYTHING IN CAPITALS?",
    "ok",
    "Der Hund bellt laut im Garten.",
    "Fresh pasta with garlic and olive oil, served with a glass of red wine.",
    "Quantum computers use qubits.",
]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


def _exports(cache: Path) -> list[Path]:
    return sorted((cache / ".onnx").rglob("model.onnx"))


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("exported again instead of using the cache")

    monkeypatch.setattr(onnx_backend, "export_onnx", refuse)


def test_onnx_vectors_agree_with_pytorch(onnx_models_cache: Path, no_export: None) -> None:
    enc = make_encoder("huggingface", f"{MODEL}?backend=onnx", cache_dir=onnx_models_cache)
    assert isinstance(enc, onnx_backend.OnnxEncoder) and isinstance(enc, HuggingFaceEncoder)
    assert enc.name == f"huggingface:{MODEL}?backend=onnx" and enc.backend == "onnx"
    assert enc.model == MODEL and enc.dimension == 384
    torch_enc = make_encoder("huggingface", MODEL, device="cpu")
    assert isinstance(torch_enc, HuggingFaceEncoder) and torch_enc.backend == "torch"
    got, expected = enc.encode(TEXTS), torch_enc.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    agreement = cosine(got, expected)  # row by row: the length-sorted batches keep the order
    assert agreement.mean() >= 0.99, agreement
    assert agreement.min() >= 0.97, agreement
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the Normalize
    # int8 activations are quantized per batch: other batches, slightly other vectors, each as
    # close to PyTorch's.
    for size in (1, 3, 128):
        enc.batch_size = size
        other = enc.encode(TEXTS)
        assert cosine(other, expected).mean() >= 0.99
        assert cosine(other, got).mean() >= 0.98
    assert enc.encode([]).shape == (0, 384)
    cat, _, stocks, investors, kitten = got[:5]
    assert cosine(cat, kitten) > cosine(cat, stocks) + 0.2
    assert cosine(stocks, investors) > cosine(stocks, kitten) + 0.2
    # Token level runs on ONNX Runtime too: same tokens and offsets as PyTorch's, vectors
    # that agree as well as the sentence vectors do.
    token_texts = ["the cat sat", *TEXTS[:4], "Ünïcödé, punctuation... and   spaces!"]
    tokens = token_vectors(enc, token_texts)
    reference = token_vectors(torch_enc, token_texts)
    assert [t.end - t.start for t in tokens[0]] == [3, 3, 3]
    assert [[(t.start, t.end) for t in ts] for ts in tokens] == [
        [(t.start, t.end) for t in ts] for ts in reference
    ]
    ours = np.stack([t.vector for ts in tokens for t in ts])
    theirs = np.stack([t.vector for ts in reference for t in ts])
    token_agreement = cosine(ours, theirs)
    assert token_agreement.mean() >= 0.98 and token_agreement.min() >= 0.9, token_agreement
    with pytest.raises(EmbeddingError, match="not a single string"):
        enc.encode("one text")


def test_the_export_is_cached_and_reused(onnx_models_cache: Path, no_export: None) -> None:
    (file,) = _exports(onnx_models_cache)
    assert file.parent.parent == onnx_backend.onnx_model_folder(onnx_models_cache, MODEL)
    import onnxruntime
    import torch

    assert file.parent.name.startswith(f"torch{torch.__version__}-ort{onnxruntime.__version__}-")
    info = json.loads((file.parent / "export.json").read_text())
    assert info["variant"] == "fused+int8" and info["agreement"] >= 0.99
    assert info["pooling"] == "mean"
    # Every layer normalization (one after attention, one after the feed-forward, per layer)
    # runs as plain operators, not ONNX Runtime's slow fused kernel.
    import onnx

    ops = {node.op_type for node in onnx.load(str(file), load_external_data=False).graph.node}
    assert info["plain_layer_norms"] == 12
    assert not ops & {"LayerNormalization", "SkipLayerNormalization"}
    before = file.stat().st_mtime_ns
    for enc in (
        make_encoder("huggingface", f"{MODEL}?backend=onnx", cache_dir=onnx_models_cache),
        make_encoder("huggingface", MODEL, backend="onnx", cache_dir=onnx_models_cache),
        make_encoder(
            "huggingface", f"{MODEL}?backend=ONNX", backend="onnx", cache_dir=onnx_models_cache
        ),
    ):
        assert isinstance(enc, onnx_backend.OnnxEncoder) and enc.file == file
    assert _exports(onnx_models_cache) == [file] and file.stat().st_mtime_ns == before
    assert not list(file.parent.parent.glob(".export-*"))


def test_cache_layout(tmp_path: Path) -> None:
    assert onnx_backend.onnx_model_folder(tmp_path, "acme/mini") == tmp_path / ".onnx/acme__mini"
    folder = onnx_backend.onnx_model_folder(tmp_path, "/models/my model")
    assert folder.parent == tmp_path / ".onnx" and folder.name.startswith("path-my_model-")
    assert onnx_backend.onnx_cache_root(None).parts[-3:] == ("nlphub", "models", ".onnx")


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        (f"{MODEL}?backend=tensorrt", {}, "unknown huggingface backend 'tensorrt'; known: "),
        (MODEL, {"backend": "gpu"}, "unknown huggingface backend 'gpu'; known: onnx, pytorch"),
        (f"{MODEL}?colour=blue", {}, "unknown option 'colour'; known: backend"),
        (f"{MODEL}?backend", {}, "options follow '?' as key=value pairs"),
        (f"{MODEL}?backend=onnx&backend=onnx", {}, "option 'backend' is given twice"),
        (f"{MODEL}?backend=onnx", {"backend": "torch"}, "backend is 'onnx' in the model string"),
        (f"{MODEL}?backend=onnx", {"device": "cuda"}, "backend=onnx runs on the CPU"),
    ],
)
def test_bad_backends_and_model_options(model: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(EmbeddingError, match=message.replace("?", r"\?")):
        make_encoder("huggingface", model, **options)


def test_threads_below_one_are_refused() -> None:
    for threads in (0, -2):
        with pytest.raises(EmbeddingError, match="threads must be at least 1"):
            onnx_backend.OnnxEncoder(MODEL, threads=threads)


def test_model_string_options() -> None:
    assert split_model_options("org/name") == ("org/name", {})
    assert split_model_options("org/name?backend=onnx") == ("org/name", {"backend": "onnx"})
    assert split_model_options("org/name? backend = onnx ") == ("org/name", {"backend": "onnx"})


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_missing_onnxruntime_names_the_extra(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    with pytest.raises(EmbeddingError) as info:
        make_encoder("huggingface", f"{MODEL}?backend=onnx", cache_dir=tmp_path)
    assert str(info.value) == (
        f"backend=onnx needs {missing}, which is not installed: pip install 'nlphub[onnx]'"
    )
    assert not (tmp_path / ".onnx").exists()


def test_a_failed_export_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any) -> None:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_backend, "_export_fp32", broken)
    with pytest.raises(EmbeddingError) as info:
        make_encoder("huggingface", f"{MODEL}?backend=onnx", cache_dir=tmp_path)
    assert str(info.value) == (
        f"ONNX export of {MODEL} failed (RuntimeError: exporter exploded); "
        "use the default backend (without backend=onnx)"
    )
    folder = onnx_backend.onnx_model_folder(tmp_path, MODEL)
    assert not list(folder.rglob("*.onnx")) and not list(folder.glob(".export-*"))


def test_concurrent_exports_both_get_a_whole_file(
    onnx_models_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers exporting at once: each writes its own temporary folder and moves the file
    into place; both get a loadable model, and nothing is left behind."""
    (cached,) = _exports(onnx_models_cache)
    both = threading.Barrier(2, timeout=30)

    def fake_export(_st: Any, _names: list[str], target: Path) -> None:
        both.wait()  # the two exports overlap
        shutil.copyfile(cached, target)

    monkeypatch.setattr(onnx_backend, "_export_fp32", fake_export)
    monkeypatch.setattr(onnx_backend, "_fuse", lambda *_args: False)
    monkeypatch.setattr(onnx_backend, "_quantize", lambda src, dst, *_: shutil.copyfile(src, dst))
    results: list[Any] = []

    def build() -> None:
        try:
            results.append(make_encoder("huggingface", f"{MODEL}?backend=onnx", cache_dir=tmp_path))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(isinstance(r, onnx_backend.OnnxEncoder) for r in results), results
    assert len(results) == 2
    (file,) = _exports(tmp_path)
    assert file.read_bytes() == cached.read_bytes()
    assert not list(file.parent.parent.glob(".export-*"))
    vectors = [r.encode(TEXTS[:3]) for r in results]
    assert cosine(vectors[0], vectors[1]).min() >= 0.9999


def test_int8_that_disagrees_keeps_more_float_then_the_float_model(
    onnx_models_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (cached,) = _exports(onnx_models_cache)
    monkeypatch.setattr(
        onnx_backend, "_export_fp32", lambda _st, _names, target: shutil.copyfile(cached, target)
    )
    monkeypatch.setattr(onnx_backend, "_fuse", lambda *_args: False)
    monkeypatch.setattr(onnx_backend, "down_projections", lambda _file: ["a", "b", "c", "d"])
    tried: list[list[str]] = []

    def quantize(source: Path, target: Path, keep_float: Any = ()) -> None:
        tried.append(list(keep_float))
        shutil.copyfile(source, target)

    monkeypatch.setattr(onnx_backend, "_quantize", quantize)
    monkeypatch.setattr(
        onnx_backend,
        "_agreement",
        lambda _st, file, _mode: 0.95 if "int8" in file.name else 0.9999,
    )
    enc = make_encoder("huggingface", f"{MODEL}?backend=onnx", cache_dir=tmp_path)
    assert isinstance(enc, onnx_backend.OnnxEncoder)
    assert tried == [["a"], ["a", "b"], ["a", "b", "c"]]  # MAX_FLOAT_LAYERS, then float
    info = json.loads((enc.file.parent / "export.json").read_text())
    assert info["variant"] == "fp32" and info["float_matmuls"] == []
    assert info["agreement"] == 0.9999
    assert "keeping the float model" in caplog.text

    monkeypatch.setattr(onnx_backend, "_agreement", lambda *_args: 0.5)
    with pytest.raises(EmbeddingError, match="does not reproduce its PyTorch vectors"):
        make_encoder("huggingface", f"{MODEL}?backend=onnx", cache_dir=tmp_path / "other")

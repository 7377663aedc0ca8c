"""What the parts of `benchmarks/embeddings.py` share: the figures table, generated texts and
vectors, timing helpers, the bench state (arguments, temp folder, embedded Postgres), the bare
sentence-transformers model, and dataset / embedding rows made as the service makes them."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import NO_REDIS, embedded_servers, migrate, use_servers

MODEL = "all-MiniLM-L6-v2"
#: ``SentenceTransformer.encode``'s default batch size: what "bare encode" runs with.
ST_BATCH_SIZE = 32
MiB = 1 << 20
GB = 1_000_000_000


def say(*args: Any) -> None:
    print(*args, flush=True)


# -- results --------------------------------------------------------------------------------------


@dataclass
class Figure:
    part: str
    name: str
    value: float | None
    shown: str
    target: str
    ok: bool | None


class Results:
    def __init__(self) -> None:
        self.figures: list[Figure] = []

    def add(
        self, part: str, name: str, value: float, fmt: str, op: str = "", bound: float = 0.0
    ) -> None:
        ok: bool | None = None
        target = "-"
        if op == ">=":
            ok, target = value >= bound, f">= {bound:g}"
        elif op == "<=":
            ok, target = value <= bound, f"<= {bound:g}"
        self.figures.append(Figure(part, name, value, fmt.format(value), target, ok))

    def skip(self, part: str, reason: str) -> None:
        say(f"{part}: skipped: {reason}")
        self.figures.append(Figure(part, "skipped", None, reason[:100], "-", None))

    def fail(self, part: str, exc: Exception) -> None:
        self.figures.append(
            Figure(part, "failed", None, f"{type(exc).__name__}: {exc}"[:200], "-", False)
        )

    @property
    def failed(self) -> bool:
        return any(f.name == "failed" for f in self.figures)

    def table(self) -> None:
        say("")
        say("summary")
        rows = [("part", "figure", "value", "target", "met")]
        for f in self.figures:
            met = "-" if f.ok is None else ("yes" if f.ok else "NO")
            rows.append((f.part, f.name, f.shown, f.target, met))
        widths = [max(len(r[i]) for r in rows if len(r[i]) < 60) for i in range(5)]
        for row in rows:
            say("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


# -- inputs ---------------------------------------------------------------------------------------

_FALLBACK_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there one all we their has been would when who "
    "will more no if out so said what up its about into than them can only other new some could "
    "time these two may then do first any my now such like our over man me even most made after "
    "also did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work "
    "long get here between both life being under never day same another know while last might "
    "us great old year off come since against go came right used take three data model record "
    "text search vector server query result team match goal recipe bread oven laptop battery"
).split()


#: Where `_word_list` finds a vocabulary when the bundled MiniLM is missing (`--model-path`).
VOCAB_FOLDERS: list[Path] = []


def _word_list() -> list[str]:
    """Whole words of the bundled MiniLM vocabulary (roughly in frequency order; else of
    `--model-path`'s), or a few hundred common words when neither has one."""
    from nlphub.embeddings.platforms import bundled_model_path

    path = bundled_model_path(MODEL) or next(iter(VOCAB_FOLDERS), None)
    if path is not None and (path / "vocab.txt").is_file():
        words = [
            w
            for w in (path / "vocab.txt").read_text(encoding="utf-8").split("\n")
            if len(w) > 1 and w.isascii() and w.isalpha()
        ]
        if len(words) > 1000:
            return words
    return list(_FALLBACK_WORDS)


def make_texts(n: int, seed: int) -> list[str]:
    """`n` sentences: Zipf-weighted words, log-normal lengths (median 14 words), fixed seed."""
    words = np.array(_word_list(), dtype=object)
    weights = np.arange(1, len(words) + 1, dtype=np.float64) ** -1.07
    cdf = np.cumsum(weights / weights.sum())
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for start in range(0, n, 50_000):
        count = min(50_000, n - start)
        lengths = np.clip(rng.lognormal(math.log(14), 0.55, size=count), 3, 80).astype(np.int64)
        picks = np.searchsorted(cdf, rng.random(int(lengths.sum())), side="right")
        chosen = words[np.minimum(picks, len(words) - 1)].tolist()
        pos = 0
        for length in lengths.tolist():
            sentence = " ".join(chosen[pos : pos + length])
            pos += length
            out.append(sentence[0].upper() + sentence[1:] + ".")
    return out


def make_vectors(n: int, dims: int, seed: int, kind: str) -> np.ndarray:
    """float32 rows. ``clustered``: 1,000 Gaussian clusters with a decaying variance per
    dimension (like PCA output); ``random``: one isotropic Gaussian."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, dims), dtype=np.float32)
    scale = (1.0 / np.sqrt(1.0 + np.arange(dims) / 4.0)).astype(np.float32)
    centers = rng.standard_normal((1000, dims), dtype=np.float32) * scale
    out = np.empty((n, dims), dtype=np.float32)
    for start in range(0, n, 200_000):
        stop = min(n, start + 200_000)
        labels = rng.integers(0, len(centers), size=stop - start)
        noise = rng.standard_normal((stop - start, dims), dtype=np.float32) * (0.6 * scale)
        out[start:stop] = centers[labels] + noise
    return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# -- memory (peak RSS helpers: benchmarks/_common.py) -------------------------------------------


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# -- timing helpers -------------------------------------------------------------------------------


def _wrap(original: Callable[..., Any], label: str, times: dict[str, float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times[label] = times.get(label, 0.0) + time.perf_counter() - start

    return timed


@contextlib.contextmanager
def timed_calls(targets: Sequence[tuple[Any, str, str]]) -> Iterator[dict[str, float]]:
    """Time every call of ``owner.attr`` (module functions or class methods) under a label."""
    times: dict[str, float] = {}
    saved = []
    for owner, attr, label in targets:
        original = owner.__dict__[attr]
        setattr(owner, attr, _wrap(original, label, times))
        saved.append((owner, attr, original))
    try:
        yield times
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def service_steps(service: Any, reducer: Any) -> list[tuple[Any, str, str]]:
    """The steps of `nlphub.embeddings.service.compute` worth timing (besides the encoder's)."""
    import nlphub.embeddings.vectors as vectors

    return [
        (reducer, "fit", "PCA fit"),
        (reducer, "transform", "PCA transform"),
        (vectors, "_store", "store"),
        (vectors, "_copy_rows", "format"),
        (service, "_check_cancel", "state read per batch (_check_cancel)"),
        (service, "_set", "state writes (_set: progress per batch)"),
        (service, "_texts", "read records (_texts)"),
        (service, "_encoder", "encoder set-up (_encoder)"),
        (service, "_index", "HNSW index build (_index)"),
    ]


def split_store(times: dict[str, float], total: float) -> dict[str, float]:
    out = dict(times)
    store, fmt = out.pop("store", 0.0), out.pop("format", 0.0)
    out["store: binary COPY rows (_copy_rows)"] = fmt
    out["store: COPY + upsert"] = store - fmt
    # The stores run on a helper thread while the next window encodes: their times overlap
    # the encoder's, so "other" is what is left when nothing overlaps (0 when it all does).
    out["other (commits, audit, embedding rows)"] = max(0.0, total - sum(out.values()))
    return out


def print_steps(times: dict[str, float], total: float) -> None:
    for label, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        say(f"    {label:44s}: {seconds:7.3f}s  {100 * seconds / total:5.1f}%")


def runs_text(seconds: Sequence[float]) -> str:
    return ", ".join(f"{s:.2f}s" for s in seconds)


def load_average() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# -- the shared bench state -----------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args = args
        self.base = base
        self.results = Results()
        self._servers = contextlib.ExitStack()
        self.db_url: str | None = None

    def postgres(self) -> str:
        """Start the embedded Postgres (once), migrate, and point nlphub's settings at it."""
        if self.db_url is not None:
            return self.db_url
        start = time.perf_counter()
        db_url, _ = self._servers.enter_context(embedded_servers(self.base, redis=False))
        # Nothing is published by compute / similar: NO_REDIS satisfies the settings.
        use_servers(db_url, NO_REDIS, self.base / "home")
        migrate(db_url)
        self.db_url = db_url
        say(f"(embedded Postgres up and migrated in {time.perf_counter() - start:.1f}s)")
        return db_url

    def close(self) -> None:
        self._servers.close()


# -- models ---------------------------------------------------------------------------------------


def quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def bare_model(model: str = MODEL, device: str = "cpu") -> tuple[Any, Path] | None:
    """sentence-transformers' own model for `model` (the bundled MiniLM, or a local folder's
    model given by its absolute path) on `device`; None when it is not there."""
    from nlphub.embeddings.platforms import resolve_model_path

    path = resolve_model_path(model)
    if path is None:
        return None
    quiet_transformers()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device), path


def encode(st: Any, texts: Sequence[str], batch_size: int = ST_BATCH_SIZE) -> np.ndarray:
    """Bare ``SentenceTransformer.encode``, with its defaults unless `batch_size` is given."""
    vectors = st.encode(
        list(texts), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True
    )
    return np.asarray(vectors, dtype=np.float32)


# -- rows as the service makes them ---------------------------------------------------------------


def import_texts(name: str, texts: Sequence[str], folder: Path) -> None:
    """Dataset `name` with one record per text (attribute ``text``), through a JSONL import."""
    from nlphub.embeddings.records import import_records
    from schemas.db import session_scope

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"{i:08d}", "text": t}) + "\n")
    with session_scope() as session:
        import_records(session, path, dataset=name, actor="bench")
    path.unlink()


def new_embedding(dataset: str, platform: str, model: str, dims: int = 64) -> uuid.UUID:
    from nlphub.embeddings.service import EmbeddingSpec, create_embedding
    from schemas.db import session_scope

    with session_scope() as session:
        emb = create_embedding(
            session,
            EmbeddingSpec(
                dataset=dataset, attribute="text", platform=platform, model=model, dims=dims
            ),
            actor="bench",
        )
        return emb.id


def no_progress(_done: float, _total: float | None, _message: str | None) -> None:
    return None

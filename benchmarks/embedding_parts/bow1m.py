"""``bow1m``: peak RSS of the service's bag-of-words attribute path on N records, in a spawned
child (Postgres stubbed out), and of the real `compute` at up to ``--bow-db-max`` records."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from benchmarks._common import in_child, mib, peak_rss_kib, rss_kib
from benchmarks.embedding_parts.common import (
    GB,
    Bench,
    import_texts,
    make_texts,
    new_embedding,
    no_progress,
    print_steps,
    reset_peak,
    say,
    service_steps,
    split_store,
    timed_calls,
)


@contextlib.contextmanager
def _null_scope() -> Iterator[None]:
    yield None


def _child_bow_domain(n: int, seed: int, model: str) -> dict[str, Any]:
    """The service's attribute path (`_compute_attributes`) with the database stubbed out."""
    import nlphub.embeddings.service as service
    import nlphub.embeddings.vectors as storage
    from nlphub.embeddings.registry import make_encoder
    from schemas.models import Embedding

    rss_start = rss_kib()
    items = [(uuid.uuid4(), t) for t in make_texts(n, seed)]  # what compute holds: (id, text)
    rss_items = rss_kib()
    reset = reset_peak()
    stored = {"rows": 0, "sum": 0.0}

    def store(_session: Any, _emb_id: uuid.UUID, ids: Sequence[Any], vectors: Any) -> None:
        stored["rows"] += len(ids)
        stored["sum"] += float(np.abs(vectors).sum())

    storage._store = store  # type: ignore[assignment]
    service._check_cancel = lambda _emb_id: None  # type: ignore[assignment]
    service._set = lambda _emb_id, **_values: None
    storage.session_scope = _null_scope  # type: ignore[assignment]
    emb = Embedding(dataset_id=uuid.uuid4(), attribute="text", platform="bow", model=model)
    encoder = make_encoder("bow", model)
    fit_times: dict[str, float] = {}
    original_fit = type(encoder).fit

    def fit(self: Any, texts: Any) -> None:
        begin = time.perf_counter()
        original_fit(self, texts)
        fit_times["fit"] = time.perf_counter() - begin
        fit_times["rss_after_fit"] = rss_kib()
        fit_times["peak_after_fit"] = peak_rss_kib()

    type(encoder).fit = fit  # type: ignore[method-assign]
    begin = time.perf_counter()
    out = service._compute_attributes(emb, encoder, items, no_progress, 5)
    seconds = time.perf_counter() - begin
    return {
        "records": out["records"],
        "stored": stored["rows"],
        "dims": out["dims"],
        "vocabulary": encoder.dimension,
        "seconds": seconds,
        "fit_s": fit_times.get("fit", 0.0),
        "rss_start": rss_start,
        "rss_items": rss_items,
        "rss_after_fit": fit_times.get("rss_after_fit", 0),
        "peak_after_fit": fit_times.get("peak_after_fit", 0),
        "peak": peak_rss_kib(),
        "reset": reset,
    }


def _child_bow_service(emb_id: str) -> dict[str, Any]:
    """The real `compute` (Postgres reads and writes, index) on records imported beforehand."""
    import nlphub.embeddings.reduce
    import nlphub.embeddings.service as service
    from nlphub.embeddings.platforms import BowEncoder
    from schemas.settings import get_settings

    rss_start = rss_kib()
    reset = reset_peak()
    steps = [
        (BowEncoder, "fit", "vocabulary fit (BowEncoder.fit)"),
        (BowEncoder, "encode", "encode (BowEncoder.encode)"),
        *service_steps(service, nlphub.embeddings.reduce.Reducer),
    ]
    with timed_calls(steps) as times:
        begin = time.perf_counter()
        out = service.compute(
            uuid.UUID(emb_id), get_settings(), actor="bench", progress=no_progress
        )
        seconds = time.perf_counter() - begin
    return {
        "records": out["records"],
        "seconds": seconds,
        "steps": split_store(times, seconds),
        "rss_start": rss_start,
        "peak": peak_rss_kib(),
        "reset": reset,
    }


def part_bow1m(bench: Bench) -> None:
    n, seed, model = bench.args.n_bow, bench.args.seed + 2, "tfidf"
    say(f"bow1m: {n} records, bow {model} (max_features 4096) -> PCA 64, batches of 128")
    _domain_path(bench, n, seed, model)
    if n > bench.args.bow_db_max:
        say(
            f"  the real compute with Postgres writes is skipped at {n} records "
            f"(> --bow-db-max {bench.args.bow_db_max})"
        )
        return
    _with_postgres(bench, n, seed, model)


def _domain_path(bench: Bench, n: int, seed: int, model: str) -> None:
    res = in_child(_child_bow_domain, n, seed, model, error=RuntimeError)
    if res["records"] != n or res["stored"] != n:
        raise RuntimeError(f"bow path handled {res['records']}/{res['stored']} of {n} records")
    peak = res["peak"] * 1024
    say("  domain path in a spawned child; Postgres writes and per-batch state stubbed out")
    say(
        f"  time {res['seconds']:.1f}s ({n / res['seconds']:.0f} rec/s; vocabulary fit "
        f"{res['fit_s']:.1f}s), vocabulary {res['vocabulary']}, dims {res['dims']}"
    )
    say(f"  RSS at child start          : {mib(res['rss_start'])}")
    say(f"  RSS holding (uuid, text)s   : {mib(res['rss_items'])}")
    say(
        f"  peak during vocabulary fit  : {mib(res['peak_after_fit'])}  "
        f"(RSS after: {mib(res['rss_after_fit'])})"
    )
    say(
        f"  peak RSS of the path        : {mib(res['peak'])}  = {peak / GB:.2f} GB "
        "(target <= 2 GB)"
        + ("" if res["reset"] else "  [VmHWM not reset: includes the text generation]")
    )
    bench.results.add("bow1m", f"peak RSS, {n} records, no DB (GB)", peak / GB, "{:.2f}", "<=", 2.0)


def _with_postgres(bench: Bench, n: int, seed: int, model: str) -> None:
    bench.postgres()
    start = time.perf_counter()
    import_texts("bench-bow", make_texts(n, seed), bench.base / "data")
    emb_id = new_embedding("bench-bow", "bow", model)
    say(f"  (records imported in {time.perf_counter() - start:.1f}s)")
    db = in_child(_child_bow_service, str(emb_id), error=RuntimeError)
    say(
        f"  real compute with Postgres  : peak {mib(db['peak'])} = "
        f"{db['peak'] * 1024 / GB:.2f} GB, "
        f"{db['seconds']:.1f}s ({n / db['seconds']:.0f} rec/s incl. reads, upserts, HNSW index)"
    )
    say("  where the real compute's time went:")
    print_steps(db["steps"], db["seconds"])
    bench.results.add(
        "bow1m", f"peak RSS, {n} records, with DB (GB)", db["peak"] * 1024 / GB, "{:.2f}", "<=", 2.0
    )

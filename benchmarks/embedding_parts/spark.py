"""``spark``: nlphub's whole-DataFrame Spark path on local[2] ÷ the same computation in one
scikit-learn process, their agreement, and Spark's own local[2] ÷ local[1]."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.embedding_parts.common import Bench, make_texts, say, timed_calls

#: Timed Spark runs per session: as many as scikit-learn's, so that neither side's fastest is
#: picked from more tries than the other's (on a noisy machine the fastest of more runs is
#: faster by itself).
SPARK_RUNS = 3
CORES, COMPONENTS = 2, 64
#: Rows compared between Spark's vectors and scikit-learn's.
SAMPLE = 2000

Steps = dict[str, float]


def _spark_hashed_tfidf(
    lines: Sequence[str], features: int, *, spark_hash: bool
) -> tuple[Any, np.ndarray]:
    """(l2-normalised tf-idf rows, csr, and the tf counts' column sums) as nlphub's
    ``spark:tfidf:<features>`` computes them, in one process with scikit-learn: tokens of
    ``(?u)\\b\\w\\w+\\b`` on lower-cased text, hashed term counts, Spark's idf
    ``log((n + 1) / (df + 1))``, rows l2-normalised. `spark_hash`: Spark's HashingTF buckets
    (murmur3 seed 42, non-negative modulo; through a vocabulary), else scikit-learn's
    HashingVectorizer (its own murmur3 buckets: other collisions, same work)."""
    import scipy.sparse as sps
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
    from sklearn.preprocessing import normalize
    from sklearn.utils import murmurhash3_32

    if spark_hash:
        vectorizer = CountVectorizer(dtype=np.float64)
        counts = vectorizer.fit_transform(lines)
        terms = vectorizer.get_feature_names_out()
        buckets = np.fromiter(
            (murmurhash3_32(str(t), seed=42) % features for t in terms), np.int64, len(terms)
        )
        remap = sps.csr_matrix(
            (np.ones(len(terms)), (np.arange(len(terms)), buckets)), shape=(len(terms), features)
        )
        tf = (counts @ remap).tocsr()
    else:
        tf = HashingVectorizer(
            n_features=features, alternate_sign=False, norm=None, dtype=np.float64
        ).transform(lines)
    n = tf.shape[0]
    df = np.bincount(tf.indices, minlength=features)
    idf = np.log((n + 1.0) / (df + 1.0))
    return normalize(tf @ sps.diags(idf), norm="l2", copy=False).tocsr(), df


def _print_run_steps(times: Steps) -> None:
    """One run's step times, in order (without its "total" and "partitions" entries)."""
    for label, seconds in times.items():
        if label not in ("total", "partitions"):
            say(f"    {label:44s}: {seconds:7.2f}s")


@dataclass
class _Measured:
    """What the rounds measured: scikit-learn's runs (seconds, steps), every timed Spark run's
    times on local[CORES], the fastest one's, Spark's vectors of the sample rows, and the
    fastest local[1] run's times."""

    sk_runs: list[tuple[float, Steps]] = field(default_factory=list)
    every: list[Steps] = field(default_factory=list)
    spark_times: Steps = field(default_factory=dict)
    spark_sample: np.ndarray | None = None
    one_thread: Steps = field(default_factory=dict)


@dataclass
class _SparkBench:
    """The texts (in files under `folder`) and the two sides that embed them."""

    bench: Bench
    folder: Path
    features: int

    def sklearn_run(self, spark_hash: bool) -> tuple[float, np.ndarray, Steps]:
        """One scikit-learn run from the files: (seconds, vectors, step times)."""
        from sklearn.decomposition import PCA

        steps: Steps = {}
        begin = time.perf_counter()
        lines: list[str] = []
        for path in sorted(self.folder.glob("part-*.txt")):
            lines.extend(path.read_text().splitlines())
        tfidf, _ = _spark_hashed_tfidf(lines, self.features, spark_hash=spark_hash)
        steps["read + tokenize + hash + tf-idf + l2"] = time.perf_counter() - begin
        mark = time.perf_counter()
        out = PCA(COMPONENTS, svd_solver="covariance_eigh", random_state=0).fit_transform(tfidf)
        steps["PCA fit (covariance + eigh) + transform"] = time.perf_counter() - mark
        return time.perf_counter() - begin, out, steps

    def session(self, threads: int) -> Any:
        from pyspark.sql import SparkSession

        made = (
            SparkSession.builder.master(f"local[{threads}]")
            .appName("nlphub-bench-embeddings")
            .config("spark.driver.memory", "6g")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", str(2 * CORES))
            .config("spark.local.dir", str(self.bench.base / "spark-local"))
            .getOrCreate()
        )
        made.sparkContext.setLogLevel("ERROR")
        return made

    def spark_run(self, spark: Any) -> tuple[Steps, Any]:
        """The product path: spark_embeddings (fit, then the vectors from the fit's cached
        term frequencies) written to Spark's noop sink. (Step times, the fitted model.)"""
        import nlphub.embeddings.spark.dataset as product  # the module that calls the steps

        steps = [
            (product, "_moments", "covariance (JVM pass: sum x, x x^T)"),
            (product, "_top_components", "eigh on the driver (top k)"),
            (product, "_pca_stages", "PCAModel + StandardScalerModel"),
        ]
        times: Steps = {}
        begin = time.perf_counter()
        df = spark.read.text(str(self.folder))
        with (
            timed_calls(steps) as inner,
            product.spark_embeddings(
                df, text_col="value", model=f"tfidf:{self.features}", n_components=COMPONENTS
            ) as (out, fitted),
        ):
            fit = time.perf_counter() - begin
            mark = time.perf_counter()
            out.select("vector").write.format("noop").mode("overwrite").save()
            write = time.perf_counter() - mark
        times["fit features (tokenize, hash, cache, IDF)"] = fit - sum(inner.values())
        times.update(inner)
        times["vectors from the cache + write (noop)"] = write
        times["total"] = time.perf_counter() - begin
        times["partitions"] = df.rdd.getNumPartitions()
        return times, fitted

    def timed_runs(
        self, spark: Any, between: Callable[[], None] = lambda: None
    ) -> tuple[list[Steps], tuple[Steps, Any]]:
        """Every timed run's times, and the fastest run's (times, fitted model); `between`
        runs before each Spark run."""
        runs = []
        for _ in range(SPARK_RUNS):
            between()
            runs.append(self.spark_run(spark))
        return [times for times, _ in runs], min(runs, key=lambda run: run[0]["total"])

    def measure(self, sample: list[str]) -> _Measured:
        """Warm-up runs, the rounds on local[CORES], Spark's vectors of `sample`, then the
        runs on local[1]. See docs/decisions.md, Benchmark method: Spark against
        scikit-learn, both warm and interleaved."""
        measured = _Measured()
        spark = self.session(CORES)
        try:
            # Not counted: one whole run of each side on the same texts (the JVM's JIT and
            # heap, and scikit-learn's first allocations), so both sides are timed warm, as a
            # worker's long-lived process runs them.
            self.spark_run(spark)
            self.sklearn_run(spark_hash=False)

            # Each Spark run follows one scikit-learn run (with its own hashing, its fastest
            # way): a slow spell of this (shared) machine, or a faster one, then meets both
            # sides, not just the side that ran during it.
            def sklearn_between() -> None:
                seconds, _, run_steps = self.sklearn_run(spark_hash=False)
                measured.sk_runs.append((seconds, run_steps))

            measured.every, (measured.spark_times, fitted) = self.timed_runs(spark, sklearn_between)
            rows = (
                fitted.transform(
                    spark.createDataFrame([(t,) for t in sample], "value string"),
                    text_col="value",
                )
                .select("vector")
                .collect()
            )
            measured.spark_sample = np.array([r.vector for r in rows], dtype=np.float64)
            # Spark's own scaling: the same run on one thread (same JVM, JIT warm).
            spark.stop()
            spark = self.session(1)
            _, (measured.one_thread, _) = self.timed_runs(spark)
        finally:
            spark.stop()
        return measured


def part_spark(bench: Bench) -> None:
    try:
        import pyspark
    except ImportError:
        bench.results.skip("spark", "pyspark is not installed")
        return
    n, features = bench.args.n_spark, bench.args.spark_features
    folder, files, sample = _write_texts(bench, n)
    say(
        f"spark: {n} texts in {files} files, tfidf:{features} then PCA {COMPONENTS}, "
        f"pyspark {pyspark.__version__}"
    )
    sides = _SparkBench(bench, folder, features)
    measured = sides.measure(sample)
    # Spark's buckets: the same numbers as the product, to check the agreement (timed too).
    buckets = sides.sklearn_run(spark_hash=True)
    _report(bench, n, len(sample), measured, buckets)


def _write_texts(bench: Bench, n: int) -> tuple[Path, int, list[str]]:
    """The texts in equal files: (folder, files, the first SAMPLE texts)."""
    folder = bench.base / "spark-texts"
    folder.mkdir(parents=True, exist_ok=True)
    texts = make_texts(n, bench.args.seed + 5)
    # Equal files; Spark packs them into splits of about (total size / cores), so it reads one
    # partition per core (the run prints how many): both cores busy, no shuffle.
    files = 2 * CORES
    per = math.ceil(n / files)
    for i in range(files):
        (folder / f"part-{i}.txt").write_text("\n".join(texts[i * per : (i + 1) * per]) + "\n")
    return folder, files, texts[:SAMPLE]  # the first lines of part-0: the first rows on both sides


def _report(
    bench: Bench,
    n: int,
    sampled: int,
    measured: _Measured,
    buckets: tuple[float, np.ndarray, Steps],
) -> None:
    t_buckets, sk_out, sk_steps_buckets = buckets
    sk_runs, every, spark_times = measured.sk_runs, measured.every, measured.spark_times
    t_sk, sk_steps = min([*sk_runs, (t_buckets, sk_steps_buckets)], key=lambda run: run[0])
    t_spark = spark_times["total"]
    ratio = t_sk / t_spark
    per_round = [sk[0] / sp["total"] for sk, sp in zip(sk_runs, every, strict=True)]
    say(
        f"  sklearn, one process     : {n / t_sk:9.0f} rec/s  (runs "
        f"{', '.join(f'{sk[0]:.2f}s' for sk in sk_runs)} sklearn hashing; {t_buckets:.2f}s "
        f"Spark's buckets; out {sk_out.shape})"
    )
    _print_run_steps(sk_steps)
    each = ", ".join(f"{times['total']:.2f}s" for times in every)
    say(
        f"  spark local[{CORES}]           : {n / t_spark:9.0f} rec/s  (runs {each}, "
        f"{int(spark_times['partitions'])} partitions; spark_embeddings + write)"
    )
    _print_run_steps(spark_times)
    say(
        "  rounds (sklearn run, then Spark run): ratio "
        + ", ".join(f"{r:.2f}" for r in per_round)
        + f"; median {statistics.median(per_round):.2f}"
    )
    assert measured.spark_sample is not None
    cosine = _agreement(measured.spark_sample, sk_out[:sampled])
    say(f"  ratio spark/sklearn      : {ratio:.2f} best to best  (target >= 1.5)")
    one_thread = measured.one_thread
    scaling = one_thread["total"] / t_spark
    say(
        f"  spark local[1]           : {n / one_thread['total']:9.0f} rec/s  "
        f"({one_thread['total']:.2f}s); local[{CORES}] / local[1]: {scaling:.2f}"
    )
    _print_run_steps(one_thread)
    bench.results.add(
        "spark", f"spark local[{CORES}] / sklearn, {n} texts", ratio, "{:.2f}", ">=", 1.5
    )
    bench.results.add(
        "spark", "the same, median of the rounds", statistics.median(per_round), "{:.2f}"
    )
    bench.results.add("spark", f"spark local[{CORES}] / local[1]", scaling, "{:.2f}")
    bench.results.add("spark", "agreement: min |cosine| per component", cosine.min(), "{:.6f}")


def _agreement(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|cosine| per component between Spark's and scikit-learn's vectors of the same rows
    (printed with the Gram matrices' largest difference)."""
    cosine = np.abs(np.sum(ours * ref, axis=0)) / (
        np.linalg.norm(ours, axis=0) * np.linalg.norm(ref, axis=0)
    )
    gram_diff = np.abs(ours @ ours.T - ref @ ref.T).max()
    say(
        f"  agreement with sklearn (Spark's buckets), first {len(ours)} rows: |cosine| per "
        f"component min {cosine.min():.6f} (mean {cosine.mean():.6f}); Gram max |diff| "
        f"{gram_diff:.2e} (Gram max {np.abs(ref @ ref.T).max():.2e})"
    )
    return cosine

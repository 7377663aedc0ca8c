"""Real Spark ML folders written by pyspark, turned into Spark NLP resources.

A Spark NLP model folder differs from a Spark ML one only in its `class`, its params (such as
`storageRef`) and extra folders (`storage/`, `fields/`), so the tests write a real
`CountVectorizerModel` with pyspark and rewrite its metadata accordingly. One Spark session per
test run (`spark_session` fixture in tests/conftest.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def start_spark() -> Any:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", "python3")
    return (
        SparkSession.builder.master("local[2]")
        .appName("nlphub-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )


def write_spark_nlp_resource(
    spark: Any,
    dest: Path,
    *,
    class_name: str,
    storage_ref: str | None = None,
    storage: bool = False,
    labels: list[str] | None = None,
    spark_version: str | None = None,
) -> Path:
    """Fit and save a CountVectorizerModel at `dest`, then make it a Spark NLP resource."""
    from pyspark.ml.feature import CountVectorizer

    frame = spark.createDataFrame([(["a", "b", "c"],), (["a", "d"],)], ["tokens"])
    CountVectorizer(inputCol="tokens", outputCol="features").fit(frame).write().save(str(dest))
    meta_dir = dest / "metadata"
    part = next(p for p in meta_dir.iterdir() if p.name.startswith("part-"))
    meta = json.loads(part.read_text())
    simple = class_name.rsplit(".", 1)[-1]
    meta["class"] = class_name
    meta["uid"] = simple + "_" + meta["uid"].rsplit("_", 1)[-1]
    if spark_version:
        meta["sparkVersion"] = spark_version
    if storage_ref:
        meta["paramMap"]["storageRef"] = storage_ref
    part.write_text(json.dumps(meta, separators=(",", ":")) + "\n")
    for crc in meta_dir.glob(".*.crc"):  # Spark's checksums of the rewritten file
        crc.unlink()
    if storage:
        db = dest / "storage" / f"EMBEDDINGS_{storage_ref or simple}"
        db.mkdir(parents=True)
        (db / "000005.sst").write_bytes(os.urandom(4096))
        (db / "CURRENT").write_text("MANIFEST-000004\n")
    if labels:
        (dest / "fields" / "labels").mkdir(parents=True)
        (dest / "fields" / "labels" / "part-00000").write_text("\n".join(labels) + "\n")
    return dest

"""Embeddings computed with Apache Spark, for datasets past one machine.

- `session`: `get_spark` and the session each encoder holds (started, shared, stopped).
- `features`: the Spark ML feature stages (tokens, counts or hashed, tf-idf) and their columns.
- `encoder`: `SparkEncoder`, the ``spark`` platform's tf-idf and count models; state as bytes.
- `dataset`: the whole DataFrame in Spark (`spark_embeddings`, `fit_spark_embedding`).
- `pca`: Spark's PCA without densifying: JVM moments, covariance, ``PCAModel`` stages.
- `eigh`: the covariance's top eigenvectors on the driver.
- `sparknlp`: Spark NLP embeddings (`SparkNLPEncoder`) and the platform's `make_spark_encoder`.
"""

from nlphub.embeddings.spark.sparknlp import make_spark_encoder

# Kept resolvable for nlphub.embeddings.registry, which imports the factory from the package.
__all__ = ["make_spark_encoder"]

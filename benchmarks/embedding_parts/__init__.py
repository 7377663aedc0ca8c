"""The parts of `benchmarks/embeddings.py`, one module each (`job`, `onnx`, `bow1m`, `pgvector`,
`spark`); `common` holds what they share: the figures table, the generated inputs, timing
helpers, the embedded Postgres and the models."""

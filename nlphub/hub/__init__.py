"""Spark NLP Models Hub domain: versions and metadata.json entries (pure, no I/O)."""

"""Search parameters of `embeddings.search` and `.vectors` (statements: tests/integration)."""

from __future__ import annotations

import uuid

import pytest

from nlphub.embeddings.search import _by_record, _by_vector, _knn
from nlphub.embeddings.vectors import HNSW_LARGE, hnsw_ef_construction


@pytest.mark.parametrize(
    ("rows", "expected"), [(0, 64), (5_000, 64), (HNSW_LARGE, 64), (HNSW_LARGE + 1, 128)]
)
def test_ef_construction_grows_with_the_index(rows: int, expected: int) -> None:
    assert hnsw_ef_construction(rows) == expected


def test_search_statements_name_the_embedding_and_dimensions() -> None:
    """The index is partial (one embedding) on `vector::vector(dims)`: a statement the planner
    can match to it has both in its text, and a literal LIMIT (a generic plan estimates it)."""
    emb = uuid.uuid4()
    knn = _by_vector(emb, 64, 10)
    assert f"v.embedding_id = '{emb}'" in knn and knn.endswith(" LIMIT 10")
    assert knn.count("(v.vector::vector(64))") == 2
    by_record = _by_record(emb, 16, 11)
    assert f"(SELECT id FROM target) = '{emb}'" in by_record
    assert "(v.vector::vector(16))" in by_record and by_record.endswith(" LIMIT 11")


def test_search_statements_take_only_checked_values() -> None:
    with pytest.raises(ValueError):
        _knn("x'; DROP TABLE record; --", 64, "%(q)s", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _knn(uuid.uuid4(), "64) x", "%(q)s", 10)  # type: ignore[arg-type]

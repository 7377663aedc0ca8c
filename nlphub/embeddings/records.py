"""Records: a dataset's rows imported from a file (JSON lines, CSV or Parquet), all or nothing.

Each row is a JSON object; its `id` (or another field, or its row number) is the record's
external id. A file with any bad row imports nothing and names the bad rows.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from nlphub import audit
from nlphub.errors import NotFound, Refused
from schemas.models import Dataset

MAX_IMPORT_ERRORS = 50


class ImportRejected(Refused):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_IMPORT_ERRORS]
        more = f"\n… and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(
            f"{source}: nothing imported ({len(problems)} bad rows):\n" + "\n".join(shown) + more
        )


def _rows_from_file(path: Path) -> Iterator[tuple[int, Any]]:
    """(line or row number, parsed row or an error string)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, f"line {number}: not valid JSON ({exc.msg})"
    elif suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for number, row in enumerate(csv.DictReader(fh), 2):
                if None in row:
                    yield number, f"line {number}: more values than columns"
                else:
                    yield number, dict(row)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield number, row
    else:
        raise Refused(f"{path.name}: unknown format (use .jsonl, .csv or .parquet)")


def import_records(
    session: Session, path: Path, *, dataset: str, actor: str, id_field: str = "id"
) -> dict[str, Any]:
    """All or nothing: every row is a JSON object (with a unique `id`, or its row number)."""
    if not path.is_file():
        raise Refused(f"{path} is not a file")
    try:
        rows = list(_rows_from_file(path))
    except UnicodeDecodeError as exc:
        raise Refused(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    problems: list[str] = []
    records: dict[str, dict[str, Any]] = {}
    for number, row in rows:
        if isinstance(row, str):
            problems.append(row)
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: a record must be an object, got {type(row).__name__}")
            continue
        ext = str(row.get(id_field, number))
        if ext in records:
            problems.append(f"line {number}: duplicate {id_field} {ext!r}")
            continue
        records[ext] = row
    if not rows:
        problems.append("the file has no records")
    if problems:
        raise ImportRejected(path.name, problems)
    ds = session.exec(select(Dataset).where(Dataset.name == dataset)).first()
    if ds is None:
        ds = Dataset(name=dataset)
        session.add(ds)
        session.flush()
    payload = [
        {"id": uuid.uuid4(), "ds": ds.id, "ext": ext, "data": json.dumps(row, default=str)}
        for ext, row in records.items()
    ]
    session.execute(
        text(
            "INSERT INTO record (id, dataset_id, external_id, data, updated_at) "
            "VALUES (:id, :ds, :ext, CAST(:data AS jsonb), now()) "
            "ON CONFLICT (dataset_id, external_id) DO UPDATE SET data = EXCLUDED.data, "
            "updated_at = now()"
        ),
        payload,
    )
    audit.record(
        session,
        actor=actor,
        action="records.imported",
        target=dataset,
        details={"file": path.name, "records": len(payload)},
    )
    return {"dataset": dataset, "records": len(payload)}


def get_dataset(session: Session, name: str) -> Dataset:
    ds = session.exec(select(Dataset).where(Dataset.name == name)).first()
    if ds is None:
        raise NotFound(f"dataset {name!r} not found")
    return ds

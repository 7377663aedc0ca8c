"""Embeddings end to end: records import, each platform, PCA, pgvector search, bad inputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlmodel import Session

import nlphub
from nlphub.embeddings.records import ImportRejected, import_records
from nlphub.embeddings.search import similar
from schemas.db import get_engine, session_scope
from schemas.settings import get_settings
from schemas.states import JobState

pytestmark = pytest.mark.integration

TOPICS = {
    "sport": [
        "the team won the football match",
        "a great goal in the final minute",
        "the striker scored twice in the league game",
        "fans cheered the football club",
    ],
    "food": [
        "a recipe for tomato soup with basil",
        "bake the bread in a hot oven",
        "fresh pasta with garlic and olive oil",
        "the chef cooked a spicy curry",
    ],
    "tech": [
        "the new laptop has a faster processor",
        "install the software update tonight",
        "the phone battery lasts two days",
        "a bug in the database server crashed it",
    ],
}


def _records(n_copies: int = 1) -> list[dict[str, Any]]:
    rows = []
    for copy in range(n_copies):
        for topic, texts in TOPICS.items():
            for i, t in enumerate(texts):
                rows.append({"id": f"{topic}-{i}-{copy}", "text": t, "topic": topic, "n": i})
    return rows


def _load(tmp: Path, rows: list[dict[str, Any]], dataset: str = "news") -> None:
    path = tmp / f"{dataset}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with session_scope() as session:
        import_records(session, path, dataset=dataset, actor="t")


def _count(emb_id: str, table: str = "embedding_vector") -> int:
    with Session(get_engine()) as session:
        return int(
            session.execute(
                text(f"SELECT count(*) FROM {table} WHERE embedding_id = :e"), {"e": emb_id}
            ).scalar_one()
        )


def _compute(wait_job: Any, **payload: Any) -> Any:
    job = wait_job(
        nlphub.enqueue(
            "nlphub.compute_embeddings", {"dataset": "news", "attribute": "text", **payload}
        ),
        timeout=180,
    )
    return job


def _scores(hits: list[dict[str, Any]]) -> list[float]:
    return [h["score"] for h in hits]


def test_records_import_formats_and_bad_rows(env, tmp_path) -> None:
    rows = _records()
    csv_path = tmp_path / "a.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows({"id": r["id"], "text": r["text"]} for r in rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    with session_scope() as session:
        assert import_records(session, csv_path, dataset="c", actor="t")["records"] == 12
        assert (
            import_records(session, tmp_path / "b.parquet", dataset="p", actor="t")["records"] == 12
        )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "ok"}\nnot json\n[1, 2]\n{"id": "1", "text": "x"}\n')
    with pytest.raises(ImportRejected) as info, session_scope() as session:
        import_records(session, bad, dataset="bad", actor="t")
    message = str(info.value)
    assert "line 2: not valid JSON" in message
    assert "line 3: a record must be an object, got list" in message
    assert "line 4: duplicate id '1'" in message
    with Session(get_engine()) as session:
        assert (
            session.execute(text("SELECT count(*) FROM dataset WHERE name = 'bad'")).scalar_one()
            == 0
        )


def test_bow_attribute_embeddings_pca_and_search(env, worker, wait_job, tmp_path) -> None:
    _load(tmp_path, _records(12))  # 144 records: PCA to 64 fits
    job = _compute(wait_job, platform="bow", model="tfidf", dims=16)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["reduced"] is True and job.result["dims"] == 16
    emb_id = job.result["embedding"]
    assert _count(emb_id) == 144
    hits = similar(get_settings(), dataset="news", record="food-0-0", k=5)
    assert [h["id"].split("-")[0] for h in hits[:3]] == ["food"] * 3
    by_text = similar(get_settings(), dataset="news", query="football goal", k=3)
    assert all(h["id"].startswith("sport") for h in by_text)
    assert similar(
        get_settings(), dataset="news", record="food-0-0", k=5, embedding_id=emb_id
    ) == similar(get_settings(), dataset="news", record="food-0-0", k=5)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"dataset": "nope", "record": "x"}, "dataset 'nope'"),
        ({"dataset": "news", "record": "nope"}, "record 'nope' has no vector"),
        (
            {"dataset": "news", "record": "food-0-0", "embedding_id": uuid.uuid4()},
            "no finished",
        ),
        ({"dataset": "news"}, "give a record id or a query text"),
    ]
    for kwargs, message in bad:
        with pytest.raises(Exception, match=message):
            similar(get_settings(), **kwargs)
    # The same search as other apps run it (the task) and as ops run it (the CLI).
    task = wait_job(
        nlphub.enqueue("nlphub.similar", {"dataset": "news", "record": "food-0-0", "k": 5})
    )
    assert task.state == JobState.SUCCEEDED, task.error
    assert _scores(task.result["hits"]) == _scores(hits)
    cli = subprocess.run(
        [str(Path(sys.executable).with_name("nlphub")), "similar", "news", "--text", "pasta"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "food-2-" in cli.stdout, cli.stdout  # "fresh pasta with garlic and olive oil"
    with Session(get_engine()) as session:
        indexes = (
            session.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = 'embedding_vector' "
                    "AND indexname LIKE 'ix_embedding_vector_%'"
                )
            )
            .scalars()
            .all()
        )
        assert len(indexes) == 1 and "hnsw" in indexes[0] and "vector_cosine_ops" in indexes[0]
        assert "m='16', ef_construction='64'" in indexes[0], indexes[0]


def test_encode_windows_do_not_change_the_vectors(env, tmp_path, monkeypatch) -> None:
    """The model sees several batches per call; PCA fit, storage and progress stay per batch,
    so the vectors are the same as with one call per batch (fit spanning windows included)."""
    import nlphub.embeddings.service as service
    from nlphub.embeddings.service import EmbeddingSpec, compute, create_embedding

    _load(tmp_path, _records(12))  # 144 records
    monkeypatch.setattr(service, "ATTRIBUTE_BATCH", 8)
    seen: list[float] = []
    results = {}
    for window in (1, 3, 100):
        monkeypatch.setattr(service, "ENCODE_WINDOW_BATCHES", window)
        with session_scope() as session:
            emb = create_embedding(
                session, EmbeddingSpec("news", "text", "bow", "tfidf", dims=16), actor="t"
            )
            emb_id = emb.id
        seen.clear()
        out = compute(
            emb_id,
            get_settings(),
            actor="t",
            progress=lambda done, total, _msg: seen.append(done / (total or 1)),
            fit_batches=5,
        )
        assert out["records"] == 144 and out["reduced"] is True
        assert seen == sorted(seen) and seen[-1] == 1.0
        with Session(get_engine()) as session:
            rows = session.execute(
                text(
                    "SELECT r.external_id, v.vector::text FROM embedding_vector v "
                    "JOIN record r ON r.id = v.record_id WHERE v.embedding_id = :e"
                ),
                {"e": emb_id},
            ).all()
        results[window] = {rid: np.array(json.loads(v)) for rid, v in rows}
    assert len(results[1]) == 144
    for window in (3, 100):
        assert results[window].keys() == results[1].keys()
        for rid, vec in results[1].items():
            np.testing.assert_allclose(results[window][rid], vec, rtol=1e-5, atol=1e-6)


def test_pca_is_skipped_with_fewer_records_than_components(env, worker, wait_job, tmp_path) -> None:
    _load(tmp_path, _records())  # 12 records < 64 components
    job = _compute(wait_job, platform="bow", model="count")
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["reduced"] is False
    assert _count(job.result["embedding"]) == 12


def test_huggingface_offline_matches_bare_sentence_transformers(
    env, worker, wait_job, tmp_path
) -> None:
    _load(tmp_path, _records())
    job = _compute(wait_job, platform="huggingface", model="all-MiniLM-L6-v2", dims=8)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["dims"] == 8
    hits = similar(get_settings(), dataset="news", query="cooking dinner", k=3)
    assert sum(h["id"].startswith("food") for h in hits) >= 2, hits


def test_huggingface_onnx_backend_end_to_end(
    env, worker, wait_job, tmp_path, onnx_models_cache, monkeypatch
) -> None:
    """``backend=onnx`` in the model string: the job encodes with the cached ONNX export (no
    export in the job: the session's one is in the models cache), the stored model string
    keeps the backend, and a query text is embedded the same way."""
    import nlphub.embeddings.onnx as onnx_backend
    from schemas.models import Embedding

    models = env["home"] / "models"
    models.mkdir()
    (models / ".onnx").symlink_to(onnx_models_cache / ".onnx", target_is_directory=True)

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("exported again instead of using the models cache")

    monkeypatch.setattr(onnx_backend, "export_onnx", refuse)
    encoded: list[int] = []
    original = onnx_backend.OnnxEncoder.encode

    def counting(self: Any, texts: Any) -> Any:
        encoded.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(onnx_backend.OnnxEncoder, "encode", counting)
    _load(tmp_path, _records())
    job = _compute(wait_job, platform="huggingface", model="all-MiniLM-L6-v2?backend=onnx", dims=8)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["dims"] == 8 and _count(job.result["embedding"]) == 12
    assert encoded == [12]
    with Session(get_engine()) as session:
        emb = session.get(Embedding, uuid.UUID(job.result["embedding"]))
        assert emb is not None and emb.model == "all-MiniLM-L6-v2?backend=onnx"
    hits = similar(get_settings(), dataset="news", query="cooking dinner", k=3)
    assert encoded == [12, 1]  # the query went through the ONNX encoder too
    assert sum(h["id"].startswith("food") for h in hits) >= 2, hits


def test_token_level_vectors_have_offsets(env, worker, wait_job, tmp_path) -> None:
    _load(tmp_path, _records())
    job = _compute(wait_job, platform="bow", model="count", granularity="token", dims=4)
    assert job.state == JobState.SUCCEEDED, job.error
    with Session(get_engine()) as session:
        rows = session.execute(
            text(
                "SELECT r.data ->> 'text' AS body, v.start_offset, v.end_offset, v.token_index "
                "FROM token_vector v JOIN record r ON r.id = v.record_id "
                "WHERE v.embedding_id = :e ORDER BY r.external_id, v.token_index"
            ),
            {"e": job.result["embedding"]},
        ).all()
    assert rows
    assert all(r.body[r.start_offset : r.end_offset].strip() for r in rows)
    first = [r for r in rows if r.body == "a recipe for tomato soup with basil"]
    assert [r.body[r.start_offset : r.end_offset] for r in first][:3] == ["a", "recipe", "for"]


class _OpenAI(BaseHTTPRequestHandler):
    seen_keys: list[str]
    fail_first: list[int]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen_keys.append(self.headers.get("Authorization", ""))
        if self.fail_first:
            self.fail_first.pop()
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = [
            {"index": i, "embedding": list(np.random.default_rng(len(t)).random(16))}
            for i, t in enumerate(body["input"])
        ]
        out = json.dumps({"data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def openai_server() -> Iterator[tuple[str, Any]]:
    handler = type("H", (_OpenAI,), {"seen_keys": [], "fail_first": [1]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    server.shutdown()
    server.server_close()


def test_openai_platform_with_key_by_reference(
    env, worker, wait_job, tmp_path, openai_server, monkeypatch, audit_actions
) -> None:
    url, handler = openai_server
    secret = f"sk-marker-{uuid.uuid4().hex}"
    monkeypatch.setenv("NLPHUB_TEST_OPENAI_KEY", secret)
    # The payload names a credential the operator declared, bound to this (plain http,
    # loopback) endpoint; the variable holding the key is the operator's business.
    declared = {"env": "NLPHUB_TEST_OPENAI_KEY", "base_urls": [url], "allow_http": True}
    monkeypatch.setenv("NLPHUB_CREDENTIALS", json.dumps({"test-openai": declared}))
    get_settings.cache_clear()
    _load(tmp_path, _records())
    job = _compute(
        wait_job,
        platform="openai",
        model="text-embedding-3-small",
        api_key_ref="test-openai",
        base_url=url,
        dims=4,
    )
    assert job.state == JobState.SUCCEEDED, job.error
    assert handler.seen_keys[0] == f"Bearer {secret}" and len(handler.seen_keys) >= 2  # 429
    with Session(get_engine()) as session:
        dump = (
            session.execute(
                text(
                    "SELECT payload::text FROM job UNION ALL SELECT details::text FROM audit_event"
                )
            )
            .scalars()
            .all()
        )
    assert not any(secret in row for row in dump)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"attribute": "nope", "platform": "bow", "model": "count"},
            "no record has an attribute 'nope'",
        ),
        (
            {"attribute": "n", "platform": "bow", "model": "count"},
            "attribute 'n' is not text in records",
        ),
        ({"platform": "huggingface", "model": "no-such/model-xyz"}, "no-such/model-xyz"),
        (
            {"platform": "huggingface", "model": "all-MiniLM-L6-v2?backend=tensorrt"},
            "unknown huggingface backend 'tensorrt'; known: onnx, pytorch, torch",
        ),
        (
            {"platform": "openai", "model": "m", "api_key_ref": "NLPHUB_MISSING_KEY"},
            "api_key_ref 'NLPHUB_MISSING_KEY' is not a declared credential",
        ),
        ({"platform": "cohere", "model": "m"}, "cohere needs api_key_ref"),
        (
            {"platform": "bow", "model": "count", "api_key_ref": "anything"},
            "bow runs on the workers and takes no api_key_ref or base_url",
        ),
        ({"dataset": "ghost", "platform": "bow", "model": "count"}, "dataset 'ghost' not found"),
    ],
)
def test_bad_inputs_fail_with_clear_errors(
    env, worker, wait_job, tmp_path, payload, message
) -> None:
    _load(tmp_path, _records())
    job = wait_job(
        nlphub.enqueue(
            "nlphub.compute_embeddings", {"dataset": "news", "attribute": "text", **payload}
        ),
        timeout=120,
    )
    assert job.state == JobState.FAILED
    assert message in job.error, job.error


def test_unknown_platform_is_refused_at_enqueue(env) -> None:
    from schemas.payloads import PayloadError

    with pytest.raises(PayloadError, match=r"platform: Input should be 'bow'"):
        nlphub.enqueue(
            "nlphub.compute_embeddings",
            {"dataset": "d", "attribute": "a", "platform": "word2vec", "model": "x"},
        )


def test_new_records_reuse_the_stored_reducer(env, worker, wait_job, tmp_path) -> None:
    _load(tmp_path, _records(12))
    job = _compute(wait_job, platform="bow", model="tfidf")
    emb_id = job.result["embedding"]
    with Session(get_engine()) as session:
        before = session.execute(
            text(
                "SELECT v.vector::text FROM embedding_vector v JOIN record r ON r.id = v.record_id "
                "WHERE v.embedding_id = :e AND r.external_id = 'tech-0-0'"
            ),
            {"e": emb_id},
        ).scalar_one()
    _load(tmp_path, [{"id": "new-1", "text": "the laptop software crashed"}])
    done = wait_job(
        nlphub.enqueue(
            "nlphub.embed_records", {"embedding_id": emb_id, "records": ["new-1", "tech-0-0"]}
        )
    )
    assert done.state == JobState.SUCCEEDED, done.error
    assert _count(emb_id) == 145
    with Session(get_engine()) as session:
        after = session.execute(
            text(
                "SELECT v.vector::text FROM embedding_vector v JOIN record r ON r.id = v.record_id "
                "WHERE v.embedding_id = :e AND r.external_id = 'tech-0-0'"
            ),
            {"e": emb_id},
        ).scalar_one()
    a = np.array(json.loads(before))
    b = np.array(json.loads(after))
    assert np.allclose(a, b, atol=1e-5)  # same projection, no refit


def _many(n: int) -> list[dict[str, Any]]:
    words = [w for texts in TOPICS.values() for t in texts for w in t.split()]
    rng = np.random.default_rng(7)
    return [{"id": f"r{i:05d}", "text": " ".join(rng.choice(words, size=12))} for i in range(n)]


def _embedding_state(emb_id: str) -> Any:
    with Session(get_engine()) as session:
        return session.execute(
            text("SELECT state, progress FROM embedding WHERE id = :e"), {"e": emb_id}
        ).one()


@pytest.mark.slow
def test_deleting_an_embedding_mid_run_stops_it(env, worker, wait_job, job_state, tmp_path) -> None:
    from nlphub.embeddings.service import delete_embedding
    from tests.conftest import wait_for

    _load(tmp_path, _many(3000))
    job_id = nlphub.enqueue(
        "nlphub.compute_embeddings",
        {
            "dataset": "news",
            "attribute": "text",
            "platform": "huggingface",
            "model": "all-MiniLM-L6-v2",
        },
    )

    def running() -> Any:
        with Session(get_engine()) as session:
            row = session.execute(
                text("SELECT id FROM embedding WHERE state = 'encoding' AND progress > 0")
            ).first()
            return row and row.id

    emb_id = wait_for(running, 120, interval=0.05, what="encoding to be under way")
    with session_scope() as session:
        delete_embedding(session, emb_id, actor="t")
    job = wait_job(job_id, timeout=120)
    assert job.state == JobState.FAILED
    assert "was deleted while it was computed; stopped" in job.error
    assert _count(str(emb_id)) == 0
    assert _embedding_state(str(emb_id)).state == "deleted"


@pytest.mark.slow
def test_spark_platform_end_to_end(env, worker, wait_job, tmp_path, spark_session) -> None:
    _load(tmp_path, _records(12))
    job = _compute(wait_job, platform="spark", model="tfidf", dims=16)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["dims"] == 16 and _count(job.result["embedding"]) == 144
    hits = similar(get_settings(), dataset="news", query="football goal", k=3)
    assert all(h["id"].startswith("sport") for h in hits), hits


def test_texts_read_by_json_type(env, tmp_path) -> None:
    """The text of each record in external id order: a string as it is; a missing attribute or
    JSON null as ""; any other JSON type refused, naming the records (first ten)."""
    from types import SimpleNamespace

    from nlphub.embeddings.platforms import EmbeddingError
    from nlphub.embeddings.records import get_dataset
    from nlphub.embeddings.service import _texts

    rows: list[dict[str, Any]] = [
        {"id": "b", "text": "zwei Wörter", "n": 1},
        {"id": "a", "text": "", "n": None},
        {"id": "d", "n": {"x": 1}},
        {"id": "c", "text": None, "n": [1]},
        {"id": "e", "text": '"quoted" \\ and\nnewline', "n": True},
        {"id": "f", "text": "x", "n": "a string"},
    ]
    _load(tmp_path, rows, dataset="typed")

    def read(attribute: str) -> list[tuple[str, str]]:
        with Session(get_engine()) as session:
            dataset = get_dataset(session, "typed")
            emb = SimpleNamespace(attribute=attribute, dataset_id=dataset.id)
            items = _texts(session, emb)  # type: ignore[arg-type]
            ids = dict(
                session.execute(
                    text("SELECT id, external_id FROM record WHERE dataset_id = :d"),
                    {"d": dataset.id},
                ).all()
            )
        return [(ids[rid], value) for rid, value in items]

    assert read("text") == [
        ("a", ""),
        ("b", "zwei Wörter"),
        ("c", ""),
        ("d", ""),
        ("e", '"quoted" \\ and\nnewline'),
        ("f", "x"),
    ]
    with pytest.raises(EmbeddingError, match=r"^attribute 'n' is not text in records b, c, d, e$"):
        read("n")
    with pytest.raises(EmbeddingError, match=r"^no record has an attribute 'nope'$"):
        read("nope")

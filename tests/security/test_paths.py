"""Item (a): paths in payloads. `nlphub.validate_upload` and `nlphub.rules_import` read only
from NLPHUB_INCOMING_ROOTS, `nlphub.rules_export` writes only into NLPHUB_EXPORT_ROOTS; no
``..`` escape, no symbolic link (the path itself or a folder on the way), sizes capped before
reading, no special files, no file with more than one name (a hard link); a path outside gets
one message whatever exists there; exports are written through an exclusive, no-follow
temporary file renamed into place.

Through a real worker; each test fails with its check removed (`nlphub.paths`).
"""

from __future__ import annotations

import json
import os
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from schemas.db import get_engine
from schemas.models import Resource, Rule
from schemas.settings import get_settings
from schemas.states import JobState
from tests.unit.nlphub.uploads.conftest import SparkBuilder, zip_dir

pytestmark = pytest.mark.integration

HEIGHT = {"name": "height", "type": "regex", "entity": "HEIGHT", "regex": "[0-7]'[0-9]"}
SECRET_NAMES = ("patient-records", "EMBEDDINGS_glove_100d", "secret_emb")


@pytest.fixture
def area(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An incoming root, an export root, and a folder outside both holding things to steal."""
    folders = {name: tmp_path / name for name in ("incoming", "exports", "outside")}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", str(folders["incoming"]))
    monkeypatch.setenv("NLPHUB_EXPORT_ROOTS", str(folders["exports"]))
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", "spark-nlp=5.5.0,spark=3.5.0")
    get_settings.cache_clear()
    outside = folders["outside"]
    SparkBuilder(outside).embeddings("secret_emb")
    (outside / "private").mkdir()
    (outside / "private" / "patient-records.csv").write_text("name,diagnosis\n")
    (outside / "rules.json").write_text(json.dumps(HEIGHT))
    (outside / "victim.txt").write_text("do not touch")
    return folders


def _rows(table: Any) -> list[Any]:
    with Session(get_engine()) as session:
        return list(session.exec(select(table)).all())


def _upload(wait_job: Callable[..., Any], path: str | Path, name: str = "stolen") -> Any:
    payload = {"path": str(path), "kind": "embeddings", "name": name}
    return wait_job(nlphub.enqueue("nlphub.validate_upload", payload))


def _failed(job: Any, *expected: str) -> str:
    assert job.state == JobState.FAILED, job.result
    for text in expected:
        assert text in job.error, job.error
    return str(job.error)


def _without(text: str, path: str | Path) -> str:
    """The message with the caller's own path taken out."""
    return text.replace(repr(str(path)), "PATH").replace(str(path), "PATH")


# -- uploads ---------------------------------------------------------------------------------


def test_upload_outside_the_roots_is_refused_alike_whether_or_not_it_exists(
    area, worker, wait_job
) -> None:
    outside = area["outside"]
    present = _upload(wait_job, outside / "secret_emb")
    missing = _upload(wait_job, outside / "no_such_emb")
    private = _upload(wait_job, outside / "private")
    errors = [
        _without(_failed(job, "outside the allowed folders", str(area["incoming"])), path)
        for job, path in [
            (present, outside / "secret_emb"),
            (missing, outside / "no_such_emb"),
            (private, outside / "private"),
        ]
    ]
    assert errors[0] == errors[1] == errors[2], errors
    assert "NLPHUB_INCOMING_ROOTS" in errors[0]
    assert not any(name in error for error in errors for name in SECRET_NAMES[:2])
    assert _rows(Resource) == []


def test_upload_through_a_linked_folder_or_dot_dot_is_refused(area, worker, wait_job) -> None:
    incoming, outside = area["incoming"], area["outside"]
    (incoming / "shared").symlink_to(outside)
    (incoming / "emb").symlink_to(outside / "secret_emb")
    (incoming / "emb.zip").symlink_to(zip_dir(outside / "secret_emb", outside / "emb.zip"))
    _failed(_upload(wait_job, incoming / "shared" / "secret_emb"), "shared is a symbolic link")
    _failed(_upload(wait_job, incoming / "emb"), "emb is a symbolic link")
    _failed(_upload(wait_job, incoming / "emb.zip"), "emb.zip is a symbolic link")
    _failed(_upload(wait_job, f"{incoming}/../outside/secret_emb"), "'..'")
    _failed(_upload(wait_job, "../outside/secret_emb"), "'..'")
    assert _rows(Resource) == []


def test_upload_of_a_hard_link_to_a_file_elsewhere_is_refused(area, worker, wait_job) -> None:
    """A hard link made inside the root to another file (another resource's archive, a
    secret) is that file under a second name: a zip with more than one name is refused, and
    so is an uploaded folder holding such a file; nothing about the other name is said."""
    incoming, outside = area["incoming"], area["outside"]
    os.link(zip_dir(outside / "secret_emb", outside / "emb.zip"), incoming / "emb.zip")
    error = _failed(_upload(wait_job, incoming / "emb.zip"), "is a hard link")
    assert "NLPHUB_INCOMING_ROOTS" in error and str(incoming) in error
    emb = SparkBuilder(incoming / "team").embeddings("emb")
    stolen = next(p for p in sorted(emb.rglob("*")) if p.is_file() and p.name != "metadata")
    stolen.unlink()
    os.link(outside / "secret_emb" / stolen.relative_to(emb), stolen)
    error = _without(_failed(_upload(wait_job, emb, name="folder"), "is a hard link"), emb)
    assert str(outside) not in error and "secret" not in error, error
    assert _rows(Resource) == []


def test_upload_inside_the_root_still_works(area, worker, wait_job) -> None:
    """The control: the same resource inside the root, as a folder, a zip and a relative path."""
    emb = SparkBuilder(area["incoming"] / "team").embeddings("emb")
    job = _upload(wait_job, emb)
    assert job.state == JobState.SUCCEEDED, job.error
    archive = zip_dir(emb, area["incoming"] / "emb.zip")
    payload = {"path": "emb.zip", "kind": "embeddings", "name": "again", "version": "2"}
    job = wait_job(nlphub.enqueue("nlphub.validate_upload", payload))
    assert job.state == JobState.SUCCEEDED, job.error
    assert archive.exists()
    # The fixture's outside copy is refused as ever: the root is what makes the difference.
    outside = _upload(wait_job, area["outside"] / "secret_emb", name="other")
    _failed(outside, "outside the allowed folders")


# -- rules import --------------------------------------------------------------------------------


def _import(wait_job: Callable[..., Any], path: str | Path, timeout: float = 60.0) -> Any:
    return wait_job(nlphub.enqueue("nlphub.rules_import", {"path": str(path)}), timeout)


def test_rules_import_outside_the_roots_is_refused_alike(area, worker, wait_job) -> None:
    outside = area["outside"]
    errors = [
        _without(_failed(_import(wait_job, path), "outside the allowed folders"), path)
        for path in (outside / "rules.json", outside / "missing.json", "/etc/passwd")
    ]
    assert errors[0] == errors[1] == errors[2], errors
    assert str(area["incoming"]) in errors[0]
    assert _rows(Rule) == []
    # The control: the same file inside the root, named relative to it, is imported.
    (area["incoming"] / "rules.json").write_text(json.dumps(HEIGHT))
    job = _import(wait_job, "rules.json")
    assert job.state == JobState.SUCCEEDED, job.error
    assert [rule.name for rule in _rows(Rule)] == ["height"]


def test_rules_import_through_links_or_dot_dot_is_refused(area, worker, wait_job) -> None:
    incoming, outside = area["incoming"], area["outside"]
    (incoming / "rules.json").symlink_to(outside / "rules.json")
    (incoming / "shared").symlink_to(outside)
    _failed(_import(wait_job, incoming / "rules.json"), "rules.json is a symbolic link")
    _failed(_import(wait_job, "shared/rules.json"), "shared is a symbolic link")
    _failed(_import(wait_job, f"{incoming}/../outside/rules.json"), "'..'")
    assert _rows(Rule) == []


def test_rules_import_of_a_hard_link_to_a_file_elsewhere_is_refused(area, worker, wait_job) -> None:
    incoming, outside = area["incoming"], area["outside"]
    os.link(outside / "rules.json", incoming / "rules.json")
    error = _without(_failed(_import(wait_job, "rules.json"), "is a hard link"), "rules.json")
    assert f"NLPHUB_INCOMING_ROOTS: {incoming}" in error
    assert str(outside) not in error
    assert _rows(Rule) == []


def test_rules_import_refuses_special_files_without_blocking(area, worker, wait_job) -> None:
    """A FIFO would block a plain read forever (and /dev/zero would fill the memory)."""
    os.mkfifo(area["incoming"] / "pipe.json")
    _failed(_import(wait_job, area["incoming"] / "pipe.json", timeout=20), "special file (fifo)")
    assert _rows(Rule) == []


def test_rules_import_size_is_capped_before_reading(area, worker, wait_job) -> None:
    big = area["incoming"] / "big.json"
    with big.open("wb") as f:
        f.truncate(200 * 2**20)  # sparse: 200 MB that take no disk
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        job = _import(wait_job, big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{peak:,} bytes allocated: the file was read"
    _failed(job, "is 200 MB, above the 20 MB limit")


# -- rules export --------------------------------------------------------------------------------


@pytest.fixture
def a_rule(area, worker, wait_job) -> None:
    job = wait_job(nlphub.enqueue("nlphub.rules_import", {"content": json.dumps(HEIGHT)}))
    assert job.state == JobState.SUCCEEDED, job.error


def _export(wait_job: Callable[..., Any], path: str | Path) -> Any:
    return wait_job(nlphub.enqueue("nlphub.rules_export", {"path": str(path)}))


def test_rules_export_outside_the_roots_is_refused(area, a_rule, wait_job) -> None:
    outside = area["outside"]
    (area["exports"] / "shared").symlink_to(outside)
    before = sorted(os.listdir(outside))
    error = _failed(_export(wait_job, outside / "rules.zip"), "outside the allowed folders")
    assert "NLPHUB_EXPORT_ROOTS" in error and str(area["exports"]) in error
    _failed(
        _export(wait_job, area["exports"] / "shared" / "rules.zip"), "shared is a symbolic link"
    )
    _failed(_export(wait_job, f"{area['exports']}/../outside/rules.zip"), "'..'")
    assert sorted(os.listdir(outside)) == before


def test_rules_export_follows_no_link_planted_at_the_temporary_name(area, a_rule, wait_job) -> None:
    exports, victim = area["exports"], area["outside"] / "victim.txt"
    (exports / ".rules.zip.tmp").symlink_to(victim)  # the name the export used to write first
    job = _export(wait_job, exports / "rules.zip")
    assert job.state == JobState.SUCCEEDED, job.error
    assert victim.read_text() == "do not touch"
    assert not (exports / "rules.zip").is_symlink()
    assert zipfile.ZipFile(exports / "rules.zip").namelist() == ["height.json"]


def test_rules_export_does_not_replace_a_link_at_the_target(area, a_rule, wait_job) -> None:
    exports, victim = area["exports"], area["outside"] / "victim.txt"
    (exports / "rules.zip").symlink_to(victim)
    _failed(_export(wait_job, exports / "rules.zip"), "exists and is a symbolic link")
    assert victim.read_text() == "do not touch"
    assert (exports / "rules.zip").is_symlink()
    assert sorted(os.listdir(exports)) == ["rules.zip"]  # no temporary file left

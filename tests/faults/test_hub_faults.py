"""The hub misbehaving during downloads and update checks (issue 7).

A real mirror on 127.0.0.1 (`nlphub.hub.server.MirrorServer`, with its fault knobs), a real worker
(thread pool, in this process) and real Postgres + Redis. The hub is down (connection refused),
slow (read timeouts), answering 500/503, sending garbage (archive bytes, metadata.json) or
cutting transfers short. Each case checks what a user sees (job state, a message naming the hub
URL and the cause), the retries (``job.attempts``, ``job.retry`` audit events), the audit trail,
and that nothing is left half-installed under NLPHUB_HOME.

Cases already covered by tests/integration/test_hub.py are not repeated here: a wrong MD5 in
metadata.json, one cut transfer resumed with ``Range``, a 404, a worker killed mid-download.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from nlphub.hub.mirror import build_mirror
from nlphub.hub.server import MirrorServer
from nlphub.hub.sync import sync_hubs
from nlphub.resources import install_dir
from schemas.db import get_engine
from schemas.models import HubEntryRow, Resource
from schemas.settings import get_settings
from schemas.states import JobState, ResourceState
from tests.integration.conftest import audit_events
from tests.integration.test_hub import _request, _resource, res

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TRIES = 3
"""Attempts a hub task gets in these tests (``max_retries`` lowered from 8 to 2)."""

HUB_TIMEOUT = "1"
"""NLPHUB_HUB_TIMEOUT in these tests: seconds without bytes before a hub counts as down."""


# -- helpers -------------------------------------------------------------------------------------


@dataclass
class Retries:
    """What the patched backoff saw: one delay per scheduled retry; ``hooks[n]`` (if any) runs
    in the worker when retry ``n`` (0-based) is scheduled, i.e. while the job waits for it."""

    delays: list[float] = field(default_factory=list)
    hooks: dict[int, Callable[[], None]] = field(default_factory=dict)


@pytest.fixture
def retries(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Retries]:
    """Short backoff (real jitter, 0.1..0.8 s) and `TRIES` attempts for the hub tasks, and a
    1 s hub timeout. The worker runs in this process, so the patches reach it."""
    import tasks.base
    from workers.app import app

    seen = Retries()
    real = tasks.base.backoff

    def short(attempt: int, **_: Any) -> float:
        delay = real(attempt, base=0.2, cap=0.8)
        seen.delays.append(delay)
        hook = seen.hooks.pop(attempt, None)
        if hook is not None:
            hook()
        return delay

    monkeypatch.setattr(tasks.base, "backoff", short)
    for name in ("nlphub.download", "nlphub.check_updates", "nlphub.hub_sync"):
        monkeypatch.setattr(app.tasks[name], "max_retries", TRIES - 1)
    monkeypatch.setenv("NLPHUB_HUB_TIMEOUT", HUB_TIMEOUT)
    get_settings.cache_clear()
    yield seen


def _archive(server: MirrorServer, name: str, version: str = "5.4.0") -> str:
    """The URL path of a resource's archive on the mirror."""
    found = [p.name for p in server.folder.iterdir() if p.name.startswith(f"{name}_en_{version}_")]
    assert len(found) == 1, found
    return f"/{found[0]}"


def _gets(server: MirrorServer, path: str) -> list[str | None]:
    """The Range header of each GET of ``path``, in order."""
    return [rng for method, p, rng in server.requests if method == "GET" and p == path]


def _leftovers(home: Path) -> list[str]:
    """Anything a download leaves behind when it is not finished: partial archives, staging,
    trash and half-extracted folders (hidden), temporary files; and downloaded archives."""
    found = [
        str(p)
        for p in home.rglob("*")
        if p.name.endswith((".partial", ".tmp"))
        or (p.name.startswith(".") and p.is_relative_to(home / "resources"))
    ]
    downloads = home / "downloads"
    if downloads.is_dir():
        found.extend(str(p) for p in downloads.iterdir())
    return sorted(set(found))


def _not_installed(name: str, version: str = "5.4.0") -> None:
    row = _resource(name)
    assert row.install_path is None
    home = get_settings().home
    assert not install_dir(home / "resources", row.kind, name, "en", version).exists()
    assert _leftovers(home) == []


def _catalog() -> set[str]:
    with Session(get_engine()) as session:
        return {row.archive_url for row in session.exec(select(HubEntryRow)).all()}


def _retry_errors(job_id: uuid.UUID) -> list[str]:
    return [e.details.get("error", "") for e in audit_events(job_id, "job.retry")]


def _check(wait_job: Callable[..., Any]) -> Any:
    return wait_job(nlphub.enqueue("nlphub.check_updates", {"reason": "manual"}), timeout=90)


def _download(wait_job: Callable[..., Any], name: str) -> Any:
    return wait_job(nlphub.enqueue("nlphub.download", {"name": name}), timeout=90)


# -- downloads -----------------------------------------------------------------------------------


def test_hub_down_during_a_download_retries_then_fails_clearly_and_can_be_redownloaded(
    mirror, worker, wait_job, retries
) -> None:
    url = f"{mirror.url}{_archive(mirror, 'glove_100d')}"
    archive, base = url.rsplit("/", 1)[1], mirror.url
    mirror.stop()  # connection refused

    job = _download(wait_job, "glove_100d")

    assert job.state == JobState.FAILED
    assert job.attempts == TRIES
    assert job.error.startswith("download failed: ")
    # the tenant is told the archive, not the hub's address; the resource keeps the URL
    assert archive in job.error and "Connection refused" in job.error
    assert base not in job.error
    errors = _retry_errors(job.id)
    assert len(errors) == TRIES - 1 and len(retries.delays) == TRIES - 1
    assert all(archive in e and "Connection refused" in e for e in errors), errors
    assert not any(base in e for e in errors), errors
    assert len(audit_events(job.id, "job.failed")) == 1
    assert audit_events(job.id, "job.succeeded") == []
    failed = audit_events(job.id, "resource.download_failed")
    assert len(failed) == 1 and url in failed[0].details["reason"]
    row = _resource("glove_100d")
    assert row.state == ResourceState.FAILED and url in (row.error or "")
    _not_installed("glove_100d")

    mirror.start()  # same port: the hub is back
    again = wait_job(_request("glove_100d"), timeout=90)
    assert again.state == JobState.SUCCEEDED, again.error
    assert again.attempts == 1
    assert _resource("glove_100d").state == ResourceState.INSTALLED
    assert _leftovers(get_settings().home) == []


def test_download_waits_out_a_hub_outage(mirror, worker, wait_job, retries) -> None:
    mirror.stop()
    retries.hooks[0] = mirror.start  # the hub comes back while the job waits to retry

    job = _download(wait_job, "glove_100d")

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 2
    [error] = _retry_errors(job.id)
    assert _archive(mirror, "glove_100d")[1:] in error and "Connection refused" in error
    assert _resource("glove_100d").state == ResourceState.INSTALLED
    assert len(audit_events(action="resource.installed")) == 1
    assert _leftovers(get_settings().home) == []


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_retried_and_the_download_succeeds_once_the_hub_recovers(
    mirror, worker, wait_job, retries, status
) -> None:
    path = _archive(mirror, "glove_100d")
    mirror.faults.fail_status = status
    mirror.faults.fail_times[path] = TRIES - 1

    job = _download(wait_job, "glove_100d")

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == TRIES
    assert len(_gets(mirror, path)) == TRIES
    reason = {500: "Internal Server Error", 503: "Service Unavailable"}[status]
    errors = _retry_errors(job.id)
    assert len(errors) == TRIES - 1
    assert all(f"hub answered HTTP {status} {reason} for {path[1:]}" in e for e in errors)
    assert len(audit_events(job.id, "job.succeeded")) == 1
    assert len(audit_events(action="resource.installed")) == 1
    assert _resource("glove_100d").state == ResourceState.INSTALLED
    assert _leftovers(get_settings().home) == []


def test_read_timeout_is_retried_and_the_download_resumes_when_the_hub_speeds_up(
    mirror, worker, wait_job, retries
) -> None:
    path = _archive(mirror, "bert_base_cased")
    mirror.faults.slow_delay = 2.5  # > the 1 s hub timeout, before the first body chunk
    mirror.faults.slow_times[path] = 1

    job = _download(wait_job, "bert_base_cased")

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 2
    [error] = _retry_errors(job.id)
    assert path[1:] in error and "timed out" in error
    assert len(_gets(mirror, path)) == 2
    assert _resource("bert_base_cased").state == ResourceState.INSTALLED
    assert _leftovers(get_settings().home) == []


def test_hub_too_slow_on_every_try_fails_clearly(mirror, worker, wait_job, retries) -> None:
    path = _archive(mirror, "bert_base_cased")
    mirror.faults.slow_delay = 2.5
    mirror.faults.slow_times[path] = TRIES

    job = _download(wait_job, "bert_base_cased")

    assert job.state == JobState.FAILED
    assert job.attempts == TRIES
    assert job.error.startswith("download failed: ")
    assert path[1:] in job.error and "timed out" in job.error
    assert len(_retry_errors(job.id)) == TRIES - 1
    assert _resource("bert_base_cased").state == ResourceState.FAILED
    _not_installed("bert_base_cased")


def test_garbage_bytes_fail_the_checksum_without_retries_and_can_be_redownloaded(
    mirror, worker, wait_job, retries
) -> None:
    path = _archive(mirror, "glove_100d")
    mirror.faults.corrupt.add(path)  # same length, wrong bytes

    job = _download(wait_job, "glove_100d")

    assert job.state == JobState.FAILED
    assert job.attempts == 1  # a wrong file is not a temporary problem
    assert _retry_errors(job.id) == []
    assert f"checksum mismatch for {path[1:]}: hub says MD5 " in job.error
    assert "downloaded file has " in job.error
    assert "checksum mismatch" in (_resource("glove_100d").error or "")
    _not_installed("glove_100d")

    mirror.faults.corrupt.clear()
    again = wait_job(_request("glove_100d"), timeout=90)
    assert again.state == JobState.SUCCEEDED, again.error
    assert _gets(mirror, path) == [None, None]  # nothing of the garbage was reused
    assert _resource("glove_100d").state == ResourceState.INSTALLED
    assert _leftovers(get_settings().home) == []


def test_garbage_in_a_resumed_transfer_is_caught_and_not_reused(
    mirror, worker, wait_job, retries
) -> None:
    path = _archive(mirror, "glove_100d")
    mirror.faults.cut_after_bytes = 100_000
    retries.hooks[0] = lambda: mirror.faults.corrupt.add(path)  # the rest comes back wrong

    job = _download(wait_job, "glove_100d")

    assert job.state == JobState.FAILED
    assert job.attempts == 2
    assert _gets(mirror, path) == [None, "bytes=100000-"]
    assert f"checksum mismatch for {path[1:]}" in job.error
    _not_installed("glove_100d")

    mirror.faults.corrupt.clear()
    again = wait_job(_request("glove_100d"), timeout=90)
    assert again.state == JobState.SUCCEEDED, again.error
    assert _gets(mirror, path)[-1] is None  # started over: the bad partial was discarded
    [downloaded] = audit_events(again.id, "resource.downloaded")
    assert downloaded.details["resumed_from"] == 0


def test_partial_is_kept_across_a_5xx_and_resumed_after_it(
    mirror, worker, wait_job, retries
) -> None:
    path = _archive(mirror, "glove_100d")
    mirror.faults.cut_after_bytes = 100_000
    mirror.faults.fail_status = 503
    retries.hooks[0] = lambda: mirror.faults.fail_times.update({path: 1})

    job = _download(wait_job, "glove_100d")

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 3
    assert _gets(mirror, path) == [None, "bytes=100000-", "bytes=100000-"]
    errors = _retry_errors(job.id)
    assert "failed after 100000 bytes" in errors[0]
    assert "hub answered HTTP 503 Service Unavailable" in errors[1]
    [downloaded] = audit_events(job.id, "resource.downloaded")
    assert downloaded.details["resumed_from"] == 100_000
    assert _resource("glove_100d").state == ResourceState.INSTALLED
    assert _leftovers(get_settings().home) == []


def test_transfer_cut_on_every_try_gives_up_and_removes_the_partial(
    mirror, worker, wait_job, retries
) -> None:
    path = _archive(mirror, "slow_emb")

    def cut() -> None:
        mirror.faults.cut_after_bytes = 50_000

    cut()
    retries.hooks.update(dict.fromkeys(range(TRIES - 1), cut))

    job = _download(wait_job, "slow_emb")

    assert job.state == JobState.FAILED
    assert job.attempts == TRIES
    assert _gets(mirror, path) == [None, "bytes=50000-", "bytes=100000-"]
    assert job.error.startswith(f"download failed: download of {path[1:]} failed after ")
    assert "150000 bytes" in job.error
    _not_installed("slow_emb")

    again = wait_job(_request("slow_emb"), timeout=90)
    assert again.state == JobState.SUCCEEDED, again.error
    assert _gets(mirror, path)[-1] is None
    assert _leftovers(get_settings().home) == []


def test_archive_that_is_not_a_zip_fails_verification_and_leaves_nothing(
    mirror, worker, wait_job, retries
) -> None:
    """The hub's own file is garbage (its MD5 matches what metadata.json says)."""
    [entry] = build_mirror(mirror.folder, [res("junk_emb", "WordEmbeddingsModel")])
    archive = mirror.folder / entry.archive_name
    junk = hashlib.sha256(b"junk").digest() * 1000
    archive.write_bytes(junk)
    metadata = mirror.folder / "metadata.json"
    lines = metadata.read_text().splitlines()
    line = json.loads(lines[-1])
    line.update(checksum=hashlib.md5(junk).hexdigest().upper(), size=len(junk))
    metadata.write_text("\n".join([*lines[:-1], json.dumps(line)]) + "\n")
    assert not sync_hubs("test")["errors"]

    job = _download(wait_job, "junk_emb")

    assert job.state == JobState.FAILED
    assert job.attempts == 1
    assert job.error.startswith(
        f"the archive of junk_emb/en/5.4.0 from {entry.archive_name} is not a "
        "usable resource: not a valid zip archive"
    ), job.error
    row = _resource("junk_emb")  # the operator's view keeps the hub's URL
    assert row.state == ResourceState.FAILED
    assert row.error == job.error.replace(entry.archive_name, f"{mirror.url}/{entry.archive_name}")
    assert len(audit_events(job.id, "resource.downloaded")) == 1  # the bytes were the hub's
    assert len(audit_events(job.id, "resource.download_failed")) == 1
    _not_installed("junk_emb")


# -- update checks -------------------------------------------------------------------------------
#
# glove_100d 5.4.0 is installed and the hub publishes 5.4.5 (synced: the last good catalog).
# Where a fault hits a new copy of metadata.json, the hub has just published 5.5.0 too (a changed
# file: no 304), so keeping the last good catalog means finding 5.4.5, not 5.5.0.


@pytest.fixture
def installed_glove(mirror, worker, wait_job) -> Resource:
    job = _download(wait_job, "glove_100d")
    assert job.state == JobState.SUCCEEDED, job.error
    _publish(mirror, "5.4.5")
    assert not sync_hubs("test")["errors"]
    return _resource("glove_100d")


def _publish(server: MirrorServer, version: str) -> None:
    build_mirror(server.folder, [res("glove_100d", "WordEmbeddingsModel", version)])


def _found(job: Any) -> list[str]:
    return [notice["new"] for notice in job.result["new"]]


def _last_checked() -> dict[str, Any]:
    events = audit_events(action="update.checked")
    assert events, "no update.checked audit event"
    return events[-1].details


def test_update_check_with_the_hub_down_uses_the_last_catalog_and_says_so(
    mirror, installed_glove, wait_job, retries
) -> None:
    before = _catalog()
    url = mirror.url
    mirror.stop()

    job = _check(wait_job)

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 1
    assert _found(job) == ["5.4.5"]  # from the last good catalog
    errors = job.result["hub_errors"]
    assert len(errors) == 2  # the open folder and the licensed one
    for folder, error in zip([url, f"{url}/clinical/models"], errors, strict=True):
        assert error.startswith(f"hub {folder} is unreachable: ")
        assert "Connection refused" in error and "; using the copy from " in error
    assert _last_checked()["hub_errors"] == errors
    assert audit_events(action="hub.synced")[-1].details["errors"] == errors
    assert _catalog() == before
    assert len(audit_events(action="update.found")) == 1


def test_update_check_without_any_copy_retries_then_gives_up_clearly(
    mirror, installed_glove, wait_job, retries
) -> None:
    before = _catalog()
    shutil.rmtree(get_settings().home / "cache" / "hub")
    url = mirror.url
    mirror.stop()

    job = _check(wait_job)

    assert job.state == JobState.FAILED
    assert job.attempts == TRIES
    assert job.error.startswith(f"gave up after {TRIES} attempts: hub {url} is unreachable: ")
    assert "Connection refused" in job.error and "; no earlier copy" in job.error
    assert f"hub {url}/clinical/models is unreachable: " in job.error
    errors = _retry_errors(job.id)
    assert len(errors) == TRIES - 1 and all("; no earlier copy" in e for e in errors)
    assert _catalog() == before  # the catalog in the database is untouched
    assert audit_events(action="update.found") == []
    assert audit_events(action="update.checked") == []


def test_update_check_5xx_without_a_copy_is_retried_until_the_hub_recovers(
    mirror, installed_glove, wait_job, retries
) -> None:
    shutil.rmtree(get_settings().home / "cache" / "hub")
    mirror.faults.fail_status = 503
    for path in ("/metadata.json", "/clinical/models/metadata.json"):
        mirror.faults.fail_times[path] = TRIES - 1

    job = _check(wait_job)

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == TRIES
    assert job.result["hub_errors"] == []
    assert _found(job) == ["5.4.5"]
    errors = _retry_errors(job.id)
    assert len(errors) == TRIES - 1
    assert all(
        f"hub {mirror.url} is unreachable: HTTP 503 Service Unavailable; no earlier copy" in e
        for e in errors
    ), errors


def test_update_check_with_a_slow_hub_times_out_and_keeps_the_catalog(
    mirror, installed_glove, wait_job, retries
) -> None:
    before = _catalog()
    _publish(mirror, "5.5.0")
    mirror.faults.slow_delay = 2.5  # > the 1 s hub timeout
    mirror.faults.slow_times["/metadata.json"] = 1

    job = _check(wait_job)

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 1
    [error] = job.result["hub_errors"]
    assert error.startswith(f"hub {mirror.url} is unreachable: ")
    assert "timed out" in error and "; using the copy from " in error
    assert _found(job) == ["5.4.5"]
    assert _catalog() == before

    again = _check(wait_job)
    assert again.state == JobState.SUCCEEDED and again.result["hub_errors"] == []
    assert _found(again) == ["5.5.0"]
    assert "hub_errors" not in _last_checked()


GARBAGE: dict[str, tuple[bytes | None, str]] = {
    "flipped bytes": (None, "sent no usable metadata.json: metadata.json is not UTF-8 text"),
    "an HTML page": (
        b"<html>\n<head><title>Proxy</title></head>\n<body>Please log in</body>\n</html>\n",
        "sent no usable metadata.json: none of its 4 non-blank lines is a hub entry "
        "(first problem: ",
    ),
    "JSON that is not hub entries": (
        b'{"error": "AccessDenied"}\n[1, 2, 3]\n',
        "sent no usable metadata.json: none of its 2 non-blank lines is a hub entry",
    ),
    "an empty body": (b"", "sent no usable metadata.json: metadata.json is empty"),
    "a truncated transfer": (None, "is unreachable: "),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_metadata_keeps_the_last_good_catalog(
    mirror, installed_glove, wait_job, retries, kind
) -> None:
    before = _catalog()
    _publish(mirror, "5.5.0")
    body, message = GARBAGE[kind]
    if kind == "flipped bytes":
        mirror.faults.corrupt.add("/metadata.json")
    elif kind == "a truncated transfer":
        mirror.faults.cut_path = "/metadata.json"
        mirror.faults.cut_after_bytes = (mirror.folder / "metadata.json").stat().st_size // 2
    else:
        assert body is not None
        mirror.faults.body_for["/metadata.json"] = body

    job = _check(wait_job)

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 1
    [error] = job.result["hub_errors"]
    assert error.startswith(f"hub {mirror.url} ") and message in error, error
    assert "; using the copy from " in error
    assert _found(job) == ["5.4.5"]
    assert _catalog() == before  # not half a catalog, not an empty one
    assert _last_checked()["hub_errors"] == [error]
    assert audit_events(action="hub.synced")[-1].details["errors"] == [error]

    mirror.faults.reset()
    again = _check(wait_job)
    assert again.state == JobState.SUCCEEDED and again.result["hub_errors"] == []
    assert _found(again) == ["5.5.0"]
    assert _catalog() > before


def test_malformed_lines_are_named_and_the_good_ones_still_used(
    mirror, installed_glove, wait_job, retries
) -> None:
    _publish(mirror, "5.5.0")
    metadata = mirror.folder / "metadata.json"
    good = len(metadata.read_text().splitlines())
    with metadata.open("a") as fh:
        fh.write('{"name": "broken", "language": \n')  # cut mid-line
        fh.write("\x00\x00 not json\n")
        fh.write('{"name": "half", "language": "en"}\n')

    job = _check(wait_job)

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["hub_errors"] == []
    assert _found(job) == ["5.5.0"]  # the good lines were read
    warnings = job.result["hub_warnings"]
    assert len(warnings) == 3, warnings
    expected = ("invalid JSON", "invalid JSON", "missing field 'time'")
    for n, (warning, problem) in enumerate(zip(warnings, expected, strict=True), start=1):
        assert warning.startswith(f"{mirror.url}/metadata.json line {good + n}: {problem}"), warning
    assert _last_checked()["hub_warnings"] == warnings
    synced = audit_events(action="hub.synced")[-1].details
    assert synced["malformed_lines"] == 3 and synced["warnings"] == warnings
    assert f"{mirror.url}{_archive(mirror, 'glove_100d', '5.5.0')}" in _catalog()
    with Session(get_engine()) as session:
        glove = session.exec(select(Resource).where(Resource.name == "glove_100d")).one()
        assert glove.state == ResourceState.INSTALLED and glove.version == "5.4.0"

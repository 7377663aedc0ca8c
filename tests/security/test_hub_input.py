"""Security (f, hub part): a hub's metadata.json and archives are untrusted input.

Real mirrors (a ``file://`` folder, or `MirrorServer` on 127.0.0.1), a real worker, real
Postgres + Redis. A hub entry name with ``../`` or ``?`` must not make a download read a file
the catalog does not name, above all one outside the mirror; a ``file://`` archive is read only
when its resolved path is inside the mirror folder; a download stops at the size the hub
declares, or at ``NLPHUB_MAX_DOWNLOAD_BYTES`` without one, and leaves no partial file.

Each test fails with its fix removed (checked by disabling each fix in turn):

* the hub's naming in `nlphub.hub.metadata` (``check_hub_name``): the ``../`` and ``?`` tests;
* the ``file://`` confinement in `nlphub.hub.local` (``file_path`` / ``open_source``): the
  stale-row and symbolic-link tests;
* the download limit (``_Limits`` / ``_check_room``): the endless-body test;
* the stop at the declared size (``_check_total`` / ``_check_room``): the longer-body tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import nlphub
from nlphub.errors import NotFound
from nlphub.hub.metadata import HubEntry
from nlphub.hub.mirror import build_mirror
from nlphub.hub.server import MirrorServer
from nlphub.hub.service import request_download, row_from_entry
from nlphub.hub.sync import sync_hubs
from schemas.db import get_engine
from schemas.models import AuditEvent, HubEntryRow, Resource, utcnow
from schemas.settings import SettingsError, get_settings, load_settings
from schemas.states import JobState, ResourceState
from tests.integration.test_hub import LIBS, res

pytestmark = pytest.mark.integration

MAX_BYTES = 1 << 20
"""NLPHUB_MAX_DOWNLOAD_BYTES in these tests (1 MiB)."""
ENDLESS = 32 << 20
"""Bytes an "endless" body sends before the server gives up (only so a broken fix ends)."""


# -- helpers ---------------------------------------------------------------------------------------


@dataclass
class Hub:
    """A mirror folder, a folder next to it (outside it) holding archives, and the hub's URL."""

    mirror: Path
    outside: Path
    url: str
    server: MirrorServer | None = None

    @property
    def metadata(self) -> Path:
        return self.mirror / "metadata.json"


def _configure(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("NLPHUB_HUB_URLS", url)
    monkeypatch.setenv("NLPHUB_LICENSED_HUB_URLS", "")
    monkeypatch.setenv("NLPHUB_LIBRARY_VERSIONS", LIBS)
    monkeypatch.setenv("NLPHUB_MAX_DOWNLOAD_BYTES", str(MAX_BYTES))
    get_settings.cache_clear()


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    mirror, outside = tmp_path / "hub" / "models", tmp_path / "hub" / "outside"
    build_mirror(mirror, [res("good_emb", "WordEmbeddingsModel")])
    # Real, valid archives outside the mirror: a download that reached one would install it.
    build_mirror(
        outside,
        [res("secret_emb", "WordEmbeddingsModel"), res("linked_emb", "WordEmbeddingsModel")],
    )
    return mirror, outside


@pytest.fixture
def file_hub(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    mirror, outside = _folders(tmp_path)
    _configure(monkeypatch, mirror.as_uri())
    return Hub(mirror, outside, mirror.as_uri())


@pytest.fixture
def http_hub(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    mirror, outside = _folders(tmp_path)
    with MirrorServer(mirror) as server:
        _configure(monkeypatch, server.url)
        yield Hub(mirror, outside, server.url, server)


def _line_of(metadata: Path, name: str) -> dict[str, Any]:
    for text in metadata.read_text().splitlines():
        data = json.loads(text)
        if data["name"] == name:
            return data
    raise AssertionError(f"{name} is not in {metadata}")


def _append(metadata: Path, line: dict[str, Any]) -> int:
    """Append a line to metadata.json; its 1-based line number."""
    lines = metadata.read_text().splitlines()
    metadata.write_text("\n".join([*lines, json.dumps(line)]) + "\n")
    return len(lines) + 1


def _edit(metadata: Path, name: str, **changes: Any) -> HubEntry:
    """Change the line of ``name`` (a None value removes the key); its entry."""
    lines = [json.loads(text) for text in metadata.read_text().splitlines()]
    [found] = [line for line in lines if line["name"] == name]
    for key, value in changes.items():
        if value is None:
            found.pop(key, None)
        else:
            found[key] = value
    metadata.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return HubEntry.model_validate(found)


def _sync() -> dict[str, Any]:
    out = sync_hubs("test")
    assert not out["errors"], out
    return out


def _catalog_names() -> set[str]:
    with Session(get_engine()) as session:
        return {row.name for row in session.exec(select(HubEntryRow)).all()}


def _download(wait_job: Callable[..., Any], name: str) -> Any:
    job = wait_job(nlphub.enqueue("nlphub.download", {"name": name}), timeout=90)
    assert job.state == JobState.FAILED, job
    assert job.attempts == 1  # permanent: no retries
    return job


def _no_trace(name: str) -> None:
    """The download failed and left nothing: no install, no partial, no archive, no staging."""
    with Session(get_engine()) as session:
        row = session.exec(select(Resource).where(Resource.name == name)).one()
        assert row.state == ResourceState.FAILED
        assert row.install_path is None
        downloaded = session.exec(
            select(AuditEvent).where(AuditEvent.action == "resource.downloaded")
        ).all()
        assert downloaded == []
    home = get_settings().home
    left = [
        str(p)
        for p in home.rglob("*")
        if p.name.endswith(".partial") or p.name.startswith((".staging-", ".trash-"))
    ]
    assert left == []
    downloads = home / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []
    assert not [p for p in (home / "resources").rglob("*") if p.is_file()]


# -- names: ../ and ? ------------------------------------------------------------------------------


def test_a_dotdot_name_is_skipped_and_nothing_outside_the_mirror_is_read(
    file_hub: Hub,
) -> None:
    # The line of a real archive outside the mirror, renamed to reach it from the mirror.
    line = _line_of(file_hub.outside / "metadata.json", "secret_emb")
    number = _append(file_hub.metadata, {**line, "name": "../outside/secret_emb"})

    out = _sync()

    assert out["warnings"] == [
        f"{file_hub.url}/metadata.json line {number}: bad field 'name': "
        "'../outside/secret_emb' does not follow the hub's naming "
        "(letters, digits, '_', '.' and '-' only)"
    ]
    assert _catalog_names() == {"good_emb"}
    with Session(get_engine()) as session, pytest.raises(NotFound, match="no resource named"):
        request_download(
            session, get_settings(), name="../outside/secret_emb", requested_by="mallory"
        )
    with Session(get_engine()) as session:
        assert session.exec(select(Resource)).all() == []


def test_a_question_mark_name_is_skipped_and_the_file_it_hides_is_not_fetched(
    http_hub: Hub,
) -> None:
    # "?" would end the URL's path: the request would fetch a file the catalog never names.
    [hidden] = build_mirror(http_hub.outside, [res("hidden_emb", "WordEmbeddingsModel")])
    (http_hub.mirror / hidden.archive_name).write_bytes(
        (http_hub.outside / hidden.archive_name).read_bytes()
    )
    line = _line_of(http_hub.outside / "metadata.json", "hidden_emb")
    name = f"{hidden.archive_name}?"
    number = _append(http_hub.metadata, {**line, "name": name})

    out = _sync()

    assert len(out["warnings"]) == 1
    assert out["warnings"][0].startswith(
        f"{http_hub.url}/metadata.json line {number}: bad field 'name': {name!r} does not "
        "follow the hub's naming"
    )
    assert _catalog_names() == {"good_emb"}
    with Session(get_engine()) as session, pytest.raises(NotFound):
        request_download(session, get_settings(), name=name, requested_by="mallory")
    assert http_hub.server is not None
    assert [p for m, p, _ in http_hub.server.requests if m == "GET"] == ["/metadata.json"]


# -- file:// confinement ---------------------------------------------------------------------------


def _stale_row(hub: Hub) -> str:
    """A catalog row whose archive URL leaves the mirror (synced before names were checked)."""
    secret = HubEntry.model_validate(_line_of(hub.outside / "metadata.json", "secret_emb"))
    row = row_from_entry(secret.model_copy(update={"name": "stale_emb"}), hub.url, utcnow())
    url = f"{hub.url}/../outside/{secret.archive_name}"
    row.archive_url = url
    with Session(get_engine()) as session:
        session.add(row)
        session.commit()
    return url


def _symlinked(hub: Hub) -> str:
    """A well-named mirror entry whose archive is a symbolic link to a file outside the mirror."""
    line = _line_of(hub.outside / "metadata.json", "linked_emb")
    _append(hub.metadata, line)
    entry = HubEntry.model_validate(line)
    (hub.mirror / entry.archive_name).symlink_to(hub.outside / entry.archive_name)
    _sync()
    return f"{hub.url}/{entry.archive_name}"


@pytest.mark.parametrize(("name", "make"), [("stale_emb", _stale_row), ("linked_emb", _symlinked)])
def test_a_file_archive_outside_the_mirror_is_refused_unread(
    file_hub: Hub,
    worker: Any,
    wait_job: Callable[..., Any],
    name: str,
    make: Callable[[Hub], str],
) -> None:
    _sync()
    url = make(file_hub)

    job = _download(wait_job, name)

    archive = url.rsplit("/", 1)[1]  # the tenant is told the archive, not the hub's folder
    assert job.error == (
        f"refused to read {archive}: a hub archive must be a file inside its hub folder"
    )
    assert str(file_hub.outside) not in job.error  # never where a link leads
    _no_trace(name)


# -- sizes -----------------------------------------------------------------------------------------


def test_an_endless_body_without_a_declared_size_stops_at_the_limit(
    http_hub: Hub, worker: Any, wait_job: Callable[..., Any]
) -> None:
    [entry] = build_mirror(http_hub.mirror, [res("endless_emb", "WordEmbeddingsModel")])
    _edit(http_hub.metadata, "endless_emb", size=None, checksum="")
    assert http_hub.server is not None
    http_hub.server.faults.endless_for[f"/{entry.archive_name}"] = ENDLESS
    _sync()

    job = _download(wait_job, "endless_emb")

    assert job.error == (
        f"download of {entry.archive_name} stopped: the hub declares no size "
        "for this archive and it is larger than the download limit of 1.0 MiB "
        "(NLPHUB_MAX_DOWNLOAD_BYTES)"
    )
    _no_trace("endless_emb")


@pytest.mark.parametrize("how", ["no Content-Length", "a longer Content-Length"])
def test_a_body_longer_than_the_declared_size_fails_as_corrupted(
    http_hub: Hub, worker: Any, wait_job: Callable[..., Any], how: str
) -> None:
    [entry] = build_mirror(http_hub.mirror, [res("long_emb", "WordEmbeddingsModel")])
    assert entry.size is not None
    archive = http_hub.mirror / entry.archive_name
    assert http_hub.server is not None
    if how == "no Content-Length":
        http_hub.server.faults.endless_for[f"/{entry.archive_name}"] = ENDLESS
        problem = f"it is longer than the {entry.size} bytes the hub declares"
    else:
        with archive.open("ab") as more:
            more.write(b"\0" * 100_000)
        problem = f"it is {entry.size + 100_000} bytes but the hub says {entry.size}"
    _sync()

    job = _download(wait_job, "long_emb")

    assert job.error == f"the archive at {entry.archive_name} is corrupted: {problem}"
    _no_trace("long_emb")


def test_the_limit_is_a_setting_with_a_sane_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path))
    monkeypatch.delenv("NLPHUB_MAX_DOWNLOAD_BYTES", raising=False)
    assert load_settings().max_download_bytes == 50 * (1 << 30)
    monkeypatch.setenv("NLPHUB_MAX_DOWNLOAD_BYTES", "0")
    with pytest.raises(SettingsError, match="NLPHUB_MAX_DOWNLOAD_BYTES"):
        load_settings()

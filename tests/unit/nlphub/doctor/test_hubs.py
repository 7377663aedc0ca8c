"""Unit tests for nlphub.doctor.hubs: the hub verdicts, and probing file:// and HTTP folders."""

from __future__ import annotations

from pathlib import Path

from nlphub.doctor.core import Context, Status
from nlphub.doctor.hubs import hubs_check, judge_hub, probe_hub
from nlphub.hub.catalog import HubFolder
from nlphub.hub.server import Faults, MirrorServer
from schemas.settings import Settings
from workers.embedded import free_port


def test_hub_verdicts() -> None:
    folder = HubFolder("https://hub.example/models")
    assert judge_hub(folder, status=200).status == Status.OK
    missing = judge_hub(folder, status=404)
    assert missing.status == Status.FAIL
    assert missing.name == "hub: https://hub.example/models"
    assert missing.summary == "metadata.json answered HTTP 404"
    down = judge_hub(folder, error="Name or service not known")
    assert down.status == Status.FAIL
    assert "last good catalog stays in use" in down.fix


def test_file_folders(tmp_path: Path) -> None:
    assert probe_hub(HubFolder(tmp_path.as_uri()), 1).status == Status.FAIL
    (tmp_path / "metadata.json").write_text("")
    assert probe_hub(HubFolder(tmp_path.as_uri()), 1).status == Status.OK


def test_http_folders_each_with_its_own_line(tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text("")
    (tmp_path / "other").mkdir()
    closed = f"http://127.0.0.1:{free_port()}"
    with MirrorServer(tmp_path, faults=Faults()) as server:
        url = server.url
        settings = Settings(home=tmp_path / "home", hub_urls=[url, f"{url}/other", closed])
        found = hubs_check(Context(settings, timeout=2))
        assert ("HEAD", "/metadata.json", None) in server.faults.requests
    assert [(f.name, f.status) for f in found] == [
        (f"hub: {url}", Status.OK),
        (f"hub: {url}/other", Status.FAIL),
        (f"hub: {closed}", Status.FAIL),
    ]
    assert found[1].summary == "metadata.json answered HTTP 404"
    assert "unreachable" in found[2].summary

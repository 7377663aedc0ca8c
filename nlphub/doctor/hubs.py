"""The doctor's hub check: every configured hub folder's ``metadata.json`` answers (HEAD, or a
GET whose body is not read when the server refuses HEAD; a ``file://`` folder's file exists and
is readable). All folders are asked at once, each within the per-check timeout."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from nlphub.doctor.core import Context, Finding, fail, ok, one_line
from nlphub.hub.catalog import HubFolder, folders_from_settings

__all__ = ["hubs_check", "judge_hub", "probe_hub"]

_FIX = (
    "check the network path to it (proxy, firewall) or correct NLPHUB_HUB_URLS / "
    "NLPHUB_LICENSED_HUB_URLS; meanwhile its last good catalog stays in use"
)


def judge_hub(folder: HubFolder, *, status: int | None = None, error: str | None = None) -> Finding:
    """Reachable: HTTP 200 (or a readable file); anything else names what came back."""
    name = f"hub: {folder.url}"
    if error is not None:
        return fail("hubs", f"metadata.json unreachable: {error}", _FIX, name=name)
    if status is not None and status != 200:
        return fail(
            "hubs",
            f"metadata.json answered HTTP {status}",
            "is it a hub folder (with metadata.json)? correct the URL, or see the server",
            name=name,
        )
    return ok("hubs", f"metadata.json answers ({folder.edition})", name=name)


def probe_hub(folder: HubFolder, timeout: float) -> Finding:
    """Ask `folder` for its metadata.json, at most `timeout` seconds per request."""
    import httpx

    if folder.url.startswith("file://"):
        path = Path(url2pathname(unquote(urlparse(folder.metadata_url).path)))
        if not path.is_file():
            return judge_hub(folder, error=f"{path} does not exist")
        if not os.access(path, os.R_OK):
            return judge_hub(folder, error=f"{path} is not readable")
        return judge_hub(folder, status=200)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            reply = client.head(folder.metadata_url)
            if reply.status_code in (403, 405, 501):  # some servers refuse HEAD: GET, unread
                with client.stream("GET", folder.metadata_url) as streamed:
                    return judge_hub(folder, status=streamed.status_code)
    except httpx.HTTPError as exc:
        return judge_hub(folder, error=one_line(exc) or type(exc).__name__)
    return judge_hub(folder, status=reply.status_code)


def hubs_check(ctx: Context) -> list[Finding]:
    try:
        folders = folders_from_settings(ctx.settings)
    except ValueError as exc:
        return [fail("hubs", f"NLPHUB_LICENSED_HUB_URLS: {exc}", "correct the setting")]
    if not folders:
        return [ok("hubs", "no hub folder configured")]
    wait = max(0.5, ctx.timeout * 0.8)  # answer inside the check's own budget
    found: dict[int, Finding] = {}
    # daemon threads: a server that drips bytes cannot keep the doctor from exiting
    threads = [
        threading.Thread(
            target=lambda i=i, f=f: found.__setitem__(i, probe_hub(f, wait)), daemon=True
        )
        for i, f in enumerate(folders)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + ctx.timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [
        found.get(i) or judge_hub(f, error=f"no answer within {wait:g} s")
        for i, f in enumerate(folders)
    ]

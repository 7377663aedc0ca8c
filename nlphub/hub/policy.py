"""The hub's rules that an upload must pass too: licences and the free-space rule.

`nlphub.hub` depends on `nlphub.uploads` (it unpacks and validates downloads with it), so the
upload service cannot import the hub; it asks for these two checks as an `UploadGuards`, which
`upload_guards` builds from the settings with the hub's own functions (`licence_refusal`,
`check_free_space`): one rule for downloads and uploads alike.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nlphub.hub.fetch_errors import NotEnoughSpace
from nlphub.hub.licence import (
    Licence,
    LicenceError,
    licence_refusal,
    load_licence,
    unusable_licence,
)
from nlphub.hub.space import check_free_space, human_size
from nlphub.uploads.service import UploadGuards
from schemas.editions import OPEN_SOURCE
from schemas.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["upload_guards"]


def upload_guards(settings: Settings) -> UploadGuards:
    """The licence and free-space checks `nlphub.uploads.service.accept_upload` applies."""
    loaded: list[Licence | None] = []

    def licence_check(edition: str) -> str | None:
        if edition == OPEN_SOURCE:
            return None
        if not loaded:
            try:
                loaded.append(load_licence(settings.license_file))
            except LicenceError as exc:
                return unusable_licence(edition, exc)  # the reason is logged, not told
        return licence_refusal(edition, loaded[0])  # nothing of the licence's contents

    def space_check(path: Path, size: int) -> str | None:
        try:
            check_free_space(path, size, what="this upload")
        except NotEnoughSpace as exc:
            # Not check_free_space's own message: it names the server folder.
            return (
                f"not enough free disk space for this upload: it unpacks to {human_size(size)} "
                f"and needs {human_size(exc.needed)} free (twice its size), "
                f"{human_size(exc.available)} available"
            )
        return None

    return UploadGuards(licence_problem=licence_check, space_problem=space_check)

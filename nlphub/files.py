"""Removing what a failed or replaced install leaves behind. Pure: the file system only.

Its own module so that both the archive checks (`nlphub.uploads.archive`) and the resource
folders (`nlphub.resources`) use one definition without importing each other.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def remove_path(path: Path) -> None:
    """Remove a folder (with its contents), a file or a link, if there is one (a link to a
    folder is unlinked, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

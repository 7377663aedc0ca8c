"""Small file-system helpers. Pure: the file system only.

- `remove_path`: removing what a failed or replaced install leaves behind, in its own module so
  that both the archive checks (`nlphub.uploads.archive`) and the resource folders
  (`nlphub.resources`) use one definition without importing each other.
- `stored_secret`: a generated secret kept in a private file, which several processes (workers,
  Flower) may ask for at once.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path


def remove_path(path: Path) -> None:
    """Remove a folder (with its contents), a file or a link, if there is one (a link to a
    folder is unlinked, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def stored_secret(path: Path, nbytes: int = 32) -> str:
    """The secret kept in `path`, made (random, `nbytes` of entropy) on first use; the file is
    its owner's only (0600), as is an existing one.

    Safe when processes ask at once: a new secret is written whole to a private temporary file,
    then linked to `path` (which fails if another process linked its own first: theirs is read
    and kept), so every process gets the same secret and none reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            secret = path.read_text().strip()
        except FileNotFoundError:
            found = False
        else:
            os.chmod(path, 0o600)
            if secret:
                return secret
            found = True  # empty: left by a crash while it was written (not by this function)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
        try:
            secret = secrets.token_urlsafe(nbytes)
            with os.fdopen(fd, "w") as fh:
                fh.write(secret + "\n")
            if found:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)
            return path.read_text().strip()
        except FileExistsError:
            continue  # another process made it first: read theirs
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise OSError(f"could not make the secret in {path}")  # pragma: no cover

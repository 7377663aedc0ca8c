"""Paths named in task payloads: confined to configured roots, never through a symbolic link.

Callers who enqueue jobs are tenants: a path in a payload (an upload, a rules file to import, a
rules export to write) is untrusted. Every such path goes through this module, which:

- accepts only paths inside the configured roots (`Roots`: ``NLPHUB_INCOMING_ROOTS`` to read
  from, ``NLPHUB_EXPORT_ROOTS`` to write into). The decision is made on the path's text alone,
  before the file system is touched, so a path outside gets the same refusal, naming the
  allowed roots, whether or not anything exists there. ``..`` segments are refused; a relative
  path is taken inside the first root. A root itself may be reached through symbolic links
  (it is the administrator's choice); below it, nothing is;
- opens every component below the root with ``O_NOFOLLOW`` relative to its parent's
  descriptor (``openat``), so a symbolic link anywhere below the root (the path itself or a
  folder on the way) is refused, and a link swapped in after the check is never followed: what
  is read afterwards is read through the descriptor (`Opened.fd`, `Opened.path`);
- accepts only regular files and folders (a FIFO is opened without blocking and refused), and
  checks sizes before reading anything (`read_confined`);
- reads no regular file with more than one name (``st_nlink > 1``, checked on the opened
  descriptor): a hard link made inside a root to a file elsewhere (another resource's
  archive, a secret) would otherwise be read as if it were there;
- copies folders without following links (`tree_size`, `copy_tree`: every entry opened
  relative to its parent's descriptor; a hard-linked file is not copied either);
- writes (`write_confined`) by creating a temporary file in the target folder with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a planted link at its name is never followed), then
  renaming it over the target (``rename`` replaces a name, it does not follow it); a target that
  exists and is not a regular file is refused.

Messages (`PathRefused`) quote the caller's own path and the allowed roots, never names from
other server folders. Pure: the standard library, `nlphub.errors` and the settings only (no
database, broker or network; `lint-imports` checks it). POSIX only (``openat`` and
``O_NOFOLLOW``), like the workers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from nlphub.errors import Refused
from schemas.settings import Settings

__all__ = [
    "Opened",
    "PathRefused",
    "Roots",
    "copy_tree",
    "export_roots",
    "fd_path",
    "incoming_roots",
    "open_confined",
    "read_confined",
    "tree_size",
    "write_confined",
]

_CHUNK = 1 << 20
_MAX_DEPTH = 64
"""Deepest folder nesting accepted in an uploaded folder (one open descriptor per level)."""
_MAX_SHOWN = 200
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_OPEN_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused once fstat shows it).
_OPEN_ANY = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_LINK_ERRNOS = frozenset({errno.ELOOP, errno.EMLINK, errno.ENOTDIR})
_HARD_LINK = "is a hard link (a file with more than one name); copy the file into the folder"
_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a special file (fifo)"),
    (stat.S_ISCHR, "a special file (character device)"),
    (stat.S_ISBLK, "a special file (block device)"),
    (stat.S_ISSOCK, "a special file (socket)"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISREG, "a regular file"),
)


class PathRefused(Refused):
    """A path from a payload is refused. The message names the problem; about a path outside
    the roots it says only that it is outside them (and which the roots are)."""


@dataclass(frozen=True)
class Roots:
    """The folders a kind of path must lie in, and the setting that lists them (for messages)."""

    folders: tuple[Path, ...]
    setting: str

    def __post_init__(self) -> None:
        if not self.folders:
            raise ValueError(f"{self.setting} lists no folder")

    @property
    def listed(self) -> str:
        return ", ".join(str(folder) for folder in self.folders)


def incoming_roots(settings: Settings) -> Roots:
    """Where uploads and rules files may be read from (``NLPHUB_INCOMING_ROOTS``)."""
    return Roots(tuple(settings.incoming_roots), "NLPHUB_INCOMING_ROOTS")


def export_roots(settings: Settings) -> Roots:
    """Where rules exports may be written (``NLPHUB_EXPORT_ROOTS``)."""
    return Roots(tuple(settings.export_roots), "NLPHUB_EXPORT_ROOTS")


def _shown(path: str) -> str:
    """The caller's path, quoted, printable and bounded, for messages."""
    text = path if len(path) <= _MAX_SHOWN else path[:_MAX_SHOWN] + "..."
    return repr(text)


def _size(n: int) -> str:
    """``20 * 2**20`` -> ``"20 MB"``, ``1536`` -> ``"1.5 KB"`` (binary multiples)."""
    if n < 1024:
        return f"{n:,} bytes"
    value, unit = n / 1024, "KB"
    for bigger in ("MB", "GB", "TB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _kind(mode: int) -> str:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a special file"


@dataclass(frozen=True)
class _Located:
    root: Path
    """The root's real path (its own links resolved: the administrator's choice)."""
    parts: tuple[str, ...]
    """The components below the root (at least one)."""
    shown: str


def _locate(path: str, roots: Roots) -> _Located:
    """Where `path` lies among `roots`, decided from its text alone (nothing is touched)."""
    shown = _shown(path)
    if not path or "\x00" in path:
        raise PathRefused(f"path {shown} is not a valid path")
    raw = Path(path)
    if not raw.is_absolute():
        raw = roots.folders[0] / raw
    if ".." in raw.parts:
        raise PathRefused(f"path {shown} must not contain '..' segments")
    # Path drops "." segments and doubled slashes, but keeps a leading "//": rebuild from "/".
    norm = Path("/", *raw.parts[1:])
    for folder in roots.folders:
        real = Path(os.path.realpath(folder))
        for base in dict.fromkeys((Path(os.path.abspath(folder)), real)):
            if norm == base:
                raise PathRefused(
                    f"path {shown} is an allowed folder itself; name a file or folder inside it"
                )
            if norm.is_relative_to(base):
                return _Located(real, norm.relative_to(base).parts, shown)
    raise PathRefused(
        f"path {shown} is outside the allowed folders ({roots.setting}: {roots.listed}); "
        "put it in one of them"
    )


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None


def _open_at(dir_fd: int, name: str, flags: int, where: str, shown: str) -> int:
    """``openat(dir_fd, name, flags)`` with `PathRefused` naming what is wrong."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise PathRefused(f"path {shown} does not exist") from None
    except OSError as exc:
        st = _lstat_at(dir_fd, name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise PathRefused(
                f"path {shown}: {where} is a symbolic link (links are not followed)"
            ) from None
        if exc.errno in _LINK_ERRNOS and st is not None:
            raise PathRefused(f"path {shown}: {where} is not a folder") from None
        if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            raise PathRefused(f"path {shown} is not a regular file or a folder") from None
        raise PathRefused(f"path {shown} cannot be opened ({exc.strerror})") from None


def _open_root(located: _Located, *, create: bool = False) -> int:
    try:
        if create:
            located.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        return os.open(located.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    except OSError:
        raise PathRefused(f"path {located.shown} does not exist") from None


def _open_parent(located: _Located, *, create_root: bool = False) -> int:
    """A descriptor of the folder holding the path's last component, reached without links."""
    fd = _open_root(located, create=create_root)
    try:
        for depth, name in enumerate(located.parts[:-1], start=1):
            where = "/".join(located.parts[:depth])
            child = _open_at(fd, name, _OPEN_DIR, where, located.shown)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_path(fd: int) -> Path:
    """A path that opens what `fd` refers to (whatever happens to its name meanwhile)."""
    proc = Path("/proc/self/fd")
    return (proc if proc.is_dir() else Path("/dev/fd")) / str(fd)


@dataclass
class Opened:
    """A regular file or folder opened by `open_confined`; close it (or use ``with``)."""

    fd: int
    st: os.stat_result
    shown: str
    """The caller's path, quoted, for messages."""
    name: str
    """Its last component."""

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def size(self) -> int:
        return self.st.st_size

    @property
    def path(self) -> Path:
        """A path to the opened file itself, for APIs that take paths (`fd_path`)."""
        return fd_path(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Opened:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _hard_linked(st: os.stat_result) -> bool:
    """A regular file with another name somewhere (a folder's count is its subfolders)."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1


def open_confined(path: str, roots: Roots) -> Opened:
    """Open the regular file or folder at `path`, inside `roots`, through no symbolic link,
    for reading.

    Raises:
        PathRefused: outside the roots (the same message whether or not it exists), a ``..``
            segment, missing, a symbolic link (itself or a folder on the way), neither a
            regular file nor a folder, a regular file with more than one name (a hard link),
            or unreadable.
    """
    located = _locate(path, roots)
    parent = _open_parent(located)
    try:
        fd = _open_at(parent, located.parts[-1], _OPEN_ANY, located.parts[-1], located.shown)
    finally:
        os.close(parent)
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        os.close(fd)
        raise PathRefused(
            f"path {located.shown} is {_kind(st.st_mode)}, not a regular file or a folder"
        )
    if _hard_linked(st):
        os.close(fd)
        raise PathRefused(
            f"path {located.shown} is a hard link (a file with more than one name); only a "
            f"file whose one name is inside the allowed folders ({roots.setting}: "
            f"{roots.listed}) is read: copy it there instead"
        )
    return Opened(fd, st, located.shown, located.parts[-1])


def read_confined(path: str, roots: Roots, *, max_bytes: int) -> tuple[bytes, str]:
    """The bytes of the regular file at `path` (see `open_confined`) and its name; a file above
    `max_bytes` is refused before anything is read, and never more than that is read."""
    with open_confined(path, roots) as opened:
        if opened.is_dir:
            raise PathRefused(f"path {opened.shown} is a folder, not a file")
        if opened.size > max_bytes:
            raise PathRefused(
                f"path {opened.shown} is {_size(opened.size)}, above the {_size(max_bytes)} limit"
            )
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(opened.fd, min(_CHUNK, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # it grew since fstat
                raise PathRefused(f"path {opened.shown} is more than the {_size(max_bytes)} limit")
        return b"".join(chunks), opened.name


def write_confined(path: str, roots: Roots, data: bytes) -> None:
    """Write `data` to `path`, inside `roots`, atomically and through no symbolic link.

    The folder holding `path` must exist (a root that does not is created). A temporary file
    is created beside the target with ``O_EXCL | O_NOFOLLOW`` under a random name, written,
    synced and renamed over the target. A target that exists and is not a regular file (a
    link, a folder, a FIFO) is refused; one swapped in after that check is replaced by the
    rename, never followed.
    """
    located = _locate(path, roots)
    name = located.parts[-1]
    parent = _open_parent(located, create_root=True)
    try:
        existing = _lstat_at(parent, name)
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            raise PathRefused(
                f"path {located.shown} exists and is {_kind(existing.st_mode)}; "
                "only a regular file is replaced"
            )
        tmp, fd = _create_temp(parent, name, located.shown)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            if isinstance(exc, IsADirectoryError):
                raise PathRefused(
                    f"path {located.shown} exists and is a folder; only a regular file is replaced"
                ) from None
            raise
        with contextlib.suppress(OSError):
            os.fsync(parent)
    finally:
        os.close(parent)


def _create_temp(parent: int, name: str, shown: str) -> tuple[str, int]:
    for _ in range(16):
        tmp = f".{name[:100]}.{secrets.token_hex(8)}.tmp"
        try:
            return tmp, os.open(tmp, _CREATE, 0o644, dir_fd=parent)
        except FileExistsError:
            continue
        except OSError as exc:
            raise PathRefused(f"path {shown} cannot be written ({exc.strerror})") from None
    raise PathRefused(f"path {shown} cannot be written (no free temporary name)")


# -- folders -------------------------------------------------------------------------------------


@dataclass
class _Budget:
    max_entries: int
    max_bytes: int
    entries: int = 0
    bytes: int = 0


class _OverBudget(Exception):
    """A folder holds more entries than the budget has room for."""


def _entries(dir_fd: int, room: int) -> list[str]:
    """A folder's names, sorted; `_OverBudget` once it has more than `room`. Read lazily, so
    a folder of millions of entries costs no more memory than the budget allows."""
    names: list[str] = []
    with os.scandir(dir_fd) as scan:
        for entry in scan:
            if len(names) >= room:
                raise _OverBudget
            names.append(entry.name)
    return sorted(names)


def _children(
    dir_fd: int, prefix: str, depth: int, shown: str, room: int
) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(name, relative path, lstat)`` of each entry of a folder, sorted by name;
    `_OverBudget` when it has more than `room` entries."""
    if depth > _MAX_DEPTH:
        raise PathRefused(f"path {shown}: folders are nested more than {_MAX_DEPTH} levels deep")
    for name in _entries(dir_fd, room):
        st = _lstat_at(dir_fd, name)
        if st is not None:  # gone meanwhile: nothing to count or copy
            yield name, f"{prefix}{name}", st


def tree_size(fd: int, *, max_entries: int, shown: str = "") -> tuple[int, int]:
    """``(entries, bytes of regular files)`` in the folder `fd`, links not followed; counting
    stops once there are more than `max_entries` entries."""
    budget = _Budget(max_entries, 0)

    def walk(dir_fd: int, prefix: str, depth: int) -> None:
        for name, rel, st in _children(dir_fd, prefix, depth, shown, max_entries - budget.entries):
            budget.entries += 1
            if budget.entries > max_entries:
                raise _OverBudget
            if stat.S_ISREG(st.st_mode):
                budget.bytes += st.st_size
            elif stat.S_ISDIR(st.st_mode):
                child = _open_at(dir_fd, name, _OPEN_DIR, rel, shown)
                try:
                    walk(child, f"{rel}/", depth + 1)
                finally:
                    os.close(child)

    try:
        walk(fd, "", 1)
    except _OverBudget:
        budget.entries = max_entries + 1
    return budget.entries, budget.bytes


def copy_tree(
    fd: int, dest: Path, *, max_entries: int, max_bytes: int, shown: str = ""
) -> list[str]:
    """Copy the folder `fd` into the new folder `dest`, opening every entry relative to its
    parent's descriptor with ``O_NOFOLLOW``; files get mode 0o644, folders 0o755.

    Symbolic links, special files and regular files with more than one name (hard links,
    judged on the opened descriptor) are not copied: each is a problem in the list returned
    (``"'a/b': is a symbolic link"``, as `nlphub.uploads.archive.check_tree` words them).

    Raises:
        PathRefused: more than `max_entries` entries or `max_bytes` bytes (the folder changed
            since it was measured), or nesting deeper than 64 levels.
    """
    budget = _Budget(max_entries, max_bytes)
    problems: list[str] = []
    os.mkdir(dest, 0o755)

    def changed() -> PathRefused:
        return PathRefused(f"path {shown} changed while it was copied; upload it again")

    def copy_file(src_fd: int, target: Path, rel: str) -> None:
        with open(src_fd, "rb", closefd=False) as src:
            out_fd = os.open(target, _CREATE, 0o644)
            with os.fdopen(out_fd, "wb") as out:
                while chunk := src.read(_CHUNK):
                    budget.bytes += len(chunk)
                    if budget.bytes > budget.max_bytes:
                        raise changed()
                    out.write(chunk)

    def walk(dir_fd: int, target: Path, prefix: str, depth: int) -> None:
        room = budget.max_entries - budget.entries
        for name, rel, st in _children(dir_fd, prefix, depth, shown, room):
            budget.entries += 1
            if budget.entries > budget.max_entries:
                raise changed()
            if stat.S_ISLNK(st.st_mode):
                problems.append(f"{rel!r}: is a symbolic link")
                continue
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                problems.append(f"{rel!r}: is {_kind(st.st_mode)}")
                continue
            flags = _OPEN_DIR if stat.S_ISDIR(st.st_mode) else _OPEN_ANY
            try:
                child = os.open(name, flags, dir_fd=dir_fd)
            except OSError:  # replaced by a link or removed since lstat
                raise changed() from None
            try:
                now = os.fstat(child)
                if stat.S_IFMT(now.st_mode) != stat.S_IFMT(st.st_mode):
                    raise changed()
                if stat.S_ISDIR(now.st_mode):
                    os.mkdir(target / name, 0o755)
                    walk(child, target / name, f"{rel}/", depth + 1)
                elif _hard_linked(now):
                    problems.append(f"{rel!r}: {_HARD_LINK}")
                else:
                    copy_file(child, target / name, rel)
            finally:
                os.close(child)

    try:
        walk(fd, dest, "", 1)
    except _OverBudget:
        raise changed() from None
    return problems

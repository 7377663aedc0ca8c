"""Archive safety: inspect and unpack zip files and uploaded folders without trusting them.

Used by the hub download path (unpacking downloaded archives) and by upload validation. Every
check collects *all* the problems it finds and raises them together as one `ArchiveProblem`,
so a user fixing an upload sees everything wrong at once.

What is refused, for zips and folders alike: symbolic links and special files (fifo, device,
socket); names that are absolute, carry drive letters, backslashes, ``..`` segments, NUL bytes,
non-printable characters or bytes that are not UTF-8; more entries or bytes than the
`ArchiveLimits` allow. Zips are also refused when they cannot be read, are empty, hold
encrypted entries or unsupported compression methods, repeat a name, compress suspiciously
well (zip bombs) or fail their CRC checks.

`safe_extract` unpacks into a hidden sibling folder and renames it to the destination only when
everything was written and verified, so a destination that exists is always complete.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import lzma
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nlphub.files import remove_path
from nlphub.hashing import HashThread

__all__ = [
    "DEFAULT_LIMITS",
    "ArchiveLimits",
    "ArchiveProblem",
    "ProblemError",
    "ZipEntryInfo",
    "check_directory",
    "check_name",
    "check_tree",
    "check_zip",
    "format_size",
    "resource_root",
    "safe_extract",
]

logger = logging.getLogger(__name__)

#: Bytes per read of a zip entry: small enough for the CPU caches (see docs/decisions.md, Zip
#: entries read 256 KiB at a time).
_CHUNK = 256 << 10
_WORK_SUFFIX = ".partial"  # safe_extract's temporary folder, beside the destination
_MAX_SHOWN_PROBLEMS = 100
_RATIO_MIN_BYTES = 1 << 20
"""Entries smaller than this are not held to ``max_ratio``: a few KB of zeros legitimately
compress 1000:1, and the total-size limit already bounds what small entries can expand to."""

_SUPPORTED_METHODS = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_FLAG_ENCRYPTED = 0x1
_FLAG_STRONG_ENCRYPTION = 0x40
_FLAG_UTF8 = 0x800
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_SEGMENT_BYTES = 255
_LOCAL_HEADER_SIZE = 30
_IGNORED_TOP_LEVEL = frozenset({"__MACOSX", ".DS_Store"})
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)
# Everything zipfile (or a broken file) can throw while reading an archive's structure or data.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    ValueError,  # includes UnicodeDecodeError for names flagged UTF-8 that are not
    NotImplementedError,
    struct.error,
    OverflowError,
)


@dataclass(frozen=True)
class ArchiveLimits:
    """Upper bounds applied to archives and uploaded folders."""

    max_entries: int = 100_000
    max_total_bytes: int = 20 * 2**30
    max_entry_bytes: int = 10 * 2**30
    max_ratio: float = 200.0
    """Largest accepted uncompressed/compressed size ratio of an entry (for entries of at
    least 1 MB) and of the whole archive."""
    max_metadata_bytes: int = 10 * 2**20
    """Largest accepted Spark ML ``metadata/part-*`` file (see `nlphub.uploads.sparknlp`)."""
    max_directory_bytes: int = 64 * 2**20
    """Largest accepted zip central directory: zipfile reads it whole and makes an object per
    entry, so it is checked (`check_directory`) before zipfile opens the archive."""


DEFAULT_LIMITS = ArchiveLimits()


class ProblemError(ValueError):
    """Validation failed; ``problems`` holds one human-readable sentence per problem found."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems) or ["unknown problem"]
        super().__init__(self.problems)

    def __str__(self) -> str:
        shown = self.problems[:_MAX_SHOWN_PROBLEMS]
        text = "; ".join(shown)
        if len(self.problems) > len(shown):
            text += f"; ... and {len(self.problems) - len(shown)} more problems"
        return text


class ArchiveProblem(ProblemError):
    """An archive or uploaded folder is unsafe or unreadable."""


@dataclass(frozen=True)
class ZipEntryInfo:
    """One entry of a zip that passed `check_zip`."""

    name: str
    """Normalized relative POSIX path (``./`` and doubled slashes removed, no trailing slash)."""
    raw_name: str
    """The name as ``zipfile`` reads it (``ZipInfo.filename``)."""
    index: int
    """Position in ``ZipFile.infolist()``."""
    is_dir: bool
    file_size: int
    compress_size: int
    crc: int

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.name).parts


def format_size(n: float) -> str:
    """``12 * 2**20`` -> ``"12 MB"``, ``1536`` -> ``"1.5 KB"`` (binary multiples)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            text = f"{value:.1f}".removesuffix(".0")
            return f"{text} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_name(name: str) -> list[str]:
    """Problems with a relative path taken from an archive or upload (without the entry prefix).

    Empty result means the name is safe to join below a destination folder.
    """
    if name in ("", "/"):
        return ["empty name"]
    problems: list[str] = []
    if "\x00" in name:
        problems.append("contains a NUL byte")
    if "\\" in name:
        problems.append("contains a backslash (not allowed in paths)")
    if name.startswith("/"):
        problems.append("is an absolute path")
    if _DRIVE.match(name):
        problems.append("starts with a drive letter")
    if ".." in re.split(r"[\\/]", name):
        problems.append("has a '..' segment that escapes the destination")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        # os.fsdecode turns undecodable bytes into lone surrogates
        problems.append("is not valid UTF-8")
    elif not name.replace("\x00", "").isprintable():
        problems.append("contains non-printable characters")
    segments = [s for s in name.split("/") if s not in ("", ".")]
    if any(len(s.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES for s in segments):
        problems.append(f"has a path segment longer than {_MAX_SEGMENT_BYTES} bytes")
    if not problems and not segments:
        problems.append("empty name")
    return problems


def _normalized(name: str) -> str:
    """``./a//b/`` -> ``a/b``; call only on names `check_name` accepted."""
    return "/".join(s for s in name.split("/") if s not in ("", "."))


def _decode_name(info: zipfile.ZipInfo) -> tuple[str, str | None]:
    """The entry's real name and a problem if its bytes are not UTF-8.

    zipfile decodes names without the UTF-8 flag as cp437; many tools write UTF-8 without
    setting the flag, so such names are re-read as UTF-8 and refused when they are not.
    """
    raw = info.orig_filename
    if info.flag_bits & _FLAG_UTF8 or raw.isascii():
        return raw, None
    try:
        return raw.encode("cp437").decode("utf-8"), None
    except UnicodeError:
        return raw, "name is not valid UTF-8"


def _is_dir(info: zipfile.ZipInfo) -> bool:
    # Not ZipInfo.is_dir(): it fails on empty names (zipfile cuts names at a NUL byte).
    return info.orig_filename.endswith("/") or stat.S_ISDIR(info.external_attr >> 16)


def _special_kind(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    for test, kind in _SPECIAL_KINDS:
        if test(mode):
            return kind
    return None


def _file_type_problem(mode: int) -> str | None:
    kind = _special_kind(mode)
    if kind is None:
        return None
    if kind == "symbolic link":
        return "is a symbolic link"
    return f"is a special file ({kind})"


def _entry_problems(info: zipfile.ZipInfo, limits: ArchiveLimits) -> tuple[str, list[str]]:
    name, decode_problem = _decode_name(info)
    problems = [] if decode_problem is None else [decode_problem]
    problems += [p for p in check_name(name) if p not in problems]
    if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
        problems.append("is encrypted")
    mode = info.external_attr >> 16
    type_problem = _file_type_problem(mode)
    if type_problem:
        problems.append(type_problem)
    if info.compress_type not in _SUPPORTED_METHODS:
        problems.append(f"uses unsupported compression method {info.compress_type}")
    is_dir = _is_dir(info)
    if is_dir and info.file_size:
        problems.append(f"is a directory but holds {format_size(info.file_size)} of data")
    if info.file_size > limits.max_entry_bytes:
        problems.append(
            f"is {format_size(info.file_size)} uncompressed, above the per-file limit of "
            f"{format_size(limits.max_entry_bytes)}"
        )
    if not is_dir and info.file_size >= _RATIO_MIN_BYTES:
        if info.compress_size <= 0 or info.file_size / info.compress_size > limits.max_ratio:
            ratio = info.file_size / max(info.compress_size, 1)
            problems.append(
                f"compression ratio {ratio:.0f}:1 is above the limit of "
                f"{limits.max_ratio:.0f}:1 (zip bomb?)"
            )
    return name, problems


def _quote(name: str) -> str:
    return repr(name)


# The zip records zipfile reads to find the central directory (its struct formats, sizes).
_END = struct.Struct("<4s4H2LH")
_END_SIG = b"PK\x05\x06"
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64_LOCATOR_SIG = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")
_END64_SIG = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIG = b"PK\x01\x02"
_MAX_COMMENT = 1 << 16  # as zipfile searches (one more than a comment can hold)


def _end_record(f: Any, file_size: int) -> tuple[int, int, int]:
    """``(declared entries, directory size, directory start)`` from a zip's end records, found
    as zipfile finds them (`zipfile._EndRecData`), so both read the same directory; the start
    is negative when the size is more than the file holds."""
    problem = ArchiveProblem(["not a valid zip archive (no end of central directory record)"])
    if file_size < _END.size:
        raise problem
    f.seek(file_size - _END.size)
    data = f.read(_END.size)
    if data[:4] == _END_SIG and data[-2:] == b"\0\0":
        at = file_size - _END.size
    else:  # a comment follows the record: the last signature in the last 64 KiB
        start = max(file_size - _MAX_COMMENT - _END.size, 0)
        f.seek(start)
        tail = f.read()
        found = tail.rfind(_END_SIG)
        if found < 0 or len(tail) - found < _END.size:
            raise problem
        at = start + found
        data = tail[found : found + _END.size]
    _sig, _disk, _disk_dir, _here, entries, size, _offset, _comment = _END.unpack(data)
    start = at - size
    if at >= _END64_LOCATOR.size:
        f.seek(at - _END64_LOCATOR.size)
        sig, disk, _offset64, disks = _END64_LOCATOR.unpack(f.read(_END64_LOCATOR.size))
        if sig == _END64_LOCATOR_SIG:
            if disk != 0 or disks > 1:
                raise ArchiveProblem(["not a valid zip archive (spans several disks)"])
            head = at - _END64_LOCATOR.size - _END64.size
            if head >= 0:
                f.seek(head)
                record = _END64.unpack(f.read(_END64.size))
                if record[0] == _END64_SIG:
                    entries, size = record[7], record[8]
                    start = head - size
    return entries, size, start


def check_directory(path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> int:
    """The number of entries in a zip's central directory, read without zipfile: its end
    record (the declared count and directory size), then each entry's fixed header, in
    constant memory. Raises `ArchiveProblem` when the archive declares or holds more than
    ``max_entries`` entries or a directory above ``max_directory_bytes``, or when these
    records are unreadable: zipfile would load the whole directory (an object per entry,
    gigabytes for a crafted archive) before any limit could be checked."""
    try:
        with open(path, "rb", buffering=_CHUNK) as f:
            file_size = os.fstat(f.fileno()).st_size
            declared, size, start = _end_record(f, file_size)
            problems = []
            if declared > limits.max_entries:
                problems.append(
                    f"archive has {declared} entries, above the limit of {limits.max_entries}"
                )
            if size > limits.max_directory_bytes:
                problems.append(
                    f"archive's central directory is {format_size(size)}, above the limit of "
                    f"{format_size(limits.max_directory_bytes)}"
                )
            if problems:
                raise ArchiveProblem(problems)
            if start < 0:
                raise ArchiveProblem(["not a valid zip archive (bad offset for central directory)"])
            f.seek(start)
            count = read = 0
            while read < size:  # as zipfile walks it, one header at a time
                head = f.read(_CENTRAL.size)
                if len(head) != _CENTRAL.size or head[:4] != _CENTRAL_SIG:
                    raise ArchiveProblem(["not a valid zip archive (corrupt central directory)"])
                skip = sum(struct.unpack_from("<3H", head, 28))  # name, extra, comment
                f.seek(skip, os.SEEK_CUR)
                read += _CENTRAL.size + skip
                count += 1
                if count > limits.max_entries:
                    raise ArchiveProblem(
                        [f"archive has more than {limits.max_entries} entries, the limit"]
                    )
    except (OSError, struct.error) as exc:  # the reason only: no server path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ArchiveProblem([f"not a valid zip archive ({reason})"]) from exc
    return count


def check_zip(
    path: Path, limits: ArchiveLimits = DEFAULT_LIMITS, *, verify_crc: bool = True
) -> list[ZipEntryInfo]:
    """Inspect a zip without extracting it; return its entries or raise `ArchiveProblem`.

    With ``verify_crc`` every entry is decompressed (into memory, chunk by chunk, never
    beyond its declared size) to check its CRC; this runs only when the structural and size
    checks passed, so a zip bomb is never inflated. `safe_extract` skips it because it
    verifies CRCs while writing.
    """
    path = Path(path)
    if not path.is_file():
        raise ArchiveProblem([f"{path.name}: not a file"])
    check_directory(path, limits)
    try:
        with zipfile.ZipFile(path) as zf:
            entries, problems = _check_infos(zf.infolist(), limits, path.stat().st_size)
            if not problems and verify_crc:
                for entry in entries:
                    problem = _verify_entry(zf, zf.infolist()[entry.index], entry)
                    if problem:
                        problems.append(problem)
    except UnicodeDecodeError as exc:
        raw = exc.object if isinstance(exc.object, bytes) else b""
        name = raw.decode("utf-8", "backslashreplace")
        raise ArchiveProblem([f"entry {name!r}: name is not valid UTF-8"]) from exc
    except _READ_ERRORS as exc:
        raise ArchiveProblem([f"not a valid zip archive ({exc})"]) from exc
    if problems:
        raise ArchiveProblem(problems)
    return entries


def _check_infos(
    infos: list[zipfile.ZipInfo], limits: ArchiveLimits, archive_size: int
) -> tuple[list[ZipEntryInfo], list[str]]:
    problems: list[str] = []
    if not infos:
        return [], ["archive is empty"]
    if len(infos) > limits.max_entries:
        problems.append(
            f"archive has {len(infos)} entries, above the limit of {limits.max_entries}"
        )
    entries: list[ZipEntryInfo] = []
    seen: dict[str, bool] = {}  # normalized name -> is_dir
    total = 0
    total_compressed = 0
    for index, info in enumerate(infos):
        name, entry_problems = _entry_problems(info, limits)
        if not 0 <= info.header_offset <= archive_size - _LOCAL_HEADER_SIZE:
            entry_problems.append("its data lies outside the archive (corrupt directory)")
        problems += [f"entry {_quote(name)}: {p}" for p in entry_problems]
        total += info.file_size
        total_compressed += info.compress_size
        if entry_problems:
            continue
        norm = _normalized(name)
        is_dir = _is_dir(info)
        if norm in seen and not (is_dir and seen[norm]):
            problems.append(f"entry {_quote(name)}: duplicate name")
            continue
        seen[norm] = is_dir
        entries.append(
            ZipEntryInfo(
                name=norm,
                raw_name=info.filename,
                index=index,
                is_dir=is_dir,
                file_size=info.file_size,
                compress_size=info.compress_size,
                crc=info.CRC,
            )
        )
    for entry in entries:
        parents = PurePosixPath(entry.name).parents
        for parent in list(parents)[:-1]:  # skip "."
            if seen.get(str(parent)) is False:
                problems.append(f"entry {_quote(entry.name)}: parent {str(parent)!r} is a file")
                break
    if total > limits.max_total_bytes:
        problems.append(
            f"archive expands to {format_size(total)}, above the limit of "
            f"{format_size(limits.max_total_bytes)}"
        )
    if total >= _RATIO_MIN_BYTES and total / max(total_compressed, 1) > limits.max_ratio:
        problems.append(
            f"archive compression ratio {total / max(total_compressed, 1):.0f}:1 is above the "
            f"limit of {limits.max_ratio:.0f}:1 (zip bomb?)"
        )
    return entries, problems


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, entry: ZipEntryInfo) -> Iterator[bytes]:
    """Yield the entry's data; raise `ArchiveProblem` when it is corrupt or longer than declared."""
    seen = 0
    try:
        with zf.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                seen += len(chunk)
                if seen > entry.file_size:
                    raise ArchiveProblem(
                        [
                            f"entry {_quote(entry.name)}: holds more data than the "
                            f"{format_size(entry.file_size)} its header declares"
                        ]
                    )
                yield chunk
    except (*_READ_ERRORS, OSError) as exc:  # OSError: seeking to a bogus offset
        raise ArchiveProblem([f"entry {_quote(entry.name)}: corrupt data ({exc})"]) from exc
    if seen != entry.file_size:
        raise ArchiveProblem(
            [
                f"entry {_quote(entry.name)}: holds {format_size(seen)}, not the "
                f"{format_size(entry.file_size)} its header declares"
            ]
        )


def _verify_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, entry: ZipEntryInfo) -> str | None:
    if entry.is_dir:
        return None
    try:
        for _ in _read_entry(zf, info, entry):
            pass
    except ArchiveProblem as exc:
        return exc.problems[0]
    return None


def safe_extract(
    zip_path: Path, dest: Path, limits: ArchiveLimits = DEFAULT_LIMITS
) -> dict[str, tuple[int, str]]:
    """Unpack ``zip_path`` into the new folder ``dest`` or leave nothing behind.

    Runs `check_zip`, then streams each entry into a hidden temporary sibling of ``dest``,
    counting bytes so that headers that understate sizes cannot exceed the limits, verifying
    CRCs, and checking that every path resolves inside the destination. Files get mode 0o644
    and folders 0o755. Only when everything is written is the temporary folder renamed to
    ``dest``; on any failure (including interruption) it is removed and the error re-raised.

    Returns:
        Every file's size and SHA-256, keyed by its path relative to ``dest`` (posix), hashed
        while it was written, so callers need not read the tree again
        (`nlphub.resources.tree_checksum_of`).

    Raises:
        FileExistsError: ``dest`` already exists (nothing is touched).
        FileNotFoundError: the parent of ``dest`` does not exist.
        ArchiveProblem: the archive is unsafe, corrupt or over the limits.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(errno.EEXIST, "destination already exists", str(dest))
    if not dest.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "destination parent does not exist", str(dest.parent))
    entries = check_zip(zip_path, limits, verify_crc=False)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=_WORK_SUFFIX, dir=dest.parent))
    try:
        digests = _extract_into(zip_path, entries, work, limits)
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("extracted %s (%d entries) to %s", zip_path.name, len(entries), dest)
    return digests


def extraction_leftovers(dest: Path) -> list[Path]:
    """The temporary folders that `safe_extract` into ``dest`` leaves only when its process is
    killed (SIGKILL, power loss): hidden siblings named ``.<dest name>.<random>.partial``."""
    dest = Path(dest)
    return sorted(dest.parent.glob(f".{glob.escape(dest.name)}.*{_WORK_SUFFIX}"))


def remove_extraction(dest: Path) -> None:
    """Remove ``dest`` and whatever a killed `safe_extract` into it left behind, so that a
    redelivered job starts from nothing."""
    for path in [Path(dest), *extraction_leftovers(dest)]:
        remove_path(path)


def _extract_into(
    zip_path: Path, entries: list[ZipEntryInfo], work: Path, limits: ArchiveLimits
) -> dict[str, tuple[int, str]]:
    root = work.resolve()
    total = 0
    hashes: dict[str, tuple[int, Any]] = {}
    try:
        # Each file's SHA-256 is computed on a helper thread while the next chunk is read,
        # CRC-checked and written. The directory is checked again: the file may have changed.
        check_directory(zip_path, limits)
        with zipfile.ZipFile(zip_path) as zf, HashThread(name="extract-hash") as hasher:
            infos = zf.infolist()
            for entry in entries:
                target = root.joinpath(*entry.parts)
                resolved = target.resolve()
                if resolved == root or not resolved.is_relative_to(root):
                    raise ArchiveProblem(
                        [f"entry {_quote(entry.name)}: resolves outside the destination"]
                    )
                if entry.is_dir:
                    resolved.mkdir(parents=True, exist_ok=True)
                    continue
                resolved.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(resolved, flags, 0o644)
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out:
                    for chunk in _read_entry(zf, infos[entry.index], entry):
                        total += len(chunk)
                        if total > limits.max_total_bytes:
                            raise ArchiveProblem(
                                [
                                    "archive expands to more than the limit of "
                                    f"{format_size(limits.max_total_bytes)}"
                                ]
                            )
                        out.write(chunk)
                        hasher.update(digest, chunk)
                os.chmod(resolved, 0o644)
                hashes[resolved.relative_to(root).as_posix()] = (entry.file_size, digest)
    except _READ_ERRORS as exc:
        if isinstance(exc, ArchiveProblem):
            raise
        raise ArchiveProblem([f"not a valid zip archive ({exc})"]) from exc
    for dirpath, _dirnames, _filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
    return {rel: (size, digest.hexdigest()) for rel, (size, digest) in hashes.items()}


def check_tree(path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> None:
    """Apply the archive rules to an uploaded folder; raise `ArchiveProblem` listing them all.

    Refuses symbolic links anywhere (including ``path`` itself), special files, unsafe names,
    more than ``max_entries`` entries and files or totals above the size limits. Links are
    never followed.
    """
    path = Path(path)
    if path.is_symlink():
        raise ArchiveProblem([f"{path.name}: is a symbolic link"])
    if not path.is_dir():
        raise ArchiveProblem([f"{path.name}: not a directory"])
    problems: list[str] = []
    count = 0
    total = 0
    stack = [path]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as scan:
            items = sorted(scan, key=lambda e: e.name)
        for item in items:
            count += 1
            rel = Path(item.path).relative_to(path).as_posix()
            name_problems = check_name(rel)
            problems += [f"{rel!r}: {p}" for p in name_problems]
            st = item.stat(follow_symlinks=False)
            type_problem = _file_type_problem(st.st_mode)
            if type_problem:
                problems.append(f"{rel!r}: {type_problem}")
            elif stat.S_ISDIR(st.st_mode):
                stack.append(Path(item.path))
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                if st.st_size > limits.max_entry_bytes:
                    problems.append(
                        f"{rel!r}: is {format_size(st.st_size)}, above the per-file limit of "
                        f"{format_size(limits.max_entry_bytes)}"
                    )
    if count == 0:
        problems.append(f"{path.name}: directory is empty")
    if count > limits.max_entries:
        problems.append(f"folder has {count} entries, above the limit of {limits.max_entries}")
    if total > limits.max_total_bytes:
        problems.append(
            f"folder holds {format_size(total)}, above the limit of "
            f"{format_size(limits.max_total_bytes)}"
        )
    if problems:
        raise ArchiveProblem(problems)


def resource_root(dest: Path) -> Path:
    """The folder holding the resource's ``metadata/``: ``dest`` or its single sub-folder.

    Zips are often made from a folder, wrapping the resource in one top-level directory.
    ``__MACOSX`` and ``.DS_Store`` are ignored when looking for that single folder.

    Raises:
        ArchiveProblem: neither ``dest`` nor a single top-level folder holds ``metadata/``.
    """
    dest = Path(dest)
    if (dest / "metadata").is_dir():
        return dest
    children = [c for c in dest.iterdir() if c.name not in _IGNORED_TOP_LEVEL]
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        if (children[0] / "metadata").is_dir():
            return children[0]
    names = ", ".join(sorted(c.name for c in children)[:10]) or "nothing"
    raise ArchiveProblem(
        [
            "no metadata/ folder at the top of the archive or inside a single top-level "
            f"folder (found: {names})"
        ]
    )

"""nlphub.paths: paths from payloads confined to roots, no symbolic links, capped reads, safe
writes, folders copied without following links."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nlphub import paths
from nlphub.errors import Refused
from nlphub.paths import (
    PathRefused,
    Roots,
    copy_tree,
    export_roots,
    incoming_roots,
    open_confined,
    read_confined,
    tree_size,
    write_confined,
)
from schemas.settings import SettingsError, load_settings


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "rules.json").write_text("[]")
    (folder / "sub").mkdir()
    (folder / "sub" / "a.txt").write_text("a")
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "secret.txt").write_text("s3cret")
    return folder


def roots(*folders: Path) -> Roots:
    return Roots(tuple(folders), "NLPHUB_INCOMING_ROOTS")


def refusal(path: str, folders: Roots) -> str:
    with pytest.raises(PathRefused) as info:
        read_confined(path, folders, max_bytes=100)
    return str(info.value)


# -- where a path may lie ----------------------------------------------------------------------


def test_inside_absolute_and_relative(root: Path) -> None:
    inside = str(root / "rules.json")
    assert read_confined(inside, roots(root), max_bytes=10) == (b"[]", "rules.json")
    assert read_confined("sub/a.txt", roots(root), max_bytes=10) == (b"a", "a.txt")
    assert read_confined(f"{root}//./sub/a.txt", roots(root), max_bytes=10)[0] == b"a"


def test_outside_is_one_message_whether_or_not_it_exists(root: Path, outside: Path) -> None:
    existing = refusal(str(outside / "secret.txt"), roots(root))
    missing = refusal(str(outside / "nothing.txt"), roots(root))
    assert existing.replace("secret", "X") == missing.replace("nothing", "X")
    assert f"NLPHUB_INCOMING_ROOTS: {root}" in existing
    assert "outside the allowed folders" in existing
    assert refusal("/etc/passwd", roots(root)).endswith(missing.split("' is", 1)[1])
    assert "outside" in refusal("/dev/zero", roots(root))


@pytest.mark.parametrize("rel", ["../elsewhere/secret.txt", "sub/../../elsewhere/secret.txt"])
def test_dot_dot_is_refused(root: Path, rel: str) -> None:
    assert "'..'" in refusal(rel, roots(root))
    assert "'..'" in refusal(f"{root}/{rel}", roots(root))


def test_the_root_itself_and_bad_text(root: Path) -> None:
    assert "allowed folder itself" in refusal(str(root), roots(root))
    assert "not a valid path" in refusal("a\x00b", roots(root))
    assert "not a valid path" in refusal("", roots(root))


def test_a_prefix_of_a_root_name_is_not_inside_it(root: Path, tmp_path: Path) -> None:
    twin = tmp_path / "incoming-other"
    twin.mkdir()
    (twin / "x").write_text("x")
    assert "outside" in refusal(str(twin / "x"), roots(root))


def test_a_root_reached_through_a_link_is_the_administrators_choice(
    root: Path, tmp_path: Path
) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    # Configured through the link: paths through it or through its target are inside.
    assert read_confined(str(alias / "rules.json"), roots(alias), max_bytes=10)[0] == b"[]"
    assert read_confined(str(root / "rules.json"), roots(alias), max_bytes=10)[0] == b"[]"
    # Configured as the target: a link elsewhere that points into it is not a way in.
    assert "outside" in refusal(str(alias / "rules.json"), roots(root))


def test_several_roots(root: Path, outside: Path) -> None:
    both = roots(root, outside)
    assert read_confined(str(outside / "secret.txt"), both, max_bytes=10)[0] == b"s3cret"
    assert f"{root}, {outside}" in refusal("/etc/passwd", both)


def test_missing_inside_is_said(root: Path) -> None:
    assert "does not exist" in refusal("nope.json", roots(root))
    assert "does not exist" in refusal("nope/x.json", roots(root))
    assert "sub/a.txt is not a folder" in refusal("sub/a.txt/x", roots(root))
    assert "does not exist" in refusal("x", roots(root / "missing-root"))


# -- links -----------------------------------------------------------------------------------


def test_a_link_as_the_path_or_on_the_way_is_refused(root: Path, outside: Path) -> None:
    (root / "file-link").symlink_to(outside / "secret.txt")
    (root / "dir-link").symlink_to(outside)
    (root / "sub" / "deep-link").symlink_to(outside)
    (root / "dangling").symlink_to(root / "nothing")
    for rel, where in [
        ("file-link", "file-link"),
        ("dir-link/secret.txt", "dir-link"),
        ("sub/deep-link/secret.txt", "sub/deep-link"),
        ("dangling", "dangling"),
    ]:
        message = refusal(rel, roots(root))
        assert f"{where} is a symbolic link" in message, message
        assert "secret" not in message.replace(rel, "")


def test_a_link_to_a_file_inside_is_refused_too(root: Path) -> None:
    (root / "alias.json").symlink_to(root / "rules.json")
    assert "symbolic link" in refusal("alias.json", roots(root))


def test_a_hard_link_to_a_file_elsewhere_is_refused(root: Path, outside: Path) -> None:
    """A hard link made inside a root names the other file itself (no link to refuse on the
    way): any regular file with more than one name is refused, saying nothing of the other."""
    os.link(outside / "secret.txt", root / "innocent.json")
    message = refusal("innocent.json", roots(root))
    assert "is a hard link" in message, message
    assert f"NLPHUB_INCOMING_ROOTS: {root}" in message
    assert "secret" not in message and str(outside) not in message
    with pytest.raises(PathRefused, match="is a hard link"):
        open_confined("innocent.json", roots(root))
    # Its only name again (the other removed): read as any file.
    (outside / "secret.txt").unlink()
    assert read_confined("innocent.json", roots(root), max_bytes=100)[0] == b"s3cret"


def test_a_hard_link_inside_an_uploaded_folder_is_not_copied(
    root: Path, outside: Path, tmp_path: Path
) -> None:
    os.link(outside / "secret.txt", root / "sub" / "stolen.txt")
    with open_confined("sub", roots(root)) as opened:
        entries, size = tree_size(opened.fd, max_entries=100)
        problems = copy_tree(opened.fd, tmp_path / "copy", max_entries=entries, max_bytes=size)
    assert problems == [
        "'stolen.txt': is a hard link (a file with more than one name); copy the file into "
        "the folder"
    ]
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["a.txt"]


# -- what is read ----------------------------------------------------------------------------


def test_special_files_and_folders(root: Path) -> None:
    os.mkfifo(root / "pipe")
    assert "special file (fifo)" in refusal("pipe", roots(root))  # and it did not block
    assert "is a folder, not a file" in refusal("sub", roots(root))
    with open_confined("sub", roots(root)) as opened:
        assert opened.is_dir and opened.name == "sub"


def test_size_is_checked_before_reading(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = root / "big.json"
    with big.open("wb") as f:
        f.truncate(50 * 2**20)  # sparse
    reads: list[int] = []
    real_read = os.read

    def spy(fd: int, n: int) -> bytes:
        reads.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(paths.os, "read", spy)
    with pytest.raises(PathRefused, match=r"is 50 MB, above the 20 MB limit"):
        read_confined("big.json", roots(root), max_bytes=20 * 2**20)
    assert reads == []
    assert read_confined("rules.json", roots(root), max_bytes=2) == (b"[]", "rules.json")
    with pytest.raises(PathRefused, match="is 2 bytes, above the 1 bytes limit"):
        read_confined("rules.json", roots(root), max_bytes=1)


def test_never_more_than_the_limit_is_read(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that grows after its size was checked is still read only up to the limit."""
    real_fstat = os.fstat

    def shrunk(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        values = list(st)
        values[6] = 1  # st_size
        return os.stat_result(values)

    (root / "grows.json").write_bytes(b"x" * 1000)
    monkeypatch.setattr(paths.os, "fstat", shrunk)
    with pytest.raises(PathRefused, match="more than the 10 bytes limit"):
        read_confined("grows.json", roots(root), max_bytes=10)


def test_refusals_are_refused_errors(root: Path) -> None:
    with pytest.raises(Refused):
        read_confined("/etc/passwd", roots(root), max_bytes=10)


# -- writing ---------------------------------------------------------------------------------


def exports(folder: Path) -> Roots:
    return Roots((folder,), "NLPHUB_EXPORT_ROOTS")


def test_write_creates_and_replaces_atomically(tmp_path: Path) -> None:
    out = tmp_path / "exports"  # created: it is a root
    write_confined("rules.zip", exports(out), b"one")
    write_confined(str(out / "rules.zip"), exports(out), b"two")
    assert (out / "rules.zip").read_bytes() == b"two"
    assert sorted(os.listdir(out)) == ["rules.zip"]  # no temporary file left
    assert (out / "rules.zip").stat().st_mode & 0o777 == 0o644


def test_write_outside_or_through_links_is_refused(tmp_path: Path, outside: Path) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    (out / "link").symlink_to(outside)
    for path, expected in [
        (str(outside / "rules.zip"), "outside the allowed folders (NLPHUB_EXPORT_ROOTS"),
        ("link/rules.zip", "link is a symbolic link"),
        ("../elsewhere/rules.zip", "'..'"),
        ("missing/rules.zip", "does not exist"),
    ]:
        with pytest.raises(PathRefused, match=expected.replace("(", r"\(")):
            write_confined(path, exports(out), b"data")
    assert sorted(os.listdir(outside)) == ["secret.txt"]


def test_a_link_or_folder_at_the_target_is_not_replaced_or_followed(
    tmp_path: Path, outside: Path
) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    (out / "rules.zip").symlink_to(outside / "secret.txt")
    (out / "folder.zip").mkdir()
    os.mkfifo(out / "pipe.zip")
    for name, kind in [("rules.zip", "symbolic link"), ("folder.zip", "folder"), ("pipe", "fifo")]:
        with pytest.raises(PathRefused, match=kind):
            write_confined(name if name != "pipe" else "pipe.zip", exports(out), b"data")
    assert (outside / "secret.txt").read_text() == "s3cret"
    assert sorted(os.listdir(out)) == ["folder.zip", "pipe.zip", "rules.zip"]


def test_a_link_planted_at_the_temporary_name_is_not_followed(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(paths.secrets, "token_hex", lambda n: next(names))
    (out / ".rules.zip.planted.tmp").symlink_to(outside / "secret.txt")
    write_confined("rules.zip", exports(out), b"data")
    assert (outside / "secret.txt").read_text() == "s3cret"
    assert (out / "rules.zip").read_bytes() == b"data" and not (out / "rules.zip").is_symlink()
    assert sorted(os.listdir(out)) == [".rules.zip.planted.tmp", "rules.zip"]


# -- folders ---------------------------------------------------------------------------------


def test_tree_size_and_copy(root: Path, outside: Path, tmp_path: Path) -> None:
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "b.bin").write_bytes(b"b" * 100)
    (root / "sub" / "link").symlink_to(outside)
    os.mkfifo(root / "sub" / "pipe")
    with open_confined("sub", roots(root)) as opened:
        entries, size = tree_size(opened.fd, max_entries=100)
        assert (entries, size) == (5, 101)
        assert tree_size(opened.fd, max_entries=2)[0] == 3  # stops counting past the limit
        dest = tmp_path / "copy"
        problems = copy_tree(opened.fd, dest, max_entries=entries, max_bytes=size)
    assert problems == ["'link': is a symbolic link", "'pipe': is a special file (fifo)"]
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert copied == ["a.txt", "deeper", "deeper/b.bin"]
    assert (dest / "deeper" / "b.bin").read_bytes() == b"b" * 100


def test_a_folder_that_grows_while_copied_is_refused(root: Path, tmp_path: Path) -> None:
    with open_confined("sub", roots(root)) as opened:
        with pytest.raises(PathRefused, match="changed while it was copied"):
            copy_tree(opened.fd, tmp_path / "c1", max_entries=1, max_bytes=0)
        (root / "sub" / "b.txt").write_text("b")
        with pytest.raises(PathRefused, match="changed while it was copied"):
            copy_tree(opened.fd, tmp_path / "c2", max_entries=1, max_bytes=10)


def test_too_deep_folders_are_refused(root: Path, tmp_path: Path) -> None:
    folder = root / "deep"
    for _ in range(70):
        folder = folder / "d"
    folder.mkdir(parents=True)
    with open_confined("deep", roots(root)) as opened:
        with pytest.raises(PathRefused, match="nested more than 64 levels"):
            tree_size(opened.fd, max_entries=1000)


# -- settings --------------------------------------------------------------------------------


def test_roots_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path))
    for name in ("NLPHUB_INCOMING_ROOTS", "NLPHUB_EXPORT_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    default = load_settings()
    assert incoming_roots(default).folders == (tmp_path / "incoming",)
    assert export_roots(default).folders == (tmp_path / "exports",)
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", f"/srv/a/, /srv/b{os.pathsep}/srv/c")
    monkeypatch.setenv("NLPHUB_EXPORT_ROOTS", "/srv/out")
    chosen = load_settings()
    assert incoming_roots(chosen).folders == (Path("/srv/a"), Path("/srv/b"), Path("/srv/c"))
    assert export_roots(chosen) == Roots((Path("/srv/out"),), "NLPHUB_EXPORT_ROOTS")
    monkeypatch.setenv("NLPHUB_INCOMING_ROOTS", "relative/folder")
    with pytest.raises(SettingsError, match=r"NLPHUB_INCOMING_ROOTS is invalid: .* not an abs"):
        load_settings()


def test_a_crowded_folder_is_read_only_up_to_the_budget(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder of 2,000 entries against a budget of 10: listing stops at the 11th name (it
    used to read every name into memory before counting), and the folder is refused."""
    crowd = root / "crowd"
    crowd.mkdir()
    for i in range(2000):
        (crowd / f"f{i:04d}").touch()
    real_scandir = os.scandir
    read: list[str] = []

    class Counted:
        def __init__(self, fd: int) -> None:
            self.scan = real_scandir(fd)

        def __enter__(self) -> Counted:
            return self

        def __exit__(self, *exc: object) -> None:
            self.scan.close()

        def __iter__(self) -> Iterator[os.DirEntry[str]]:
            for entry in self.scan:
                read.append(entry.name)
                yield entry

    monkeypatch.setattr(paths.os, "scandir", Counted)
    with open_confined("crowd", roots(root)) as opened:
        assert tree_size(opened.fd, max_entries=10) == (11, 0)
        assert len(read) <= 11
        read.clear()
        with pytest.raises(PathRefused, match="changed while it was copied"):
            copy_tree(opened.fd, tmp_path / "copy", max_entries=10, max_bytes=0)
        assert len(read) <= 11
        read.clear()
        assert tree_size(opened.fd, max_entries=2000) == (2000, 0)  # exactly the budget: whole
        assert len(read) == 2000

"""Archive safety: checks of uploaded folders (links, special files, names, limits)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nlphub.uploads.archive import DEFAULT_LIMITS, ArchiveLimits, ArchiveProblem, check_tree
from tests.unit.nlphub.uploads.conftest import HYPOTHESIS, SMALL, SparkBuilder


@dataclass(frozen=True)
class BadTree:
    id: str
    build: Callable[[Path], Path]
    expected: str
    limits: ArchiveLimits = DEFAULT_LIMITS


def tree(*files: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        root = tmp / "upload"
        root.mkdir()
        for rel in files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"x" * 10)
        return root

    return build


def with_extra(base: Callable[[Path], Path], add: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        root = base(tmp)
        add(root)
        return root

    return build


def file_of(size: int, name: str = "big") -> Callable[[Path], None]:
    def add(root: Path) -> None:
        (root / name).write_bytes(b"z" * size)

    return add


def root_is_link(tmp: Path) -> Path:
    real = tree("metadata/part-00000")(tmp)
    link = tmp / "link"
    link.symlink_to(real)
    return link


def not_a_dir(tmp: Path) -> Path:
    path = tmp / "upload.txt"
    path.write_text("x")
    return path


def dangling_link(root: Path) -> None:
    (root / "m").mkdir()
    (root / "m" / "x").symlink_to("nope")


def undecodable(root: Path) -> None:
    (Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9"))).write_bytes(b"x")


TREE_CASES = [
    BadTree(
        "symlink-file",
        with_extra(tree("metadata/part-00000"), lambda r: (r / "evil").symlink_to("/etc/passwd")),
        "'evil': is a symbolic link",
    ),
    BadTree(
        "symlink-dir",
        with_extra(tree("metadata/part-00000"), lambda r: (r / "stages").symlink_to("/")),
        "'stages': is a symbolic link",
    ),
    BadTree(
        "dangling-symlink",
        with_extra(tree("a"), dangling_link),
        "'m/x': is a symbolic link",
    ),
    BadTree(
        "fifo",
        with_extra(tree("metadata/part-00000"), lambda r: os.mkfifo(r / "metadata" / "pipe")),
        "'metadata/pipe': is a special file (fifo)",
    ),
    BadTree("root-is-symlink", root_is_link, "link: is a symbolic link"),
    BadTree("not-a-directory", not_a_dir, "not a directory"),
    BadTree("empty-dir", tree(), "directory is empty"),
    BadTree(
        "too-many-entries",
        tree("a", "b", "c", "d", "e", "f"),
        "folder has 6 entries, above the limit of 5",
        SMALL,
    ),
    BadTree("file-too-big", with_extra(tree("a"), file_of(600)), "above the per-file limit", SMALL),
    BadTree(
        "total-too-big",
        tree(*(f"d/f{i}" for i in range(4))),
        "folder holds",
        ArchiveLimits(max_total_bytes=30),
    ),
    BadTree("newline-name", tree("evil\nname"), "non-printable"),
    BadTree("backslash-name", tree("a\\..\\b"), "backslash"),
    BadTree("undecodable-name", with_extra(tree("a"), undecodable), "not valid UTF-8"),
]


@pytest.mark.parametrize("case", TREE_CASES, ids=[c.id for c in TREE_CASES])
def test_check_tree_rejects(case: BadTree, tmp_path: Path) -> None:
    root = case.build(tmp_path)
    with pytest.raises(ArchiveProblem) as info:
        check_tree(root, case.limits)
    assert any(case.expected in p for p in info.value.problems), info.value.problems


def test_check_tree_accepts_resources(tmp_path: Path) -> None:
    builder = SparkBuilder(tmp_path)
    for root in (builder.ner_model(), builder.embeddings(), builder.pipeline()):
        check_tree(root)


def test_check_tree_reports_everything(tmp_path: Path) -> None:
    root = tree("metadata/part-00000", "evil\nname")(tmp_path)
    (root / "link").symlink_to("/")
    os.mkfifo(root / "pipe")
    with pytest.raises(ArchiveProblem) as info:
        check_tree(root)
    assert len(info.value.problems) == 3, info.value.problems


# ---------------------------------------------------------------------------------------------
# Properties


@HYPOTHESIS
@given(
    st.lists(
        st.sampled_from(["a", "b", "c/d", "c/e", "f/g/h"]), min_size=1, max_size=5, unique=True
    ),
    st.sampled_from([None, "link", "c/link"]),
)
def test_check_tree_rejects_exactly_the_trees_with_links(
    files: list[str], link: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = tree(*files)(Path(tmp))
        if link is not None:
            (root / link).parent.mkdir(parents=True, exist_ok=True)
            (root / link).symlink_to(root / files[0])
        if link is None:
            check_tree(root)
        else:
            with pytest.raises(ArchiveProblem, match="symbolic link"):
                check_tree(root)

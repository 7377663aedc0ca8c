"""The file side of the shared install (`nlphub.install`): the checksum step and the rename."""

from __future__ import annotations

import zipfile
from pathlib import Path

from nlphub.install import Staged, put_in_place
from nlphub.resources import tree_checksum
from nlphub.uploads.archive import safe_extract


def _zip(tmp_path: Path, wrapped: bool) -> Path:
    archive = tmp_path / "r.zip"
    top = "wrap/" if wrapped else ""
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{top}metadata/part-00000", '{"class": "x"}')
        zf.writestr(f"{top}storage/EMBEDDINGS_x/000005.sst", b"\1" * 3000)
    return archive


def test_checksum_from_the_unpacking_digests_is_the_one_read_from_the_tree(tmp_path) -> None:
    for wrapped in (False, True):
        staging = tmp_path / f"staging-{wrapped}"
        digests = safe_extract(_zip(tmp_path, wrapped), staging)
        root = staging / "wrap" if wrapped else staging
        from_digests = Staged.of(root, ["x"], staging=staging, digests=digests)
        read = Staged.of(root, ["x"])
        assert (from_digests.checksum, from_digests.size) == tree_checksum(root)
        assert from_digests == read
        assert read.storage_refs == ("x",)


def test_put_in_place_replaces_what_is_there_and_leaves_no_trash(tmp_path) -> None:
    root = tmp_path / "staging" / "new"
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "part-00000").write_text("new")
    target = tmp_path / "resources" / "embeddings" / "x_en_1"
    trash = target.with_name(".trash-1")
    put_in_place(root, target, trash)  # creates the parent folders
    assert (target / "metadata" / "part-00000").read_text() == "new" and not root.exists()
    again = tmp_path / "staging" / "again"
    (again / "metadata").mkdir(parents=True)
    (again / "metadata" / "part-00000").write_text("again")
    (trash / "old").mkdir(parents=True)  # left by an attempt that died
    put_in_place(again, target, trash)
    assert (target / "metadata" / "part-00000").read_text() == "again"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x_en_1"]

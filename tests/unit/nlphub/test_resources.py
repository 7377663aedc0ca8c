from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nlphub.resources import install_dir, tree_checksum, tree_checksum_of
from nlphub.uploads.archive import safe_extract


def _tree(root: Path) -> Path:
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "part-00000").write_text('{"class": "x"}')
    (root / "fields").mkdir()
    (root / "fields" / "a.bin").write_bytes(b"\0" * 1000)
    return root


def test_checksum_covers_content_names_and_size(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "r")
    digest, size = tree_checksum(tree)
    assert size == len('{"class": "x"}') + 1000
    assert tree_checksum(tree) == (digest, size)
    (tree / "fields" / "a.bin").write_bytes(b"\0" * 999 + b"\1")
    assert tree_checksum(tree)[0] != digest
    (tree / "fields" / "a.bin").write_bytes(b"\0" * 1000)
    assert tree_checksum(tree)[0] == digest
    (tree / "fields" / "a.bin").rename(tree / "fields" / "b.bin")
    assert tree_checksum(tree)[0] != digest


def test_install_dir_refuses_names_that_escape(tmp_path: Path) -> None:
    assert install_dir(tmp_path, "embeddings", "glove_100d", "en", "2.4.0") == (
        tmp_path / "embeddings" / "glove_100d_en_2.4.0"
    )
    with pytest.raises(ValueError, match="cannot be used as a folder name"):
        install_dir(tmp_path, "model", "../etc", "en", "1")


_NAME = st.text(alphabet="ab-._/0", min_size=1, max_size=6).filter(
    lambda n: all(part not in ("", ".", "..") for part in n.split("/"))
)


@settings(max_examples=60)
@given(
    files=st.dictionaries(_NAME, st.binary(max_size=300), min_size=1, max_size=12),
    wrapped=st.booleans(),
)
def test_checksum_from_extraction_digests_equals_reading_the_tree(
    files: dict[str, bytes], wrapped: bool
) -> None:
    """safe_extract hashes each file as it writes it; the tree digest built from those
    hashes is the one tree_checksum computes by reading the tree (same order, same bytes)."""
    names = sorted(files)
    # a name can't be both a file and a folder ("a" and "a/b")
    assume(not any(other.startswith(f"{name}/") for name in names for other in names))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        archive = base / "r.zip"
        top = "wrap/" if wrapped else ""
        with zipfile.ZipFile(archive, "w") as zf:
            for name in names:
                zf.writestr(f"{top}{name}", files[name])
        dest = base / "out"
        digests = safe_extract(archive, dest)
        root = dest / "wrap" if wrapped else dest
        assert tree_checksum_of(digests, "wrap" if wrapped else "") == tree_checksum(root)

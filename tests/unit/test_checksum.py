from __future__ import annotations

from pathlib import Path

import pytest

from nlphub.resources import install_dir, tree_checksum


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

"""Unit tests for nlphub.hub.space: the 2x disk rule and human-readable sizes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nlphub.hub import space as space_module
from nlphub.hub.fetch_errors import NotEnoughSpace
from nlphub.hub.space import check_free_space, human_size, volume_space

GiB = 1 << 30
MiB = 1 << 20


# -- the 2x disk rule --------------------------------------------------------------------------


def test_free_space_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(space_module, "_free_bytes", lambda path: 500 * MiB)

    with pytest.raises(NotEnoughSpace) as caught:
        check_free_space(tmp_path, GiB, what="ner_dl_en_5.0.0_3.0_1.zip")

    assert str(caught.value) == (
        "not enough free disk space for ner_dl_en_5.0.0_3.0_1.zip: needs 2.0 GiB "
        f"(twice its size, 1.0 GiB), 500.0 MiB available at {tmp_path}"
    )
    assert caught.value.needed == 2 * GiB


def test_free_space_counts_bytes_already_downloaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(space_module, "_free_bytes", lambda path: GiB)

    check_free_space(tmp_path, GiB, what="x", already_have=GiB)  # needs 1 GiB more: fits
    with pytest.raises(NotEnoughSpace) as caught:
        check_free_space(tmp_path, GiB, what="x", already_have=512 * MiB)
    assert str(caught.value) == (
        "not enough free disk space for x: needs 1.5 GiB (twice its size, 1.0 GiB, less "
        f"512.0 MiB already downloaded), 1.0 GiB available at {tmp_path}"
    )


def test_free_space_on_the_real_disk(tmp_path: Path) -> None:
    check_free_space(tmp_path / "not" / "yet", 1, what="tiny")
    with pytest.raises(NotEnoughSpace, match=re.escape("needs 2.0 PiB")):
        check_free_space(tmp_path, 1 << 50, what="huge")


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (2 * GiB, "2.0 GiB"), (5 * MiB, "5.0 MiB")],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_volume_space_measures_the_nearest_existing_folder(tmp_path: Path) -> None:
    where, total, free = volume_space(tmp_path / "not" / "yet")
    assert where == tmp_path
    assert free > 0 and total >= free
    assert not (tmp_path / "not").exists()  # nothing is created

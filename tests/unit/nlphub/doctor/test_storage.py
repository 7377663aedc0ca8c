"""Unit tests for nlphub.doctor.storage: sizes, and the disk verdict (minimum, 2x rule)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlphub.doctor.core import Status
from nlphub.doctor.storage import Pending, judge_disk, parse_size

GIB = 1 << 30


@pytest.mark.parametrize(
    ("text", "size"),
    [("1GiB", GIB), ("500M", 500 << 20), ("2.5 g", int(2.5 * GIB)), ("1024", 1024), ("3KB", 3072)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "1 XB"])
def test_parse_size_refuses_what_is_no_size(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_below_the_minimum_fails() -> None:
    found = judge_disk(Path("/data"), GIB // 2, minimum=GIB, pending=None)
    assert found.status == Status.FAIL
    assert found.summary == "nearly full: 512.0 MiB free at /data, below the minimum of 1.0 GiB"
    assert "nlphub disk" in found.fix


def test_too_little_for_twice_the_largest_pending_download_fails() -> None:
    pending = Pending("ner_dl/en/4.0", 3 * GIB)
    found = judge_disk(Path("/data"), 5 * GIB, minimum=GIB, pending=pending)
    assert found.status == Status.FAIL
    assert "pending download ner_dl/en/4.0 needs 6.0 GiB (twice its 3.0 GiB)" in found.summary
    fits = judge_disk(Path("/data"), 6 * GIB, minimum=GIB, pending=pending)
    assert fits.status == Status.OK
    assert "the largest pending download (ner_dl/en/4.0) needs 6.0 GiB" in fits.summary


def test_enough_room_passes_and_says_what_was_not_known() -> None:
    found = judge_disk(Path("/data"), 10 * GIB, minimum=GIB, pending=None)
    assert found.status == Status.OK and found.summary.endswith("no download pending")
    unknown = judge_disk(
        Path("/data"), 10 * GIB, minimum=GIB, pending=None, pending_error="database unreachable"
    )
    assert unknown.status == Status.OK
    assert "pending downloads not known (database unreachable)" in unknown.summary

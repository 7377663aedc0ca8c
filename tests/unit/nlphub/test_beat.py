"""Unit tests for nlphub.beat: the name a beat's lock session carries."""

from __future__ import annotations

import os
import socket

from nlphub.beat import BEAT_APPLICATION, BeatSession, beat_application_name


def test_a_beat_names_its_session_with_host_and_pid() -> None:
    assert beat_application_name() == f"{BEAT_APPLICATION} {socket.gethostname()}:{os.getpid()}"
    assert beat_application_name("host", 42) == "nlphub-beat host:42"


def test_a_long_host_name_is_cut_so_the_pid_survives_postgres_limit() -> None:
    name = beat_application_name("h" * 200, 4194304)
    assert len(name) == 63
    assert name.endswith(":4194304")


def test_who() -> None:
    assert BeatSession(1, "nlphub-beat box:7", None, None, True).who == "box:7"
    assert BeatSession(9, "nlphub", None, None, True).who == "unnamed session 9"

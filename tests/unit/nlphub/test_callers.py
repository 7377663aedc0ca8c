"""Flower's signed caller header (`nlphub.callers`) and the key it is signed with."""

from __future__ import annotations

import multiprocessing
import secrets
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from nlphub.callers import caller_key, caller_key_file, signed_caller, verified_caller
from nlphub.files import stored_secret
from schemas.settings import SettingsError, load_settings

KEY = b"k" * 32
CALLER = {"via": "flower", "user": "alice"}


def _message(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "task_id": str(uuid.uuid4()),
        "task": "nlphub.ping",
        "args": [],
        "kwargs": {"requested_by": "erp", "n": 1.5},
    }
    return {**message, **changes}


def test_a_signed_caller_verifies_for_its_message() -> None:
    message = _message()
    header = signed_caller(KEY, caller=CALLER, **message)
    assert header["via"] == "flower" and header["user"] == "alice" and len(header["sig"]) == 64
    assert verified_caller(KEY, header, **message) == CALLER
    # the worker's copy of the arguments: a tuple and a rebuilt dict verify the same
    same = {**message, "args": (), "kwargs": dict(reversed(list(message["kwargs"].items())))}
    assert verified_caller(KEY, header, **same) == CALLER


@pytest.mark.parametrize(
    "change",
    [
        {"task_id": str(uuid.uuid4())},
        {"task": "nlphub.inventory"},
        {"args": [1]},
        {"kwargs": {"requested_by": "mallory", "n": 1.5}},
    ],
    ids=["another id", "another task", "other args", "other kwargs"],
)
def test_a_header_copied_onto_another_message_does_not_verify(change: dict[str, Any]) -> None:
    message = _message()
    header = signed_caller(KEY, caller=CALLER, **message)
    assert verified_caller(KEY, header, **{**message, **change}) is None


@pytest.mark.parametrize(
    "forge",
    [
        lambda h: {**h, "user": "root"},
        lambda h: {**h, "sig": "0" * 64},
        lambda h: {k: v for k, v in h.items() if k != "sig"},
        lambda h: {**h, "extra": 1},
        lambda h: {**h, "via": "python"},
        lambda h: {**h, "user": ["alice"]},
        lambda h: {**h, "sig": 5},
        lambda h: "alice",
        lambda h: None,
    ],
    ids=[
        "user",
        "sig",
        "no sig",
        "extra key",
        "via",
        "user not text",
        "sig not text",
        "str",
        "none",
    ],
)
def test_a_forged_header_does_not_verify(forge: Any) -> None:
    message = _message()
    header = forge(signed_caller(KEY, caller=CALLER, **message))
    assert verified_caller(KEY, header, **message) is None


def test_another_key_does_not_verify() -> None:
    message = _message()
    header = signed_caller(KEY, caller=CALLER, **message)
    assert verified_caller(b"x" * 32, header, **message) is None


def test_arguments_that_are_not_json_do_not_verify() -> None:
    message = _message()
    header = signed_caller(KEY, caller=CALLER, **message)
    assert verified_caller(KEY, header, **{**message, "kwargs": {"x": object()}}) is None


def test_the_key_setting_wins_over_the_stored_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path))
    monkeypatch.setenv("NLPHUB_CALLER_KEY", "a-long-enough-caller-key")
    settings = load_settings()
    assert caller_key(settings) == b"a-long-enough-caller-key"
    assert not caller_key_file(settings).exists()
    assert "a-long-enough" not in repr(settings)


def test_without_the_setting_a_private_key_is_made_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path))
    monkeypatch.setenv("NLPHUB_CALLER_KEY", "")  # empty: the generated key
    settings = load_settings()
    key = caller_key(settings)
    assert len(key) >= 40
    path = caller_key_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert caller_key(load_settings()) == key


def test_a_short_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPHUB_CALLER_KEY", "short-key")
    with pytest.raises(SettingsError, match="NLPHUB_CALLER_KEY is invalid: must be at least 16"):
        load_settings()


def _secret_in(path: str, queue: Any) -> None:
    queue.put(stored_secret(Path(path)))


def test_processes_asking_at_once_share_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "run" / "caller-key"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_secret_in, args=(str(path), queue)) for _ in range(6)]
    for proc in procs:
        proc.start()
    got = {queue.get(timeout=30) for _ in procs}
    for proc in procs:
        proc.join(30)
    assert got == {path.read_text().strip()}
    assert [p.name for p in path.parent.iterdir()] == ["caller-key"]  # no temporary left


def test_a_secret_made_meanwhile_by_another_process_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    real = secrets.token_urlsafe

    def racing(nbytes: int) -> str:  # another process writes its secret while we make ours
        if not path.exists():
            path.write_text("theirs\n")
        return real(nbytes)

    monkeypatch.setattr("nlphub.files.secrets.token_urlsafe", racing)
    assert stored_secret(path) == "theirs"
    assert path.read_text() == "theirs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary left


def test_an_empty_secret_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("\n")
    path.chmod(0o644)
    secret = stored_secret(path)
    assert secret and path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

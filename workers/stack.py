"""`nlphub up`: embedded servers (when no URLs are set), migrations, workers, beat and Flower,
supervised as child processes and stopped cleanly on Ctrl-C / SIGTERM."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlphub.files import stored_secret
from nlphub.redact import redact_text
from schemas.settings import RUNTIME_FILE, Settings
from workers.embedded import EmbeddedPostgres, EmbeddedRedis
from workers.events import EventFollower
from workers.logs import ProcessLogs

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 30.0
MAX_RESTARTS = 5
RESTART_WINDOW = 120.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Children get SIGTERM if `nlphub up` itself is killed: no orphan processes."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    #: Where its output goes (its file under NLPHUB_HOME/logs); None: this process' own.
    logs: ProcessLogs | None = None

    def start(self) -> None:
        env = {**self.env, "NLPHUB_LOG_ROLE": self.name}  # the role in each of its records
        if self.logs is None:
            self.proc = subprocess.Popen(self.argv, env=env, preexec_fn=_die_with_parent)
        else:
            self.proc = subprocess.Popen(
                self.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
            assert self.proc.stdout is not None
            self.logs.follow(self.name, self.proc.stdout)
        log.info("started %s (pid %s)", self.name, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def celery_argv(*args: str, app: str = "workers.app") -> list[str]:
    return [sys.executable, "-m", "celery", "-A", app, *args]


def worker_children(settings: Settings, env: dict[str, str], run_dir: Path) -> list[Child]:
    from workers.app import LONG_QUEUES, Queue

    children = []
    for queue in Queue:
        concurrency = 1 if queue in LONG_QUEUES else settings.worker_concurrency
        children.append(
            Child(
                f"worker-{queue.value}",
                celery_argv(
                    "worker",
                    "-Q",
                    queue.value,
                    "-c",
                    str(concurrency),
                    "-n",
                    f"{queue.value}@%h",
                    "-l",
                    settings.log_level,
                    "-E",
                ),
                env,
            )
        )
    return children


def flower_password_file(settings: Settings) -> Path:
    return settings.home / "run" / "flower-password"


def redis_password_file(settings: Settings) -> Path:
    return settings.home / "run" / "redis-password"


def flower_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """Flower's settings go through its environment, never its command line (`ps` shows it):
    the operator's account (NLPHUB_FLOWER_USER) and the tenants' (NLPHUB_FLOWER_TENANTS)."""
    password = settings.flower_password.get_secret_value() if settings.flower_password else None
    if password is None:
        password = stored_secret(flower_password_file(settings), 18)
    return {
        **env,
        "FLOWER_BASIC_AUTH": ",".join(
            [f"{settings.flower_user}:{password}"]
            + ([settings.flower_tenants.get_secret_value()] if settings.flower_tenants else [])
        ),
        "FLOWER_ADDRESS": settings.flower_address,
        "FLOWER_PORT": str(settings.flower_port),
        "FLOWER_PERSISTENT": "False",
    }


@dataclass
class Stack:
    settings: Settings
    say: Callable[[str], None]
    with_beat: bool = True
    with_flower: bool = True
    demo: bool = False
    #: The children's log files and console lines (`nlphub up`); None: they share this console.
    logs: ProcessLogs | None = None
    children: list[Child] = field(default_factory=list)
    mirror: Any = None
    pg: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    stopping: bool = False
    events: EventFollower | None = None

    @property
    def runtime_file(self) -> Path:
        return self.settings.home / RUNTIME_FILE

    def start_servers(self) -> tuple[str, str]:
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        db_url = self.settings.database_url
        redis_url = self.settings.redis_url
        if db_url is None:
            self.pg = EmbeddedPostgres(home / "postgres")
            db_url = self.pg.start()
            self.say(f"Postgres (embedded, pgvector): data in {home / 'postgres'}")
        else:
            self.say("Postgres: DATABASE_URL")
        if redis_url is None:
            # Password required (kept in run/redis-password; the URL below carries it).
            password_file = redis_password_file(self.settings)
            self.redis = EmbeddedRedis(home / "redis", password=stored_secret(password_file))
            redis_url = self.redis.start()
            self.say(
                f"Redis (embedded): {redact_text(redis_url)} (password in {password_file}), "
                f"data in {home / 'redis'}"
            )
        else:
            self.say("Redis: REDIS_URL")
        self.runtime_file.parent.mkdir(parents=True, exist_ok=True)
        self.runtime_file.touch(mode=0o600)
        os.chmod(self.runtime_file, 0o600)  # it carries the Redis password
        self.runtime_file.write_text(
            json.dumps({"database_url": db_url, "redis_url": redis_url, "pid": os.getpid()})
        )
        return db_url, redis_url

    def start_demo_mirror(self) -> dict[str, str]:
        """Build and serve the demo mirror (generated data) and point every process at it."""
        from nlphub.hub.mirror import LICENSED_FOLDER, build_demo_mirror
        from nlphub.hub.server import MirrorServer

        folder = self.settings.home / "demo-mirror"
        if not (folder / "metadata.json").exists():
            build_demo_mirror(folder)
        self.mirror = MirrorServer(folder)
        self.mirror.start()
        env = {
            "NLPHUB_HUB_URLS": self.mirror.url,
            "NLPHUB_LICENSED_HUB_URLS": f"{self.mirror.url}/{LICENSED_FOLDER}",
        }
        if "NLPHUB_LIBRARY_VERSIONS" not in os.environ:
            env["NLPHUB_LIBRARY_VERSIONS"] = "spark-nlp=5.5.0,spark=3.5.0"
        self.say(f"Demo hub (generated demo data, not real models): {self.mirror.url}")
        return env

    def start(self) -> None:
        from schemas.db import upgrade

        db_url, redis_url = self.start_servers()
        revision = upgrade(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.say(f"Database migrated to revision {revision}")
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "NLPHUB_HOME": str(self.settings.home),
        }
        if self.demo:
            chosen = self.start_demo_mirror()
            env.update(chosen)
            runtime = json.loads(self.runtime_file.read_text())
            self.runtime_file.write_text(json.dumps({**runtime, "settings": chosen}))
        self.request_defaults(env)
        run_dir = self.settings.home / "run"
        self.children = worker_children(self.settings, env, run_dir)
        if self.with_beat:
            self.children.append(
                Child(
                    "beat",
                    celery_argv(
                        "beat",
                        "-s",
                        str(run_dir / "celerybeat-schedule"),
                        "-l",
                        self.settings.log_level,
                    ),
                    env,
                )
            )
        if self.with_flower:
            self.children.append(
                Child(
                    "flower",
                    celery_argv("flower", app="workers.flower"),
                    flower_env(self.settings, env),
                )
            )
        # The metrics endpoint (`nlphub metrics serve`: NLPHUB_METRICS_ADDRESS / _PORT).
        metrics = [sys.executable, "-m", "workers.cli", "metrics", "serve"]
        self.children.append(Child("metrics", metrics, env))
        self.say(
            f"Metrics: http://{self.settings.metrics_address}:{self.settings.metrics_port}/metrics"
        )
        for child in self.children:
            child.logs = self.logs
            child.start()
        if self.logs is not None:
            roles = ["up", *(["postgres"] if self.pg else []), *(["redis"] if self.redis else [])]
            self.say(
                f"Logs: {self.logs.folder}/ROLE.log, ROLE one of "
                f"{', '.join(roles + [c.name for c in self.children])} "
                "(`nlphub logs ROLE -f` follows one)"
            )
            self.events = EventFollower(self.say)
            self.events.start()
        if self.with_flower:
            self.say(
                f"Flower: http://{self.settings.flower_address}:{self.settings.flower_port} "
                f"(user {self.settings.flower_user}; password in NLPHUB_FLOWER_PASSWORD or "
                f"{flower_password_file(self.settings)})"
            )
        self.say(f"Resources: {self.settings.resources_dir}")
        self.say("Press Ctrl-C to stop everything (data is kept for the next `nlphub up`).")

    def request_defaults(self, env: dict[str, str]) -> None:
        """Read the hubs and queue the default embeddings once; without a hub, say so."""
        from nlphub.hub.defaults import ensure_defaults
        from nlphub.hub.sync import sync_hubs
        from schemas.settings import get_settings
        from workers.app import configure

        os.environ.update(
            {k: v for k, v in env.items() if k.startswith(("NLPHUB_", "DATABASE", "REDIS"))}
        )
        get_settings.cache_clear()
        settings = get_settings()
        configure(settings)
        try:
            out = sync_hubs("nlphub up")
        except Exception as exc:
            self.say(f"No hub reachable ({exc}); carrying on without the default embeddings")
            return
        for problem in out["errors"]:
            self.say(f"hub: {problem}")
        if not any(out["entries"].values()):
            self.say("No hub catalog available; the default embeddings are not queued")
            return
        for note in ensure_defaults(settings):
            self.say(note)

    def supervise(self, poll: float = 1.0) -> int:
        """Restart crashed children (bounded); return when asked to stop."""
        while not self.stopping:
            for child in self.children:
                if self.stopping or child.alive():
                    continue
                code = child.proc.returncode if child.proc else None
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW]
                if len(child.restarts) >= MAX_RESTARTS:
                    self.say(
                        f"{child.name} keeps exiting (last code {code}); stopping the stack"
                        f"{self._see(child)}"
                    )
                    return 1
                child.restarts.append(now)
                self.say(f"{child.name} exited with code {code}; restarting it{self._see(child)}")
                child.start()
            time.sleep(poll)
        return 0

    def _see(self, child: Child) -> str:
        return f" (see {self.logs.path(child.name)})" if self.logs is not None else ""

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def shutdown(self) -> None:
        for child in self.children:
            if child.alive() and child.proc:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.proc.kill()
                child.proc.wait()
        if self.events is not None:
            self.events.stop()
        if self.logs is not None:
            self.logs.close()
        if self.mirror is not None:
            self.mirror.stop()
        from schemas.db import dispose_engines

        dispose_engines()
        if self.redis:
            self.redis.stop()
        if self.pg:
            self.pg.stop()
        self.runtime_file.unlink(missing_ok=True)
        self.say("Stopped.")


def run_stack(
    settings: Settings,
    say: Callable[[str], None],
    *,
    beat: bool = True,
    flower: bool = True,
    demo: bool = False,
    verbose: bool = False,
) -> int:
    """`nlphub up`: each process' log in its file (`verbose`: on the console as well), the
    console for the banner, job events, warnings and errors."""
    logs = ProcessLogs(settings, say, verbose=verbose)
    logs.own()
    stack = Stack(settings, logs.announce, with_beat=beat, with_flower=flower, demo=demo, logs=logs)
    signal.signal(signal.SIGTERM, stack.stop)
    signal.signal(signal.SIGINT, stack.stop)
    try:
        stack.start()
        return stack.supervise()
    finally:
        stack.shutdown()

"""`nlphub doctor` against a real installation: a worker, beat and Flower started with the real
CLI on the test servers, a hub mirror over HTTP. The doctor passes on it (exit 0), then fails
with one clear line for each part broken in turn: the database down, no worker on a queue, two
beats, the disk nearly full; the other parts stay as they were."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from nlphub.beat import beat_sessions
from nlphub.hub.server import MirrorServer
from schemas.models import Resource, ResourceKind
from schemas.states import ResourceState
from tests.conftest import wait_for
from tests.procs import NLPHUB, celery_cmd, tail
from workers.embedded import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUES = ("downloads", "embeddings", "default")


@dataclass
class Installation:
    env: dict[str, str]
    home: Path
    logs: Path
    engine: Engine
    procs: list[subprocess.Popen[bytes]]

    def start(self, argv: list[str], log: str, **extra: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv,
            env={**self.env, **extra},
            stdout=(self.logs / log).open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def beats(self) -> list[Any]:
        with self.engine.connect() as conn:
            return beat_sessions(conn)

    def doctor(self, *args: str, **extra: str) -> tuple[int, dict[str, Any]]:
        """`nlphub doctor --json ARGS`: its exit status and its findings by name."""
        out = subprocess.run(
            [NLPHUB, "doctor", "--json", *args],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        try:
            doc = json.loads(out.stdout)
        except ValueError:
            pytest.fail(
                f"doctor printed no JSON (exit {out.returncode}):\n{out.stdout}{out.stderr}"
            )
        return out.returncode, {f["name"]: f for f in doc["checks"]}

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{tail(p, 1500)}" for p in self.logs.glob("*.log"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def installation(
    servers: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    """A healthy installation on its own database and Redis database: a worker on every queue,
    one beat, Flower, and a hub mirror (all started as an operator would, through the CLI)."""
    base = tmp_path_factory.mktemp("doctor")
    home, logs, mirror = base / "home", base / "logs", base / "mirror"
    for folder in (home, logs, mirror):
        folder.mkdir()
    (mirror / "metadata.json").write_text("")
    name = f"t_doctor_{uuid.uuid4().hex[:8]}"
    db_url = servers["pg"].create_database(name, template=servers["template"])
    redis_url = servers["redis_url"].rsplit("/", 1)[0] + "/9"
    flower_port = free_port()
    engine = create_engine(
        db_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=NullPool
    )
    with MirrorServer(mirror) as hub:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("NLPHUB_")
        }
        env.update(
            {
                "DATABASE_URL": db_url,
                "REDIS_URL": redis_url,
                "NLPHUB_HOME": str(home),
                "NLPHUB_HUB_URLS": hub.url,
                "NLPHUB_FLOWER_PORT": str(flower_port),
                "NLPHUB_FLOWER_PASSWORD": f"pw-{uuid.uuid4().hex}",
                "NLPHUB_LOG_LEVEL": "INFO",
            }
        )
        inst = Installation(env, home, logs, engine, [])
        try:
            inst.start(
                [NLPHUB, "worker", "-Q", ",".join(QUEUES), "-c", "1", "-n", "doctor@%h"],
                "worker.log",
            )
            inst.start([NLPHUB, "beat"], "beat.log")
            inst.start([NLPHUB, "flower"], "flower.log")

            def ready() -> bool:
                try:
                    flower = httpx.get(f"http://127.0.0.1:{flower_port}/healthcheck", timeout=1)
                except httpx.HTTPError:
                    return False
                worker = (logs / "worker.log").read_text(errors="replace")
                beats = inst.beats()
                return flower.status_code == 200 and "ready." in worker and len(beats) == 1

            try:
                wait_for(ready, 120, interval=0.3, what="worker, beat and Flower")
            except AssertionError:
                pytest.fail(f"the installation did not start:\n{inst.log_tails()}")
            yield inst
        finally:
            for proc in inst.procs:
                _stop(proc)
            engine.dispose()
            servers["pg"].drop_database(name)
            shutil.rmtree(base, ignore_errors=True)


def failed(findings: dict[str, Any]) -> dict[str, str]:
    """The failed findings: name → summary."""
    return {n: f["summary"] for n, f in findings.items() if f["status"] == "fail"}


def test_doctor_passes_on_a_healthy_installation(installation: Installation) -> None:
    code, findings = installation.doctor()
    assert code == 0, f"{failed(findings)}\n{installation.log_tails()}"
    for name in ("database", "broker", "beat", "flower", "disk", "licence"):
        assert findings[name]["status"] == "ok", findings[name]
    for queue in QUEUES:
        assert findings[f"worker: {queue}"]["status"] == "ok"
        assert "doctor@" in findings[f"worker: {queue}"]["summary"]
    hub = installation.env["NLPHUB_HUB_URLS"]
    assert findings[f"hub: {hub}"]["status"] == "ok"
    assert findings["audit"]["status"] in ("ok", "warn")  # no anchor yet: a warning
    # the human report: one line per part, then the verdict
    out = subprocess.run(
        [NLPHUB, "doctor"], env=installation.env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("✓ beat: one beat, active") for line in lines), out.stdout
    assert "all checks pass" in lines[-1]


def test_doctor_fails_when_the_database_is_down(installation: Installation) -> None:
    port = free_port()  # nothing listens there: a Postgres that is down
    code, findings = installation.doctor(
        DATABASE_URL=f"postgresql://nlphub:secret-pw@127.0.0.1:{port}/nlphub"
    )
    assert code == 1
    assert set(failed(findings)) == {"database"}
    database = findings["database"]
    assert f"unreachable at 127.0.0.1:{port}/nlphub" in database["summary"]
    assert "start Postgres" in database["fix"]
    assert "secret-pw" not in json.dumps(findings)
    # what needs the database is not reported broken a second time
    assert findings["beat"]["status"] == findings["audit"]["status"] == "skip"
    assert "database failed" in findings["beat"]["summary"]


def test_doctor_fails_when_no_worker_consumes_a_queue(installation: Installation) -> None:
    def control(*args: str) -> None:
        subprocess.run(
            celery_cmd("control", *args), env=installation.env, check=True, capture_output=True
        )

    control("cancel_consumer", "downloads")
    try:
        code, findings = installation.doctor()
    finally:
        control("add_consumer", "downloads")
    assert code == 1
    assert set(failed(findings)) == {"worker: downloads"}
    downloads = findings["worker: downloads"]
    assert "no worker consumes queue 'downloads'" in downloads["summary"]
    assert "nlphub worker -Q downloads" in downloads["fix"]
    assert findings["worker: default"]["status"] == "ok"


def test_doctor_fails_when_two_beats_run(installation: Installation, tmp_path: Path) -> None:
    other_home = tmp_path / "home2"  # its own schedule file, as a second `nlphub up` would have
    other_home.mkdir()
    second = installation.start([NLPHUB, "beat"], "beat2.log", NLPHUB_HOME=str(other_home))
    try:
        wait_for(lambda: len(installation.beats()) == 2, 60, interval=0.2, what="the second beat")
        code, findings = installation.doctor()
    finally:
        _stop(second)
    assert code == 1
    assert set(failed(findings)) == {"beat"}, installation.log_tails()
    beat = findings["beat"]
    assert beat["summary"].startswith("2 beats are running: ")
    assert f":{second.pid} (standby)" in beat["summary"]
    assert "(active)" in beat["summary"]
    assert "stop all but one" in beat["fix"]
    wait_for(lambda: len(installation.beats()) == 1, 30, what="the second beat to end")


def test_doctor_fails_when_the_disk_is_nearly_full(installation: Installation) -> None:
    free = shutil.disk_usage(installation.home).free
    # below the minimum free space asked for
    code, findings = installation.doctor("--min-free", str(free + (1 << 40)))
    assert code == 1
    assert set(failed(findings)) == {"disk"}
    assert "nearly full" in findings["disk"]["summary"]
    assert "below the minimum" in findings["disk"]["summary"]
    assert "nlphub disk" in findings["disk"]["fix"]
    # too little room for the largest pending download (twice its size: the download rule)
    huge = Resource(
        name="huge_model",
        version="1.0",
        kind=ResourceKind.MODEL,
        state=ResourceState.QUEUED,
        size_bytes=free,
    )
    with Session(installation.engine) as session:
        session.add(huge)
        session.commit()
    try:
        code, findings = installation.doctor()
    finally:
        with installation.engine.begin() as conn:
            conn.execute(text("DELETE FROM resource WHERE name = 'huge_model'"))
    assert code == 1
    assert set(failed(findings)) == {"disk"}
    assert "pending download huge_model/en/1.0 needs" in findings["disk"]["summary"]

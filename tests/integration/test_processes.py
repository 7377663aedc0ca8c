"""Real processes: a prefork worker killed mid-task, Flower's REST API, and `nlphub up`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

import nlphub
from schemas.db import get_engine
from schemas.models import Resource, ResourceKind, ResourceSource
from schemas.states import JobState, ResourceState
from tests.conftest import wait_for
from tests.integration.conftest import celery_cmd
from tests.procs import alive as _alive
from tests.procs import children as _children
from tests.procs import descendants as _descendants
from workers.embedded import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NLPHUB = str(Path(sys.executable).with_name("nlphub"))


def _big_resource(home: Path, gigabytes: int = 3) -> Resource:
    path = home / "resources" / "embeddings" / "big_en_1.0"
    (path / "storage").mkdir(parents=True)
    with (path / "storage" / "blob").open("wb") as fh:
        fh.truncate(gigabytes << 30)  # sparse: hashing it takes seconds, the disk nothing
    res = Resource(
        name="big",
        version="1.0",
        kind=ResourceKind.EMBEDDINGS,
        source=ResourceSource.UPLOAD,
        state=ResourceState.INSTALLED,
        install_path=str(path),
    )
    with Session(get_engine(), expire_on_commit=False) as session:
        session.add(res)
        session.commit()
    return res


def test_worker_child_killed_mid_task_is_redelivered_and_completes_once(
    env, spawn, job_state, wait_job, audit_actions, tmp_path
) -> None:
    _big_resource(env["home"])
    worker = spawn(
        celery_cmd(
            "worker",
            "-Q",
            "default",
            "-c",
            "1",
            "-P",
            "prefork",
            "-n",
            f"kill-{uuid.uuid4().hex[:6]}@%h",
            "-l",
            "INFO",
        ),
        log=tmp_path / "worker.log",
    )
    wait_for(lambda: _children(worker.pid), 60, what="the worker's pool process")
    job_id = nlphub.enqueue("nlphub.inventory", {"verify_checksums": True})
    wait_for(
        lambda: (j := job_state(job_id)) is not None and j.state == JobState.STARTED,
        60,
        interval=0.01,
        what="the job to start",
    )
    child = _children(worker.pid)[0]
    os.kill(child, signal.SIGKILL)
    job = wait_job(job_id, timeout=120)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{log[-3000:]}"
    assert job.attempts == 2
    assert job.result["checked"] == 1
    actions = audit_actions(job_id)
    assert actions.count("job.started") == 2
    assert actions.count("job.succeeded") == 1
    assert "WorkerLostError" in log or "Process" in log


def test_flower_rest_api_enqueues_for_non_python_apps_and_requires_auth(
    env, worker, flower, wait_job, audit_actions
) -> None:
    user, password = flower["user"], flower["password"]
    url = f"{flower['url']}/api/task/async-apply/nlphub.inventory"
    body = {"kwargs": {"requested_by": "erp-system", "verify_checksums": False}}
    assert httpx.post(url, json=body, timeout=10).status_code == 401
    assert httpx.post(url, json=body, auth=(user, "wrong"), timeout=10).status_code == 401
    reply = httpx.post(url, json=body, auth=(user, password), timeout=10)
    assert reply.status_code == 200, reply.text
    job_id = uuid.UUID(reply.json()["task-id"])
    job = wait_job(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.requested_by == "erp-system"
    assert audit_actions(job_id)[-1] == "job.succeeded"
    # A bad payload through the same door: failed job naming the field.
    bad = httpx.post(
        url,
        json={"kwargs": {"verify_checksums": "yes please"}},
        auth=(user, password),
        timeout=10,
    )
    bad_job = wait_job(uuid.UUID(bad.json()["task-id"]))
    assert bad_job.state == JobState.FAILED
    assert "verify_checksums: Input should be a valid boolean" in bad_job.error
    assert password not in flower["log"].read_text(errors="replace")


def _text(url: str) -> str:
    """The body at `url`, or '' while nothing answers there."""
    try:
        return httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return ""


def _inventory_counted(metrics: str) -> bool:
    """Whether the metrics count one succeeded inventory job."""
    return any(
        line.startswith("nlphub_jobs_finished_total{")
        and 'task="nlphub.inventory"' in line
        and 'state="succeeded"' in line
        and line.endswith(" 1.0")
        for line in metrics.splitlines()
    )


def test_nlphub_up_runs_everything_and_stops_cleanly(monkeypatch) -> None:
    home = Path(tempfile.mkdtemp(prefix="nlphub-up-"))
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        {
            "NLPHUB_HOME": str(home),
            "NLPHUB_FLOWER_PORT": str(port),
            "NLPHUB_FLOWER_PASSWORD": "up-test-pw",
            "NLPHUB_METRICS_PORT": str(metrics_port),
            "NLPHUB_LOG_LEVEL": "WARNING",
        }
    )
    log = home / "up.log"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [NLPHUB, "up"],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(proc: subprocess.Popen[bytes]) -> None:
        family = _descendants(proc.pid)
        assert len(family) >= 5, family  # three workers, beat, flower (and their pools)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        wait_for(lambda: not any(_alive(p) for p in family), 30, what="no orphan processes")
        assert not (home / "run" / "embedded.json").exists()

    proc = start()
    try:
        wait_for(healthy, 120, interval=0.3, what="`nlphub up` to be ready")
        out = subprocess.run(
            [NLPHUB, "inventory", "--wait"], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stdout + out.stderr + log.read_text(errors="replace")
        job_id = out.stdout.split()[1]
        # the metrics process `up` started reads the same database
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_for(lambda: _inventory_counted(_text(metrics)), 60, what="`up`'s metrics")
        stop(proc)
        proc = start()  # data is kept for the next `up`
        wait_for(healthy, 120, interval=0.3, what="the second `nlphub up`")
        out = subprocess.run(
            [NLPHUB, "jobs", "--json"], env=env, capture_output=True, text=True, timeout=60
        )
        assert job_id in {j["id"] for j in json.loads(out.stdout)}, out.stdout + out.stderr
        verify = subprocess.run(
            [NLPHUB, "audit", "verify"], env=env, capture_output=True, text=True, timeout=60
        )
        assert verify.returncode == 0 and "audit chain OK" in verify.stdout
        stop(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


#: Most console lines `nlphub up --demo` may print in its first minute (issue 27): the banner,
#: the three default downloads' events, a warning or two.
FIRST_MINUTE_LINES = 25


#: Variables a developer's shell may set that would point the demo away from its own servers.
_DEMO_UNSET = (
    "DATABASE_URL",
    "REDIS_URL",
    "NLPHUB_HUB_URLS",
    "NLPHUB_LIBRARY_VERSIONS",
    "NLPHUB_LICENSED_HUB_URLS",
    "NLPHUB_LOG_FORMAT",
    "NLPHUB_LOG_ROLE",
)


class _Demo:
    """`nlphub up --demo` as a new user runs it (Flower, beat, INFO), its console in a file."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if k not in _DEMO_UNSET}
        self.env.update(
            {
                "NLPHUB_HOME": str(home),
                "NLPHUB_FLOWER_PORT": str(free_port()),
                "NLPHUB_FLOWER_PASSWORD": "demo-pw",
                "NLPHUB_LOG_LEVEL": "INFO",
                "COLUMNS": "250",
            }
        )
        self.log = home / "up.log"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [NLPHUB, "up", "--demo"],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def console(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NLPHUB, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def resources(self) -> dict[str, str]:
        out = self.cli("resources", "--json")
        if out.returncode != 0:
            return {}
        return {r["name"]: r["state"] for r in json.loads(out.stdout)}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.home, ignore_errors=True)


def _check_first_minute(demo: _Demo) -> None:
    """The console's first minute: the banner, one line per job event, nothing else; each
    process' log in its file."""
    wait_for(
        lambda: sum(": succeeded" in line for line in demo.console()) >= 3,
        180,
        interval=0.5,
        what="the default embeddings' downloads to succeed, on the console",
    )
    assert demo.resources() == {
        "glove_100d": "installed",
        "bert_base_cased": "installed",
        "tfhub_use": "installed",
    }
    wait_for(lambda: time.monotonic() - demo.started >= 60, 90, interval=0.5, what="a minute")
    first_minute = demo.console()
    shown = "\n".join(first_minute)
    assert len(first_minute) <= FIRST_MINUTE_LINES, shown
    assert "generated demo data" in shown and "default glove_100d" in shown
    for name in ("glove_100d", "bert_base_cased", "tfhub_use"):
        assert any(f"nlphub.download {name}: succeeded" in line for line in first_minute)
    # the embedded servers' set-up, the workers' and beat's INFO lines: in files only
    assert "initdb" not in shown and "Running commandline" not in shown
    assert "Task nlphub" not in shown and "Scheduler: Sending" not in shown
    assert "Logs: " in shown and str(demo.home / "logs") in shown
    folder = demo.home / "logs"
    for role in ("up", "postgres", "worker-downloads", "worker-default", "beat", "flower"):
        assert (folder / f"{role}.log").is_file(), role
    assert "initdb" in (folder / "postgres.log").read_text()


def _check_failed_job_is_one_line(demo: _Demo) -> None:
    """A job that fails: one console line with its reason, no warning, no traceback."""
    out = demo.cli(
        "enqueue",
        "nlphub.validate_upload",
        "--payload",
        '{"path": "missing.zip", "kind": "model", "name": "broken"}',
    )
    assert out.returncode == 0, out.stdout + out.stderr
    job = out.stdout.split()[1][:8]
    wait_for(
        lambda: any(f"job {job} " in line and "failed" in line for line in demo.console()),
        120,
        interval=0.5,
        what="the failed job's line",
    )
    mentions = [line for line in demo.console() if job in line or "missing.zip" in line]
    failed = [line for line in mentions if "failed" in line]
    assert len(failed) == 1, "\n".join(demo.console())
    assert failed[0].endswith(
        "nlphub.validate_upload broken: failed: upload missing.zip rejected (1 problems): "
        "- path 'missing.zip' does not exist"
    ), failed
    others = [line.split(": ", 1)[1] for line in mentions if line not in failed]
    assert len(others) == 2 and others[0] == "queued", mentions
    assert others[1].startswith("started on default@"), mentions


def test_nlphub_up_demo_downloads_the_defaults_offline_with_a_quiet_console() -> None:
    """As a new user runs it: the console is the banner, one line per job event and the
    warnings; each process' log is in its file, shown by `nlphub logs`; a failed job is one
    console line with its reason."""
    demo = _Demo(Path(tempfile.mkdtemp(prefix="nlphub-demo-")))
    try:
        _check_first_minute(demo)
        _check_failed_job_is_one_line(demo)

        # `nlphub logs`: the files, by role or prefix
        shown_logs = demo.cli("logs", "worker", "-n", "1000")
        assert shown_logs.returncode == 0, shown_logs.stderr
        assert "==> worker-downloads" in shown_logs.stdout
        assert "Task nlphub.download" in shown_logs.stdout and "missing.zip" in shown_logs.stdout

        out = demo.cli("download", "ner_dl", "--wait", "--timeout", "120", timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        assert demo.resources()["ner_dl"] == "installed"
        found = demo.cli("search", "glove")
        assert "glove_100d" in found.stdout and "99.0.0" in found.stdout
    finally:
        demo.stop()

"""docker-compose.yml and the Dockerfile agree with the code they deploy.

`compose_problems` is the checker: it returns one message per problem. It runs on the real file
(expecting none) and on deliberately broken copies (expecting the specific message), so every
rule is shown to be able to fail.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import yaml

import workers.cli
from workers.app import Queue

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

ONE_SHOT = frozenset({"migrate"})
INFRA = frozenset({"postgres", "redis"})
DEPENDENCY_CONDITIONS = {
    "postgres": "service_healthy",
    "redis": "service_healthy",
    "migrate": "service_completed_successfully",
}
#: `${VAR:?message}`: compose refuses to start while VAR is unset or empty (`$$` is a literal $).
REQUIRED_VAR = r"(?<!\$)\$\{\w+:\?[^}]+\}"
REQUIRED_VAR_ONLY = re.compile(rf"^{REQUIRED_VAR}$")
COMPOSE_VAR = re.compile(r"(?<!\$)\$\{[^}]*\}")
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:([^/@\s]*)@", re.IGNORECASE)
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)


def _cli() -> typer.core.TyperGroup:
    # typer >= 0.29 vendors click: its groups are `TyperGroup`s, not `click.Group`s.
    group = typer.main.get_command(workers.cli.app)
    assert isinstance(group, typer.core.TyperGroup)
    return group


def cli_problem(argv: list[str]) -> str | None:
    """Why `nlphub <argv>` is not a runnable command line of the CLI (None if it is)."""
    cmd: Any = _cli()
    path = ["nlphub"]
    rest = list(argv)
    while isinstance(cmd, typer.core.TyperGroup) and rest and rest[0] in cmd.commands:
        path.append(rest[0])
        cmd = cmd.commands[rest.pop(0)]
    name = " ".join(path)
    if isinstance(cmd, typer.core.TyperGroup):
        known = ", ".join(sorted(cmd.commands))
        if rest and not rest[0].startswith("-"):
            return f"{name!r} has no subcommand {rest[0]!r} (has: {known})"
        if not cmd.invoke_without_command:
            return f"{name!r} needs a subcommand (one of: {known})"
    try:
        cmd.make_context(name, rest)  # parses options and arguments; runs nothing
    except typer.TyperException as exc:  # the vendored click's UsageError & co.
        return f"{name!r} rejects {rest}: {exc.format_message()}"
    return None


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def _option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _published_host_ip(entry: Any) -> str | None:
    if isinstance(entry, dict):
        return entry.get("host_ip")
    parts = str(entry).rsplit(":", 2)
    return parts[0].strip("[]") if len(parts) == 3 else None


def _password_slots(text: str) -> list[tuple[str, str]]:
    """The passwords written in `text`: in URLs' user info and after `--requirepass`."""
    # Hide `${...}` (it may hold ':', '@' or spaces) while finding where a password goes.
    found = COMPOSE_VAR.findall(text)
    masked = COMPOSE_VAR.sub(lambda m: f"\0{found.index(m.group())}\0", text)

    def unmask(word: str) -> str:
        return re.sub("\0(\\d+)\0", lambda m: found[int(m.group(1))], word)

    slots = [("URL password", unmask(p)) for p in URL_PASSWORD.findall(masked) if p]
    words = masked.split()
    slots += [
        ("--requirepass", unmask(words[i + 1]))
        for i, word in enumerate(words[:-1])
        if word == "--requirepass"
    ]
    return slots


def _check_worker(name: str, argv: list[str], service: dict[str, Any]) -> list[str]:
    problems = []
    queues = (_option(argv, "-Q", "--queues") or "").split(",")
    unknown = sorted(q for q in queues if q not in {q.value for q in Queue})
    if unknown:
        problems.append(f"{name}: consumes unknown queue(s) {unknown}")
    node = _option(argv, "-n", "--hostname") or "celery@%h"
    expected = node.replace("%h", "$$HOSTNAME")
    words = shlex.split(_healthcheck_text(service))
    target = _option(words, "-d", "--destination")
    if "ping" not in words or target != expected:
        problems.append(f"{name}: healthcheck must `inspect ping -d {expected}` (its node name)")
    return problems


def compose_problems(doc: dict[str, Any]) -> list[str]:
    """Every way `doc` (a loaded docker-compose.yml) falls short; [] when it is fine."""
    problems: list[str] = []
    services: dict[str, dict[str, Any]] = doc.get("services") or {}
    consumed: set[str] = set()

    for name, service in services.items():
        healthcheck = service.get("healthcheck") or {}
        test = healthcheck.get("test")
        if name not in ONE_SHOT and (not test or healthcheck.get("disable") or test == ["NONE"]):
            problems.append(f"{name}: no healthcheck")

        restart = service.get("restart")
        if name in ONE_SHOT and restart != "no":
            problems.append(f'{name}: a one-shot service needs restart: "no" (got {restart!r})')
        if name not in ONE_SHOT and restart not in ("unless-stopped", "always"):
            problems.append(f"{name}: long-running service needs restart: unless-stopped")

        if service.get("build") is not None:
            command = service.get("command")
            if not isinstance(command, list) or not command:
                problems.append(f"{name}: command must be a non-empty exec-form list")
            else:
                argv = [str(word) for word in command]
                problem = cli_problem(argv)
                if problem:
                    problems.append(f"{name}: command {argv}: {problem}")
                elif argv[0] == "worker":
                    consumed.update((_option(argv, "-Q", "--queues") or "").split(","))
                    problems += _check_worker(name, argv, service)

        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on must be a mapping with conditions")
            depends_on = {}
        for dep, spec in depends_on.items():
            wanted = DEPENDENCY_CONDITIONS.get(dep)
            got = (spec or {}).get("condition")
            if wanted and got != wanted:
                problems.append(f"{name}: depends_on {dep} needs condition {wanted} (got {got})")

        ports = service.get("ports") or []
        if name in INFRA and ports:
            problems.append(f"{name}: must not publish ports to the host")
        for entry in ports:
            if name not in INFRA and _published_host_ip(entry) != "127.0.0.1":
                problems.append(f"{name}: port {entry!r} is not bound to 127.0.0.1")

        for key, value in _environment(service).items():
            if SECRET_KEY.search(key) and not REQUIRED_VAR_ONLY.match(str(value)):
                problems.append(f"{name}: {key} must come from ${{VAR:?...}}, not {value!r}")

        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            is_named = not source.startswith((".", "/", "~"))
            if is_named and source not in (doc.get("volumes") or {}):
                problems.append(f"{name}: volume {source!r} is not declared")

    missing = sorted({q.value for q in Queue} - consumed)
    if missing:
        problems.append(f"no worker consumes queue(s) {missing}")

    for text in _strings(doc):
        for where, value in _password_slots(text):
            if not REQUIRED_VAR_ONLY.match(value):
                problems.append(f"{where} in {text!r} is not from ${{VAR:?...}}")
    for service_name, service in services.items():
        command = service.get("command")
        if isinstance(command, list):
            for i, word in enumerate(command[:-1]):
                if word == "--requirepass" and not REQUIRED_VAR_ONLY.match(str(command[i + 1])):
                    problems.append(f"{service_name}: --requirepass is not from ${{VAR:?...}}")
    return list(dict.fromkeys(problems))  # anchored values repeat: report each once


def dockerfile_problems(text: str, packages: list[str]) -> list[str]:
    """The Dockerfile copies every package pyproject installs and keeps the essentials."""
    copied = {
        Path(src.rstrip("/")).name
        for line in text.splitlines()
        if line.split()[:1] == ["COPY"]
        for src in line.split()[1:-1]
        if not src.startswith("--")
    }
    problems = [
        f"Dockerfile does not COPY package {pkg!r}" for pkg in packages if pkg not in copied
    ]
    for needed in (
        "openjdk-17-jre-headless",
        "USER nlphub",
        "ENV NLPHUB_HOME=/data/nlphub",
        'ENTRYPOINT ["nlphub"]',
    ):
        if needed not in text:
            problems.append(f"Dockerfile lacks {needed!r}")
    return problems


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


def _packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.rstrip("*") for pattern in include]


# -- the real files ------------------------------------------------------------------------------


def test_real_compose_file_has_no_problems(compose: dict[str, Any]) -> None:
    assert compose_problems(compose) == []


def test_expected_services_exist(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "migrate",
        "worker-downloads",
        "worker-embeddings",
        "worker-default",
        "beat",
        "flower",
        "metrics",
    }
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "nlphub-home"}


def test_shared_environment_anchor(compose: dict[str, Any]) -> None:
    env = compose["x-nlphub-env"]
    assert env["NLPHUB_HOME"] == "/data/nlphub"
    assert env["DATABASE_URL"].endswith("@postgres:5432/${POSTGRES_DB:-nlphub}")
    assert env["REDIS_URL"] == "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0"
    # Flower and the workers share the key of Flower's signed caller header.
    assert env["NLPHUB_CALLER_KEY"] == "${CALLER_KEY:?set CALLER_KEY}"
    # Optional settings pass through only when set: empty ones would mean "." / no hubs.
    assert env["NLPHUB_LICENSE_FILE"] is None
    assert env["NLPHUB_HUB_URLS"] is None
    for name, service in compose["services"].items():
        if "build" in service:
            assert _environment(service).items() >= env.items(), name


def test_flower_listens_inside_but_publishes_on_loopback(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    env = _environment(flower)
    assert env["NLPHUB_FLOWER_ADDRESS"] == "0.0.0.0"
    assert env["NLPHUB_FLOWER_PASSWORD"] == "${FLOWER_PASSWORD:?set FLOWER_PASSWORD}"
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert "http://127.0.0.1:5555/healthcheck" in _healthcheck_text(flower)


def test_metrics_listen_inside_but_publish_on_loopback(compose: dict[str, Any]) -> None:
    metrics = compose["services"]["metrics"]
    env = _environment(metrics)
    assert metrics["command"] == ["metrics", "serve"]
    assert env["NLPHUB_METRICS_ADDRESS"] == "0.0.0.0"
    assert metrics["ports"] == [f"127.0.0.1:{env['NLPHUB_METRICS_PORT']}:9808"]
    assert "http://127.0.0.1:9808/metrics" in _healthcheck_text(metrics)
    assert "redis" not in metrics["depends_on"]  # it reads Postgres and the volume only


def test_db_upgrade_resolves_to_a_nested_command() -> None:
    db = _cli().commands["db"]
    assert isinstance(db, typer.core.TyperGroup)
    assert {"upgrade", "current"} <= set(db.commands)
    assert cli_problem(["db", "upgrade"]) is None


def test_real_dockerfile_has_no_problems() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(), _packages()) == []


# -- the checker catches each kind of mistake ----------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("no healthcheck", _delete("services/beat/healthcheck"), "beat: no healthcheck"),
    (
        "disabled healthcheck",
        _set("services/redis/healthcheck", {"test": ["NONE"]}),
        "redis: no healthcheck",
    ),
    (
        "unknown subcommand",
        _set("services/beat/command", ["scheduler"]),
        "beat: command ['scheduler']: 'nlphub' has no subcommand 'scheduler'",
    ),
    (
        "unknown nested subcommand",
        _set("services/migrate/command", ["db", "migrate"]),
        "migrate: command ['db', 'migrate']: 'nlphub db' has no subcommand 'migrate'",
    ),
    (
        "group without subcommand",
        _set("services/migrate/command", ["db"]),
        "migrate: command ['db']: 'nlphub db' needs a subcommand (one of: current, upgrade)",
    ),
    (
        "bad option value",
        _set("services/worker-default/command", ["worker", "-Q", "default", "-c", "two"]),
        "worker-default: command ['worker', '-Q', 'default', '-c', 'two']: 'nlphub worker' rejects",
    ),
    (
        "shell-form command",
        _set("services/beat/command", "beat"),
        "beat: command must be a non-empty exec-form list",
    ),
    (
        "unknown queue",
        _set(
            "services/worker-default/command",
            ["worker", "-Q", "defualt", "-c", "2", "-n", "default@%h"],
        ),
        "worker-default: consumes unknown queue(s) ['defualt']",
    ),
    (
        "queue nobody consumes",
        _delete("services/worker-embeddings"),
        "no worker consumes queue(s) ['embeddings']",
    ),
    (
        "healthcheck pings another node",
        _set(
            "services/worker-downloads/healthcheck/test",
            ["CMD-SHELL", "celery -A workers.app inspect ping -d celery@$$HOSTNAME"],
        ),
        "worker-downloads: healthcheck must `inspect ping -d downloads@$$HOSTNAME`",
    ),
    (
        "dependency without condition",
        _set("services/beat/depends_on", ["postgres", "redis", "migrate"]),
        "beat: depends_on must be a mapping with conditions",
    ),
    (
        "postgres only started",
        _set("services/worker-default/depends_on/postgres", {"condition": "service_started"}),
        "worker-default: depends_on postgres needs condition service_healthy (got service_started)",
    ),
    (
        "migrate only started",
        _set("services/beat/depends_on/migrate", {"condition": "service_healthy"}),
        "beat: depends_on migrate needs condition service_completed_successfully",
    ),
    (
        "postgres published",
        _set("services/postgres/ports", ["5432:5432"]),
        "postgres: must not publish ports to the host",
    ),
    (
        "redis published on loopback is still published",
        _set("services/redis/ports", ["127.0.0.1:6379:6379"]),
        "redis: must not publish ports to the host",
    ),
    (
        "flower on every interface",
        _set("services/flower/ports", ["5555:5555"]),
        "flower: port '5555:5555' is not bound to 127.0.0.1",
    ),
    (
        "flower on 0.0.0.0",
        _set("services/flower/ports", ["0.0.0.0:5555:5555"]),
        "flower: port '0.0.0.0:5555:5555' is not bound to 127.0.0.1",
    ),
    (
        "literal password",
        _set("services/postgres/environment/POSTGRES_PASSWORD", "hunter2"),
        "postgres: POSTGRES_PASSWORD must come from ${VAR:?...}, not 'hunter2'",
    ),
    (
        "password with a default",
        _set("services/flower/environment/NLPHUB_FLOWER_PASSWORD", "${FLOWER_PASSWORD:-admin}"),
        "flower: NLPHUB_FLOWER_PASSWORD must come from ${VAR:?...}",
    ),
    (
        "literal password in a URL",
        _set("x-nlphub-env/REDIS_URL", "redis://:hunter2@redis:6379/0"),
        "URL password in 'redis://:hunter2@redis:6379/0' is not from ${VAR:?...}",
    ),
    (
        "literal requirepass",
        _set("services/redis/command", ["redis-server", "--requirepass", "hunter2"]),
        "redis: --requirepass is not from ${VAR:?...}",
    ),
    (
        "one-shot restarting",
        _set("services/migrate/restart", "on-failure"),
        "migrate: a one-shot service needs restart: \"no\" (got 'on-failure')",
    ),
    (
        "long-running without restart",
        _delete("services/beat/restart"),
        "beat: long-running service needs restart: unless-stopped",
    ),
    (
        "undeclared volume",
        _delete("volumes/nlphub-home"),
        "beat: volume 'nlphub-home' is not declared",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in BROKEN], ids=[i for i, _, _ in BROKEN]
)
def test_checker_reports_broken_compose(
    compose: dict[str, Any], mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    # Deep-copy first: the services share anchored mappings, so mutate a private copy only.
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = compose_problems(broken)
    assert any(p.startswith(expected) for p in problems), problems


def test_checker_reports_missing_package_in_dockerfile() -> None:
    text = DOCKERFILE.read_text().replace("COPY scheduler ./scheduler\n", "")
    assert dockerfile_problems(text, _packages()) == [
        "Dockerfile does not COPY package 'scheduler'"
    ]


def test_checker_reports_root_dockerfile() -> None:
    text = DOCKERFILE.read_text().replace("USER nlphub", "USER root")
    assert dockerfile_problems(text, _packages()) == ["Dockerfile lacks 'USER nlphub'"]

"""Structural checks of the deployment files (no Docker needed).

docker-compose.yml, Dockerfile and config.yaml are only exercised for real in a
production-like deployment, so these tests make sure they stay consistent with
the code: the right modules, the right environment, no shipped credentials, and
a config.yaml that nameko's own loader reads the way the services expect.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared import config as cfg

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CONFIG_FILE = ROOT / "config.yaml"

WHISTLE_SERVICES = ("intake", "routing", "agency", "notify", "web")
HOST_PORTS = {"intake": 8001, "routing": 8002, "agency": 8003, "notify": 8004, "web": 8000}

# Every key the services read (shared/config.py); operator-only keys (the CLI's) are not here.
CONFIG_KEYS = {
    "AMQP_URI",
    "WEB_SERVER_ADDRESS",
    "REDIS_URL",
    "WHISTLE_KEY_PREFIX",
    "WHISTLE_ENV",
    "WHISTLE_SECRET",
    "WHISTLE_TOKEN_TTL",
    "WHISTLE_TZ",
    "WHISTLE_MAX_ATTEMPTS",
    "WHISTLE_RETRY_DELAY_MS",
    "WHISTLE_QUEUE_TYPE",
    "RULES_FILE",
    "WHISTLE_ROUTING_MODEL",
    "WHISTLE_TRIAGE_THRESHOLD",
    "LOG_FORMAT",
    "max_workers",
    "NOTIFY_CHANNEL",
    "NOTIFY_WEBHOOK_URL",
    "NOTIFY_WEBHOOK_SECRET",
    "NOTIFY_MAX_ATTEMPTS",
    "NOTIFY_MAX_DIRECT_SENDS",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_FROM",
    "SMTP_USER",
    "SMTP_PASSWORD",
    "SMTP_STARTTLS",
    "WHISTLE_PUBLIC_URL",
    "WHISTLE_RATING_WINDOW_S",
    "WHISTLE_DATABASE_URL",
    "WHISTLE_HOT_RETENTION",
    "WHISTLE_ARCHIVE_INTERVAL_S",
    "OPEN311_PUBLIC_READ",
    "OPEN311_DEFAULT_COMMUNITY",
    "OPEN311_POST_LIMIT",
    "WHISTLE_RABBIT_API",
    "WHISTLE_TOKEN_MAX_AGE",
    "WHISTLE_ANONYMOUS_SUBMIT",
    "WHISTLE_RATE_WINDOW_S",
    "WHISTLE_RATE_SUBMIT",
    "WHISTLE_RATE_SUBMIT_ANONYMOUS",
    "WHISTLE_RATE_READ",
    "WHISTLE_AUDIT_MAX_ENTRIES",
}
# Environment variables config.yaml reads (MAX_WORKERS feeds max_workers).
CONFIG_ENV_VARS = (CONFIG_KEYS - {"max_workers"}) | {"MAX_WORKERS"}


# --- helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    data = yaml.safe_load(compose_text)  # resolves the x-whistle-service anchor / merge key
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _service(compose: dict, name: str) -> dict:
    services = compose["services"]
    assert name in services, f"docker-compose.yml has no {name!r} service"
    return services[name]


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


_COMPOSE_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}")


def _container_environment(service: dict, host_env: dict[str, str]) -> dict[str, str]:
    """The environment compose gives the service's container: each ${VAR:?msg} and
    ${VAR:-default} resolved from ``host_env``, the environment compose runs in. An
    optional variable the operator did not set is there, empty (``${VAR:-}``)."""
    def resolve(match: re.Match) -> str:
        name, kind, default = match.groups()
        if kind == "?":
            assert host_env.get(name), f"compose would refuse: {default}"
        return host_env.get(name) or (default if kind == "-" else "")

    return {key: _COMPOSE_VARIABLE.sub(resolve, value)
            for key, value in _environment(service).items()}


def _config_of_the_command(argv: list[str], container_env: dict[str, str]) -> dict:
    """The checked config the service's command builds from the container's environment."""
    if argv[:2] == ["whistle", "up"]:
        return cfg.config_from_env(container_env)
    assert argv[:2] == ["nameko", "run"] and "config.yaml" in argv, argv
    return cfg.normalise(_load_config_with_nameko(container_env))


# What compose itself requires; nothing else set.
REQUIRED_ONLY = {"RABBITMQ_USER": "whistle", "RABBITMQ_PASS": "rabbit-pass",
                 "WHISTLE_SECRET": "s" * 40, "POSTGRES_PASSWORD": "pg-pass"}


def _load_config_with_nameko(env_overrides: dict[str, str]) -> dict:
    """Load config.yaml exactly as `nameko run --config` does, in a subprocess.

    nameko's setup_yaml_parser() registers its constructors on the global
    yaml.SafeLoader, so it is kept out of the test process.
    """
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV_VARS}
    env.update(env_overrides)
    code = (
        "import json, sys, yaml\n"
        "from nameko.cli.main import setup_yaml_parser\n"
        "setup_yaml_parser()\n"
        "with open(sys.argv[1]) as f:\n"
        "    json.dump(yaml.safe_load(f), sys.stdout)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(CONFIG_FILE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"nameko could not load config.yaml:\n{proc.stderr}"
    return json.loads(proc.stdout)


# --- docker-compose.yml -----------------------------------------------------------


def test_compose_has_all_services(compose: dict) -> None:
    expected = {"rabbitmq", "redis", "postgres", "migrate", *WHISTLE_SERVICES}
    missing = expected - set(compose["services"])
    assert not missing, f"docker-compose.yml is missing services: {sorted(missing)}"


def test_rabbitmq_has_management_and_required_credentials(compose: dict) -> None:
    rabbit = _service(compose, "rabbitmq")
    assert "management" in rabbit["image"]
    env = _environment(rabbit)
    assert env["RABBITMQ_DEFAULT_USER"].startswith("${RABBITMQ_USER:?")
    assert env["RABBITMQ_DEFAULT_PASS"].startswith("${RABBITMQ_PASS:?")
    assert "healthcheck" in rabbit
    assert any(str(v).endswith(":/var/lib/rabbitmq") for v in rabbit.get("volumes", []))


def test_redis_is_durable(compose: dict) -> None:
    redis = _service(compose, "redis")
    argv = _argv(redis["command"])
    assert argv[0] == "redis-server"
    assert "--appendonly" in argv and argv[argv.index("--appendonly") + 1] == "yes"
    assert "--appendfsync" in argv
    assert argv[argv.index("--appendfsync") + 1] in {"always", "everysec", "no"}
    assert "healthcheck" in redis
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", []))


def test_postgres_is_durable_and_checked(compose: dict) -> None:
    postgres = _service(compose, "postgres")
    assert postgres["image"].startswith("postgres:")
    env = _environment(postgres)
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres.get("volumes", []))
    test = " ".join(_argv(postgres["healthcheck"]["test"]))
    assert "pg_isready" in test


def test_migrations_run_before_the_services(compose: dict) -> None:
    """A one-shot `whistle db upgrade` migrates, once the database is healthy, and the
    services start only when it has succeeded (their `whistle up` would only warn of a
    database it cannot reach, and start)."""
    migrate = _service(compose, "migrate")
    assert _argv(migrate["command"]) == ["whistle", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "${POSTGRES_PASSWORD" in _environment(migrate)["WHISTLE_DATABASE_URL"]
    for name in WHISTLE_SERVICES:
        depends_on = _service(compose, name)["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["postgres"]["condition"] == "service_healthy"
        url = _environment(_service(compose, name))["WHISTLE_DATABASE_URL"]
        assert url.startswith("postgresql://whistle:${POSTGRES_PASSWORD:?") and "@postgres:5432/" in url


def test_no_default_credentials_shipped(compose_text: str) -> None:
    assert "guest" not in compose_text.lower()
    # Secrets must be required (${VAR:?msg}), never defaulted (${VAR:-x} / ${VAR-x}).
    defaulted = re.findall(
        r"\$\{(RABBITMQ_USER|RABBITMQ_PASS|WHISTLE_SECRET|POSTGRES_PASSWORD)(?::?[-=+])",
        compose_text
    )
    assert not defaulted, f"credentials with defaults in docker-compose.yml: {defaulted}"


@pytest.mark.parametrize("name", WHISTLE_SERVICES)
def test_whistle_service_runs_under_whistles_own_runner(compose: dict, name: str) -> None:
    """`whistle up --services <name>`, not `nameko run`: nameko 2.14's runner hangs on a
    SIGTERM that comes while the service is starting (tests/e2e/test_compose_stop.py)."""
    from whistle.runner import SERVICE_NAMES, service_classes

    svc = _service(compose, name)
    argv = _argv(svc["command"])
    assert argv == ["whistle", "up", "--services", name], argv
    assert name in SERVICE_NAMES and [cls.name for cls in service_classes((name,))] == [name]
    build = svc.get("build")
    assert (build.get("context") if isinstance(build, dict) else build) == "."
    # docker's init is PID 1 and passes signals on: PID 1 ignores one it has no handler for
    assert svc.get("init") is True


@pytest.mark.parametrize("name", WHISTLE_SERVICES)
def test_whistle_service_waits_for_healthy_infra(compose: dict, name: str) -> None:
    depends_on = _service(compose, name).get("depends_on")
    assert isinstance(depends_on, dict), "depends_on needs conditions, not a plain list"
    for dep in ("rabbitmq", "redis"):
        assert depends_on.get(dep, {}).get("condition") == "service_healthy", dep


@pytest.mark.parametrize("name", WHISTLE_SERVICES)
def test_whistle_service_health_and_ports(compose: dict, name: str) -> None:
    svc = _service(compose, name)
    test = svc.get("healthcheck", {}).get("test")
    assert test, f"{name} has no healthcheck"
    assert "/health" in " ".join(_argv(test) if isinstance(test, list) else [test])
    assert svc.get("restart") == "unless-stopped"
    ports = [str(p) for p in svc.get("ports", [])]
    assert f"{HOST_PORTS[name]}:8000" in ports, ports


@pytest.mark.parametrize("name", WHISTLE_SERVICES)
def test_whistle_service_environment(compose: dict, name: str) -> None:
    env = _environment(_service(compose, name))
    assert "${RABBITMQ_USER" in env["AMQP_URI"] and "${RABBITMQ_PASS" in env["AMQP_URI"]
    assert env["AMQP_URI"].startswith("amqp://") and "@rabbitmq:5672" in env["AMQP_URI"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert env["WHISTLE_SECRET"].startswith("${WHISTLE_SECRET:?")
    assert env["WHISTLE_ENV"] == "production"
    assert env["WEB_SERVER_ADDRESS"] == "0.0.0.0:8000"
    # Every variable compose sets must be one `whistle up` (config_from_env) actually
    # reads; config.yaml, for `nameko run`, reads the same ones.
    unread = set(env) - CONFIG_ENV_VARS
    assert not unread, f"config_from_env ignores {sorted(unread)}"
    read_by_config_from_env = {"MAX_WORKERS" if key == cfg.MAX_WORKERS else key
                               for key in cfg.DEFAULTS}
    assert read_by_config_from_env == CONFIG_ENV_VARS


@pytest.mark.parametrize("name", WHISTLE_SERVICES)
def test_the_services_start_on_the_environment_compose_gives_them(compose: dict,
                                                                   name: str) -> None:
    """With only the required variables set, compose hands every optional one on empty:
    `nameko run --config config.yaml` read MAX_WORKERS="" (and every other empty integer)
    as null and refused to start ("MAX_WORKERS must be an integer, not None"), and an
    empty WHISTLE_HOT_RETENTION as no duration. Empty means the default."""
    svc = _service(compose, name)
    env = _container_environment(svc, REQUIRED_ONLY)
    assert env["MAX_WORKERS"] == "" and env["WHISTLE_HOT_RETENTION"] == ""
    config = _config_of_the_command(_argv(svc["command"]), env)
    passed_through = {key for key, value in _environment(svc).items() if value.endswith(":-}")}
    for key in cfg.DEFAULTS:
        if key in passed_through or key == cfg.MAX_WORKERS:
            assert config[key] == cfg.DEFAULTS[key], key
    assert config[cfg.MAX_WORKERS] == 32 and config[cfg.HOT_RETENTION] == "1d"
    assert config[cfg.AMQP_URI] == "amqp://whistle:rabbit-pass@rabbitmq:5672/"
    assert config[cfg.ENVIRONMENT] == "production" and config[cfg.LOG_FORMAT] == "json"
    assert config[cfg.WEB_SERVER_ADDRESS] == "0.0.0.0:8000"


def test_what_the_operator_sets_reaches_the_service_verbatim(compose: dict) -> None:
    svc = _service(compose, "notify")
    host = {**REQUIRED_ONLY, "MAX_WORKERS": "4", "WHISTLE_HOT_RETENTION": "12h",
            "SMTP_PASSWORD": "no: [really] #yes", "NOTIFY_WEBHOOK_SECRET": "!secret",
            "WHISTLE_PUBLIC_URL": "https://whistle.example.org", "SMTP_PORT": "587"}
    config = _config_of_the_command(_argv(svc["command"]), _container_environment(svc, host))
    assert config[cfg.MAX_WORKERS] == 4 and config[cfg.HOT_RETENTION] == "12h"
    assert config[cfg.SMTP_PASSWORD] == "no: [really] #yes"
    assert config[cfg.NOTIFY_WEBHOOK_SECRET] == "!secret" and config[cfg.SMTP_PORT] == 587
    assert config[cfg.PUBLIC_URL] == "https://whistle.example.org"


@pytest.mark.parametrize("name", WHISTLE_SERVICES)
def test_the_compose_command_refuses_production_defaults(compose: dict, name: str) -> None:
    """The service's own command, as a process, on its container's environment with a
    short secret and the guest broker account: one line, exit 1, nothing started."""
    svc = _service(compose, name)
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV_VARS}
    env.update(_container_environment(svc, {**REQUIRED_ONLY, "RABBITMQ_USER": "guest",
                                            "WHISTLE_SECRET": "too-short"}))
    env.update({"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"})
    proc = subprocess.run([sys.executable, "-m", *_argv(svc["command"])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1] == (
        "Error: refusing to start in production: WHISTLE_SECRET must be set to a random "
        "value of at least 32 characters; AMQP_URI must not use the guest account (name "
        "another broker user)"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_dockerfile_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}


CLUSTER_NODES = ("rabbitmq-a", "rabbitmq-b", "rabbitmq-c")


def test_the_cluster_profile_is_three_clustered_rabbitmq_nodes_apart_from_the_default(
        compose: dict) -> None:
    services = compose["services"]
    for name in ("rabbitmq", "redis", *WHISTLE_SERVICES):
        assert "profiles" not in services[name], f"{name} must run without a profile"
    nodes = {name: _service(compose, name) for name in CLUSTER_NODES}
    assert [n.get("profiles") for n in nodes.values()] == [["cluster"]] * 3
    assert sorted(n["hostname"] for n in nodes.values()) == list(CLUSTER_NODES)
    assert all("management" in n["image"] for n in nodes.values())
    host_ports = [str(p).split(":")[0] for n in nodes.values() for p in n["ports"]]
    assert len(host_ports) == len(set(host_ports)) == 6  # AMQP and management each
    assert not set(host_ports) & {"5672", "15672"}  # beside the single broker, not on it
    for name, node in nodes.items():
        env = _environment(node)
        assert env["RABBITMQ_DEFAULT_USER"].startswith("${RABBITMQ_USER:?")
        assert "-setcookie ${RABBITMQ_ERLANG_COOKIE" in env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
        assert env["RABBITMQ_CTL_ERL_ARGS"] == env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
        assert any(str(v).endswith(":/var/lib/rabbitmq") and name in str(v)
                   for v in node["volumes"]), "each node keeps its own data"
        assert "healthcheck" in node
        if name != "rabbitmq-a":  # they join a, which must be up first
            assert node["depends_on"]["rabbitmq-a"]["condition"] == "service_healthy"
    mounts = {str(v).split(":")[0] for n in nodes.values() for v in n["volumes"]}
    conf_file = next(m for m in mounts if m.endswith(".conf"))
    conf = (ROOT / conf_file).read_text(encoding="utf-8")
    for i, name in enumerate(CLUSTER_NODES, 1):
        assert f"cluster_formation.classic_config.nodes.{i} = rabbit@{name}" in conf
    assert "cluster_partition_handling = pause_minority" in conf


# --- config.yaml ------------------------------------------------------------------


def test_every_setting_config_yaml_reads_passes_through_compose(compose: dict) -> None:
    """A setting config.yaml reads but compose does not pass on would do nothing under
    compose, silently: every ${VAR:default} in config.yaml is in the services' environment."""
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    read = set(re.findall(r"\$\{([A-Z0-9_]+):", code))
    assert read, "config.yaml reads no environment variables?"
    passed = set(compose["x-whistle-service"]["environment"])
    assert sorted(read - passed) == []


def test_config_yaml_defaults_load_with_nameko() -> None:
    config = _load_config_with_nameko({})
    assert set(config) == CONFIG_KEYS
    assert config["AMQP_URI"] == "amqp://guest:guest@127.0.0.1:5672/"
    assert config["WEB_SERVER_ADDRESS"] == "127.0.0.1:8000"
    assert config["REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert config["WHISTLE_ENV"] == "development"
    assert config["NOTIFY_WEBHOOK_URL"] == ""  # empty string, not null
    assert config["RULES_FILE"] == ""
    assert config["max_workers"] == 32


def test_config_yaml_defaults_are_the_services_defaults() -> None:
    """What `nameko run` reads with no environment is what `whistle up` uses."""
    config = _load_config_with_nameko({})
    assert config == {key: cfg.DEFAULTS[key] for key in CONFIG_KEYS}
    for key in ("NOTIFY_MAX_ATTEMPTS", "SMTP_PORT", "WHISTLE_RATING_WINDOW_S",
                "WHISTLE_MAX_ATTEMPTS"):
        assert type(config[key]) is int, key
    for key in ("NOTIFY_WEBHOOK_SECRET", "SMTP_HOST", "SMTP_USER", "SMTP_PASSWORD"):
        assert config[key] == "", key  # empty string, not null
    defaults = cfg.config_from_env({})
    assert cfg.normalise(dict(config)) == {key: defaults[key] for key in CONFIG_KEYS}


def test_config_yaml_takes_notify_settings_verbatim() -> None:
    overrides = {
        "SMTP_HOST": "smtp.example.org",
        "SMTP_PORT": "587",
        "SMTP_PASSWORD": "no: [really] #yes",
        "SMTP_STARTTLS": "yes",
        "NOTIFY_WEBHOOK_SECRET": "!secret",
        "NOTIFY_MAX_ATTEMPTS": "3",
        "WHISTLE_PUBLIC_URL": "https://whistle.example.org/desk",
    }
    config = _load_config_with_nameko(overrides)
    assert config["SMTP_HOST"] == "smtp.example.org"
    assert config["SMTP_PORT"] == 587
    assert config["SMTP_PASSWORD"] == "no: [really] #yes"
    assert config["SMTP_STARTTLS"] == "yes"  # a string; notify parses it
    assert config["NOTIFY_WEBHOOK_SECRET"] == "!secret"
    assert config["NOTIFY_MAX_ATTEMPTS"] == 3
    assert config["WHISTLE_PUBLIC_URL"] == "https://whistle.example.org/desk"


def test_config_yaml_takes_environment_verbatim() -> None:
    overrides = {
        "AMQP_URI": "amqp://whistle:s3cret@rabbitmq:5672/",
        "WEB_SERVER_ADDRESS": "0.0.0.0:8000",
        "REDIS_URL": "redis://redis:6379/0",
        "WHISTLE_ENV": "production",
        # Values YAML would otherwise turn into a bool, an int or a mapping.
        "WHISTLE_SECRET": "yes",
        "NOTIFY_CHANNEL": "12345",
        "NOTIFY_WEBHOOK_URL": "https://hooks.example/x?a=1#frag: y",
        "MAX_WORKERS": "4",
    }
    config = _load_config_with_nameko(overrides)
    for key in ("AMQP_URI", "WEB_SERVER_ADDRESS", "REDIS_URL", "WHISTLE_ENV"):
        assert config[key] == overrides[key]
    assert config["WHISTLE_SECRET"] == "yes"
    assert config["NOTIFY_CHANNEL"] == "12345"
    assert config["NOTIFY_WEBHOOK_URL"] == overrides["NOTIFY_WEBHOOK_URL"]
    assert config["max_workers"] == 4


@pytest.mark.parametrize("name", WHISTLE_SERVICES)
def test_nameko_run_finds_exactly_the_service_in_its_module(name: str) -> None:
    """`nameko run ... services.<name>.service` (a way to run a service apart, though not
    compose's: docs/operations.md) takes every class with entrypoints in the module: intake's Open311 mixin made it refuse to start
    ("Service class must define a `name` attribute"), with exit status 0."""
    from nameko.cli.run import import_service

    assert [cls.name for cls in import_service(f"services.{name}.service")] == [name]


@pytest.mark.parametrize("service", WHISTLE_SERVICES)
def test_nameko_run_refuses_what_whistle_up_refuses(service: str) -> None:
    """`nameko run --config config.yaml` (not compose's way any more, but still a way to
    run a service apart) never builds its config with config_from_env: with WHISTLE_ENV=production, a short secret
    and the guest broker account used to start all the same."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV_VARS}
    env.update({"WHISTLE_ENV": "production", "WHISTLE_SECRET": "too-short",
                "AMQP_URI": "amqp://guest:guest@127.0.0.1:1/", "REDIS_URL": "redis://127.0.0.1:1/0",
                "WHISTLE_DATABASE_URL": "postgresql://whistle:pw@127.0.0.1:1/whistle",
                "WEB_SERVER_ADDRESS": "127.0.0.1:1", "PYTHONWARNINGS": "ignore"})
    proc = subprocess.run(
        [sys.executable, "-m", "nameko", "run", "--config", str(CONFIG_FILE),
         f"services.{service}.service"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert ("shared.config.ConfigurationError: refusing to start in production: "
            "WHISTLE_SECRET must be set to a random value of at least 32 characters; "
            "AMQP_URI must not use the guest account (name another broker user)"
            ) in proc.stderr.splitlines(), proc.stderr[-2000:]


# --- README quickstart <-> CI -------------------------------------------------------


def _quickstart_commands(readme: str) -> list[str]:
    """Commands in the fenced code blocks of the section whose heading mentions Quickstart."""
    lines = readme.splitlines()
    heading = re.compile(r"^(#{1,6})\s+(.*)$")
    start = level = None
    for i, line in enumerate(lines):
        m = heading.match(line)
        if m and "quickstart" in m.group(2).lower():
            start, level = i + 1, len(m.group(1))
            break
    assert start is not None, "README.md has no Quickstart heading"

    commands: list[str] = []
    fence = None
    for line in lines[start:]:
        stripped = line.strip()
        m = heading.match(line)
        if fence is None and m and len(m.group(1)) <= level:
            break  # end of the Quickstart section
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        elif fence is not None:
            words = _words(stripped.removeprefix("$ "))
            if words:
                commands.append(" ".join(words))
    return commands


def _words(line: str) -> list[str]:
    """Shell words of one line, without a trailing # comment."""
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # unbalanced quotes: not a command we care about
        return line.split("#", 1)[0].split()


def _script_runs(script: str, command: list[str]) -> bool:
    """True if a non-comment line of the shell script runs `command`."""
    for line in script.splitlines():
        words = _words(line)
        for i in range(len(words) - len(command) + 1):
            if words[i : i + len(command)] == command:
                return True
    return False


def test_ci_runs_the_readme_test_command() -> None:
    readme_file = ROOT / "README.md"
    assert readme_file.is_file(), "README.md (with a Quickstart section) is missing"
    readme = readme_file.read_text(encoding="utf-8")
    commands = _quickstart_commands(readme)
    assert "make up" in commands, f"Quickstart commands: {commands}"
    assert "make test" in commands, f"Quickstart commands: {commands}"

    ci_run = ROOT / ".ci" / "run"
    assert os.access(ci_run, os.X_OK), ".ci/run must be executable"
    assert _script_runs(ci_run.read_text(encoding="utf-8"), ["make", "test"])

"""The command docker-compose.yml runs for a service stops on SIGTERM, whenever it comes.

`docker stop` (and `docker compose down`, a redeploy, a restart) sends SIGTERM, then
SIGKILL after 10 s. nameko 2.14's own runner (`nameko run`) hung for good on a SIGTERM
that came while a service was still starting: its Timer.stop waits on a thread Timer.start
has not spawned yet (AttributeError), and the process never exits. Each test here starts
the exact command compose runs for intake (two Timers) as a real process, on this test's
own vhost, Redis prefix and database, with the environment compose gives the container,
and sends one SIGTERM at some point of its start-up or once it is ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from shared import config as cfg
from tests.conftest import REDIS_URL, free_port
from tests.support.compose import RUNNING_LINE, compose, compose_command

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "intake"  # the archiver's and the upgrades' Timers: what nameko's stop tripped on
# docker's default grace between SIGTERM and SIGKILL: a stop that takes longer is a kill
STOP_WITHIN_S = 10.0
STARTING_LINE = "starting services: "  # nameko's runner, once the SIGTERM handler is set


def compose_environment(rabbit_config, redis_prefix: str, database_url: str) -> dict:
    """The environment compose gives a service's container, on this test's infrastructure.

    Every optional pass-through (`${VAR:-}`) is empty, as compose hands it on when the
    operator did not set it. The addresses of RabbitMQ, Redis, PostgreSQL and the HTTP
    server are the test's. WHISTLE_ENV is development: the test vhost's broker account is
    guest, which production refuses (tests/test_compose.py checks the refusal)."""
    env = {k: v for k, v in os.environ.items() if k not in _config_variables()}
    for key, value in compose()["x-whistle-service"]["environment"].items():
        env[key] = "" if str(value).startswith("${") and str(value).endswith(":-}") else str(value)
    env.update({cfg.AMQP_URI: rabbit_config["AMQP_URI"], cfg.REDIS_URL: REDIS_URL,
                cfg.KEY_PREFIX: redis_prefix, cfg.DATABASE_URL: database_url,
                cfg.WEB_SERVER_ADDRESS: f"127.0.0.1:{free_port()}",
                cfg.RABBIT_API_URL: "http://guest:guest@127.0.0.1:15672",
                cfg.SECRET: "test-secret-" + "x" * 32, cfg.ENVIRONMENT: "development",
                "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)})
    return env


def _config_variables() -> set[str]:
    return {"MAX_WORKERS" if key == cfg.MAX_WORKERS else key for key in cfg.DEFAULTS}


class ComposeProcess:
    """The compose command of one service, as a real process; its stderr in a file.
    ``wrapper`` runs it inside another command (``unshare``)."""

    def __init__(self, env: dict, err_path: Path, wrapper: tuple[str, ...] = ()):
        self.env, self.err_path = env, err_path
        self.address = env[cfg.WEB_SERVER_ADDRESS]
        with open(err_path, "w") as err:
            self.launched = time.monotonic()
            self.proc = subprocess.Popen([*wrapper, *compose_command(SERVICE)], cwd=ROOT,
                                         env=env, stdout=subprocess.DEVNULL, stderr=err)

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, probe, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if self.proc.poll() is not None:
                pytest.fail(f"it exited ({self.proc.returncode}) before the SIGTERM:\n"
                            + self.err()[-3000:])
            if time.monotonic() > deadline:
                pytest.fail(f"not there in {timeout:g} s; its stderr ends:\n" + self.err()[-3000:])
            time.sleep(0.005)

    def healthy(self) -> bool:
        try:
            return requests.get(f"http://{self.address}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def terminate_and_wait(self) -> tuple[int, float]:
        """SIGTERM once; the exit status and how long it took to exit."""
        self.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            self.proc.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_WITHIN_S:g} s after SIGTERM (docker would "
                        "SIGKILL it); its stderr ends:\n" + self.err()[-3000:])
        return self.proc.returncode, time.monotonic() - sent

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def compose_process(rabbit_config, redis_prefix, database_url, tmp_path):
    processes: list[ComposeProcess] = []

    def launch() -> ComposeProcess:
        env = compose_environment(rabbit_config, redis_prefix, database_url)
        processes.append(ComposeProcess(env, tmp_path / f"stderr-{len(processes)}"))
        return processes[-1]

    yield launch
    for process in processes:
        process.kill()


def test_the_compose_command_stops_cleanly_once_ready(compose_process):
    process = compose_process()
    process.wait_for(lambda: RUNNING_LINE in process.err() and process.healthy())
    status, took = process.terminate_and_wait()
    err = process.err()
    assert status == 0, err[-3000:]
    assert f"stopping services: {SERVICE}" in err
    assert "Traceback" not in err, err[-3000:]
    assert took < STOP_WITHIN_S


# Where in its start-up the SIGTERM lands: a time after launch (the interpreter, the
# imports, the configuration, the migration check, the broker: before any service has
# started), or a moment after nameko's runner has begun starting the containers (their
# extensions being set up: the Timers not started yet, where `nameko run` hung), or the
# first time /health answers (the HTTP server up, the consumers perhaps not yet).
@pytest.mark.parametrize("when", [
    ("after launch", 0.2), ("after launch", 0.8), ("after launch", 1.5),
    ("once starting", 0.0), ("once starting", 0.03), ("once starting", 0.1),
    ("once /health answers", 0.0),
], ids=lambda when: f"{when[0]} +{when[1]:g}s".replace(" ", "-"))
def test_the_compose_command_stops_promptly_on_sigterm_during_start_up(compose_process, when):
    moment, delay = when
    process = compose_process()
    if moment == "after launch":
        process.wait_for(lambda: time.monotonic() - process.launched >= delay)
    elif moment == "once starting":
        process.wait_for(lambda: STARTING_LINE in process.err())
        time.sleep(delay)
    else:
        process.wait_for(process.healthy)
    status, took = process.terminate_and_wait()
    err = process.err()
    if status == -signal.SIGTERM:
        # Python's default: the signal came before `whistle up` set its handler, while the
        # interpreter was still importing (in compose, docker's init passes it on the same)
        assert moment == "after launch" and STARTING_LINE not in err, err[-3000:]
    else:
        assert status == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    if status == 0 and STARTING_LINE in err:
        # the services had begun to start: stopped once started, as after a normal start
        assert f"stopping services: {SERVICE}" in err, err[-3000:]
    elif status == 0:
        assert "stopped (SIGTERM) before the services started" in err, err[-3000:]


def _can_make_pid_namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _can_make_pid_namespaces(), reason="needs unshare --pid (root)")
def test_as_a_containers_pid_1_it_stops_while_waiting_for_the_broker(
        rabbit_config, redis_prefix, database_url, tmp_path):
    """In a container without an init, the command is PID 1, and the kernel drops a
    signal PID 1 has no handler for: `docker stop` during `whistle up`'s wait for the
    broker (up to 60 s) was ignored, then SIGKILLed. Here it is PID 1 of a PID namespace
    of its own, the broker's port closed, and the SIGTERM comes from outside, as docker's."""
    env = compose_environment(rabbit_config, redis_prefix, database_url)
    env[cfg.AMQP_URI] = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nothing listens
    # --kill-child: killing unshare (at the end, if still running) kills PID 1 with it
    process = ComposeProcess(env, tmp_path / "stderr",
                             wrapper=("unshare", "--pid", "--fork", "--kill-child"))
    try:
        process.wait_for(lambda: "waiting for RabbitMQ" in process.err())
        unshare = process.proc.pid
        [pid] = Path(f"/proc/{unshare}/task/{unshare}/children").read_text().split()
        status = Path(f"/proc/{pid}/status").read_text()
        assert status.split("NSpid:")[1].splitlines()[0].split()[-1] == "1"  # PID 1 there
        os.kill(int(pid), signal.SIGTERM)
        try:
            process.proc.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"PID 1 still running {STOP_WITHIN_S:g} s after SIGTERM; its stderr "
                        "ends:\n" + process.err()[-3000:])
    finally:
        process.kill()
    err = process.err()
    assert process.proc.returncode == 0, err[-3000:]
    assert "stopped (SIGTERM) before the services started" in err and "Traceback" not in err

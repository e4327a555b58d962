"""Run Whistle as real processes, the way an operator does (``whistle up``)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from shared import config as cfg
from tests.conftest import REDIS_URL, free_port

WHISTLE = str(Path(sys.executable).with_name("whistle"))
# Printed by ``whistle up`` once every container has started (consumers included).
# /health answers earlier; a SIGTERM in between can hang nameko's shutdown.
RUNNING_LINE = b" running; HTTP on "


class WhistleProcess:
    """One ``whistle up`` process running some services; its log goes to a file.

    ``env`` is the whole environment of the process. ``address`` defaults to a free
    port; :meth:`restart` keeps it, as an operator restarting a service would.
    """

    def __init__(self, env: dict, services: str, log_path: Path, address: str | None = None):
        self.env, self.services, self.log_path = env, services, log_path
        self.address = address or f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0
        self._terminated = False

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def launch(self) -> "WhistleProcess":
        """Start the process without waiting for it (see :meth:`wait_ready`)."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [WHISTLE, "up", "--services", self.services, "--address", self.address],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._terminated = False
        return self

    def wait_ready(self, timeout: float = 30.0) -> "WhistleProcess":
        """Until /health answers 200 and ``whistle up`` says every service started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"whistle up exited: {self.log()[-2000:]}")
            if self._started() and self._healthy():
                return self
            time.sleep(0.1)
        raise AssertionError(f"whistle up did not become ready: {self.log()[-2000:]}")

    def start(self, timeout: float = 30.0) -> "WhistleProcess":
        return self.launch().wait_ready(timeout)

    def restart(self, timeout: float = 30.0) -> "WhistleProcess":
        """SIGKILL (if still running), then start again on the same address."""
        self.kill()
        return self.start(timeout)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, unacked messages go back to the broker."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM once, without waiting (see :meth:`stop`)."""
        if self.proc and self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if still running after ``timeout`` (noted in its log)."""
        self.terminate()
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                with open(self.log_path, "a") as log:
                    log.write(f"[tests] still running {timeout:.0f} s after SIGTERM: SIGKILLed\n")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _started(self) -> bool:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return RUNNING_LINE in log.read()

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False


def stop_all(processes: list[WhistleProcess], timeout: float = 15.0) -> None:
    """SIGTERM every process at once, then wait for each (SIGKILL if it hangs)."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop(timeout)


@pytest.fixture
def whistle_env(rabbit_config, redis_prefix, database_url):
    return process_env(rabbit_config["AMQP_URI"], redis_prefix, database_url)


def process_env(amqp_uri: str, redis_prefix: str, database_url: str) -> dict:
    """The environment of a test's ``whistle up`` processes (the cluster tests' too)."""
    env = dict(os.environ)
    env.update({
        cfg.AMQP_URI: amqp_uri,
        cfg.REDIS_URL: REDIS_URL,
        cfg.KEY_PREFIX: redis_prefix,
        cfg.DATABASE_URL: database_url,
        cfg.RETRY_DELAY_MS: "100",
        cfg.LOG_FORMAT: "json",
        # The fault and migration tests' load generators submit as one desk client, far
        # faster than a desk does; the limits themselves are tested in test_security.
        cfg.RATE_SUBMIT: "1000000",
        "PYTHONWARNINGS": "ignore",
    })
    return env


@pytest.fixture
def whistle_processes(whistle_env, tmp_path):
    """Factory: ``start("intake,routing")`` runs those services in a new process.

    ``env`` adds to (or overrides) ``whistle_env`` for that process only;
    ``address`` pins the HTTP address; ``wait=False`` returns at once (call
    :meth:`WhistleProcess.wait_ready`), to start several processes concurrently.
    """
    started: list[WhistleProcess] = []

    def start(services: str = "intake,routing,agency,notify", env: dict | None = None,
              address: str | None = None, wait: bool = True) -> WhistleProcess:
        log_path = tmp_path / f"{services}-{len(started) + 1}.log"
        process = WhistleProcess({**whistle_env, **(env or {})}, services, log_path, address)
        started.append(process)
        process.launch()
        return process.wait_ready() if wait else process

    yield start
    stop_all(started)

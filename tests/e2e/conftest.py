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


class WhistleProcess:
    """One ``whistle up`` process running some services; its log goes to a file."""

    def __init__(self, env: dict, services: str, log_path: Path):
        self.env, self.services, self.log_path = env, services, log_path
        self.address = f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 30.0) -> "WhistleProcess":
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [WHISTLE, "up", "--services", self.services, "--address", self.address],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"whistle up exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"whistle up did not become healthy: {self.log()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, unacked messages go back to the broker."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def whistle_env(rabbit_config, redis_prefix):
    env = dict(os.environ)
    env.update({
        cfg.AMQP_URI: rabbit_config["AMQP_URI"],
        cfg.REDIS_URL: REDIS_URL,
        cfg.KEY_PREFIX: redis_prefix,
        cfg.RETRY_DELAY_MS: "100",
        cfg.LOG_FORMAT: "json",
        "PYTHONWARNINGS": "ignore",
    })
    return env


@pytest.fixture
def whistle_processes(whistle_env, tmp_path):
    """Factory: ``start("intake,routing")`` runs those services in a new process."""
    started: list[WhistleProcess] = []

    def start(services: str = "intake,routing,agency,notify") -> WhistleProcess:
        process = WhistleProcess(whistle_env, services, tmp_path / f"{services}.log")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()

"""A real service process scrubs what eventlet prints to stderr, run as docker-compose.yml
runs it (`whistle up --services intake`) or by `nameko run` (the process's own test is
tests/unit/test_stderr_scrubbing.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from shared import config as cfg
from shared.errors import NotFound
from tests.conftest import REDIS_URL, free_port
from tests.support.compose import RUNNING_LINE, compose_command
from tests.support.stderr_probe import TOKEN
from tests.support.waiting import answers_rpc, wait_until
from tests.test_compose import CONFIG_ENV_VARS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# compose's command for intake, with the probe's green thread started first in the same
# interpreter (`whistle up` runs no extra service): the arguments are compose's own.
ARMED_CLI = ("import sys, whistle\n"
             "from tests.support.stderr_probe import arm\n"
             "arm()\n"
             "from whistle.cli import cli\n"
             "sys.exit(cli(sys.argv[1:], prog_name='whistle'))\n")


def _compose_with_probe() -> list[str]:
    argv = compose_command("intake")
    assert argv[1:3] == ["-m", "whistle"], argv
    return [sys.executable, "-c", ARMED_CLI, *argv[3:]]


def _nameko_run_with_probe() -> list[str]:
    return [sys.executable, "-m", "nameko", "run", "--config", "config.yaml",
            "services.intake.service", "tests.support.stderr_probe:StderrProbe"]


@pytest.mark.parametrize("command", [_compose_with_probe, _nameko_run_with_probe],
                         ids=["compose-whistle-up", "nameko-run"])
def test_intakes_process_scrubs_a_green_threads_traceback(command, rabbit_config, redis_prefix,
                                                          database_url, tmp_path):
    # A probe's green thread raises with a phone and a link's token in its message once
    # logging is configured: what configures it (`whistle up`'s run, or intake's
    # WorkerLogger under `nameko run`) is what wraps the process's stderr.
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV_VARS}
    address = f"127.0.0.1:{free_port()}"
    env.update({cfg.AMQP_URI: rabbit_config["AMQP_URI"], cfg.REDIS_URL: REDIS_URL,
                cfg.KEY_PREFIX: redis_prefix, cfg.DATABASE_URL: database_url,
                cfg.WEB_SERVER_ADDRESS: address,
                "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)})
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(command(), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=err_file)
        try:
            wait_until(lambda: "ValueError" in err_path.read_text(), timeout=60, interval=0.2)
            # Stopped once running: nameko 2.14's own runner cannot stop a container still
            # starting (its Timer.stop waits on a thread start() has not spawned yet:
            # AttributeError, and the process hangs), and the probe raises before intake's
            # entrypoints have all started. (`whistle up` can: tests/e2e/test_compose_stop.py.)
            wait_until(lambda: _answers(f"http://{address}/health"), timeout=60, interval=0.2)
            if command is _compose_with_probe:
                wait_until(lambda: RUNNING_LINE in err_path.read_text(), timeout=60, interval=0.2)
            else:  # /health answers while the consumers are still starting
                wait_until(lambda: answers_rpc(rabbit_config["AMQP_URI"], "intake",
                                               "get_issue", "none", refusal=NotFound),
                           timeout=60, interval=0.2)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # say what it was doing, not only that it hung
                pytest.fail("intake did not stop within 60 s of SIGTERM; its stderr ends:\n"
                            + err_path.read_text()[-3000:])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = err_path.read_text()
    assert proc.returncode == 0, err[-2000:]
    assert "13912345678" not in err and TOKEN not in err, err[-2000:]
    assert "Traceback (most recent call last):" in err
    assert "in _raise_once_logging_is_configured\n    raise ValueError(MESSAGE)\n" in err
    assert ("ValueError: call 139****5678 about http://x/issues/1?token=[redacted]\n"
            in err), err[-2000:]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False

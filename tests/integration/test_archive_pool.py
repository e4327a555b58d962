"""One PostgreSQL pool a process, however many services set up side by side, closed at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import eventlet
import pytest
from kombu import Connection

from shared import config as cfg
from shared import store as store_module
from shared.errors import Unauthorized
from shared.store import archive_for, close_archives, release_archive
from tests.conftest import REDIS_URL, free_port
from tests.support.waiting import answers_rpc, wait_until
from tests.test_compose import CONFIG_ENV_VARS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_services_setting_up_together_share_one_pool_and_it_closes(database_url,
                                                                   monkeypatch):
    monkeypatch.setattr(store_module, "_archives", {})
    monkeypatch.setattr(store_module, "_archive_users", {})
    # As ``whistle up`` sets its services up: side by side, each asking for the archive
    # while the others wait on the schema check.
    archives = [thread.wait() for thread in
                [eventlet.spawn(archive_for, database_url) for _ in range(4)]]
    assert len({id(archive) for archive in archives}) == 1
    assert list(store_module._archives.values()) == [archives[0]]

    close_archives()
    assert archives[0].pool.closed and store_module._archives == {}


def test_the_last_service_to_stop_closes_the_pool(database_url, monkeypatch):
    monkeypatch.setattr(store_module, "_archives", {})
    monkeypatch.setattr(store_module, "_archive_users", {})
    first, second = archive_for(database_url), archive_for(database_url)
    release_archive(database_url)
    assert not first.pool.closed  # the other service still reads archived issues
    release_archive(database_url)
    assert second.pool.closed and store_module._archives == {}
    release_archive(database_url)  # once more (a stop, then a kill): nothing to do
    assert archive_for(database_url) is not first  # a service set up again opens another
    close_archives()


def test_nameko_run_stops_on_sigterm_without_a_finalizer_traceback(
        rabbit_config, redis_prefix, database_url):
    # Under `nameko run` (compose) nothing closed the archive's pool: at the
    # interpreter's exit its __del__ tried to join its threads from a dying greenlet,
    # "Exception ignored in: <function ConnectionPool.__del__ ...> ... RuntimeError:
    # greenlet is being finalized". `whistle up` closed it itself.
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV_VARS}
    env.update({cfg.AMQP_URI: rabbit_config["AMQP_URI"], cfg.REDIS_URL: REDIS_URL,
                cfg.KEY_PREFIX: redis_prefix, cfg.DATABASE_URL: database_url,
                cfg.WEB_SERVER_ADDRESS: f"127.0.0.1:{free_port()}",
                "PYTHONWARNINGS": "ignore"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "nameko", "run", "--config", "config.yaml",
         "services.routing.service"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Started, its pool open (the archive reads of the routing service). Not just
        # consuming: nameko 2.14's own runner hangs for good on a SIGTERM while its
        # container is still starting (docs/operations.md), which is not what this
        # test is about. A worker that has answered an RPC means it has started.
        with Connection(rabbit_config["AMQP_URI"]) as amqp:
            wait_until(lambda: _consumers(amqp, "whistle.routing.route_issue") > 0,
                       timeout=60, interval=0.2)
        wait_until(lambda: answers_rpc(rabbit_config["AMQP_URI"], "routing", "resident_view",
                                       "none", "", refusal=Unauthorized),
                   timeout=60, interval=0.2)
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("nameko run still running 60 s after its SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-2000:]
    assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr[-2000:]


def _consumers(amqp, queue: str) -> int:
    channel = amqp.channel()
    try:
        return channel.queue_declare(queue, passive=True).consumer_count
    except Exception:  # noqa: BLE001 - not declared yet
        return 0
    finally:
        with contextlib.suppress(Exception):  # a passive declare's 404 closed it already
            channel.close()

"""Taking the infrastructure down and bringing it back: the machine's RabbitMQ, a
dedicated Redis.

- :func:`broker_outage` stops the RabbitMQ *application* (``rabbitmqctl stop_app``;
  the Erlang node stays up, so vhosts, durable queues and persistent messages
  survive) and always starts it again, however the block ends.
- :class:`RedisServer` is a redis-server of the test's own, on a free port, with
  AOF (``appendfsync everysec``) in a directory of the test's own: it can be
  SIGKILLed and restarted on the same data. The machine's Redis (6379) is never
  touched.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import requests
from kombu import Connection

from tests.conftest import free_port

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
MANAGEMENT_API = "http://127.0.0.1:15672/api/overview"


def rabbitmqctl(*args: str, timeout: float = 120.0) -> None:
    done = subprocess.run([RABBITMQCTL, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}"


def broker_ready(amqp_uri: str) -> bool:
    """The management API answers and an AMQP connection to ``amqp_uri`` opens."""
    try:
        if requests.get(MANAGEMENT_API, auth=("guest", "guest"), timeout=2).status_code != 200:
            return False
        with Connection(amqp_uri, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def wait_broker(amqp_uri: str, timeout: float = 90.0) -> float:
    """Seconds until :func:`broker_ready`."""
    started = time.monotonic()
    while not broker_ready(amqp_uri):
        assert time.monotonic() - started < timeout, "RabbitMQ did not come back"
        time.sleep(0.2)
    return time.monotonic() - started


@contextlib.contextmanager
def broker_outage(amqp_uri: str) -> Iterator[dict]:
    """``stop_app`` on entry, ``start_app`` on exit (always), then wait for the broker.

    Yields a dict that gets ``down_at`` (stop_app returned) and, on exit, ``up_at``
    (start_app issued) and ``ready_at`` (management API and AMQP answer), all
    ``time.monotonic()``.
    """
    times: dict[str, float] = {}
    try:
        rabbitmqctl("stop_app")
        times["down_at"] = time.monotonic()
        yield times
    finally:
        times["up_at"] = time.monotonic()
        rabbitmqctl("start_app")
        wait_broker(amqp_uri)
        times["ready_at"] = time.monotonic()


class RedisServer:
    """A redis-server of the test's own, AOF on, that can be SIGKILLed and restarted."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.dir),
             "--save", "", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:  # PING answers only once the AOF is loaded
                assert self.proc.poll() is None, (self.dir / "redis.log").read_text()[-2000:]
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    pass
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: what was written to the AOF survives, nothing else is flushed."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

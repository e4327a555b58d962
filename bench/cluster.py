"""Whistle as an operator runs it: one ``whistle up --services X`` process per instance.

Every process gets its own HTTP address (intake's instances share the load the
benchmark offers), the sandbox's vhost and key prefix, and a log file. Its peak RSS
and CPU time are read from ``/proc`` (``bench.system``).

The processes stay in the benchmark's process group, so Ctrl-C at a terminal reaches
them too; a SIGTERM or SIGHUP sent to the benchmark alone reaches only it, and
:meth:`Cluster.stop` (run on the way out, whatever stopped the run) stops each of
them by its pid. ``whistle up`` runs its services in one process, with no children.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.signals import uninterrupted
from bench.system import cpu_seconds, peak_rss_mb
from shared import config as cfg
from shared.auth import DESK, issue_token
from whistle.runner import SERVICE_NAMES as ALL_SERVICES

# The benchmark measures the chain: the four services an issue passes through. The web
# pages' service serves people, not messages, and is left out.
SERVICE_NAMES = tuple(name for name in ALL_SERVICES if name != "web")

WHISTLE = str(Path(sys.executable).with_name("whistle"))
START_TIMEOUT_S = 60.0
BENCH_SUBMIT_LIMIT = 10_000_000  # per window: counted, never reached


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_instances(specs: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``("1",)`` -> one of each; ``("2", "routing=3")`` -> two of each but three routing.

    Each spec may also be comma-separated: ``"1,routing=2"``.
    """
    default, overrides = 1, {}
    for spec in (part.strip() for item in specs for part in item.split(",")):
        if not spec:
            continue
        name, _, number = spec.rpartition("=")
        try:
            value = int(number)
        except ValueError:
            raise ValueError(f"--instances {spec!r}: expected N or SERVICE=N") from None
        if value < 1:
            raise ValueError(f"--instances {spec!r}: at least 1 instance")
        if name and name not in SERVICE_NAMES:
            raise ValueError(f"--instances {spec!r}: unknown service {name!r}")
        if name:
            overrides[name] = value
        else:
            default = value
    return {service: overrides.get(service, default) for service in SERVICE_NAMES}


@dataclass
class ServiceProcess:
    """One ``whistle up --services SERVICE`` process."""

    service: str
    index: int
    env: dict
    log_path: Path
    address: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    proc: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def spawn(self) -> None:
        # Uninterrupted: a signal must not land between the fork and ``self.proc``,
        # or nothing would know to stop the process.
        with uninterrupted():
            log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
            self.proc = subprocess.Popen(
                [WHISTLE, "up", "--services", self.service, "--address", self.address],
                env=self.env, stdout=log, stderr=subprocess.STDOUT)
            log.close()

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.pid)

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


class Cluster:
    """The four services, ``counts[service]`` processes each; a context manager."""

    def __init__(self, counts: dict[str, int], amqp_uri: str, redis_url: str, prefix: str,
                 log_dir: Path, extra_env: dict[str, str] | None = None):
        self.counts = dict(counts)
        self.log_dir = log_dir
        self.env = dict(os.environ)
        self.env.update({cfg.AMQP_URI: amqp_uri, cfg.REDIS_URL: redis_url,
                         cfg.KEY_PREFIX: prefix, cfg.LOG_FORMAT: "json",
                         # The load comes from one desk client: its submissions are
                         # counted as usual (the same script, the same round trip), under
                         # a limit it cannot reach.
                         cfg.RATE_SUBMIT: str(BENCH_SUBMIT_LIMIT),
                         "PYTHONWARNINGS": "ignore", **(extra_env or {})})
        self.processes: list[ServiceProcess] = []

    def __enter__(self) -> Cluster:
        try:
            self.add(self.counts)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def add(self, counts: dict[str, int]) -> list[ServiceProcess]:
        """Start more instances (all at once), and wait until each answers ``/health``."""
        new = []
        for service, n in counts.items():
            for _ in range(n):
                index = sum(p.service == service for p in self.processes) + 1
                process = ServiceProcess(service, index, self.env,
                                         self.log_dir / f"{service}-{index}.log")
                self.processes.append(process)
                new.append(process)
                process.spawn()
        for process in new:
            process.wait_healthy()
        self.counts = {s: sum(p.service == s for p in self.processes) for s in SERVICE_NAMES}
        return new

    def of(self, service: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.service == service]

    def desk_headers(self) -> dict[str, str]:
        """What the load generator submits with: a desk token, signed as the services
        check it (their own secret), as a desk's hotline system would."""
        secret = cfg.config_from_env(self.env)[cfg.SECRET]
        return {"Authorization": f"Bearer {issue_token(DESK, 'bench', secret)}"}

    def intake_urls(self) -> list[str]:
        return [p.url for p in self.of("intake")]

    def cpu_seconds(self) -> dict[str, float]:
        return {p.name: p.cpu_seconds() or 0.0 for p in self.processes}

    def peak_rss_mb(self) -> dict[str, float | None]:
        return {p.name: p.peak_rss_mb() for p in self.processes}

    def stop(self) -> None:
        """SIGTERM every process at once, then wait for each (SIGKILL after 20 s); a
        stopping signal (``bench.signals``) waits until they are all gone."""
        with uninterrupted():
            for process in self.processes:
                if process.proc and process.proc.poll() is None:
                    process.proc.send_signal(signal.SIGTERM)
            for process in self.processes:
                process.stop()

    def log_lines(self) -> list[str]:
        return [line for p in self.processes if p.log_path.exists()
                for line in p.log_path.read_text(errors="replace").splitlines()]

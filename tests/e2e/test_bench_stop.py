"""``python -m bench`` stopped by a signal cleans up like Ctrl-C, and says so.

The benchmark runs tiny (a small baseline, a few issues of warm-up, then a long,
gentle fixed rate that the signal cuts short) as a real subprocess. The test waits
for the point named in its output, sends the signal, and asserts the exit status
(128 + the signal) and that nothing is left: the vhost (management API), the Redis
keys under its prefix, and every process the benchmark started (the ``whistle up``
services, the baseline's hops), found in ``/proc`` as its descendants. No timing.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import requests

from bench.infra import delete_prefix
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.e2e

API = "http://guest:guest@127.0.0.1:15672/api"
# Long enough that the signal always lands mid-run; the run is never meant to finish.
BENCH = [sys.executable, "-m", "bench", "--rates", "20", "--duration", "60", "--flat-out", "0",
         "--baseline-messages", "200", "--warmup", "4"]
RUN_LINE = re.compile(r"^bench: run (\w+): vhost (\S+), Redis prefix (\S+)$")
SERVICES_LINE = re.compile(r"^bench: services running: (.*)$")
WAIT_S = 120.0


def vhosts() -> set[str]:
    return {v["name"] for v in requests.get(f"{API}/vhosts", timeout=5).json()}


def redis_keys(prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(f"{prefix}:*", count=1000))
    finally:
        client.close()


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root`` now: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
            started[int(entry)] = stat[2]
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child in started:
                found[child] = started[child]
                todo.append(child)
    return found


def alive(processes: dict[int, int]) -> list[int]:
    """Those still running (not zombies), with the same start time."""
    return [pid for pid, start in processes.items()
            if (stat := _stat(pid)) is not None and stat[2] == start and stat[1] != "Z"]


class Bench:
    """``python -m bench`` as a subprocess; both its pipes are read in the background.

    Each pipe has exactly one reader: under eventlet a second one (``communicate`` on a pipe a
    thread still reads) raises "Second simultaneous read".
    """

    def __init__(self):
        self.proc = subprocess.Popen(BENCH, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_stdout, daemon=True)]
        for reader in self._readers:
            reader.start()
        self.stdout = ""

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def _read_stdout(self) -> None:
        self.stdout = self.proc.stdout.read()

    def wait_for(self, pattern: str) -> str:
        """The first line (from now on) containing ``pattern``; fails if the bench exits first."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"bench exited before {pattern!r}:\n{self.output()}")
            if pattern in line:
                return line
        pytest.fail(f"no {pattern!r} from the bench:\n{self.output()}")

    def finish(self, processes: dict[int, int]) -> int:
        """Wait for the bench to exit, adding to ``processes`` any it starts meanwhile."""
        deadline = time.monotonic() + WAIT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            processes.update(descendants(self.proc.pid))
            time.sleep(0.05)
        self.proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(10)
        return self.proc.returncode

    def output(self) -> str:
        return "\n".join(self.lines[-60:]) + self.stdout[-2000:]


@pytest.fixture
def bench():
    """The bench, and afterwards (only if the test failed to see it clean up) its debris."""
    started: list[Bench] = []
    debris: dict = {"processes": {}, "run": None}

    def start() -> Bench:
        started.append(Bench())
        return started[-1]

    yield start, debris
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)
    for pid in alive(debris["processes"]):
        os.kill(pid, signal.SIGKILL)
    if debris["run"]:
        _, vhost, prefix = debris["run"]
        requests.delete(f"{API}/vhosts/{vhost}", timeout=10)
        delete_prefix(REDIS_URL, prefix)


TERMINAL_CTRL_C = "Ctrl-C at a terminal (SIGINT to the whole process group) while the hops run"
# (the signal, what the bench is doing when it arrives, signals sent during the cleanup)
CASES = {
    "SIGTERM while offering load": (signal.SIGTERM, "20/s: offering", []),
    "SIGHUP, then SIGTERM and SIGINT during cleanup": (
        signal.SIGHUP, "20/s: offering", [signal.SIGTERM, signal.SIGINT]),
    "SIGTERM while the baseline's hops start": (signal.SIGTERM, "baseline: 200 messages", []),
    "SIGTERM while the framework floor's nameko hops start": (
        signal.SIGTERM, "framework floor: the same four hops", []),
    TERMINAL_CTRL_C: (signal.SIGINT, "baseline: 200 messages", []),
}
# Sent to the bench's process group, its children included, as a terminal does.
TO_THE_GROUP = {TERMINAL_CTRL_C}
# Said before the services start.
BEFORE_SERVICES = ("baseline: 200 messages", "framework floor: the same four hops")


@pytest.mark.parametrize("case", list(CASES))
def test_a_signal_stops_the_bench_and_leaves_nothing_behind(bench, case):
    start, debris = bench
    signum, when, during_cleanup = CASES[case]
    run = start()
    match = RUN_LINE.match(run.wait_for("bench: run "))
    assert match, run.output()
    run_id, vhost, prefix = debris["run"] = match.groups()
    assert (vhost, prefix) == (f"whistle-bench-{run_id}", f"bench-{run_id}")
    assert vhost in vhosts()

    services: set[int] = set()
    if when not in BEFORE_SERVICES:
        listed = SERVICES_LINE.match(run.wait_for("bench: services running: "))
        services = {int(pid) for pid in re.findall(r"\(pid (\d+)\)", listed.group(1))}
        assert len(services) == 4, listed.group(0)
    run.wait_for(when)
    processes = debris["processes"]
    deadline = time.monotonic() + WAIT_S
    while not processes and time.monotonic() < deadline:  # the hops: wait for one
        processes.update(descendants(run.proc.pid))
        time.sleep(0.02)
    assert services <= processes.keys()  # the services are the bench's own children
    if services:
        assert redis_keys(prefix), "the warm-up left no key under the prefix"

    if case in TO_THE_GROUP:
        os.killpg(run.proc.pid, signum)
    else:
        run.proc.send_signal(signum)
    if during_cleanup:
        run.wait_for(f"bench: {signal.Signals(signum).name} received: stopping")
        for later in during_cleanup:
            run.proc.send_signal(later)
    status = run.finish(processes)

    name = signal.Signals(signum).name
    assert status == 128 + signum, run.output()
    assert f"bench: stopped by {name}; services stopped, vhost and Redis keys removed" \
        in run.lines, run.output()
    for later in during_cleanup:
        assert f"bench: {signal.Signals(later).name} received: cleanup in progress, please wait" \
            in run.lines, run.output()
    assert "Traceback" not in "\n".join(run.lines), run.output()
    assert "| phase |" not in run.stdout  # no report for a stopped run
    assert vhost not in vhosts()
    assert redis_keys(prefix) == []
    assert alive(processes) == [], f"still running: {alive(processes)}\n{run.output()}"

"""What the benchmark reads about processes and the machine, from ``/proc`` (no psutil).

- Peak RSS of a process is its ``VmHWM`` (the kernel's high-water mark of resident memory).
- CPU time is ``utime + stime`` from ``/proc/<pid>/stat``; the difference between two
  readings is how much CPU that process used in between, which is how the report says
  where the time goes (CPU milliseconds per issue, per process).
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    """``VmHWM`` of ``pid`` in MiB, or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by ``pid`` (all its threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; it is wrapped in parentheses.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds every CPU of the machine spent busy (not idle or waiting on I/O) so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def pids_named(command: str) -> list[int]:
    """Every process whose ``comm`` is ``command`` (e.g. ``beam.smp``, ``redis-server``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    found.append(int(entry.name))
            except OSError:
                continue
    return sorted(found)


def infrastructure_pids() -> dict[str, list[int]]:
    """The broker's and Redis's processes on this machine, to account their CPU too."""
    return {"rabbitmq": pids_named("beam.smp"), "redis": pids_named("redis-server")}


def _version(command: list[str]) -> str | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[-1].strip() if text else None


def machine(rabbitmq_version: str | None = None) -> dict[str, object]:
    """nproc, memory, CPU model, kernel and the versions of what is measured."""
    from importlib.metadata import version

    meminfo = Path("/proc/meminfo").read_text().split()
    cpu_model = next((line.split(":", 1)[1].strip()
                      for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    redis_version = _version(["redis-server", "--version"])
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 ** 2, 1),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: version(name) for name in
                     ("nameko", "kombu", "amqp", "eventlet", "redis", "pydantic")},
        "rabbitmq": rabbitmq_version,
        "redis": redis_version.split()[2].removeprefix("v=") if redis_version else None,
    }

"""Sampling every service process with py-spy during a phase, and what the samples say.

py-spy is an optional dependency, the ``profile`` extra: install it into the venv
to profile (``.venv/bin/pip install -e '.[profile]'``, which pins 0.3.14: 0.4.x
cannot attach to the pyenv Python used here). It samples another process from outside (``--nonblocking``:
without pausing it), so the services run unchanged.

Only samples taken while the process holds the GIL count (``--gil``): that is, while
it runs Python. Without it, a service under eventlet showed a third of its samples in
``send``: on a loaded machine the process its ``send`` woke up often runs first, and a
wall-clock sampler charges that time to the sender (``docs/benchmarks.md``).

Each process's samples are written as collapsed stacks (``<name>.txt``, one
``frame;frame;... count`` per line, for flamegraph tools), and summarised:

- ``by_package``: where the CPU went, by the package of the innermost frame
  (pydantic, json, redis, kombu/amqp, logging, the project's own code, ...);
- ``top_self``: the functions most often on top of the stack;
- ``top_project``: the project's functions most often anywhere on the stack
  (inclusive time), which is where a fix would go.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 100
TOP = 12
PROJECT = ("services/", "shared/", "whistle/", "bench/")
# The innermost frame's file, mapped to what a person would call it.
PACKAGES = (
    ("pydantic", "pydantic"), ("json", "json"), ("redis", "redis"),
    ("kombu", "kombu/amqp"), ("amqp", "kombu/amqp"), ("eventlet", "eventlet"),
    ("greenlet", "eventlet"), ("structlog", "logging"), ("logging", "logging"),
    ("nameko", "nameko"), ("werkzeug", "werkzeug/http"), ("http", "werkzeug/http"),
    ("yaml", "yaml"), ("jwt", "jwt"), ("socket", "socket/ssl"), ("ssl", "socket/ssl"),
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


@dataclass
class Profiler:
    out_dir: Path
    runs: list[tuple[str, subprocess.Popen, Path]]


def start(processes, out_dir: Path) -> Profiler | None:
    """Start sampling each process (``.name``, ``.pid``); None when py-spy is missing."""
    exe = py_spy()
    if exe is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for process in processes:
        path = out_dir / f"{process.name}.txt"
        proc = subprocess.Popen(
            [exe, "record", "--pid", str(process.pid), "--rate", str(RATE_HZ), "--nonblocking",
             "--gil", "--format", "raw", "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs.append((process.name, proc, path))
    return Profiler(out_dir, runs)


def stop(profiler: Profiler) -> dict:
    """Stop sampling (py-spy writes its file on SIGINT) and summarise every process."""
    for _, proc, _ in profiler.runs:
        proc.send_signal(signal.SIGINT)
    summaries = {}
    for name, proc, path in profiler.runs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        summaries[name] = summarise(path.read_text()) if path.exists() else {"samples": 0}
    return {"dir": str(profiler.out_dir), "rate_hz": RATE_HZ, "processes": summaries}


def parse(collapsed: str) -> list[tuple[list[tuple[str, str]], int]]:
    """Collapsed stacks -> [([(function, file), ...outermost first], count)]."""
    stacks = []
    for line in collapsed.splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        parsed = []
        for frame in frames.split(";"):
            match = FRAME.match(frame.strip())
            if match:
                parsed.append((match["function"], match["file"]))
        if parsed:
            stacks.append((parsed, int(count)))
    return stacks


def package_of(file: str) -> str:
    path = file.replace("\\", "/")
    if any(marker in path for marker in PROJECT):
        return "whistle (project)"
    parts = [p for p in re.split(r"[/.]", path) if p]
    for needle, package in PACKAGES:
        if needle in parts:
            return package
    return "other"


def summarise(collapsed: str) -> dict:
    stacks = parse(collapsed)
    total = sum(count for _, count in stacks)
    if not total:
        return {"samples": 0}
    by_package, top_self, top_project = Counter(), Counter(), Counter()
    for frames, count in stacks:
        function, file = frames[-1]
        by_package[package_of(file)] += count
        top_self[f"{function} ({file})"] += count
        for name in {f"{fn} ({fl})" for fn, fl in frames if package_of(fl) == "whistle (project)"}:
            top_project[name] += count

    def share(counter: Counter, n: int = TOP) -> dict[str, float]:
        return {k: round(v * 100 / total, 1) for k, v in counter.most_common(n)}

    return {"samples": total, "by_package": share(by_package, 20), "top_self": share(top_self),
            "top_project": share(top_project)}

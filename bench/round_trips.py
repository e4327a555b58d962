"""``python -m bench.round_trips``: what sharing Redis round trips saves, by how many wait.

Green threads, all at once, each run a small script (a ``SET`` and a ``GET``) through
``shared.store.run_script``, on a client of their own (every call its own round trip)
and on one that shares round trips (``shared.round_trips``). For each number of
callers it prints the client's CPU and Redis's CPU per call (from ``/proc``, so both
sides count), and the wall time. Against the local Redis (``REDIS_URL``, default
``redis://127.0.0.1:6379/0``), under a key prefix of its own, deleted afterwards.

Seconds on a shared VM drift (``docs/benchmarks.md``): compare the two rows of the
same number of callers, run one after the other, rather than figures from different
runs.
"""

from __future__ import annotations

import whistle  # noqa: F401, I001 - eventlet's monkey-patching first, as in every service process

# isort: split

import os
import time
import uuid

import click
import eventlet

from bench.system import cpu_seconds, infrastructure_pids
from shared.store import connect, run_script

CALLERS = (1, 2, 4, 8, 16, 32)
SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"


def measure(url: str, callers: int, calls: int, shared: bool, prefix: str) -> dict:
    """Per-call CPU (client, Redis) and wall time, ``callers`` green threads at once."""
    client = connect(url, share_round_trips=shared)
    script = client.register_script(SCRIPT)
    run_script(script, [f"{prefix}:warm"], ["0"])
    each = max(1, calls // callers)
    redis_pids = infrastructure_pids()["redis"]

    def caller(i: int) -> None:
        for n in range(each):
            run_script(script, [f"{prefix}:{i}"], [str(n)])

    def redis_cpu() -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in redis_pids)

    pool = eventlet.GreenPool(callers)
    started, client_before, redis_before = time.monotonic(), time.process_time(), redis_cpu()
    for i in range(callers):
        pool.spawn(caller, i)
    pool.waitall()
    done = callers * each
    figures = {"client_us": (time.process_time() - client_before) * 1e6 / done,
               "redis_us": (redis_cpu() - redis_before) * 1e6 / done,
               "wall_us": (time.monotonic() - started) * 1e6 / done}
    client.close()
    return figures


@click.command()
@click.option("--calls", default=16000, show_default=True, help="Script calls per row.")
def main(calls: int) -> None:
    """Client and Redis CPU per script call, alone and sharing round trips."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench-trips-{uuid.uuid4().hex[:8]}"
    click.echo("| callers at once | round trips | client µs a call | Redis µs a call | "
               "both | wall µs a call |")
    click.echo("| --- | --- | --- | --- | --- | --- |")
    try:
        for callers in CALLERS:
            for shared in (False, True):
                f = measure(url, callers, calls, shared, prefix)
                click.echo(f"| {callers} | {'shared' if shared else 'each its own'} | "
                           f"{f['client_us']:.1f} | {f['redis_us']:.1f} | "
                           f"{f['client_us'] + f['redis_us']:.1f} | {f['wall_us']:.1f} |")
    finally:
        client = connect(url)
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    main(prog_name="python -m bench.round_trips")

"""How much this machine's speed moves on its own: ``python -m bench.drift``.

Times the same small piece of pure-Python work every 100 ms (about a tenth of one
core) and prints the median time in each five-second window. On an idle machine the
figures would be flat; on the shared VMs the benchmark runs on, they are not, and a
ratio of two measurements taken a minute apart inherits the difference
(``docs/benchmarks.md``, "Why phases are long"). Run it with nothing else going on.
"""

from __future__ import annotations

import statistics
import time

import click

WINDOW_S = 5.0
EVERY_S = 0.1


def unit_of_work() -> int:
    """A fixed amount of interpreter work, a millisecond or two."""
    total = 0
    for i in range(20_000):
        total += i * i % 7
    return total


def sample(seconds: float, every_s: float = EVERY_S) -> list[tuple[float, float]]:
    """(seconds since the start, ms one unit of work took), every ``every_s``."""
    samples, start = [], time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        began = time.perf_counter()
        unit_of_work()
        samples.append((now - start, (time.perf_counter() - began) * 1000))
        time.sleep(every_s)
    return samples


def window_medians(samples: list[tuple[float, float]], window_s: float = WINDOW_S
                   ) -> list[float]:
    """The median ms of each ``window_s`` window, in time order. Pure."""
    windows: dict[int, list[float]] = {}
    for at, ms in samples:
        windows.setdefault(int(at // window_s), []).append(ms)
    return [statistics.median(windows[k]) for k in sorted(windows)]


@click.command()
@click.option("--seconds", type=float, default=90.0, show_default=True,
              help="How long to watch.")
def drift(seconds: float) -> None:
    """Median ms of a fixed unit of work per 5 s window; the spread is the machine's."""
    medians = window_medians(sample(seconds))
    click.echo("ms per unit, by 5 s window: " + " ".join(f"{m:.2f}" for m in medians))
    fastest, slowest = min(medians), max(medians)
    click.echo(f"fastest window {fastest:.2f} ms, slowest {slowest:.2f} ms: "
               f"the slowest is {slowest / fastest:.2f}x the fastest")


if __name__ == "__main__":
    drift(prog_name="python -m bench.drift")

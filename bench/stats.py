"""Percentiles and rates: small, pure, and shared by the baseline and Whistle's phases."""

from __future__ import annotations

import math
from collections.abc import Sequence

STEADY_TRIM = 0.1  # a steady rate ignores the first and last 10% of completions


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p95, p99 and max of latencies given in seconds, in milliseconds."""
    def ms(value):
        return None if value is None else round(value * 1000, 1)

    return {"n": len(seconds), "p50": ms(percentile(seconds, 50)),
            "p95": ms(percentile(seconds, 95)), "p99": ms(percentile(seconds, 99)),
            "max": ms(max(seconds) if seconds else None)}


def steady_rate(times: Sequence[float], trim: float = STEADY_TRIM) -> float | None:
    """Completions per second between the ``trim`` and ``1 - trim`` quantiles of ``times``.

    Leaving out the start (pipelines filling) and the tail (draining) gives the rate the
    system sustains with work waiting, which is what "throughput" means here.
    """
    if len(times) < 10:
        return overall_rate(times)
    ordered = sorted(times)
    lo, hi = int(len(ordered) * trim), int(len(ordered) * (1 - trim)) - 1
    span = ordered[hi] - ordered[lo]
    return (hi - lo) / span if span > 0 else None


def overall_rate(times: Sequence[float], start: float | None = None) -> float | None:
    """Completions per second from ``start`` (default the first completion) to the last."""
    if not times:
        return None
    begin = min(times) if start is None else start
    span = max(times) - begin
    count = len(times) if start is not None else len(times) - 1
    return count / span if span > 0 and count > 0 else None

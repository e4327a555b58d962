"""The durations GET /stats reads from PostgreSQL, and the percentiles picked out of them
(shared.archive_stats), against the definitions compute_stats uses."""

import random
import struct

import numpy
import pytest

from services.intake.stats import nearest_rank
from shared.archive_stats import _FLOAT8_ARRAY, _DurationsLoader, _percentiles


def binary_float8_array(values: list[float | None]) -> bytes:
    """A one-dimensional float8[] as PostgreSQL sends it in binary (array_send)."""
    header = struct.pack("!iiIii", 1, any(v is None for v in values), 701, len(values), 1)
    return header + b"".join(struct.pack("!i", -1) if v is None else struct.pack("!id", 8, v)
                             for v in values)


def load(data: bytes) -> numpy.ndarray:
    return _DurationsLoader(_FLOAT8_ARRAY).load(data)


def test_an_array_loads_every_value_exactly():
    values = [0.0, 1.5, 86399.999999, 1e-06, 3e300, 12345.678901]
    assert load(binary_float8_array(values)).tolist() == values


def test_nulls_are_left_out_as_percentile_disc_leaves_them_out():
    assert load(binary_float8_array([2.5, None, 7.0, None])).tolist() == [2.5, 7.0]


def test_an_empty_array_has_no_dimension():
    assert load(struct.pack("!iiI", 0, 0, 701)).size == 0


@pytest.mark.parametrize("count", [1, 2, 3, 9, 10, 11, 100, 1001])
def test_selected_percentiles_equal_the_sorted_nearest_rank(count):
    rng = random.Random(count)
    seconds = [round(rng.uniform(0, 90000), 6) for _ in range(count)]
    seconds += seconds[:count // 3]  # ties, as equal durations give
    assert _percentiles(numpy.array(seconds)) == {
        "median": round(nearest_rank(seconds, 50), 3), "p90": round(nearest_rank(seconds, 90), 3)}


def test_no_durations_give_no_percentiles():
    assert _percentiles(numpy.empty(0)) == {"median": None, "p90": None}

"""Polling helpers: wait for the system to get somewhere, with a bounded timeout."""

import time


def wait_until(probe, timeout: float = 15.0, interval: float = 0.05):
    """The first truthy value ``probe()`` returns; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def wait_for(fetch, until, timeout: float = 20.0, interval: float = 0.1):
    """``fetch()`` once ``until(value)`` holds; fails with the last value seen."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not until(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; last value: {value}")
        time.sleep(interval)
        value = fetch()
    return value

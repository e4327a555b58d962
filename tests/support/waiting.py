"""Polling helpers: wait for the system to get somewhere, with a bounded timeout."""

import time

from nameko.exceptions import RpcTimeout
from nameko.standalone.rpc import ClusterRpcProxy


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


def answers_rpc(amqp_uri: str, service: str, method: str, *args,
                refusal: type[Exception]) -> bool:
    """Whether ``service`` answers ``method(*args)`` with its ``refusal`` (a call that
    must fail, so that it changes nothing): a worker of its has run, so its container has
    started, which a consumer on its queue does not show. False while nobody answers."""
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=5) as rpc:
        try:
            getattr(getattr(rpc, service), method)(*args)
        except refusal:
            return True
        except RpcTimeout:
            return False
    raise AssertionError(f"{service}.{method}{args} was not refused")

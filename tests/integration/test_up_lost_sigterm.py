"""A SIGTERM before the services start stops ``whistle up``, even when its exception is lost.

The SIGTERM handler ``whistle up`` sets before its services start raises, and the
exception lands wherever the main thread is. In a weakref callback Python prints it and
carries on ("Exception ignored in: <function _get_module_lock.<locals>.cb>", seen once
in CI under load): start-up went on, the services ran, and docker's SIGKILL ended them
10 s later (tests/e2e/test_compose_stop.py, "after launch +0.8s"). Here the signal is
lost that way on purpose, in this process, then ``run`` is called as ``whistle up``
calls it, against the real broker: it must stop before starting any service.
"""

from __future__ import annotations

import signal

import pytest

from shared import config as cfg
from shared import logging as whistle_logging
from tests.support.lost_signals import raised_in_a_weakref_callback
from whistle import runner
from whistle.runner import StoppedBeforeStart

pytestmark = pytest.mark.integration


@pytest.fixture
def signals_kept():
    """This process's logging and the runner's note as they were (its signal handlers are
    put back for every test: tests/conftest.py)."""
    log_format = whistle_logging._configured_format
    yield
    runner._stopped_before_start.asked.clear()
    whistle_logging._configured_format = None
    whistle_logging.configure_logging(log_format or "console")


class Started(Exception):
    """Raised by the stubbed ``ServiceRunner.start``: the services would have started."""


@pytest.fixture
def starts(monkeypatch) -> list:
    """Every runner ``run`` went on to start; none of the services is started for real."""
    started = []

    def start(self):
        started.append(self)
        raise Started

    monkeypatch.setattr(runner.ServiceRunner, "start", start)
    return started


def test_a_sigterm_lost_in_a_weakref_callback_still_stops_up_before_any_service_starts(
        signals_kept, whistle_config, starts, monkeypatch):
    runner.stop_on_sigterm_before_start()

    assert raised_in_a_weakref_callback(  # only printed: start-up goes on
        monkeypatch, lambda: runner._stopped_before_start(signal.SIGTERM, None)
    ) == [StoppedBeforeStart]

    with pytest.raises(StoppedBeforeStart):
        runner.run(("intake", "routing"), whistle_config)
    assert starts == []


def test_without_a_sigterm_up_goes_on_to_start_its_services(signals_kept, whistle_config,
                                                             starts):
    # the same path with no signal reaches the runner's start
    runner.stop_on_sigterm_before_start()
    with pytest.raises(Started):
        runner.run(("intake",), {**whistle_config, cfg.LOG_FORMAT: "console"})
    assert len(starts) == 1

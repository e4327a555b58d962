"""Every service process raises the cyclic collector's thresholds when it sets up."""

import gc
from types import SimpleNamespace

import pytest

from shared.gc_tuning import THRESHOLDS
from shared.logging import WorkerLogger


@pytest.fixture
def default_thresholds():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_a_services_set_up_raises_the_collection_thresholds(default_thresholds):
    provider = WorkerLogger()
    provider.container = SimpleNamespace(config={}, service_name="notify")

    provider.setup()

    assert gc.get_threshold() == THRESHOLDS
    assert THRESHOLDS[0] > 700 and gc.isenabled()  # rarer, never off: cycles are still found

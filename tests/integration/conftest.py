"""Fixtures for the archive's integration tests (test_archive*.py, test_open311_archive.py):
a running Whistle (the four chain services), the archive and an IssueStore reading through
it, all on the module's own ``config`` fixture. A module that defines a fixture of the
same name keeps its own."""

import pytest
import redis

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.archive import Archive
from shared.store import IssueStore


@pytest.fixture
def whistle(runner_factory, config):
    runner = runner_factory(config, IntakeService, RoutingService, AgencyService, NotifyService)
    runner.start()
    return f"http://{config[cfg.WEB_SERVER_ADDRESS]}"


@pytest.fixture
def archive(config):
    archive = Archive(config[cfg.DATABASE_URL])
    yield archive
    archive.close()


@pytest.fixture
def store(config, archive):
    client = redis.Redis.from_url(config[cfg.REDIS_URL], decode_responses=True)
    yield IssueStore(client, config[cfg.KEY_PREFIX], archive)
    client.close()

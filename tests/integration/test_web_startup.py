"""A request that arrives while its service is still starting gets a 503, not a dead service.

``whistle up`` serves every service of the process from one web server, which listens as
soon as the first service has started. A request for a service still setting up its
dependencies (intake waits for the database's schema check) used to reach a worker with
those dependencies missing; nameko then killed that service's container, and the process
carried on without it.
"""

from __future__ import annotations

import eventlet
import pytest
import requests
from eventlet.event import Event
from nameko.extensions import DependencyProvider

from shared import config as cfg
from shared.web import http

pytestmark = pytest.mark.integration

released = Event()


class SlowToSetUp(DependencyProvider):
    """A dependency whose setup waits (as intake's waits for PostgreSQL's schema check)."""

    def setup(self):
        released.wait()
        self.value = "ready"

    def get_dependency(self, worker_ctx):
        return self.value


class QuickService:
    name = "quick"

    @http("GET", "/quick")
    def quick(self, request):
        return {"ok": True}


class SlowService:
    name = "slow"
    slow = SlowToSetUp()

    @http("GET", "/slow")
    def answer(self, request):
        return {"dependency": self.slow}


def test_a_service_still_starting_answers_503_and_then_serves(container_factory,
                                                              whistle_config):
    base = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"
    container_factory(QuickService, whistle_config).start()  # the server listens now
    slow = container_factory(SlowService, whistle_config)
    starting = eventlet.spawn(slow.start)
    eventlet.sleep(0.2)  # its entrypoint is registered; its dependency is not set up

    early = requests.get(f"{base}/slow", timeout=10)
    assert early.status_code == 503 and early.headers["Retry-After"] == "5"
    assert "slow is starting or stopping" in early.json()["error"]["message"]
    assert requests.get(f"{base}/quick", timeout=10).status_code == 200

    released.send()
    starting.wait()
    assert requests.get(f"{base}/slow", timeout=10).json() == {"dependency": "ready"}
    assert slow.started  # the early request did not kill it


class AnotherService:
    name = "another"

    @http("GET", "/another")
    def another(self, request):
        return {"ok": True}


def test_one_service_dying_does_not_hang_the_others_graceful_stop(container_factory,
                                                                  whistle_config):
    """nameko kills a dying container's entrypoints without stopping them; they stayed
    registered with the process's shared web server, whose graceful stop waits for every
    provider to unregister. ``whistle up`` then hung at "stopping services", deaf to
    SIGINT and SIGTERM, instead of exiting for its supervisor to restart it."""
    base = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"
    quick = container_factory(QuickService, whistle_config)
    another = container_factory(AnotherService, whistle_config)
    quick.start()
    another.start()
    assert requests.get(f"{base}/another", timeout=5).json() == {"ok": True}
    another.kill()
    with eventlet.Timeout(10, AssertionError("the survivor's graceful stop hung")):
        quick.stop()

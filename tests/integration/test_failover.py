"""``AMQP_URI`` listing several brokers (kombu's failover syntax, ``amqp://a;amqp://b``):
with the first one down, every connection Whistle opens goes on to the next.

The first address here is a port nothing listens on; the second is the machine's
RabbitMQ (a throwaway vhost). Checked: nameko's consumers, RPC and publishers inside
the services (the whole chain runs), Whistle's own BatchPublisher, and the CLI's
connections (``whistle dlq``, ``whistle status``, ``whistle queues migrate``). Losing a
node that was in use, and ``whistle tail`` following again, are cluster scenarios
(``tests/cluster``).
"""

import json
import os
import subprocess

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.publishing import BatchPublisher, PublishedEvent
from shared.topology import EVENTS_EXCHANGE, declare_topology
from tests.conftest import free_port
from tests.e2e.conftest import WHISTLE
from tests.faults.harness import issue_payload
from tests.support.auth import DESK
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def failover_uri(rabbit_config):
    """A dead node first, then the live one (same vhost)."""
    vhost_path = rabbit_config["AMQP_URI"].rsplit("/", 1)[1]
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/{vhost_path};{rabbit_config['AMQP_URI']}"


def test_the_batch_publisher_goes_on_to_the_next_node(failover_uri):
    from kombu import Connection

    with Connection(failover_uri) as connection:
        declare_topology(connection)
    publisher = BatchPublisher(failover_uri, EVENTS_EXCHANGE.name)
    try:
        result = publisher.publish([PublishedEvent("e-1", "issue.received", {"a": 1}, {})])
    finally:
        publisher.close()
    assert result.confirmed == ["e-1"] and not result.failed


def test_the_whole_chain_runs_with_the_first_node_down(runner_factory, whistle_config,
                                                      failover_uri):
    config = {**whistle_config, cfg.AMQP_URI: failover_uri}
    runner_factory(config, IntakeService, RoutingService, AgencyService, NotifyService).start()
    url = f"http://{config[cfg.WEB_SERVER_ADDRESS]}"
    receipt = requests.post(f"{url}/issues", headers=DESK, json=issue_payload(2), timeout=5)  # no water
    assert receipt.status_code == 201, receipt.text
    issue_id = receipt.json()["issue_id"]
    told = wait_until(lambda: len(n := requests.get(
        f"{url}/issues/{issue_id}/notifications", headers=DESK).json()["notifications"]) == 2 and n)
    assert [n["kind"] for n in told] == ["received", "dispatched"]
    with ClusterRpcProxy({"AMQP_URI": failover_uri}, timeout=10) as rpc:  # RPC, both ways
        assert rpc.intake.get_issue(issue_id)["status"] == "dispatched"


def test_the_cli_goes_on_to_the_next_node(failover_uri, whistle_config):
    env = {**os.environ, cfg.AMQP_URI: failover_uri, cfg.REDIS_URL: whistle_config[cfg.REDIS_URL],
           cfg.KEY_PREFIX: whistle_config[cfg.KEY_PREFIX],
           # the management API of a dead node first, too
           cfg.RABBIT_API_URL: f"http://guest:guest@127.0.0.1:{free_port()};"
                               "http://guest:guest@127.0.0.1:15672"}
    migrated = subprocess.run([WHISTLE, "queues", "migrate", "--to", "classic"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    status = subprocess.run([WHISTLE, "status", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["rabbitmq"]["ok"] and report["rabbitmq"]["dead_letter"]["exists"]
    assert report["rabbitmq"]["api"] == "127.0.0.1:15672"  # the one that answered
    listed = subprocess.run([WHISTLE, "dlq", "list", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert json.loads(listed.stdout)["messages"] == []

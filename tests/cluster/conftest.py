"""Fixtures of the cluster scenarios: the three-node cluster of ``scripts/cluster.sh``,
a vhost of each test's own on it, and Whistle's processes pointed at all three nodes.

The cluster is brought up once per session (``scripts/cluster.sh up``, idempotent) and
taken down at the end if this session started it. Figures go to the fault report
(``tests/faults/conftest.py``: ``WHISTLE_FAULT_REPORT``) like the fault suite's.
"""

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest

from shared import config as cfg
from shared.topology import QUORUM
from tests.cluster.nodes import BASE, ClusterNodes
from tests.e2e.conftest import process_env, whistle_processes  # noqa: F401 - fixture
from tests.faults import conftest as faults_conftest
from tests.faults.conftest import fault_report, scenario  # noqa: F401 - fixtures

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def cluster(request):
    nodes = ClusterNodes()
    was_up = False
    with contextlib.suppress(AssertionError):
        was_up = len(nodes.running()) == 3
    nodes.up()
    yield nodes
    if request.session.testsfailed:  # the nodes' own logs, to explain it afterwards
        kept = Path(f"{BASE}-logs-{time.strftime('%Y%m%dT%H%M%S')}")
        for node in nodes.nodes:
            with contextlib.suppress(OSError):
                shutil.copytree(BASE / node.letter / "log", kept / node.letter)
        print(f"\ncluster: the nodes' logs are kept in {kept}")
    if not was_up and not os.environ.get("WHISTLE_CLUSTER_KEEP"):
        nodes.down()


@pytest.fixture
def cluster_vhost(cluster):
    """A vhost of the test's own; every node is running again when the test ends."""
    vhost = cluster.create_vhost()
    yield vhost
    for node in cluster.nodes:
        cluster.heal(node)
        if node.name not in cluster.running():
            cluster.start(node)
    cluster.wait_running()
    cluster.delete_vhost(vhost)


@pytest.fixture
def whistle_env(cluster, cluster_vhost, redis_prefix, database_url, monkeypatch):
    """Whistle on the cluster: AMQP_URI lists the three nodes, queues are quorum."""
    amqp_uri = cluster.amqp_uri(cluster_vhost)
    api = ";".join(f"http://guest:guest@127.0.0.1:{n.management_port}" for n in cluster.nodes)
    monkeypatch.setenv(cfg.RABBIT_API_URL, api)  # `whistle dlq list` (harness.dead_letters)
    env = process_env(amqp_uri, redis_prefix, database_url)
    env.update({cfg.QUEUE_TYPE: QUORUM, cfg.RABBIT_API_URL: api})
    return env


def pytest_terminal_summary(terminalreporter, config):
    # The fault suite's conftest prints the figures when it is loaded too (a whole run).
    if not config.pluginmanager.is_registered(faults_conftest):
        faults_conftest.pytest_terminal_summary(terminalreporter)

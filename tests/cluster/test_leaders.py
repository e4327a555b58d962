"""Quorum queue leaders are spread over the cluster's nodes, not all on the node the
declaring service happens to be connected to (``x-queue-leader-locator: balanced``,
``shared.topology``). Shown with the management API, as an operator would look."""

from collections import Counter
from urllib.parse import quote

import pytest
from kombu import Connection

from shared.topology import QUORUM, declare_topology

pytestmark = pytest.mark.cluster


def test_the_queues_leaders_are_spread_over_the_three_nodes(cluster, cluster_vhost):
    # Every address lists node a first: with RabbitMQ's default (client-local) every
    # leader would be on it.
    with Connection(cluster.amqp_uri(cluster_vhost)) as connection:
        declare_topology(connection, QUORUM)

    queues = cluster._get(f"/queues/{quote(cluster_vhost, safe='')}"
                          "?columns=name,type,leader,arguments")
    assert queues and all(q["type"] == "quorum" for q in queues), queues
    assert all(q["arguments"].get("x-queue-leader-locator") == "balanced" for q in queues)
    leading = Counter(q["leader"] for q in queues)
    assert set(leading) == {node.name for node in cluster.nodes}, leading
    assert max(leading.values()) <= len(queues) // 2, leading

"""Cluster scenarios 10-12: Whistle on quorum queues over three RabbitMQ nodes, a node
failing under load.

Each runs the four services as separate ``whistle up`` processes whose ``AMQP_URI``
lists the three nodes (``WHISTLE_QUEUE_TYPE=quorum``), submits distinct issues over
HTTP at a steady rate, and in the middle:

10. SIGKILLs the first node ``AMQP_URI`` lists: every service's connections are on it,
    and it leads its share of the quorum queues (leaders are spread over the three:
    ``x-queue-leader-locator: balanced``). It is started again later;
11. cuts one node off from the other two (iptables on the cluster's own distribution
    ports: ``tests/cluster/nodes.py``) and heals the partition;
12. restarts all three nodes one after the other (RabbitMQ's rolling-restart check,
    ``rabbitmq-upgrade await_online_quorum_plus_one``, before each).

Then it counts, with the fault suite's audit (``tests/faults/harness.py``): accepted,
lost, duplicated issues (one submission given two ids, or handled twice) and
duplicated resident messages. Every scenario must end with 0 lost and 0 duplicated
resident messages, nothing dead-lettered and every outbox empty.
"""

import time

import pytest

from shared import config as cfg
from tests.cluster.nodes import partitioned_from
from tests.faults.harness import Load, audit, start_apart

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

RATE = 20.0


def diagnosis(processes: dict) -> str:
    """Each service process: alive or not, and its last warnings and errors (what a
    failed scenario needs explained; pytest keeps only its last few temporary dirs)."""
    out = []
    for service, found in processes.items():
        for process in found:
            alive = process.proc.poll() is None
            lines = [line[:300] for line in process.log().splitlines()
                     if '"level":"warning"' in line or '"level":"error"' in line
                     or "Traceback" in line]
            out.append(f"--- {service} ({'running' if alive else 'EXITED'}): "
                       f"{len(lines)} warning/error lines, the last ones:")
            out += lines[-12:]
    return "\n".join(out)


def conclude(run, load, processes, whistle_env, redis_client, redis_prefix, **figures):
    accepted = load.accepted_ids
    try:
        result = run.conclude(lambda: audit(redis_client, redis_prefix, accepted), accepted,
                              whistle_env[cfg.AMQP_URI], timeout=120,
                              duplicated_issues=len(accepted) - len(set(accepted)),
                              **figures, **load.figures())
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnosis(processes)}") from None
    assert result["accepted"] == result["submitted"], result["outcomes"]
    return result


def test_the_node_leading_the_queues_sigkilled_mid_load(
        cluster, cluster_vhost, whistle_processes, whistle_env, redis_client, redis_prefix,
        scenario):
    run = scenario("10. cluster: the node leading the queues SIGKILLed mid-load")
    processes = start_apart(whistle_processes)
    intake = processes["intake"][0]
    # The node every service is connected to (the first address): the most to lose.
    killed = cluster.node("a")
    led_before = {q for q, leader in cluster.leaders(cluster_vhost).items()
                  if leader == killed.name}
    load = Load([intake.url], n=int(RATE * 120), rate=RATE).start()
    load.wait_sent(int(RATE * 8))

    assert load.running
    killed_at = time.monotonic()
    cluster.kill(killed)
    time.sleep(8)  # the other two elect new leaders; the services reconnect to them
    moved_to = {q: leader for q, leader in cluster.leaders(cluster_vhost).items()
                if q in led_before}
    cluster.start(killed)
    back_after = round(time.monotonic() - killed_at, 1)
    time.sleep(3)  # and a little load after it is back
    assert load.running, "the load ended before the node was back"
    load.stop()

    conclude(run, load, processes, whistle_env, redis_client, redis_prefix,
             detail=f"killed {killed.name}, every service's node, leading "
                    f"{len(led_before)} queues; new leaders "
                    f"{', '.join(sorted(set(moved_to.values())))}",
             downtime_s=back_after)
    assert led_before and killed.name not in moved_to.values(), moved_to


def test_a_node_partitioned_away_and_healed(
        cluster, cluster_vhost, whistle_processes, whistle_env, redis_client, redis_prefix,
        scenario):
    run = scenario("11. cluster: a node partitioned away and healed")
    processes = start_apart(whistle_processes)
    intake = processes["intake"][0]
    # The node every service is connected to (the first address), leading its share of
    # the queues: the worst one.
    cut = cluster.node("a")
    cut_name = cut.name
    led_before = {q for q, leader in cluster.leaders(cluster_vhost).items() if leader == cut_name}
    load = Load([intake.url], n=int(RATE * 180), rate=RATE).start()
    load.wait_sent(int(RATE * 5))

    assert load.running
    cut_at = time.monotonic()
    cluster.partition(cut)
    try:
        deadline = time.monotonic() + 40
        while not partitioned_from(cluster, cut):  # net_ticktime 10 s: noticed in 10-15 s
            assert time.monotonic() < deadline, "the other nodes never noticed the partition"
            time.sleep(0.5)
        noticed_after = round(time.monotonic() - cut_at, 1)
        time.sleep(5)  # the majority goes on without it; the services moved to it
        moved_to = {q: leader for q, leader in cluster.leaders(cluster_vhost).items()
                    if q in led_before}
    finally:
        cluster.heal(cut)
    healed_at = time.monotonic()
    cluster.wait_running(3, timeout=120)  # pause_minority: it resumes once it sees them
    rejoined_after = round(time.monotonic() - healed_at, 1)
    time.sleep(3)  # and a little load after it rejoined
    assert load.running, "the load ended before the node rejoined"
    load.stop()

    conclude(run, load, processes, whistle_env, redis_client, redis_prefix,
             detail=f"cut off {cut_name} {round(healed_at - cut_at, 1)} s (noticed after "
                    f"{noticed_after} s), leading {len(led_before)} queues; new leaders "
                    f"{', '.join(sorted(set(moved_to.values())))}, rejoined "
                    f"{rejoined_after} s after healing")
    assert led_before and cut_name not in moved_to.values(), moved_to


def test_a_rolling_restart_of_all_three_nodes_under_load(
        cluster, cluster_vhost, whistle_processes, whistle_env, redis_client, redis_prefix,
        scenario):
    run = scenario("12. cluster: rolling restart of all three nodes under load")
    processes = start_apart(whistle_processes)
    intake = processes["intake"][0]
    # However long the restarts take on a busy machine, the load outlasts them.
    load = Load([intake.url], n=int(RATE * 600), rate=RATE).start()
    load.wait_sent(int(RATE * 3))

    took = {}
    for node in cluster.nodes:
        assert load.running, f"the load ended before {node.name} was restarted"
        began = time.monotonic()
        cluster.await_quorum_plus_one(node)
        cluster.stop(node)
        cluster.start(node)
        cluster.wait_running(3)
        took[node.letter] = round(time.monotonic() - began, 1)
    time.sleep(3)  # and a little after the last one
    load.stop()

    conclude(run, load, processes, whistle_env, redis_client, redis_prefix,
             detail="restart took " + ", ".join(f"{k} {v} s" for k, v in took.items()))

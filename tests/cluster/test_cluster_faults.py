"""Cluster scenarios 10-12: Whistle on quorum queues over three RabbitMQ nodes, a node
failing under load.

Each runs the four services as separate ``whistle up`` processes whose ``AMQP_URI``
lists the three nodes (``WHISTLE_QUEUE_TYPE=quorum``), submits distinct issues over
HTTP at a steady rate, and in the middle:

10. SIGKILLs the node that leads the queues (their leader is where they were declared:
    the first node, the one every service connected to), and starts it again later;
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
WATCHED_QUEUE = "whistle.notify.on_event"


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
    leader_name = cluster.leaders(cluster_vhost)[WATCHED_QUEUE]
    leader = next(node for node in cluster.nodes if node.name == leader_name)
    load = Load([intake.url], n=int(RATE * 30), rate=RATE).start()
    load.wait_sent(int(RATE * 8))

    assert load.running
    killed_at = time.monotonic()
    cluster.kill(leader)
    time.sleep(8)  # the other two elect new leaders; the services reconnect to them
    new_leader = cluster.leaders(cluster_vhost)[WATCHED_QUEUE]
    cluster.start(leader)
    back_after = round(time.monotonic() - killed_at, 1)
    load.wait()

    conclude(run, load, processes, whistle_env, redis_client, redis_prefix,
                       detail=f"killed {leader_name}, new leader {new_leader}",
                       downtime_s=back_after)
    assert new_leader != leader_name


def test_a_node_partitioned_away_and_healed(
        cluster, cluster_vhost, whistle_processes, whistle_env, redis_client, redis_prefix,
        scenario):
    run = scenario("11. cluster: a node partitioned away and healed")
    processes = start_apart(whistle_processes)
    intake = processes["intake"][0]
    # The node every service is connected to, which leads the queues: the worst one.
    cut_name = cluster.leaders(cluster_vhost)[WATCHED_QUEUE]
    cut = next(node for node in cluster.nodes if node.name == cut_name)
    load = Load([intake.url], n=int(RATE * 45), rate=RATE).start()
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
        new_leader = cluster.leaders(cluster_vhost)[WATCHED_QUEUE]
    finally:
        cluster.heal(cut)
    healed_at = time.monotonic()
    cluster.wait_running(3, timeout=120)  # pause_minority: it resumes once it sees them
    rejoined_after = round(time.monotonic() - healed_at, 1)
    load.wait()

    conclude(run, load, processes, whistle_env, redis_client, redis_prefix,
             detail=f"cut off {cut_name} {round(healed_at - cut_at, 1)} s (noticed after "
                    f"{noticed_after} s), new leader {new_leader}, rejoined "
                    f"{rejoined_after} s after healing")
    assert new_leader != cut_name


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

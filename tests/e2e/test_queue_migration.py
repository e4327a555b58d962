"""A loaded classic deployment moves to quorum queues with ``whistle queues migrate``,
the way an operator does it, and loses nothing.

intake keeps accepting issues throughout; routing, agency and notify are stopped
with their queues full (and a delay under way in a retry queue). The first run moves
every queue but intake's RPC queue, whose consumer runs, and says so (exit 1); intake
is stopped and a second run moves that one. Every service then starts with
``WHISTLE_QUEUE_TYPE=quorum``, and every issue accepted before, during and after
reaches its agencies and its resident, once.
"""

import subprocess
from urllib.parse import quote

import pytest
import requests
from kombu import Connection, Producer

from shared import config as cfg
from shared.messaging import EVENT_TYPE_HEADER
from shared.topology import QUORUM, subscription_for
from tests.e2e.conftest import WHISTLE
from tests.faults.harness import Load, audit, queue_depth, received_events, settle

pytestmark = pytest.mark.e2e

CONSUMERS = "routing,agency,notify"


def migrate(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([WHISTLE, "queues", "migrate", "--to", QUORUM], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_loaded_classic_deployment_migrates_to_quorum_and_loses_nothing(
        whistle_processes, whistle_env, redis_client, redis_prefix, rabbit_config):
    intake = whistle_processes("intake")
    consumers = whistle_processes(CONSUMERS)
    load = Load([intake.url], n=240, rate=20.0).start()
    load.wait_sent(60)
    consumers.stop()  # their queues fill from here on
    load.wait_sent(100)

    # A delay under way: an issue.received back in routing's retry queue for 2 s (a
    # copy of one already handled: routing must handle it once, idempotently).
    again = received_events(redis_client, redis_prefix, load.accepted_ids[:1])[0]
    route = subscription_for("routing", "route_issue")
    with Connection(whistle_env[cfg.AMQP_URI],
                    transport_options={"confirm_publish": True}) as connection:
        Producer(connection.channel()).publish(
            again.model_dump(mode="json"), exchange="", routing_key=route.retry_queue_name,
            expiration=2.0, headers={EVENT_TYPE_HEADER: again.event_type})

    first = migrate(whistle_env)  # intake is running and accepting meanwhile
    assert first.returncode == 1, first.stdout + first.stderr
    assert "rpc-intake: skipped" in first.stdout and "stop intake" in first.stdout
    assert "whistle.routing.route_issue: now quorum" in first.stdout
    load.wait()
    intake.stop()
    second = migrate(whistle_env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "rpc-intake: now quorum" in second.stdout

    quorum_env = {cfg.QUEUE_TYPE: QUORUM}
    intake = whistle_processes("intake", env=quorum_env)
    whistle_processes(CONSUMERS, env=quorum_env)
    after = Load([intake.url], n=20, rate=20.0, first=1000).start().wait()

    accepted = load.accepted_ids + after.accepted_ids
    assert len(accepted) == 260, (load.outcomes(), after.outcomes())
    result = settle(lambda: audit(redis_client, redis_prefix, accepted), timeout=90)
    assert not result.lost(accepted), {i: result.pending[i] for i in result.lost(accepted)[:5]}
    assert result.duplicates == 0, result.duplicate_detail[:5]
    assert result.twice_handled == 0 and result.outbox_left == 0

    vhost = quote(rabbit_config["vhost"], safe="")
    queues = requests.get(f"http://127.0.0.1:15672/api/queues/{vhost}",
                          params={"columns": "name,type"}, auth=("guest", "guest"),
                          timeout=10).json()
    whistle = {q["name"]: q["type"] for q in queues if q["name"].startswith(("whistle.", "rpc-"))}
    assert set(whistle.values()) == {QUORUM}, whistle
    assert not [name for name in whistle if name.endswith(".migrating")]
    # the delayed copy came back from the (moved) retry queue and was handled, not
    # dead-lettered, and nothing waits anywhere (exact depths: the API's lag)
    assert {name: queue_depth(whistle_env[cfg.AMQP_URI], name) for name in whistle
            if name.startswith("whistle.")} == dict.fromkeys(
        [n for n in whistle if n.startswith("whistle.")], 0)

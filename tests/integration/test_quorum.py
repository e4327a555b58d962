"""WHISTLE_QUEUE_TYPE=quorum on the machine's RabbitMQ (one node), in a fresh vhost.

The whole chain runs on quorum queues, and the management API says every queue
Whistle declares (subscriptions, retry queues, the dead-letter queue, the services'
RPC queues) is one. Then the pieces quorum queues change: a retry queue's delay
ends in its main queue, a message over the delivery limit lands in the dead-letter
queue where ``whistle dlq`` names its queue and reason and replays it, and a service
refuses to start on queues of the other type.
"""

from urllib.parse import quote

import pytest
import requests
from kombu import Connection, Producer
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_token
from shared.topology import (
    CLASSIC,
    DEAD_LETTER_QUEUE,
    QUORUM,
    QUORUM_DELIVERY_LIMIT,
    SERVICES,
    SUBSCRIPTIONS,
    QueueTypeMismatch,
    declare_topology,
    subscription_for,
)
from tests.support.auth import DESK
from tests.support.waiting import wait_until
from whistle.ops import ManagementApi, peek_dead_letters, replay_dead_letters

pytestmark = pytest.mark.integration

MANAGEMENT = "http://127.0.0.1:15672"


def queue_types(vhost: str) -> dict[str, str]:
    """Every queue of the vhost and its type, as the management API reports it."""
    found = requests.get(f"{MANAGEMENT}/api/queues/{quote(vhost, safe='')}",
                         params={"columns": "name,type"}, auth=("guest", "guest"), timeout=10)
    found.raise_for_status()
    return {q["name"]: q["type"] for q in found.json()}


def whistle_queue_names() -> set[str]:
    return ({name for sub in SUBSCRIPTIONS for name in (sub.queue_name, sub.retry_queue_name)}
            | {"whistle.dead-letter"} | {f"rpc-{service}" for service in SERVICES})


@pytest.fixture
def quorum_config(whistle_config):
    return {**whistle_config, cfg.QUEUE_TYPE: QUORUM}


def test_the_whole_chain_runs_on_quorum_queues_and_every_whistle_queue_is_one(
        runner_factory, quorum_config, rabbit_config):
    runner = runner_factory(quorum_config, IntakeService, RoutingService, AgencyService,
                            NotifyService)
    runner.start()
    url = f"http://{quorum_config[cfg.WEB_SERVER_ADDRESS]}"

    receipt = requests.post(f"{url}/issues", headers=DESK, json={
        "description": "小区门口有根电线耷拉下来，不知道有没有电",
        "location": {"community": "缤泰社区", "address": "丽德花园北门"},
        "contact": {"phone": "13812345678"}}, timeout=5)
    assert receipt.status_code == 201, receipt.text
    issue_id = receipt.json()["issue_id"]
    wait_until(lambda: requests.get(f"{url}/issues/{issue_id}", headers=DESK).json()["status"] == "dispatched")
    token = issue_token("power", "p-007", quorum_config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": quorum_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        rpc.agency.acknowledge(token, "power", issue_id)
        assert rpc.agency.resolve(token, "power", issue_id, {"note": "已处理"})[
            "issue_status"] == "resolved"
    told = wait_until(lambda: len(n := requests.get(
        f"{url}/issues/{issue_id}/notifications", headers=DESK).json()["notifications"]) == 5 and n)
    assert [n["kind"] for n in told] == ["received", "dispatched", "acknowledged", "resolved",
                                         "rating_request"]

    types = queue_types(rabbit_config["vhost"])
    whistle_queues = {name: kind for name, kind in types.items()
                      if name.startswith(("whistle.", "rpc-"))}
    assert set(whistle_queues) == whistle_queue_names()
    assert set(whistle_queues.values()) == {QUORUM}, whistle_queues
    # nameko's reply queues are exclusive, which a quorum queue cannot be: classic, and
    # gone with their connection
    assert all(kind == CLASSIC for name, kind in types.items() if name not in whistle_queues)


@pytest.fixture
def quorum_topology(quorum_config):
    with Connection(quorum_config[cfg.AMQP_URI]) as connection:
        declare_topology(connection, QUORUM)
        yield connection


def test_a_quorum_retry_queue_hands_its_message_back_when_the_delay_ends(quorum_topology):
    sub = subscription_for("routing", "route_issue")
    channel = quorum_topology.channel()
    Producer(channel).publish({"event_id": "e-1"}, exchange="", routing_key=sub.retry_queue_name,
                              expiration=0.1)
    main = sub.queue.bind(channel)
    assert wait_until(lambda: main.queue_declare(passive=True).message_count == 1)


def test_a_message_over_the_delivery_limit_is_dead_lettered_named_and_replayable(
        quorum_topology, quorum_config):
    """A message whose consumer died holding it, again and again (a poison message that
    kills its process), leaves the queue for whistle.dead-letter: never dropped."""
    sub = subscription_for("notify", "on_event")
    channel = quorum_topology.channel()
    Producer(channel).publish({"event_id": "e-poison", "issue_id": "WH-20261121-0001"},
                              exchange="", routing_key=sub.queue_name)
    main = sub.queue.bind(channel)
    assert wait_until(lambda: main.queue_declare(passive=True).message_count == 1)
    handed_out = 0
    while (message := main.get(no_ack=False)) is not None:
        handed_out += 1
        message.reject(requeue=True)  # what a consumer's dying connection does to it
        assert handed_out <= QUORUM_DELIVERY_LIMIT + 1
    assert handed_out == QUORUM_DELIVERY_LIMIT + 1
    dead = DEAD_LETTER_QUEUE.bind(channel)
    assert wait_until(lambda: dead.queue_declare(passive=True).message_count == 1)

    api = ManagementApi("http://guest:guest@127.0.0.1:15672",
                        quorum_config[cfg.AMQP_URI].rsplit("/", 1)[1])
    letters, in_queue = peek_dead_letters(api, 10)
    described = letters[0].describe()
    assert in_queue == 1
    assert described["queue"] == sub.queue_name
    assert described["reason"] == "RabbitMQ dead-lettered it: delivery_limit"

    outcome = replay_dead_letters(quorum_config[cfg.AMQP_URI])
    assert [r["to"] for r in outcome.done] == [sub.queue_name]
    assert wait_until(lambda: main.queue_declare(passive=True).message_count == 1)
    replayed = main.get(no_ack=True)
    assert "x-death" not in (replayed.headers or {})  # a fresh start, limit included


def test_a_service_refuses_queues_of_the_other_type_and_says_how_to_migrate(whistle_config):
    with Connection(whistle_config[cfg.AMQP_URI]) as connection:
        declare_topology(connection, CLASSIC)
        with pytest.raises(QueueTypeMismatch, match="whistle queues migrate --to quorum"):
            declare_topology(connection, QUORUM)
        declare_topology(connection, CLASSIC)  # the connection is still usable

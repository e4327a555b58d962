"""``whistle queues migrate`` on the real RabbitMQ, queue by queue, in a throwaway vhost.

A loaded classic topology moves to quorum queues and back with every message (body,
headers, expiry) where it was, while events published at every step are all routed;
a run stopped part way, as a crash would, finishes when run again with nothing lost
or doubled; a queue with a consumer is left alone and named.
"""

import contextlib
import os
import subprocess
import uuid
from urllib.parse import quote

import pytest
import requests
from amqp.exceptions import NotFound
from kombu import Connection, Consumer, Exchange, Producer, Queue

from shared import config as cfg
from shared.topology import (
    CLASSIC,
    EVENTS_EXCHANGE,
    QUORUM,
    SUBSCRIPTIONS,
    declare_topology,
    subscription_for,
)
from tests.conftest import free_port
from tests.e2e.conftest import WHISTLE
from whistle.migrate import TEMPORARY_SUFFIX, migrate, units

pytestmark = pytest.mark.integration

RPC_EXCHANGE = Exchange("nameko-rpc", type="topic", durable=True)
ROUTE = subscription_for("routing", "route_issue")
NOTIFY = subscription_for("notify", "on_event")


class Stop(Exception):  # noqa: N818 - a simulated crash
    pass


@pytest.fixture
def amqp(whistle_config):
    # Every publish waits for its confirm: an event published "after a step" is queued
    # before the next step begins.
    with Connection(whistle_config[cfg.AMQP_URI],
                    transport_options={"confirm_publish": True}) as connection:
        yield connection


def types_and_depths(vhost: str) -> dict[str, tuple[str, int]]:
    found = requests.get(f"http://127.0.0.1:15672/api/queues/{quote(vhost, safe='')}",
                         params={"columns": "name,type"}, auth=("guest", "guest"), timeout=10)
    found.raise_for_status()
    return {q["name"]: q["type"] for q in found.json()}


def depth(amqp, name: str) -> int:
    """Messages ready in the queue; 0 if there is none (the migration declares every
    queue, those of services that never ran included)."""
    channel = amqp.channel()
    try:
        return channel.queue_declare(name, passive=True).message_count
    except NotFound:
        return 0
    finally:
        with contextlib.suppress(Exception):
            channel.close()


def publish(amqp, routing_key: str, exchange: str = EVENTS_EXCHANGE.name, **properties) -> str:
    """One message, confirmed and mandatory (an unroutable one raises); its id."""
    event_id = uuid.uuid4().hex
    producer = Producer(amqp.channel())
    producer.publish({"event_id": event_id}, exchange=exchange, routing_key=routing_key,
                     mandatory=True, headers={"x-whistle-event-type": routing_key},
                     message_id=event_id, **properties)
    return event_id


def load(amqp) -> dict[str, int]:
    """A classic deployment's queues with messages in each, as a stopped Whistle leaves
    them: events, a delay under way, a dead letter, an RPC request."""
    declare_topology(amqp, CLASSIC)
    Queue("rpc-intake", exchange=RPC_EXCHANGE, routing_key="intake.*",
          durable=True).bind(amqp.channel()).declare()
    for _ in range(5):
        publish(amqp, "issue.received")  # route_issue and notify.on_event
    publish(amqp, "issue.dispatched")  # agency and notify
    publish(amqp, ROUTE.retry_queue_name, exchange="", expiration=600)
    publish(amqp, "whistle.dead-letter", exchange="")
    publish(amqp, "intake.get_issue", exchange=RPC_EXCHANGE.name, reply_to="rpc.reply-x",
            correlation_id="c-1")
    return {name: depth(amqp, name) for name in names()}


def names() -> list[str]:
    return [spec.name for unit in units() for spec in unit.queues()]


def messages(amqp, name: str) -> list:
    """Every message of the queue, taken and put back (requeued when the channel closes)."""
    channel = amqp.channel()
    found = []
    while (message := channel.basic_get(name, no_ack=False)) is not None:
        found.append(message)
    channel.close()
    return found


def test_a_loaded_classic_deployment_moves_to_quorum_and_back_keeping_every_message(
        amqp, rabbit_config):
    before = load(amqp)
    assert before[ROUTE.queue_name] == 5 and before[NOTIFY.queue_name] == 6
    published_during: list[tuple[str, str]] = []

    def publish_now(step):  # the desk keeps submitting: every event must be routed
        published_during.append((step, publish(amqp, "issue.received")))

    outcome = migrate(rabbit_config["AMQP_URI"], QUORUM, after_step=publish_now)
    assert outcome.complete and outcome.moved
    types = types_and_depths(rabbit_config["vhost"])
    assert {types[name] for name in names()} == {QUORUM}
    assert not [name for name in types if name.endswith(TEMPORARY_SUFFIX)]
    after = {name: depth(amqp, name) for name in names()}
    for queue, loaded in ((ROUTE.queue_name, 5), (NOTIFY.queue_name, 6)):
        # queued twice: what was published while the queue and its temporary were both bound
        twice = [event for step, event in published_during
                 if step in (f"{queue}: bind {queue}{TEMPORARY_SUFFIX}", f"{queue}: bind")]
        assert len(twice) == 2
        assert after[queue] == loaded + len(published_during) + len(twice)
        ids = [m.properties["message_id"] for m in messages(amqp, queue)]
        assert set(ids) >= {event for _, event in published_during}  # none refused, none lost
    unchanged = {name: n for name, n in after.items()
                 if name not in (ROUTE.queue_name, NOTIFY.queue_name)}
    assert unchanged == {name: n for name, n in before.items() if name in unchanged}

    delayed = messages(amqp, ROUTE.retry_queue_name)[0]
    assert delayed.properties["expiration"] == "600000"
    request = messages(amqp, "rpc-intake")[0]
    assert (request.properties["reply_to"], request.properties["correlation_id"]) == (
        "rpc.reply-x", "c-1")
    declare_topology(amqp, QUORUM)  # what a service started with the new setting does

    back = migrate(rabbit_config["AMQP_URI"], CLASSIC)
    assert back.complete
    # each message counted once, though it went through a temporary queue and back
    assert sum(back.moved.values()) == sum(after.values())
    assert {types_and_depths(rabbit_config["vhost"])[name] for name in names()} == {CLASSIC}
    assert {name: depth(amqp, name) for name in names()} == after


@pytest.mark.parametrize("crash_after", [
    f"{ROUTE.queue_name}: bind {ROUTE.queue_name}{TEMPORARY_SUFFIX}",
    f"{ROUTE.retry_queue_name}: move to {ROUTE.retry_queue_name}{TEMPORARY_SUFFIX}",
    f"{ROUTE.queue_name}: delete",
    f"{ROUTE.queue_name}: declare",
    f"{ROUTE.retry_queue_name}: move back from {ROUTE.retry_queue_name}{TEMPORARY_SUFFIX}",
])
def test_a_migration_stopped_part_way_finishes_when_run_again(amqp, rabbit_config,
                                                              crash_after):
    before = load(amqp)
    ids_before = {m.properties["message_id"] for m in messages(amqp, ROUTE.queue_name)}

    def crash(step):
        if step == crash_after:
            raise Stop(step)

    with pytest.raises(Stop):
        migrate(rabbit_config["AMQP_URI"], QUORUM, after_step=crash)
    routed = publish(amqp, "issue.received")  # between the crash and the second run

    assert migrate(rabbit_config["AMQP_URI"], QUORUM).complete
    # stopped with the queue and its temporary both bound: that event was queued twice
    twice = [routed] if crash_after == f"{ROUTE.queue_name}: bind {ROUTE.queue_name}" \
        f"{TEMPORARY_SUFFIX}" else []
    after = {name: depth(amqp, name) for name in names()}
    assert after == {**before, ROUTE.queue_name: 6 + len(twice), NOTIFY.queue_name: 7}
    ids_after = [m.properties["message_id"] for m in messages(amqp, ROUTE.queue_name)]
    assert sorted(ids_after) == sorted([*ids_before, routed, *twice])  # none lost
    types = types_and_depths(rabbit_config["vhost"])
    assert {types[name] for name in names()} == {QUORUM}
    assert not [name for name in types if name.endswith(TEMPORARY_SUFFIX)]


def consume_route_queue(amqp):
    """Routing running: a consumer on its queue, holding one message at a time."""
    channel = amqp.channel()
    consumer = Consumer(channel, [ROUTE.queue.bind(channel)], callbacks=[lambda body, message: None],
                        auto_declare=False)
    consumer.qos(prefetch_count=1)
    consumer.consume()
    return channel, consumer


def test_a_queue_with_a_consumer_is_left_alone_and_named(amqp, rabbit_config):
    load(amqp)
    channel, consumer = consume_route_queue(amqp)
    outcome = migrate(rabbit_config["AMQP_URI"], QUORUM)
    assert set(outcome.skipped) == {ROUTE.queue_name}
    assert "stop routing" in outcome.skipped[ROUTE.queue_name]
    types = types_and_depths(rabbit_config["vhost"])
    assert types[ROUTE.queue_name] == CLASSIC and types[NOTIFY.queue_name] == QUORUM

    consumer.cancel()
    channel.close()  # the message it held goes back
    assert migrate(rabbit_config["AMQP_URI"], QUORUM).complete
    assert types_and_depths(rabbit_config["vhost"])[ROUTE.queue_name] == QUORUM
    assert depth(amqp, ROUTE.queue_name) == 5
    assert all(sub.queue_name in types for sub in SUBSCRIPTIONS)

    # routing runs again on the new type: a run to check (or intake's last run) finds
    # its queues already moved, and does not ask to stop it
    channel, consumer = consume_route_queue(amqp)
    again = migrate(rabbit_config["AMQP_URI"], QUORUM)
    assert again.complete and ROUTE.queue_name in again.already
    assert sum(again.moved.values()) == 0
    consumer.cancel()
    channel.close()


def test_an_unreachable_broker_is_said_plainly():
    done = subprocess.run([WHISTLE, "queues", "migrate", "--to", QUORUM], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ,
                               cfg.AMQP_URI: f"amqp://guest:guest@127.0.0.1:{free_port()}/"})
    assert done.returncode == 1
    assert "cannot reach RabbitMQ" in done.stderr and "Traceback" not in done.stderr

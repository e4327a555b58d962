"""Delivery guarantees on the real broker and Redis: idempotency, retry, dead-letter."""

import json
import time
from datetime import UTC, datetime

import pytest
import redis
from kombu import Connection, Producer, Queue

from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.contracts import Channel, IssueReceived, Language, Location
from shared.issue import receive
from shared.messaging import ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER
from shared.store import IssueStore
from shared.topology import DEAD_LETTER_QUEUE, EVENTS_EXCHANGE, declare_topology
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

PLACE = Location(community="缤泰社区", address="丽德花园5号楼")


@pytest.fixture
def store(whistle_config):
    client = redis.Redis.from_url(whistle_config[cfg.REDIS_URL], decode_responses=True)
    yield IssueStore(client, whistle_config[cfg.KEY_PREFIX])
    client.close()


@pytest.fixture
def amqp(whistle_config):
    with Connection(whistle_config[cfg.AMQP_URI]) as connection:
        declare_topology(connection)
        yield connection


def stored_issue(store, issue_id, text="楼道里有煤气味，很冲"):
    now = datetime.now(UTC)
    record = receive(issue_id, f"trace-{issue_id}", text, None, PLACE, Channel.desk,
                     Language.zh, now)
    store.create(record, {"phone": "13812345678"}, "test", {})
    return IssueReceived(trace_id=record.trace_id, issue_id=issue_id, description=text,
                         location=PLACE, channel="desk", language="zh", has_contact=True)


def publish(amqp, body, routing_key="issue.received", **kwargs):
    producer = Producer(amqp.channel())
    producer.publish(body, exchange=EVENTS_EXCHANGE, routing_key=routing_key,
                     delivery_mode=2, **kwargs)


def dead_letters(amqp):
    """Take every message in the dead-letter queue, raw (never decoded)."""
    queue = DEAD_LETTER_QUEUE.bind(amqp.channel())
    found = []
    while (message := queue.get(no_ack=True, accept=["application/json",
                                                     "application/octet-stream"])) is not None:
        found.append(message)
    return found


def test_same_event_three_times_changes_state_once_and_notifies_once(
        runner_factory, whistle_config, store, amqp):
    event = stored_issue(store, "WH-20261121-0101")
    for _ in range(3):
        publish(amqp, event.model_dump(mode="json"))
    runner_factory(whistle_config, RoutingService, NotifyService).start()

    record = wait_until(lambda: (r := store.get(event.issue_id)).status.value == "dispatched" and r)
    assert record.category == "gas_leak" and record.priority.value == "urgent"
    assert [s.step for s in record.timeline].count("dispatched") == 1
    time.sleep(1.0)  # let every redelivery be handled
    history = store.redis.hgetall(store.keys.notifications(event.issue_id))
    received = [json.loads(v) for v in history.values() if json.loads(v)["kind"] == "received"]
    assert len(received) == 1 and received[0]["attempts"] == 1
    assert [s.step for s in store.get(event.issue_id).timeline].count("dispatched") == 1


def test_event_published_before_its_consumer_ever_ran_is_routed(
        runner_factory, whistle_config, store, amqp):
    # amqp fixture declared the topology (as any Whistle service does at start);
    # routing has never run in this vhost.
    event = stored_issue(store, "WH-20261121-0102", "家里停电了，整栋楼都没电了")
    publish(amqp, event.model_dump(mode="json"))
    runner_factory(whistle_config, RoutingService).start()
    record = wait_until(lambda: (r := store.get(event.issue_id)).status.value == "dispatched" and r)
    assert record.assignments[0].agency == "power"


def test_poison_messages_are_dead_lettered_with_reason_while_others_flow(
        runner_factory, whistle_config, store, amqp):
    runner_factory(whistle_config, RoutingService).start()
    # valid JSON, wrong schema
    publish(amqp, {"issue_id": "WH-20261121-0103", "unexpected": True})
    # undecodable: declared JSON, is not
    publish(amqp, b"\xff\xfe{not json", content_type="application/json",
            content_encoding="utf-8")
    # a well-formed event for an issue that does not exist: fails every attempt
    ghost = IssueReceived(trace_id="trace-ghost", issue_id="WH-20261121-0999",
                          description="井盖坏了", location=PLACE, channel="desk",
                          language="zh", has_contact=False)
    publish(amqp, ghost.model_dump(mode="json"))
    # meanwhile, a good issue is routed
    good = stored_issue(store, "WH-20261121-0104", "暖气不热，家里才十几度")
    publish(amqp, good.model_dump(mode="json"))
    wait_until(lambda: store.get(good.issue_id).status.value == "dispatched")

    letters = wait_until(lambda: (found := dead_letters(amqp)) and found, timeout=20)
    while len(letters) < 3:
        letters += wait_until(lambda: dead_letters(amqp), timeout=20)
    reasons = sorted(m.headers[ERROR_HEADER] for m in letters)
    assert any(r.startswith("invalid IssueReceived:") and "description" in r for r in reasons)
    assert any(r.startswith("undecodable message") for r in reasons)
    assert any(r.startswith("NotFound: no issue WH-20261121-0999") for r in reasons)
    ghost_letter = next(m for m in letters if "WH-20261121-0999" in m.headers[ERROR_HEADER])
    assert ghost_letter.headers[ATTEMPTS_HEADER] == whistle_config[cfg.MAX_ATTEMPTS]
    assert all(m.headers[QUEUE_HEADER] == "whistle.routing.route_issue" for m in letters)
    assert b"\xff\xfe{not json" in [m.body for m in letters]


def test_batched_acks_leave_nothing_to_redeliver_when_the_service_stops(
        runner_factory, whistle_config, store, amqp):
    # Acks are sent in batches (DeadLetteringQueueConsumer): once handled and the
    # service stopped, the broker must hold none of the messages for redelivery.
    events = [stored_issue(store, f"WH-20261121-{n:04d}", "楼道灯坏了，晚上看不见")
              for n in range(200, 240)]
    runner = runner_factory(whistle_config, RoutingService)
    runner.start()
    for event in events:
        publish(amqp, event.model_dump(mode="json"))
    # the same problem at the same address: the first is dispatched, the rest merged into it
    wait_until(lambda: all(store.get(e.issue_id).status.value in ("dispatched", "merged")
                           for e in events))
    runner.stop()

    queue = Queue("whistle.routing.route_issue", durable=True).bind(amqp.channel())
    assert queue.queue_declare(passive=True).message_count == 0


def test_a_worker_is_spawned_from_the_consumer_only_when_nothing_can_block(
        runner_factory, whistle_config, store, amqp):
    # DeadLetteringQueueConsumer spawns a valid event's worker itself when a worker slot
    # is free; anything else (here: no free slot, an invalid event) takes nameko's road,
    # a thread of its own per message. Either way every event is handled once.
    runner = runner_factory(whistle_config, RoutingService)
    runner.start()
    (container,) = runner.containers
    threads = []
    spawn_thread = container.spawn_managed_thread

    def recording(fn, identifier=None):
        if identifier and "handle_message" in identifier:
            threads.append(identifier)
        return spawn_thread(fn, identifier)

    container.spawn_managed_thread = recording
    pool, full_for = container._worker_pool, iter(range(3))
    free = pool.free
    pool.free = lambda: 0 if next(full_for, None) is not None else free()  # full 3 times

    events = [stored_issue(store, f"WH-20261121-{n:04d}", f"{n}号楼下水道堵了，污水冒出来")
              for n in range(300, 306)]
    for event in events:
        publish(amqp, event.model_dump(mode="json"))
    wait_until(lambda: all(store.get(e.issue_id).status.value in ("dispatched", "merged")
                           for e in events))
    assert len(threads) == 3  # the three that found the pool full; the rest went straight

    publish(amqp, {"issue_id": "WH-20261121-0399", "unexpected": True})
    letters = wait_until(lambda: dead_letters(amqp), timeout=20)
    assert len(threads) == 4 and letters[0].headers[ERROR_HEADER].startswith(
        "invalid IssueReceived")

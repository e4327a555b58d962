"""Fault scenarios 4, 5, 6 and 8: delivery with real processes and a real broker.

4. Issues submitted while routing has never run wait in routing's queue (every
   service declares the whole topology) and are all routed once it starts.
5. Every ``issue.received`` delivered three times (intake's own, plus two copies
   published with kombu before routing and notify start, so the copies are
   handled concurrently): one state change and one message each. The
   integration test ``tests/integration/test_delivery.py`` checks the same for one
   event in-process; this one gives the figures.
6. Poison on ``whistle.events`` (valid JSON with the wrong schema, an undecodable
   body, a well-formed event about an issue that does not exist) lands in
   ``whistle.dead-letter`` with its reason, after one attempt or after
   ``WHISTLE_MAX_ATTEMPTS``, while a load of good issues keeps flowing.
8. A notify worker died holding messages' delivery leases: the messages are sent
   once the leases lapse, not dead-lettered.
"""

import json
from collections import Counter

import pytest
from kombu import Connection

from services.notify.delivery import message_id
from shared import config as cfg
from shared.contracts import IssueReceived
from shared.store import Keys
from shared.topology import SUBSCRIPTIONS
from tests.e2e.test_whole_chain import poll
from tests.faults.harness import (
    Load,
    audit,
    dead_letters,
    queue_depth,
    received_events,
    start_apart,
)
from tests.integration.test_delivery import PLACE, publish

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

ROUTE_QUEUE = "whistle.routing.route_issue"


def test_issues_published_before_routing_ever_ran_are_all_routed(
        whistle_processes, whistle_env, redis_client, redis_prefix, scenario):
    run = scenario("4. issues submitted before routing ever ran")
    amqp_uri = whistle_env[cfg.AMQP_URI]
    intake = start_apart(whistle_processes, ("intake", "agency", "notify"))["intake"][0]
    load = Load([intake.url], n=20).start().wait()
    accepted = load.accepted_ids
    poll(lambda: queue_depth(amqp_uri, ROUTE_QUEUE), lambda n: n == len(accepted), timeout=10)

    whistle_processes("routing")
    run.conclude(lambda: audit(redis_client, redis_prefix, accepted), accepted, amqp_uri,
                 **load.figures())


def test_each_event_delivered_three_times_changes_state_once_and_tells_once(
        whistle_processes, whistle_env, redis_client, redis_prefix, scenario):
    run = scenario("5. every issue.received delivered 3 times")
    amqp_uri = whistle_env[cfg.AMQP_URI]
    intake = start_apart(whistle_processes, ("intake", "agency"))["intake"][0]
    load = Load([intake.url], n=20).start().wait()
    accepted = load.accepted_ids

    events = received_events(redis_client, redis_prefix, accepted)
    with Connection(amqp_uri) as amqp:
        for _ in range(2):  # intake published each once already
            for event in events:
                publish(amqp, event.model_dump(mode="json"))
    poll(lambda: queue_depth(amqp_uri, ROUTE_QUEUE), lambda n: n == 3 * len(accepted),
         timeout=10)

    start_apart(whistle_processes, ("routing", "notify"))
    figures = run.conclude(lambda: audit(redis_client, redis_prefix, accepted), accepted,
                           amqp_uri, deliveries=3 * len(accepted), **load.figures())
    assert figures["accepted"] == 20
    keys = Keys(redis_prefix)
    journaled = Counter(json.loads(entry)["event_type"] for i in accepted
                        for entry in redis_client.lrange(keys.journal(i), 0, -1))
    assert journaled["issue.received"] == len(accepted)  # journaled once, when committed


def test_poison_is_dead_lettered_with_its_reason_while_good_issues_flow(
        whistle_processes, whistle_env, redis_client, redis_prefix, scenario):
    run = scenario("6. poison messages amid a load")
    amqp_uri = whistle_env[cfg.AMQP_URI]
    intake = start_apart(whistle_processes)["intake"][0]
    load = Load([intake.url], n=40).start()
    load.wait_sent(10)
    ghost = IssueReceived(trace_id="trace-ghost-0001", issue_id="WH-20000101-0999",
                          description="井盖坏了", location=PLACE, channel="desk",
                          language="zh", has_contact=False)
    with Connection(amqp_uri) as amqp:
        publish(amqp, {"issue_id": "WH-20000101-0998", "unexpected": True})  # wrong schema
        publish(amqp, b"\xff\xfe{not json", content_type="application/json",
                content_encoding="utf-8")  # undecodable
        publish(amqp, ghost.model_dump(mode="json"))  # fails every attempt: no such issue
    load.wait()

    # Every queue bound to issue.received gets its copy of each poison message.
    bound = sorted(sub.queue_name for sub in SUBSCRIPTIONS
                   if "issue.received" in sub.binding_keys)
    max_attempts = int(cfg.DEFAULTS[cfg.MAX_ATTEMPTS])
    expected = ({(q, "invalid", 1) for q in bound} | {(q, "undecodable", 1) for q in bound}
                | {(q, "NotFound", max_attempts) for q in bound})
    poll(lambda: queue_depth(amqp_uri), lambda n: n >= len(expected), timeout=30)
    accepted = load.accepted_ids
    run.conclude(lambda: audit(redis_client, redis_prefix, accepted), accepted, amqp_uri,
                 dead_letters_expected=len(expected), poison=3, **load.figures())

    letters = dead_letters(amqp_uri)
    found = {(m["queue"], m["reason"].split(" ")[0].split(":")[0], m["attempts"])
             for m in letters}
    assert found == expected, sorted(found ^ expected)
    assert all(m["failed_at"] for m in letters)


LEASE_LEFT_S = 5


def test_a_delivery_lease_left_by_a_dead_notify_worker_does_not_lose_the_message(
        whistle_processes, whistle_env, redis_client, redis_prefix, scenario):
    """A notify worker SIGKILLed between taking a message's delivery lease and releasing
    it (or whose Redis died in between: seen in scenario 3) leaves the lease behind
    for up to ``LEASE_SECONDS``. Its event is redelivered; the message must still be
    sent once the lease is gone, not dead-lettered as "being sent by another worker".

    The crash is simulated exactly: the lease key a dying worker leaves, set before
    notify ever sees the events, with the few seconds it has left to live.
    """
    run = scenario("8. notify died holding delivery leases")
    intake = start_apart(whistle_processes, ("intake", "routing", "agency"))["intake"][0]
    load = Load([intake.url], n=5).start().wait()
    accepted = load.accepted_ids
    for event in received_events(redis_client, redis_prefix, accepted):
        # services/notify/delivery.py: Deliveries.deliver_once's lease key
        lease = f"{redis_prefix}:notify:lease:{message_id(event.event_id, 'received')}"
        redis_client.set(lease, "1", ex=LEASE_LEFT_S)

    whistle_processes("notify")
    run.conclude(lambda: audit(redis_client, redis_prefix, accepted), accepted,
                 whistle_env[cfg.AMQP_URI], timeout=LEASE_LEFT_S + 15, **load.figures())

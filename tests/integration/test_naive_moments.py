"""An event with a moment without its zone, on receipt, through the real broker and Redis:
dead-lettered at once with the field and why, not retried, and nobody told anything."""

from __future__ import annotations

import pytest

from services.notify.service import NotifyService
from shared.messaging import ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER
from tests.integration import test_delivery, test_notify_delivery

amqp, store, wait_until = test_delivery.amqp, test_delivery.store, test_delivery.wait_until
dead_letters, publish_raw = test_delivery.dead_letters, test_delivery.publish
config, stored = test_notify_delivery.config, test_notify_delivery.stored
water_dispatch = test_notify_delivery.water_dispatch

pytestmark = pytest.mark.integration

NAIVE = "2026-12-07T09:00:00"  # whose 09:00? Beijing's, or UTC's eight hours later


def records(store, issue_id: str) -> dict:
    return store.redis.hgetall(store.keys.notifications(issue_id))


def test_an_event_with_a_naive_moment_is_dead_lettered_at_once_naming_the_field(
        runner_factory, config, store, amqp):
    naive_event = stored(store, "WH-20261207-0501", {"phone": "13812345678"})
    naive_deadline = water_dispatch(stored(store, "WH-20261207-0502", {}).issue_id)
    good = stored(store, "WH-20261207-0503", {})
    runner_factory(config, NotifyService).start()

    publish_raw(amqp, {**naive_event.model_dump(mode="json"), "occurred_at": NAIVE},
                routing_key=naive_event.event_type)
    body = naive_deadline.model_dump(mode="json")
    body["assignments"][0]["acknowledge_by"] = NAIVE
    publish_raw(amqp, body, routing_key=naive_deadline.event_type)
    publish_raw(amqp, good.model_dump(mode="json"), routing_key=good.event_type)

    wait_until(lambda: records(store, good.issue_id))  # the good one flowed meanwhile
    letters = wait_until(lambda: (found := dead_letters(amqp)) and found, timeout=20)
    while len(letters) < 2:
        letters += wait_until(lambda: dead_letters(amqp), timeout=20)
    reasons = {m.headers[ERROR_HEADER]: m for m in letters}
    assert sorted(reasons) == [
        "invalid IssueDispatched: assignments.0.acknowledge_by (assignments.0.acknowledge_by "
        "must be a moment with its zone offset, like 2026-12-08T01:00:00Z or "
        "2026-12-08T09:00:00+08:00, not a naive one)",
        "invalid IssueReceived: occurred_at (occurred_at must be a moment with its zone "
        "offset, like 2026-12-08T01:00:00Z or 2026-12-08T09:00:00+08:00, not a naive one)"]
    # At once, not after every retry, and with the queue it came from.
    assert [m.headers[ATTEMPTS_HEADER] for m in letters] == [1, 1]
    assert {m.headers[QUEUE_HEADER] for m in letters} == {"whistle.notify.on_event"}
    # Nobody was told anything from an event that could not be read.
    assert records(store, naive_event.issue_id) == {}
    assert records(store, naive_deadline.issue_id) == {}
    assert dead_letters(amqp) == []  # dead-lettered once each

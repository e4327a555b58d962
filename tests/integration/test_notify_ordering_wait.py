"""notify's ordering wait against the real Redis: the waiting worker is woken by the
delivery it waits for, instead of polling the issue's records on a short timer."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
import redis

from services.notify.channels import (
    Channels,
    DeskOutboxChannel,
    OutgoingMessage,
    WebhookChannel,
)
from services.notify.delivery import Deliveries, message_id
from services.notify.recipients import RESIDENT
from tests.conftest import REDIS_URL
from tests.integration import test_notify_channels

gateway = test_notify_channels.gateway  # a real HTTP server that can be slow

pytestmark = pytest.mark.integration

ISSUE = "WH-20261205-0001"


@pytest.fixture
def deliveries(redis_prefix):
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield Deliveries(client, redis_prefix, Channels(DeskOutboxChannel(client, redis_prefix)))
    client.close()


def received_message() -> OutgoingMessage:
    return OutgoingMessage(notification_id=message_id("evt-1", "received"), issue_id=ISSUE,
                           kind="received", language="zh", text="已收到您的反映",
                           recipient={})


class CountingReads(Deliveries):
    """The real deliveries, counting how often the issue's records are read."""

    reads = 0

    def settled(self, issue_id: str, kind: str, count: int) -> bool:
        CountingReads.reads += 1
        return super().settled(issue_id, kind, count)


def test_the_wait_ends_when_this_process_records_the_awaited_message(deliveries):
    deliveries.__class__ = CountingReads
    CountingReads.reads = 0
    waits = []
    wait = deliveries.wakeups.wait
    deliveries.wakeups.wait = lambda key, timeout: waits.append(wait(key, timeout)) or waits[-1]
    sender = threading.Timer(0.15, deliveries.deliver_once, args=(received_message(), RESIDENT))
    sender.start()
    # A poll as long as the whole wait: only the wake-up can end it before its bound.
    assert deliveries.await_settled(ISSUE, "received", 1, within_s=60.0, poll_s=60.0)
    sender.join()
    assert waits == [True]  # woken by the delivery, not by the poll's timeout
    assert CountingReads.reads == 2  # once before waiting, once when woken
    assert deliveries.wakeups.waiters() == 0


def test_without_the_message_the_wait_gives_up_after_its_bound(deliveries):
    assert not deliveries.await_settled(ISSUE, "received", 1, within_s=0.2, poll_s=0.05)
    assert deliveries.wakeups.waiters() == 0


def test_a_message_settled_by_another_process_is_seen_by_the_poll(deliveries, redis_prefix):
    other_client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    other = Deliveries(other_client, redis_prefix,
                       Channels(DeskOutboxChannel(other_client, redis_prefix)))
    sender = threading.Timer(0.1, other.deliver_once, args=(received_message(), RESIDENT))
    sender.start()
    try:
        assert deliveries.await_settled(ISSUE, "received", 1, within_s=5.0, poll_s=0.05)
    finally:
        sender.join()
        other_client.close()


def slow_deliveries(client, redis_prefix, gateway, **lease) -> Deliveries:
    return Deliveries(client, redis_prefix,
                      Channels(DeskOutboxChannel(client, redis_prefix),
                               {"webhook": WebhookChannel(gateway.url, "webhook-secret-" * 3)}),
                      **lease)


def to_webhook() -> OutgoingMessage:
    return replace(received_message(), recipient={"phone": "13812345678"},
                   preferred_channel="webhook")


def test_a_slow_send_keeps_its_lease_past_the_lease_time_and_releases_it_after(
        redis_prefix, gateway):
    """The lease says a live worker is sending the message (the ordering wait trusts
    it): renewed while the channel works, however long, and gone once it answered."""
    gateway.delay = 2.5
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    slow = slow_deliveries(client, redis_prefix, gateway, lease_s=1, renew_s=0.25)
    lease = slow.lease_key(to_webhook().notification_id)
    sender = threading.Thread(target=slow.deliver_once, args=(to_webhook(), RESIDENT))
    try:
        sender.start()
        time.sleep(2.0)  # twice the lease's time, the gateway still at it
        assert client.get(lease)
        sender.join()
        assert client.get(lease) is None
        [record] = slow.history(ISSUE)
        assert (record["status"], record["channel"], record["attempts"]) == \
            ("sent", "webhook", 1)
    finally:
        sender.join()
        client.close()


def test_a_send_stuck_past_the_longest_hold_lets_its_lease_lapse(redis_prefix, gateway):
    """Renewed only for so long: a stuck send stops holding the resident's next message."""
    gateway.delay = 3.0
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    stuck = slow_deliveries(client, redis_prefix, gateway, lease_s=1, renew_s=0.25,
                            max_hold_s=1.0)
    lease = stuck.lease_key(to_webhook().notification_id)
    sender = threading.Thread(target=stuck.deliver_once, args=(to_webhook(), RESIDENT))
    try:
        sender.start()
        time.sleep(0.5)
        assert client.get(lease)
        time.sleep(2.0)  # past the longest hold and the lease's own second
        assert client.get(lease) is None
    finally:
        sender.join()
        client.close()

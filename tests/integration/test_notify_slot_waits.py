"""Messages put off for a free slot on a direct channel (``delivery.Deliveries``), against
the real Redis, with a webhook stand-in whose sends stay on the wire until let go.

Their slot-wait marks go once the message is attempted (not ten minutes later), also
when another process or a redelivered copy settles it, or it goes through the desk in the
end; and a message put off is not passed over for ever by messages arriving afresh while
the channel stays busy. And a refused message is not tried again within its backoff by
another copy of its event.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
import redis

from services.notify.channels import (
    DESK,
    WEBHOOK,
    Channels,
    DeliveryResult,
    DeskOutboxChannel,
    OutgoingMessage,
)
from services.notify.delivery import SENT, SLOT_MARK_WRITTEN_S, Deliveries, message_id
from services.notify.recipients import RESIDENT
from shared.jsoncodec import dumps, loads
from shared.messaging import Deferred
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration


class HeldWebhook:
    """A direct channel whose sends stay on the wire until :meth:`let_go`; ``refuse``
    answers like a gateway that says no."""

    name = WEBHOOK

    def __init__(self, hold: bool = False, refuse: bool = False):
        self.hold, self.refuse = hold, refuse
        self.on_the_wire: list[str] = []  # every send, in the order it began
        self._gates: dict[str, threading.Event] = {}

    def deliver(self, message: OutgoingMessage) -> DeliveryResult:
        gate = self._gates.setdefault(message.notification_id, threading.Event())
        self.on_the_wire.append(message.notification_id)
        if self.hold:
            gate.wait(10)
        return DeliveryResult(ok=not self.refuse, channel=WEBHOOK,
                              detail="HTTP 500" if self.refuse else "HTTP 200")

    def let_go(self, notification_id: str) -> None:
        self._gates.setdefault(notification_id, threading.Event()).set()


@pytest.fixture
def client():
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


def deliveries(client, prefix: str, webhook: HeldWebhook, max_attempts: int = 4,
               direct_sends: int = 1) -> Deliveries:
    return Deliveries(client, prefix, Channels(DeskOutboxChannel(client, prefix),
                                               {WEBHOOK: webhook}),
                      max_attempts=max_attempts, direct_sends=direct_sends)


def to_webhook(issue_id: str, event_id: str = "evt-1",
               kind: str = "received") -> OutgoingMessage:
    return OutgoingMessage(notification_id=message_id(event_id, kind), issue_id=issue_id,
                           kind=kind, language="zh", text="已收到您的反映",
                           recipient={"phone": "13812345678"}, preferred_channel=WEBHOOK)


def marks(client, notify: Deliveries, issue_id: str) -> dict[str, dict]:
    return {nid: loads(raw) for nid, raw in
            client.hgetall(notify.slot_waits_key(issue_id)).items()}


ISSUE = "WH-20261207-0501"


@pytest.mark.parametrize(("refuse", "status"), [(False, "sent"), (True, "failed")])
def test_a_mark_goes_once_its_message_is_sent_or_given_up_on(client, redis_prefix, refuse,
                                                              status):
    """Before, it stayed ten minutes, for the resident's later messages to wait behind."""
    webhook = HeldWebhook(refuse=refuse)
    notify = deliveries(client, redis_prefix, webhook, max_attempts=1)
    message = to_webhook(ISSUE)
    assert notify.slots.take(WEBHOOK).now  # another resident's send on the wire
    with pytest.raises(Deferred):
        notify.deliver_once(message)
    assert list(marks(client, notify, ISSUE)) == [message.notification_id]
    assert client.ttl(notify.slot_waits_key(ISSUE)) > 0  # the backstop

    notify.slots.give_back(WEBHOOK)
    outcome = notify.deliver_once(message)

    assert (outcome.fresh, outcome.status) == (True, status)
    assert marks(client, notify, ISSUE) == {}


def put_off_here_sent_there(client, prefix: str, webhook: HeldWebhook,
                            message: OutgoingMessage) -> tuple[Deliveries, Deliveries]:
    """Two notify processes: "here" has no free slot and puts ``message`` off; "there"
    has one and sends it (its event came back to that process)."""
    here, there = deliveries(client, prefix, webhook), deliveries(client, prefix, webhook)
    assert here.slots.take(WEBHOOK).now
    with pytest.raises(Deferred):
        here.deliver_once(message)
    assert list(marks(client, here, message.issue_id)) == [message.notification_id]
    assert there.deliver_once(message).status == SENT
    return here, there


def test_a_message_sent_by_another_process_leaves_no_mark_behind_in_either(
        client, redis_prefix):
    """Two notify processes: one puts the message off (no free slot there), the other
    sends it; the first one's copy, back from the delay queue, finds it sent."""
    webhook = HeldWebhook()
    message = to_webhook(ISSUE)
    busy, _ = put_off_here_sent_there(client, redis_prefix, webhook, message)
    assert marks(client, busy, ISSUE) == {}

    again = busy.deliver_once(message)  # still no free slot here: it need not have one
    assert (again.fresh, again.status) == (False, SENT)
    assert marks(client, busy, ISSUE) == {}
    assert busy.slots.waiting(WEBHOOK) == []  # its place is not kept for it
    assert webhook.on_the_wire == [message.notification_id]


def test_a_redelivered_copy_of_a_settled_message_removes_a_mark_left_of_it(
        client, redis_prefix):
    """A mark left behind (a copy put off just as another recorded it settled, or one
    written by an older notify) goes when a copy finds the message settled, as often as
    that happens."""
    webhook = HeldWebhook()
    notify = deliveries(client, redis_prefix, webhook)
    message = to_webhook(ISSUE)
    assert notify.deliver_once(message).status == SENT
    key = notify.slot_waits_key(ISSUE)
    client.hset(key, message.notification_id, dumps({"kind": "received", "at": "x"}))
    client.hset(key, "another", dumps({"kind": "dispatched", "at": "x"}))
    assert notify.slots.take(WEBHOOK).now

    for _ in range(2):  # at least once: the same copy again changes nothing
        assert notify.deliver_once(message).status == SENT

    assert list(marks(client, notify, ISSUE)) == ["another"]
    assert webhook.on_the_wire == [message.notification_id]


def test_a_message_put_off_is_not_passed_over_by_messages_arriving_afresh(
        client, redis_prefix):
    """One slot, a channel that stays busy: each time a send ends, another resident's
    new message asks before the one put off comes back from the delay queue. Before, the
    newcomer took the slot every time, and the one put off could wait for ever."""
    webhook = HeldWebhook(hold=True)
    notify = deliveries(client, redis_prefix, webhook)
    threads: list[threading.Thread] = []

    def send(message: OutgoingMessage) -> str:
        """Its fate once known: "on the wire", "put off" (Deferred) or "settled"."""
        fate: list[str] = []

        def run():
            try:
                notify.deliver_once(message, RESIDENT)
                fate.append("settled")
            except Deferred:
                fate.append("put off")

        thread = threading.Thread(target=run, daemon=True)
        threads.append(thread)
        thread.start()
        give_up = time.monotonic() + 5
        while not fate and message.notification_id not in webhook.on_the_wire:
            assert time.monotonic() < give_up, "neither sent nor put off"
            time.sleep(0.005)
        return fate[0] if fate else "on the wire"

    waiting = to_webhook("WH-20261207-0502", "evt-waiting")
    on_the_wire = to_webhook("WH-20261207-0503", "evt-first")
    try:
        assert send(on_the_wire) == "on the wire"
        assert send(waiting) == "put off"
        fates = []
        for n in range(3):
            webhook.let_go(on_the_wire.notification_id)  # a send ends: a slot frees
            wait_for_a_free_slot(notify)
            newcomer = to_webhook(f"WH-20261207-05{10 + n}", f"evt-new-{n}")
            arrival = send(newcomer)
            fates.append(send(waiting))
            if fates[-1] == "on the wire":
                assert arrival == "put off"
                break
            on_the_wire = newcomer  # the newcomer took the slot, again
        assert fates == ["on the wire"], f"passed over {len(fates)} times: {fates}"
    finally:
        for nid in webhook.on_the_wire:
            webhook.let_go(nid)
        for thread in threads:
            thread.join(5)


def test_a_place_kept_for_a_message_another_process_sent_is_given_up_at_once(
        client, redis_prefix):
    """Its event came back to the other process, which sent it: this one's free slot is
    not kept empty for it until its place lapses; the mark's going says it was sent."""
    webhook = HeldWebhook()
    sent_there = to_webhook(ISSUE)
    here, _ = put_off_here_sent_there(client, redis_prefix, webhook, sent_there)
    assert here.slots.waiting(WEBHOOK) == [(ISSUE, sent_there.notification_id)]
    here.slots.give_back(WEBHOOK)
    time.sleep(SLOT_MARK_WRITTEN_S)  # a moment later: it had its mark, and it is gone

    newcomer = to_webhook("WH-20261207-0520", "evt-newcomer")
    assert here.deliver_once(newcomer).status == SENT
    assert here.slots.waiting(WEBHOOK) == []
    assert webhook.on_the_wire == [sent_there.notification_id, newcomer.notification_id]


def wait_for_a_free_slot(notify: Deliveries) -> None:
    give_up = time.monotonic() + 5
    while notify.slots.in_flight(WEBHOOK):
        assert time.monotonic() < give_up, "the send did not end"
        time.sleep(0.005)


@pytest.mark.parametrize("why", ["no phone now", "chose the desk now"])
def test_a_message_put_off_on_the_webhook_that_goes_through_the_desk_leaves_no_mark(
        client, redis_prefix, why):
    """Put off for a slot on the webhook, then its channel became the desk's (the
    resident's contact changed, or the webhook went): it went out through the desk's
    outbox, and its mark stayed ten minutes, the resident's next messages waiting
    behind a message long sent."""
    webhook = HeldWebhook()
    notify = deliveries(client, redis_prefix, webhook)
    message = to_webhook(ISSUE)
    assert notify.slots.take(WEBHOOK).now  # another resident's send on the wire
    with pytest.raises(Deferred):
        notify.deliver_once(message)
    assert list(marks(client, notify, ISSUE)) == [message.notification_id]
    key = notify.slot_waits_key(ISSUE)
    client.hset(key, "another", dumps({"kind": "dispatched", "at": "x"}))
    now_desk = (replace(message, recipient={}) if why == "no phone now"
                else replace(message, preferred_channel=DESK))

    outcome = notify.deliver_once(now_desk)

    assert (outcome.fresh, outcome.status, outcome.channel) == (True, SENT, DESK)
    assert list(marks(client, notify, ISSUE)) == ["another"]  # only its own mark went
    assert webhook.on_the_wire == []
    assert [loads(e)["notification_id"] for e in client.lrange(f"{redis_prefix}:desk:outbox",
                                                               0, -1)] == \
        [message.notification_id]


# ---------------------------------------------------------------- a refusal's backoff


def test_a_copy_of_the_event_that_comes_within_a_refusals_backoff_waits_it_out(
        client, redis_prefix):
    """At-least-once: a duplicate of the event arrives while the copy that was refused
    waits out its backoff in the delay queue. It sent the message again at once, an
    attempt spent; now it is put off until the backoff is over (``Deferred``: no attempt
    spent), and the message is tried again then, by whichever copy comes first."""
    webhook = HeldWebhook(refuse=True)
    notify = Deliveries(client, redis_prefix, Channels(DeskOutboxChannel(client, redis_prefix),
                                                       {WEBHOOK: webhook}),
                        retry_delay_s=0.4)
    message = to_webhook(ISSUE)
    assert notify.deliver_once(message).status == "queued"  # refused: attempt 1

    with pytest.raises(Deferred) as held:
        notify.deliver_once(message)  # the duplicate, at once

    assert 0.2 < held.value.delay_s <= 0.4
    assert webhook.on_the_wire == [message.notification_id]
    [record] = map(loads, client.hvals(notify.keys.notifications(ISSUE)))
    assert (record["status"], record["attempts"]) == ("queued", 1)
    assert marks(client, notify, ISSUE) == {}  # not put off for a slot: nothing waits behind
    assert notify.slots.in_flight(WEBHOOK) == 0 and notify.slots.waiting(WEBHOOK) == []

    time.sleep(held.value.delay_s)
    webhook.refuse = False
    outcome = notify.deliver_once(message)  # the backoff is over: tried again
    assert (outcome.status, webhook.on_the_wire) == (SENT, [message.notification_id] * 2)

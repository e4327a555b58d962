"""The cap on direct sends through the running notify service: real broker, Redis, a real
slow HTTP gateway and a real SMTP server.

A slow gateway used to take every one of notify's workers, one per message on the wire,
and every other resident's messages waited behind it. Now at most
``NOTIFY_MAX_DIRECT_SENDS`` sends per channel are on the wire at once; the rest go round
the delay queue, and are each delivered once, in each resident's chain order.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests

from services.notify.delivery import message_id
from services.notify.service import ORDERING_GRACE_S
from shared import config as cfg
from shared.contracts import Channel, IssueStatus, Language
from shared.issue import receive
from shared.jsoncodec import loads
from tests.integration import test_notify_delivery
from tests.support.auth import DESK
from tests.support.smtp import smtp_server

amqp, store, wait_until = (test_notify_delivery.amqp, test_notify_delivery.store,
                           test_notify_delivery.wait_until)
gateway, publish = test_notify_delivery.gateway, test_notify_delivery.publish
dead_letters, stored = test_notify_delivery.dead_letters, test_notify_delivery.stored
config, water_dispatch = test_notify_delivery.config, test_notify_delivery.water_dispatch

pytestmark = pytest.mark.integration

WORKERS, DIRECT_SENDS = 4, 2
SLOW_SEND_S = 1.5
PHONE = {"phone": "13812345678", "preferred_channel": "webhook"}


def records(store, issue_id: str) -> list[dict]:
    """Read from Redis, not over notify's HTTP: that would need a worker too."""
    return [loads(raw) for raw in store.redis.hgetall(store.keys.notifications(issue_id))
            .values()]


def resolved_issue(store, issue_id: str, contact: dict) -> str:
    """An issue waiting for its resident's rating, stored as it is then."""
    record = receive(issue_id, f"trace-{issue_id}", "楼道灯坏了好几天了", None,
                     test_notify_delivery.PLACE, Channel.hotline, Language.zh, datetime.now(UTC))
    store.create(record.model_copy(update={
        "status": IssueStatus.resolved, "feedback_due": datetime.now(UTC) + timedelta(days=7)}),
        contact, "test", {})
    return issue_id


def test_a_slow_webhook_holds_at_most_its_slots_and_every_message_still_goes_once(
        runner_factory, config, store, amqp, gateway):
    gateway.hold()  # every webhook send stays on the wire until released
    with smtp_server() as smtp:
        config.update({cfg.MAX_WORKERS: WORKERS, cfg.NOTIFY_MAX_DIRECT_SENDS: DIRECT_SENDS,
                       cfg.NOTIFY_WEBHOOK_URL: gateway.url, cfg.SMTP_HOST: "127.0.0.1",
                       cfg.SMTP_PORT: smtp.port})
        chain = stored(store, "WH-20261207-0401", PHONE)  # received, then dispatched
        others = [stored(store, f"WH-20261207-04{n:02d}", PHONE) for n in range(2, 6)]
        by_email = stored(store, "WH-20261207-0409", {
            "name": "Tom Baker", "email": "tom.baker@example.org",
            "preferred_channel": "email"}, language="en")
        dispatched = water_dispatch(chain.issue_id)
        test_notify_delivery.start(runner_factory, config)

        publish(amqp, chain, *others, dispatched, by_email)

        # More stuck sends than workers are waiting, yet the email goes: while the
        # gateway has answered nothing, with only the cap's sends on its wire.
        wait_until(lambda: any(r["status"] == "sent" for r in records(store, by_email.issue_id)),
                   timeout=20, interval=0.02)
        assert (len(gateway.requests), gateway.answered) == (DIRECT_SENDS, 0)
        smtp.wait_for(1)
        gateway.release()

        # Every deferred message goes in the end, once, at its first attempt.
        everyone = [chain, *others]
        wait_until(lambda: sum(r["status"] == "sent" for e in everyone
                               for r in records(store, e.issue_id)) == 6, timeout=30)
    sent = [r for e in everyone for r in records(store, e.issue_id)]
    assert {(r["status"], r["channel"], r["attempts"]) for r in sent} == {("sent", "webhook", 1)}
    keys = Counter(r.headers["Idempotency-Key"] for r in gateway.requests)
    assert sorted(keys.values()) == [1] * 6
    # The resident whose messages were deferred heard them in the chain's order.
    mine = [k for k in keys if k in (message_id(chain.event_id, "received"),
                                     message_id(dispatched.event_id, "dispatched"))]
    assert mine == [message_id(chain.event_id, "received"),
                    message_id(dispatched.event_id, "dispatched")]
    assert dead_letters(amqp) == []


def test_a_rating_link_resent_while_the_webhook_is_full_is_refused_and_may_be_asked_again(
        runner_factory, config, store, amqp, gateway):
    """A resend is an RPC, which cannot go round the delay queue: at the cap it is
    refused as unavailable (it waited the whole slow send before, holding a worker),
    nothing went, and the cooldown does not stop the desk asking again."""
    gateway.delay = SLOW_SEND_S
    config.update({cfg.NOTIFY_MAX_DIRECT_SENDS: 1, cfg.NOTIFY_WEBHOOK_URL: gateway.url})
    busy = stored(store, "WH-20261207-0411", PHONE)
    waiting = resolved_issue(store, "WH-20261207-0412", PHONE)
    base = test_notify_delivery.start(runner_factory, config)
    publish(amqp, busy)
    wait_until(lambda: gateway.requests, timeout=10, interval=0.02)  # the one slot taken

    refused = requests.post(f"{base}/issues/{waiting}/rating-link", headers=DESK,
                            timeout=10)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "unavailable" and "busy" in error["message"], error
    assert len(gateway.requests) == 1
    # Refused, not queued: nothing behind it waits for it.
    assert store.redis.hgetall(f"{store.keys.prefix}:notify:slot-waits:{waiting}") == {}

    wait_until(lambda: any(r["status"] == "sent" for r in records(store, busy.issue_id)))
    again = requests.post(f"{base}/issues/{waiting}/rating-link", headers=DESK,
                          timeout=10)
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "sent"


def test_a_message_queued_for_a_slot_longer_than_the_grace_is_not_overtaken(
        runner_factory, config, store, amqp, gateway):
    """One slot, taken by another resident's slow send for longer than a message waits
    for one not begun (ORDERING_GRACE_S): "received" keeps coming back for the slot, and
    "dispatched" waits behind it all along, instead of racing it for the slot."""
    gateway.delay = ORDERING_GRACE_S + 1.5  # the slot stays taken well past the grace
    config.update({cfg.NOTIFY_MAX_DIRECT_SENDS: 1, cfg.NOTIFY_WEBHOOK_URL: gateway.url})
    busy = stored(store, "WH-20261207-0421", PHONE)
    chain = stored(store, "WH-20261207-0422", PHONE)
    dispatched = water_dispatch(chain.issue_id)
    test_notify_delivery.start(runner_factory, config)

    publish(amqp, busy)
    wait_until(lambda: gateway.requests, timeout=10, interval=0.02)
    publish(amqp, chain, dispatched)

    marks_key = f"{store.keys.prefix}:notify:slot-waits:{chain.issue_id}"
    marked: set[str] = set()  # the kinds put off for a slot, seen while they waited

    def both_sent() -> bool:
        marked.update(loads(m)["kind"] for m in store.redis.hvals(marks_key))
        return sum(r["status"] == "sent" for r in records(store, chain.issue_id)) == 2

    wait_until(both_sent, timeout=6 * gateway.delay, interval=0.05)
    assert [r.headers["Idempotency-Key"] for r in gateway.requests] == [
        message_id(busy.event_id, "received"), message_id(chain.event_id, "received"),
        message_id(dispatched.event_id, "dispatched")]
    assert {r["attempts"] for r in records(store, chain.issue_id)} == {1}
    # "dispatched" waited for its turn all along, never for a slot: had it stopped
    # waiting once past the grace, it would have raced "received" for the slot (and
    # been put off for one, leaving its mark), winning as often as not.
    assert marked == {"received"}
    assert store.redis.hgetall(marks_key) == {}  # gone once "received" was sent
    assert dead_letters(amqp) == []


def test_a_message_put_off_for_a_slot_whose_event_is_dead_lettered_leaves_no_mark(
        runner_factory, config, store, amqp, gateway):
    """Put off for a slot, its event then failed for another reason until it was
    dead-lettered (here its issue was gone from Redis when it came back): the message
    will never come back for the slot, yet its mark stayed ten minutes, and the
    resident's next messages waited behind it. Now the mark goes with the dead letter."""
    gateway.hold()
    config.update({cfg.NOTIFY_MAX_DIRECT_SENDS: 1, cfg.NOTIFY_WEBHOOK_URL: gateway.url})
    busy = stored(store, "WH-20261207-0431", PHONE)
    doomed = stored(store, "WH-20261207-0432", PHONE)
    other = stored(store, "WH-20261207-0433", PHONE)  # its marks are not the dead event's
    test_notify_delivery.start(runner_factory, config)
    publish(amqp, busy)
    wait_until(lambda: gateway.requests, timeout=10, interval=0.02)  # the one slot taken
    marks_key = f"{store.keys.prefix}:notify:slot-waits:{doomed.issue_id}"
    other_key = f"{store.keys.prefix}:notify:slot-waits:{other.issue_id}"
    try:
        publish(amqp, doomed, other)
        wait_until(lambda: store.redis.hlen(marks_key) and store.redis.hlen(other_key),
                   timeout=10, interval=0.02)
        store.redis.delete(store.keys.issue(doomed.issue_id))

        [dead] = wait_until(lambda: dead_letters(amqp), timeout=15)
        assert loads(dead.body)["event_id"] == doomed.event_id
        wait_until(lambda: not store.redis.exists(marks_key), timeout=5, interval=0.02)
        assert store.redis.hlen(other_key) == 1  # still put off, still waited behind
    finally:
        gateway.release()
    wait_until(lambda: any(r["status"] == "sent" for r in records(store, other.issue_id)))
    assert store.redis.hgetall(marks_key) == {}

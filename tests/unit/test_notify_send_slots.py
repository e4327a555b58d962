"""notify's cap on direct sends (``delivery.plan_send``, ``SendSlots``): a slow gateway
may hold only so many workers; a message past the cap is deferred, never dropped, and
the one behind it for the same resident keeps waiting its turn. Pure: no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notify.channels import DESK, EMAIL, WEBHOOK
from services.notify.delivery import (
    SENT,
    SLOT_RECHECK_S,
    SendSlots,
    ordering_wait,
    plan_send,
)
from shared import config as cfg
from shared.config import ConfigurationError, normalise
from shared.jsoncodec import utc_moment

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
GRACE_S = 3.0


def test_below_the_cap_a_message_goes_now():
    assert plan_send(WEBHOOK, 0, 3).now
    assert plan_send(WEBHOOK, 2, 3).now


def test_at_the_cap_a_message_is_deferred_through_the_delay_queue_with_its_reason():
    plan = plan_send(WEBHOOK, 3, 3)
    assert not plan.now
    assert plan.delay_s == SLOT_RECHECK_S
    assert plan.reason == "webhook: 3 sends on the wire, the most at once"


def test_the_desk_is_never_capped():
    """Its outbox is our own Redis, and where messages go when a channel gives up."""
    assert plan_send(DESK, 1000, 1).now


def test_slots_are_counted_per_channel_and_freed_when_given_back():
    slots = SendSlots(2)
    assert slots.take(WEBHOOK).now and slots.take(WEBHOOK).now
    refused = slots.take(WEBHOOK)
    assert not refused.now and slots.in_flight(WEBHOOK) == 2  # a refusal takes nothing
    assert slots.take(EMAIL).now  # another channel has its own slots
    slots.give_back(WEBHOOK)
    assert slots.take(WEBHOOK).now
    assert slots.in_flight(WEBHOOK) == 2 and slots.in_flight(EMAIL) == 1


def test_the_desk_takes_no_slot():
    slots = SendSlots(1)
    for _ in range(5):
        assert slots.take(DESK).now
    slots.give_back(DESK)
    assert slots.in_flight(DESK) == 0 and slots.take(WEBHOOK).now


def test_at_least_one_send_must_be_allowed():
    with pytest.raises(ValueError):
        SendSlots(0)


def test_the_setting_is_an_integer_of_at_least_one():
    assert normalise({cfg.NOTIFY_MAX_DIRECT_SENDS: "4"})[cfg.NOTIFY_MAX_DIRECT_SENDS] == 4
    with pytest.raises(ConfigurationError, match=cfg.NOTIFY_MAX_DIRECT_SENDS):
        normalise({cfg.NOTIFY_MAX_DIRECT_SENDS: "0"})


# ---------------------------------------------- the ordering wait behind a deferred one


def mark(kind: str, s_ago: float) -> dict:
    return {"kind": kind, "at": utc_moment(NOW - timedelta(seconds=s_ago))}


def wait(kind="received", records=(), marks=(), event_s_ago=60.0):
    return ordering_wait(list(records), kind, 1, set(), NOW - timedelta(seconds=event_s_ago),
                         NOW, GRACE_S, slot_waits=list(marks))


def test_a_predecessor_deferred_for_a_slot_holds_the_next_message_while_it_comes_back():
    """"received" has waited a minute for a webhook slot, put off again 0.5 s ago:
    "dispatched" must not overtake it once its own grace is over."""
    assert wait(marks=[mark("received", 0.5)]) == \
        "received is not sent yet: a message before it waits for a free slot"
    assert wait(kind="dispatched", marks=[mark("received", 0.5)]) == \
        "dispatched is not sent yet: a message before it waits for a free slot"


def test_a_deferred_predecessor_that_stopped_coming_back_holds_it_only_for_the_grace():
    assert wait(marks=[mark("received", GRACE_S + 0.1)]) is None


def test_a_deferral_mark_of_a_message_sent_since_holds_nothing():
    sent = {"notification_id": "r", "kind": "received", "status": SENT, "attempts": 1,
            "audience": "resident", "last_attempt_at": utc_moment(NOW)}
    assert wait(records=[sent], marks=[mark("received", 0.1)]) is None


def test_a_deferred_message_later_in_the_chain_holds_nothing_before_it():
    assert wait(kind="received", marks=[mark("resolved", 0.1)]) is None

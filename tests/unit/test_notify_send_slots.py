"""notify's cap on direct sends (``delivery.plan_send``, ``SendSlots``): a slow gateway
may hold only so many workers; a message past the cap is deferred, never dropped, and
the one behind it for the same resident keeps waiting its turn. Pure: no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notify.channels import DESK, EMAIL, WEBHOOK
from services.notify.delivery import (
    SENT,
    SLOT_MARK_WRITTEN_S,
    SLOT_RECHECK_S,
    SendSlots,
    ordering_wait,
    plan_send,
    retry_wait,
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


# ------------------------------------------- the line of messages put off for a slot


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_freed_slot_goes_to_the_message_put_off_not_to_one_arriving_afresh():
    """Starvation, before: a message put off came back every SLOT_RECHECK_S, while new
    messages for other residents asked all the time; whoever asked first when a send
    ended took the slot, so on a channel that stayed busy the one put off could lose
    every time."""
    clock = Clock()
    slots = SendSlots(1, clock=clock)
    assert slots.take(WEBHOOK, "another resident's").now
    assert not slots.take(WEBHOOK, "put off").now
    slots.give_back(WEBHOOK)

    newcomer = slots.take(WEBHOOK, "arriving afresh")
    assert not newcomer.now
    assert newcomer.reason == "webhook: the free slots are kept for 1 messages put off before it"
    assert newcomer.kept_for == ()  # it took its place this instant: its mark may be unwritten
    clock.now += SLOT_MARK_WRITTEN_S + 0.01
    assert slots.take(WEBHOOK, "arriving afresh").kept_for == ("put off",)
    assert slots.take(WEBHOOK, "put off").now
    assert slots.waiting(WEBHOOK) == ["arriving afresh"]


def test_messages_put_off_get_slots_in_the_order_they_were_first_put_off():
    clock = Clock()
    slots = SendSlots(2, clock=clock)
    assert slots.take(WEBHOOK, "a").now and slots.take(WEBHOOK, "b").now
    for waiter in ("first", "second", "third", "second", "first"):  # coming back, in turn
        assert not slots.take(WEBHOOK, waiter).now
    assert slots.waiting(WEBHOOK) == ["first", "second", "third"]
    assert slots.take(WEBHOOK, "first").kept_for == ()  # no free slot to keep
    slots.give_back(WEBHOOK)
    clock.now += 1.0
    assert slots.take(WEBHOOK, "third").kept_for == ("first",)
    assert not slots.take(WEBHOOK, "second").now
    assert slots.take(WEBHOOK, "first").now
    slots.give_back(WEBHOOK)
    slots.give_back(WEBHOOK)
    assert slots.take(WEBHOOK, "third").now and slots.take(WEBHOOK, "second").now  # both free


def test_the_wait_of_a_message_put_off_is_bounded_however_many_keep_arriving():
    """A channel that stays saturated: each round, one send ends and three new messages
    ask before the one put off comes back. It is sent at its first return."""
    slots = SendSlots(2, clock=Clock())
    assert slots.take(WEBHOOK, "x").now
    assert slots.take(WEBHOOK, "y").now
    assert not slots.take(WEBHOOK, "put off").now
    for round_ in range(20):
        slots.give_back(WEBHOOK)
        arrivals = [slots.take(WEBHOOK, f"new {round_}.{n}").now for n in range(3)]
        if slots.take(WEBHOOK, "put off").now:
            break
        assert not any(arrivals)
    assert round_ == 0 and not any(arrivals)


def test_a_place_not_claimed_within_its_time_is_given_up_to_the_next():
    """Its event came back to another notify process (or waits out a retry): the slot it
    kept must not stay empty for long."""
    clock = Clock()
    slots = SendSlots(1, place_kept_s=2.0, clock=clock)
    assert slots.take(WEBHOOK, "busy").now
    assert not slots.take(WEBHOOK, "gone elsewhere").now
    clock.now += 1.0
    assert not slots.take(WEBHOOK, "next").now
    slots.give_back(WEBHOOK)
    clock.now += 1.5  # "gone elsewhere" last came back 2.5 s ago; "next" 1.5 s ago
    assert slots.take(WEBHOOK, "next").now
    assert slots.waiting(WEBHOOK) == []


def test_a_message_that_leaves_the_line_keeps_no_slot():
    slots = SendSlots(1, clock=Clock())
    assert slots.take(WEBHOOK, "busy").now
    assert not slots.take(WEBHOOK, "sent by another process").now
    slots.leave(WEBHOOK, "sent by another process")
    slots.give_back(WEBHOOK)
    assert slots.take(WEBHOOK, "arriving afresh").now


def test_a_resend_keeps_no_place_but_waits_behind_the_line():
    """A rating link resent by the desk is refused when put off (the desk asks again):
    it takes no place in the line, and does not jump it either."""
    slots = SendSlots(1, clock=Clock())
    assert slots.take(WEBHOOK, "busy").now
    assert not slots.take(WEBHOOK).now
    assert slots.waiting(WEBHOOK) == []
    assert not slots.take(WEBHOOK, "put off").now
    slots.give_back(WEBHOOK)
    assert not slots.take(WEBHOOK).now


def test_free_slots_kept_for_those_put_off_are_counted_by_the_pure_plan():
    assert plan_send(WEBHOOK, 1, 3, waiting_ahead=1).now
    assert not plan_send(WEBHOOK, 1, 3, waiting_ahead=2).now
    assert plan_send(DESK, 5, 1, waiting_ahead=5).now


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


# ------------------------------------------------- a refusal's backoff, for every copy


def refused(attempts: int, seconds_ago: float, status: str = "queued") -> dict:
    return {"status": status, "attempts": attempts,
            "last_attempt_at": utc_moment(NOW - timedelta(seconds=seconds_ago))}


@pytest.mark.parametrize(("record", "wait_s"), [
    (refused(1, 0.0), 0.5),     # just refused: the event's first backoff, 0.5 s
    (refused(1, 0.2), 0.3),
    (refused(3, 1.0), 1.0),     # the third refusal: 0.5 s doubled twice
    (refused(1, 0.5), 0.0),     # the backoff is over
    (refused(9, 0.0), 60.0),    # capped, as the event's is
    (refused(1, 0.0, SENT), 0.0),
    (refused(4, 0.0, "failed"), 0.0),
    ({"status": "queued", "attempts": 0, "last_attempt_at": None}, 0.0),  # never tried
])
def test_a_refused_message_waits_out_the_events_backoff_from_its_last_refusal(record, wait_s):
    assert retry_wait(record, NOW, 0.5) == pytest.approx(wait_s)

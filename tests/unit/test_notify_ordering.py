"""notify's ordering decision (``delivery.ordering_wait``): when a message to a resident
waits for the ones before it in the chain, and when it stops waiting. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.notify.delivery import FAILED, QUEUED, SENT, maybe_in_flight, ordering_wait
from shared.jsoncodec import utc_moment

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
GRACE_S = 3.0


def record(nid: str, kind: str, status: str = QUEUED, attempts: int = 0,
           attempted_s_ago: float | None = None, audience: str = "resident") -> dict:
    at = None if attempted_s_ago is None else utc_moment(NOW - timedelta(seconds=attempted_s_ago))
    return {"notification_id": nid, "kind": kind, "status": status, "attempts": attempts,
            "audience": audience, "last_attempt_at": at}


def wait(records, kind="received", count=1, live=(), event_s_ago=60.0):
    return ordering_wait(records, kind, count, set(live), NOW - timedelta(seconds=event_s_ago),
                         NOW, GRACE_S)


def test_a_settled_predecessor_lets_the_message_go():
    assert wait([record("r", "received", SENT, 1, 0.1)]) is None
    assert wait([record("r", "received", FAILED, 4, 0.1)]) is None  # handed to the desk
    # Failing (queued after a refusal): its retry comes with backoff; the news goes now.
    assert wait([record("r", "received", QUEUED, 1, 0.1)], live={"r"}) is None


def test_a_predecessor_being_sent_by_a_live_worker_is_waited_for_however_long_it_takes():
    slow = [record("r", "received")]  # no attempt finished: the channel is still at it
    assert wait(slow, live={"r"}, event_s_ago=3600.0) == "received is being sent"


def test_a_predecessor_whose_lease_lapsed_no_longer_holds_the_message():
    dead = [record("r", "received")]  # its worker died: nobody renews the lease
    assert wait(dead, live=set()) is None


def test_a_predecessor_not_begun_is_waited_for_only_within_the_grace():
    assert wait([], event_s_ago=1.0) == "received is not sent yet"
    assert wait([], event_s_ago=GRACE_S + 0.1) is None


def test_the_grace_counts_from_the_chains_last_attempt_when_that_is_later():
    """"acknowledged" waits for "dispatched", whose event waited for a slow "received":
    "dispatched" is not begun the moment "received" is sent, but it is coming."""
    just_sent = [record("r", "received", SENT, 1, attempted_s_ago=0.5)]
    assert wait(just_sent, kind="dispatched", event_s_ago=30.0) == "dispatched is not sent yet"
    long_ago = [record("r", "received", SENT, 1, attempted_s_ago=GRACE_S + 1)]
    assert wait(long_ago, kind="dispatched", event_s_ago=30.0) is None


def test_an_earlier_message_in_flight_holds_a_later_one_whose_predecessor_is_not_begun():
    """"acknowledged" waits for "dispatched" (not begun: its event waits for
    "received"), while a slow "received" is still being sent."""
    flying = [record("r", "received")]
    assert wait(flying, kind="dispatched", live={"r"}, event_s_ago=30.0) == \
        "received is being sent"


def test_messages_after_it_in_the_chain_or_to_others_do_not_hold_it():
    later = [record("c", "closed")]
    assert wait(later, kind="received", live={"c"}) is None
    supervisor = [record("s", "received", audience="supervisor")]
    assert wait(supervisor, live={"s"}) is None


def test_all_of_the_count_must_settle():
    one_of_two = [record("a", "acknowledged", SENT, 1, 60), record("b", "acknowledged")]
    assert wait(one_of_two, kind="acknowledged", count=2, live={"b"}) == \
        "acknowledged is being sent"
    assert wait(one_of_two, kind="acknowledged", count=2) is None  # b's lease lapsed


def test_only_messages_no_attempt_has_finished_may_be_in_flight():
    records = [record("r", "received"), record("d", "dispatched", SENT, 1, 1),
               record("q", "dispatched", QUEUED, 2, 1), record("c", "closed")]
    assert maybe_in_flight(records, "dispatched") == ["r"]

"""Batched acks (shared.messaging.plan_acks): fewest frames, never ahead of unfinished work."""

from hypothesis import given
from hypothesis import strategies as st

from shared.messaging import plan_acks


def test_everything_finished_goes_in_one_multiple_ack():
    assert plan_acks({3, 1, 2}, set()) == (3, [])


def test_a_slow_message_does_not_hold_back_the_acks_after_it():
    # 2 is still being handled: 1 by "multiple", 3 and 5 one by one, 2 not at all.
    assert plan_acks({1, 3, 5}, {2, 4}) == (1, [3, 5])


def test_nothing_below_the_oldest_in_flight_means_no_multiple_ack():
    assert plan_acks({7, 8}, {6}) == (None, [7, 8])


def test_nothing_finished_nothing_to_send():
    assert plan_acks(set(), {1, 2}) == (None, [])


@given(st.sets(st.integers(1, 200)), st.sets(st.integers(1, 200)))
def test_every_finished_tag_is_acked_once_and_no_unfinished_one_ever(finished, in_flight):
    in_flight -= finished  # a tag is finished or in flight, never both
    upto, singles = plan_acks(finished, in_flight)
    covered = {t for t in finished if upto is not None and t <= upto}
    assert covered | set(singles) == finished and not covered & set(singles)
    assert upto is None or all(t > upto for t in in_flight)  # "multiple" spares them

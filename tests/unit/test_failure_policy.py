"""What becomes of a failed event (shared.messaging.plan_failure): defer, wait out an
outage of the store, retry, or dead-letter."""

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from services.notify.delivery import DeliveryFailed
from shared.errors import InvalidPayload, NotFound, Unavailable
from shared.messaging import (
    DEAD_LETTER,
    DEFER,
    MAX_RETRY_DELAY_S,
    RETRY,
    WAIT,
    Deferred,
    FailurePlan,
    backoff,
    plan_failure,
)

MAX_ATTEMPTS, DELAY_S = 5, 1.0
OUTAGES = [Unavailable("issue store unavailable: ConnectionError"),
           redis.ConnectionError("Connection refused"), redis.TimeoutError("Timeout reading"),
           redis.exceptions.BusyLoadingError("loading the dataset in memory"),
           redis.exceptions.ReadOnlyError("You can't write against a read only replica.")]


def plan(exc, attempts=0, waits=0):
    return plan_failure(exc, attempts, waits, MAX_ATTEMPTS, DELAY_S)


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda exc: type(exc).__name__)
def test_a_store_outage_waits_without_spending_an_attempt(exc):
    assert plan(exc, attempts=2, waits=0) == FailurePlan(WAIT, 1.0, attempts=2, waits=1)
    assert plan(exc, attempts=2, waits=3) == FailurePlan(WAIT, 8.0, attempts=2, waits=4)


def test_a_subclass_of_unavailable_is_an_outage_too():
    class StoreDown(Unavailable):
        pass

    assert plan(StoreDown("down")).action == WAIT


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda exc: type(exc).__name__)
def test_an_outage_is_never_dead_lettered_however_long_it_lasts(exc):
    attempts, waits, waited_s = MAX_ATTEMPTS - 1, 0, 0.0
    for _ in range(1000):
        result = plan(exc, attempts, waits)
        assert result.action == WAIT and result.attempts == attempts
        waits, waited_s = result.waits, waited_s + result.delay_s
    assert waits == 1000 and waited_s > 15 * 3600  # capped backoff, not a hot loop
    assert result.delay_s == MAX_RETRY_DELAY_S


@pytest.mark.parametrize("exc", [NotFound("no issue WH-20261121-0001"),
                                 DeliveryFailed("webhook: HTTP 502"), RuntimeError("bug"),
                                 redis.ResponseError("WRONGTYPE")],
                         ids=lambda exc: type(exc).__name__)
def test_other_failures_spend_attempts_then_dead_letter(exc):
    assert plan(exc, attempts=0) == FailurePlan(RETRY, 1.0, attempts=1)
    assert plan(exc, attempts=3, waits=7) == FailurePlan(RETRY, 8.0, attempts=4, waits=7)
    assert plan(exc, attempts=MAX_ATTEMPTS - 1) == FailurePlan(DEAD_LETTER, 0.0, MAX_ATTEMPTS)


def test_waits_do_not_bring_the_dead_letter_closer():
    failure = RuntimeError("bug")
    assert plan(failure, attempts=1, waits=500).action == RETRY


def test_invalid_payload_is_dead_lettered_at_once():
    assert plan(InvalidPayload("invalid IssueReceived: issue_id")) == \
        FailurePlan(DEAD_LETTER, 0.0, attempts=1)


def test_deferred_keeps_its_own_delay_and_counts_nothing():
    assert plan(Deferred(0.1, "waits for received"), attempts=2, waits=3) == \
        FailurePlan(DEFER, 0.1, attempts=2, waits=3)


@given(st.floats(0.001, 10.0), st.integers(1, 200))
def test_backoff_doubles_and_is_capped(base_s, n):
    delay = backoff(base_s, n)
    assert delay == min(base_s * 2 ** (n - 1), MAX_RETRY_DELAY_S) <= MAX_RETRY_DELAY_S
    assert backoff(base_s, n + 1) >= delay

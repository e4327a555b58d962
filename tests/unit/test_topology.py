"""The topology is the contract between publishers and consumers: check it is whole."""

import pytest

from services.notify.service import ANNOUNCED
from shared.contracts import EVENT_TYPES
from shared.messaging import is_mandatory
from shared.topology import (
    CONSUMED_EVENT_TYPES,
    RETIRED_QUEUES,
    SERVICES,
    SUBSCRIPTIONS,
    Subscription,
    declarations,
    subscription_for,
)

JOURNAL_ONLY = {"table.checked_in", "table.task_done", "issue.rated"}


def test_every_event_type_but_the_journal_only_ones_has_a_consumer_queue():
    # The specific consumers are listed here on purpose: a new event type must be placed.
    assert set(EVENT_TYPES) - JOURNAL_ONLY == CONSUMED_EVENT_TYPES


def test_consumed_events_are_published_mandatory_and_journal_only_ones_are_not():
    # Mandatory: an event a service needs and no queue took is refused, and stays in
    # the outbox. A journal-only event with nobody tailing would be refused forever.
    assert all(is_mandatory(t) for t in CONSUMED_EVENT_TYPES)
    assert not any(is_mandatory(t) for t in JOURNAL_ONLY)


def test_notify_reads_everything_a_resident_hears_from_one_ordered_queue():
    notify = [sub for sub in SUBSCRIPTIONS if sub.service == "notify"]
    assert [sub.method for sub in notify] == ["on_event"]
    assert set(notify[0].events) == set(ANNOUNCED)
    bound = {b.routing_key for b in notify[0].queue.bindings}
    assert bound == {cls.event_type for cls in ANNOUNCED}


def test_retired_queues_are_not_current_ones_and_every_service_is_listed():
    current = {name for sub in SUBSCRIPTIONS
               for name in (sub.queue_name, sub.retry_queue.name)}
    assert not current & set(RETIRED_QUEUES)
    assert "whistle.intake.record_event" in RETIRED_QUEUES
    assert set(SERVICES) == {"intake", "routing", "agency", "notify"}


def test_a_subscription_needs_an_event_type():
    with pytest.raises(ValueError, match="no event type"):
        Subscription("notify", "on_nothing", ())


def test_queue_names_are_unique_and_derived_from_service_and_method():
    names = [sub.queue_name for sub in SUBSCRIPTIONS]
    assert len(names) == len(set(names))
    assert subscription_for("routing", "route_issue").queue_name == "whistle.routing.route_issue"


def test_retry_queue_dead_letters_back_to_its_main_queue():
    sub = subscription_for("notify", "on_event")
    args = sub.retry_queue.queue_arguments
    assert args == {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": sub.queue_name}


def test_declarations_cover_every_queue_and_the_dead_letter_queue():
    names = {getattr(entity, "name", None) for entity in declarations()}
    for sub in SUBSCRIPTIONS:
        assert {sub.queue_name, f"{sub.queue_name}.retry"} <= names
    assert "whistle.dead-letter" in names

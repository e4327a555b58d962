"""The topology is the contract between publishers and consumers: check it is whole."""

from shared.contracts import EVENT_TYPES
from shared.topology import SUBSCRIPTIONS, declarations, subscription_for


def test_every_event_type_has_a_consumer_queue():
    # Events are published mandatory: one nobody consumes would be refused by the broker.
    # The journal takes every type; the specific consumers are listed here on purpose.
    journal = [sub for sub in SUBSCRIPTIONS if sub.event is None]
    assert [(s.service, s.method, s.binding_key) for s in journal] == [
        ("intake", "record_event", "#")]
    consumed = {sub.event.event_type for sub in SUBSCRIPTIONS if sub.event}
    assert consumed == set(EVENT_TYPES) - {"table.checked_in", "table.task_done", "issue.rated"}


def test_queue_names_are_unique_and_derived_from_service_and_method():
    names = [sub.queue_name for sub in SUBSCRIPTIONS]
    assert len(names) == len(set(names))
    assert subscription_for("routing", "route_issue").queue_name == "whistle.routing.route_issue"


def test_retry_queue_dead_letters_back_to_its_main_queue():
    sub = subscription_for("notify", "on_issue_received")
    args = sub.retry_queue.queue_arguments
    assert args == {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": sub.queue_name}


def test_declarations_cover_every_queue_and_the_dead_letter_queue():
    names = {getattr(entity, "name", None) for entity in declarations()}
    for sub in SUBSCRIPTIONS:
        assert {sub.queue_name, f"{sub.queue_name}.retry"} <= names
    assert "whistle.dead-letter" in names

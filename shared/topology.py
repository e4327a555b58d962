"""The AMQP topology: one topic exchange, one durable queue per subscription.

Every service declares the *whole* topology when it starts, so an event
published before its consumer has ever run still lands in that consumer's
queue (nameko's own ``EventDispatcher`` drops it: ``mandatory=False`` and
queues declared only by consumers).

::

    publisher --(routing key = event type)--> whistle.events (topic)
        --> whistle.<service>.<method>           one queue per subscription
              | handler fails: republished with a delay to
              v
            whistle.<service>.<method>.retry     per-message TTL, dead-letters back
              | still failing after WHISTLE_MAX_ATTEMPTS, or unreadable:
              v
            whistle.dead-letter                  kept with its reason (x-whistle-error)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from logging import getLogger

from kombu import Exchange, Queue, binding

from shared.contracts import (
    AssignmentAcknowledged,
    AssignmentCreated,
    AssignmentResolved,
    Event,
    IssueClosed,
    IssueDispatched,
    IssueEscalated,
    IssueMerged,
    IssueReceived,
    IssueReopened,
    IssueResolved,
    TableConvened,
    TableTaskRecorded,
)

_log = getLogger(__name__)

EVENTS_EXCHANGE = Exchange("whistle.events", type="topic", durable=True)
DEAD_LETTER_QUEUE_NAME = "whistle.dead-letter"
DEAD_LETTER_QUEUE = Queue(DEAD_LETTER_QUEUE_NAME, exchange=Exchange(""), routing_key=DEAD_LETTER_QUEUE_NAME,
                          durable=True)


@dataclass(frozen=True)
class Subscription:
    """``service.method`` consumes the events of ``events``, from one queue.

    A queue keeps the order in which its events were published, so events that
    must be handled in order (everything a resident is told) share one queue.
    """

    service: str
    method: str
    events: tuple[type[Event], ...]

    def __post_init__(self):
        if not self.events:
            raise ValueError(f"{self.queue_name} subscribes to no event type")

    @property
    def binding_keys(self) -> tuple[str, ...]:
        return tuple(event.event_type for event in self.events)

    @property
    def queue_name(self) -> str:
        return f"whistle.{self.service}.{self.method}"

    @property
    def queue(self) -> Queue:
        return Queue(self.queue_name, durable=True,
                     bindings=[binding(EVENTS_EXCHANGE, routing_key=key)
                               for key in self.binding_keys])

    @property
    def retry_queue(self) -> Queue:
        # Messages wait here for their per-message expiration, then RabbitMQ
        # dead-letters them through the default exchange back to the main queue.
        return Queue(f"{self.queue_name}.retry", exchange=Exchange(""),
                     routing_key=f"{self.queue_name}.retry", durable=True,
                     queue_arguments={"x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": self.queue_name})


SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription("routing", "route_issue", (IssueReceived,)),
    Subscription("routing", "await_rating", (IssueResolved,)),
    # A dispatch's assignments all come in its issue.dispatched (one delivery, not one
    # per agency); assignment.created announces one added later (a table invitation).
    Subscription("agency", "record_assignment", (IssueDispatched, AssignmentCreated)),
    # Everything a resident hears about, in one queue: "received" is queued before
    # "dispatched" (routing only publishes that after reading "received"), so the
    # messages go out in the order the events happened without waiting on each other.
    Subscription("notify", "on_event", (
        IssueReceived, IssueMerged, IssueDispatched, AssignmentAcknowledged,
        AssignmentResolved, IssueEscalated, TableConvened, TableTaskRecorded,
        IssueResolved, IssueReopened, IssueClosed)),
)

SERVICES: tuple[str, ...] = ("intake", "routing", "agency", "notify")

# Event types some service consumes. They are published ``mandatory``: if no queue
# took one, the broker refuses it and the publisher keeps it in its outbox. The
# others (``table.checked_in``, ``table.task_done``, ``issue.rated``) are in the
# journal (written with the state change) and visible to ``whistle tail``; the
# broker may drop them when nobody tails.
CONSUMED_EVENT_TYPES: frozenset[str] = frozenset(
    key for sub in SUBSCRIPTIONS for key in sub.binding_keys)

# Queues earlier releases declared and this one no longer consumes. Every service
# deletes them at start-up, or they would collect a copy of every event forever.
RETIRED_QUEUES: tuple[str, ...] = (
    # The journal is now written with each state change (shared.store), not by a consumer.
    "whistle.intake.record_event",
    # notify reads one ordered queue (on_event) instead of one queue per event type.
    *(f"whistle.notify.{method}" for method in (
        "on_issue_received", "on_issue_merged", "on_issue_dispatched",
        "on_assignment_acknowledged", "on_assignment_resolved", "on_issue_escalated",
        "on_table_convened", "on_table_task_recorded", "on_issue_resolved",
        "on_issue_reopened", "on_issue_closed")),
)
"""Each with its ``.retry`` queue, which is retired with it."""


def subscription_for(service: str, method: str) -> Subscription:
    for sub in SUBSCRIPTIONS:
        if (sub.service, sub.method) == (service, method):
            return sub
    raise LookupError(f"{service}.{method} is not in shared.topology.SUBSCRIPTIONS")


def declarations() -> list:
    """Everything to declare, in dependency order: exchanges before queues."""
    entities: list = [EVENTS_EXCHANGE, DEAD_LETTER_QUEUE]
    for sub in SUBSCRIPTIONS:
        entities += [sub.queue, sub.retry_queue]
    return entities


def declare_topology(connection) -> None:
    """Declare the exchange, every subscription queue and the dead-letter queue, and
    delete the retired queues that are empty."""
    channel = connection.channel()
    try:
        for entity in declarations():
            # bind() returns a bound copy; maybe_bind() would bind the shared
            # module-level entity to this channel for every other thread too.
            entity.bind(channel).declare()
    finally:
        channel.close()
    for name in retire_queues(connection):
        _log.warning("retired queue %s still holds messages from an earlier release and "
                     "was kept: see README, Upgrading", name)


def retire_queues(connection) -> list[str]:
    """Delete the retired queues and their retry queues; the names of those kept.

    Unbound first, so no new copies arrive. A queue is deleted only when it and its
    ``.retry`` queue are both empty: messages waiting in a ``.retry`` queue go back
    to its main queue when their delay ends, and would be dropped if it were gone.
    Kept queues hold events from before the upgrade, for an operator to deal with
    (README, "Upgrading"); nothing is deleted unseen.
    """
    kept = []
    for name in RETIRED_QUEUES:
        depths = {queue: _depth(connection, queue) for queue in (name, f"{name}.retry")}
        if depths[name] is not None:
            _unbind_events(connection, name)
        if any(depths.values()):  # a queue holding messages (None: no such queue)
            kept += [queue for queue, depth in depths.items() if depth is not None]
            continue
        for queue, depth in depths.items():
            if depth is not None:
                _delete_if_empty(connection, queue)
    return kept


def _depth(connection, name: str) -> int | None:
    """Messages ready in the queue, or None if there is no such queue."""
    channel = connection.channel()
    try:
        return channel.queue_declare(name, passive=True).message_count
    except Exception:  # noqa: BLE001 - NOT_FOUND closes the channel
        return None
    finally:
        with contextlib.suppress(Exception):  # already closed by the broker's error
            channel.close()


def _unbind_events(connection, name: str) -> None:
    channel = connection.channel()
    try:
        for key in ("#", *CONSUMED_EVENT_TYPES):
            channel.queue_unbind(name, EVENTS_EXCHANGE.name, key)
    finally:
        channel.close()


def _delete_if_empty(connection, name: str) -> None:
    channel = connection.channel()
    try:
        channel.queue_delete(name, if_empty=True)
    except Exception:  # noqa: BLE001 - a message arrived meanwhile: kept until next start
        _log.warning("retired queue %s received a message while being retired; kept", name)
    finally:
        with contextlib.suppress(Exception):
            channel.close()

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

from dataclasses import dataclass

from kombu import Exchange, Queue

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

EVENTS_EXCHANGE = Exchange("whistle.events", type="topic", durable=True)
DEAD_LETTER_QUEUE_NAME = "whistle.dead-letter"
DEAD_LETTER_QUEUE = Queue(DEAD_LETTER_QUEUE_NAME, exchange=Exchange(""), routing_key=DEAD_LETTER_QUEUE_NAME,
                          durable=True)


@dataclass(frozen=True)
class Subscription:
    """``service.method`` consumes events of ``event`` (``None``: every event type)."""

    service: str
    method: str
    event: type[Event] | None

    @property
    def binding_key(self) -> str:
        return self.event.event_type if self.event else "#"

    @property
    def queue_name(self) -> str:
        return f"whistle.{self.service}.{self.method}"

    @property
    def queue(self) -> Queue:
        return Queue(self.queue_name, exchange=EVENTS_EXCHANGE,
                     routing_key=self.binding_key, durable=True)

    @property
    def retry_queue(self) -> Queue:
        # Messages wait here for their per-message expiration, then RabbitMQ
        # dead-letters them through the default exchange back to the main queue.
        return Queue(f"{self.queue_name}.retry", exchange=Exchange(""),
                     routing_key=f"{self.queue_name}.retry", durable=True,
                     queue_arguments={"x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": self.queue_name})


SUBSCRIPTIONS: tuple[Subscription, ...] = (
    # intake keeps the journal: every event, per issue (the trace and the rates read it).
    Subscription("intake", "record_event", None),
    Subscription("routing", "route_issue", IssueReceived),
    Subscription("routing", "await_rating", IssueResolved),
    Subscription("agency", "record_assignment", AssignmentCreated),
    Subscription("notify", "on_issue_received", IssueReceived),
    Subscription("notify", "on_issue_dispatched", IssueDispatched),
    Subscription("notify", "on_assignment_acknowledged", AssignmentAcknowledged),
    Subscription("notify", "on_assignment_resolved", AssignmentResolved),
    Subscription("notify", "on_issue_resolved", IssueResolved),
    Subscription("notify", "on_issue_merged", IssueMerged),
    Subscription("notify", "on_issue_escalated", IssueEscalated),
    Subscription("notify", "on_table_convened", TableConvened),
    Subscription("notify", "on_table_task_recorded", TableTaskRecorded),
    Subscription("notify", "on_issue_reopened", IssueReopened),
    Subscription("notify", "on_issue_closed", IssueClosed),
)


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
    """Declare the exchange, every subscription queue and the dead-letter queue."""
    channel = connection.channel()
    try:
        for entity in declarations():
            # bind() returns a bound copy; maybe_bind() would bind the shared
            # module-level entity to this channel for every other thread too.
            entity.bind(channel).declare()
    finally:
        channel.close()

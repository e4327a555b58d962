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

Every queue here is of one type, ``WHISTLE_QUEUE_TYPE`` (:data:`CLASSIC` by default, or
:data:`QUORUM`: replicated over a RabbitMQ cluster's nodes). A queue's type cannot
change once it exists, so a deployment moves from one to the other with
``whistle queues migrate`` (``whistle.migrate``); a service started with the other type
refuses to start, saying so (:class:`QueueTypeMismatch`). How quorum queues' own
redelivery limit and dead-lettering fit Whistle's retries: :func:`type_arguments` and
docs/cluster.md.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from logging import getLogger

from amqp.exceptions import PreconditionFailed
from kombu import Exchange, Queue, binding

from shared.contracts import (
    AssignmentAcknowledged,
    AssignmentCreated,
    AssignmentResolved,
    AssignmentWithdrawn,
    Event,
    IssueClosed,
    IssueDispatched,
    IssueEscalated,
    IssueMerged,
    IssueReceived,
    IssueReopened,
    IssueRerouted,
    IssueResolved,
    RouteCorrected,
    TableConvened,
    TableTaskRecorded,
)

_log = getLogger(__name__)

EVENTS_EXCHANGE = Exchange("whistle.events", type="topic", durable=True)
DEAD_LETTER_QUEUE_NAME = "whistle.dead-letter"

CLASSIC, QUORUM = "classic", "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)
# How many times a quorum queue hands a message out without getting it settled (its
# consumer's process or connection died holding it) before it dead-letters it. Whistle
# never sends a failed message back this way: a handler that raises has its message
# acked and republished to the delay queue, which counts WHISTLE_MAX_ATTEMPTS in a
# header. So this limit counts only deliveries that took their consumer down with them
# (a poison message), or that a failover cut off: generous, as RabbitMQ 4's default.
QUORUM_DELIVERY_LIMIT = 20

# Where a new quorum queue's leader goes: "balanced" puts it on the node leading the
# fewest (RabbitMQ 3.10+). The default, "client-local", puts every leader on the node the
# declaring service happens to be connected to, the first one AMQP_URI lists, so one node
# did all the queues' work and its death moved every leader at once. It only decides
# where a queue starts; RabbitMQ compares it when a queue is declared again, so it is
# part of what a quorum queue of this release is (docs/cluster.md, "Where queue leaders
# live").
#
# What a message that leaves a quorum queue by dead-lettering is, and how: to the
# dead-letter queue through the default exchange, "at-least-once" (kept in the source
# queue until the target confirmed it; RabbitMQ 3.10+, which needs overflow
# reject-publish), instead of RabbitMQ's default at-most-once.
_QUORUM = {"x-queue-type": QUORUM, "x-queue-leader-locator": "balanced"}
_SAFE_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def check_queue_type(queue_type: str) -> str:
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"WHISTLE_QUEUE_TYPE must be {' or '.join(QUEUE_TYPES)}, "
                         f"not {queue_type!r}")
    return queue_type


def type_arguments(queue_type: str, role: str, target: str | None = None) -> dict:
    """The queue arguments a queue of ``role`` gets for ``queue_type``. Pure.

    ``role`` is ``"subscription"`` (consumed by a service), ``"retry"`` (a delay
    queue, dead-lettering to ``target`` on expiry), ``"dead-letter"`` (the last
    stop) or ``"rpc"`` (nameko's RPC queue). Classic queues keep the arguments
    earlier releases declared, so an existing deployment sees no change.

    Quorum:
    - a subscription queue dead-letters a message after ``QUORUM_DELIVERY_LIMIT``
      unsettled deliveries to ``whistle.dead-letter`` (where ``whistle dlq`` shows
      and replays it), never dropping it;
    - a retry queue dead-letters back to its main queue at-least-once, so a message
      whose delay ended during a failover is not lost on the way;
    - the dead-letter queue has no delivery limit: ``whistle dlq list`` looks at
      dead letters by taking them and putting them back, which counts a delivery;
    - an RPC queue has no delivery limit either: a request nobody could answer is
      the caller's to time out, as with classic queues.
    """
    check_queue_type(queue_type)
    retry = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target} \
        if role == "retry" else {}
    if queue_type == CLASSIC:
        return retry
    if role == "subscription":
        return {**_QUORUM, "x-delivery-limit": QUORUM_DELIVERY_LIMIT,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": DEAD_LETTER_QUEUE_NAME, **_SAFE_DEAD_LETTERING}
    if role == "retry":
        return {**_QUORUM, **retry, **_SAFE_DEAD_LETTERING}
    if role in ("dead-letter", "rpc"):
        return dict(_QUORUM)
    raise ValueError(f"no such queue role: {role!r}")


def dead_letter_queue(queue_type: str = CLASSIC) -> Queue:
    return Queue(DEAD_LETTER_QUEUE_NAME, exchange=Exchange(""),
                 routing_key=DEAD_LETTER_QUEUE_NAME, durable=True,
                 queue_arguments=type_arguments(queue_type, "dead-letter") or None)


DEAD_LETTER_QUEUE = dead_letter_queue()
"""For passive declares and gets, which do not depend on the queue's type."""


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
    def retry_queue_name(self) -> str:
        return f"{self.queue_name}.retry"

    @property
    def queue(self) -> Queue:
        return self.queue_of(CLASSIC)

    @property
    def retry_queue(self) -> Queue:
        return self.retry_queue_of(CLASSIC)

    def queue_of(self, queue_type: str) -> Queue:
        return Queue(self.queue_name, durable=True,
                     queue_arguments=type_arguments(queue_type, "subscription") or None,
                     bindings=[binding(EVENTS_EXCHANGE, routing_key=key)
                               for key in self.binding_keys])

    def retry_queue_of(self, queue_type: str) -> Queue:
        # Messages wait here for their per-message expiration, then RabbitMQ
        # dead-letters them through the default exchange back to the main queue.
        return Queue(self.retry_queue_name, exchange=Exchange(""),
                     routing_key=self.retry_queue_name, durable=True,
                     queue_arguments=type_arguments(queue_type, "retry", self.queue_name))


SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription("routing", "route_issue", (IssueReceived,)),
    Subscription("routing", "await_rating", (IssueResolved,)),
    # Every desk decision on a route, kept as a labelled example for retraining.
    Subscription("routing", "keep_correction", (RouteCorrected,)),
    # A dispatch's assignments all come in its issue.dispatched (one delivery, not one
    # per agency); assignment.created announces one added later (a table invitation).
    Subscription("agency", "record_assignment", (IssueDispatched, AssignmentCreated)),
    # A reroute took a part away: the agency notes it (its workspace drops the issue
    # with the same commit that withdrew it).
    Subscription("agency", "record_withdrawal", (AssignmentWithdrawn,)),
    # Everything a resident hears about, in one queue: "received" is queued before
    # "dispatched" (routing only publishes that after reading "received"), so the
    # messages go out in the order the events happened without waiting on each other.
    Subscription("notify", "on_event", (
        IssueReceived, IssueMerged, IssueDispatched, AssignmentAcknowledged,
        AssignmentResolved, IssueEscalated, TableConvened, TableTaskRecorded,
        IssueResolved, IssueReopened, IssueClosed, IssueRerouted)),
)

SERVICES: tuple[str, ...] = ("intake", "routing", "agency", "notify")
# The shape of a message's name: an event type (``issue.received``) or an RPC's
# ``service.method``; no digits, as none of Whistle's has any. What the operators' tools
# print of a message's envelope (``whistle tail``, ``whistle dlq``) must have it: a
# garbled or forged message can carry a resident's name and number there.
MESSAGE_NAME = re.compile(r"[a-z][a-z_]{0,39}(\.[a-z][a-z_]{0,39}){1,3}")
# The shape of the ids Whistle gives an event and a trace (``shared.contracts.new_id``: a
# UUID's 32 lowercase hex digits). The operators' tools show an id only when it has it: a
# run of digits in its place (a phone number) or a name is someone else's, not an id.
WHISTLE_ID = re.compile(r"[0-9a-f]{32}")

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


def declarations(queue_type: str = CLASSIC) -> list:
    """Everything to declare, in dependency order: exchanges before queues."""
    entities: list = [EVENTS_EXCHANGE, dead_letter_queue(queue_type)]
    for sub in SUBSCRIPTIONS:
        entities += [sub.queue_of(queue_type), sub.retry_queue_of(queue_type)]
    return entities


class QueueTypeMismatch(RuntimeError):
    """A queue exists with another type (or other arguments) than this release declares."""


def declare_topology(connection, queue_type: str = CLASSIC) -> None:
    """Declare the exchange, every subscription queue and the dead-letter queue, and
    delete the retired queues that are empty."""
    for entity in declarations(queue_type):
        # A channel per declaration: a refused one (PRECONDITION_FAILED) closes it.
        channel = connection.channel()
        try:
            # bind() returns a bound copy; maybe_bind() would bind the shared
            # module-level entity to this channel for every other thread too.
            entity.bind(channel).declare()
        except PreconditionFailed as exc:
            raise QueueTypeMismatch(
                f"queue {entity.name} exists with other arguments than a {queue_type} "
                f"queue of this release ({exc.reply_text}): if it is of the other type, "
                f"run `whistle queues migrate --to {queue_type}` (docs/cluster.md), or set "
                "WHISTLE_QUEUE_TYPE to the type the deployment has") from None
        finally:
            with contextlib.suppress(Exception):  # already closed by the broker's refusal
                channel.close()
    for name in retire_queues(connection):
        _log.warning("retired queue %s still holds messages from an earlier release and "
                     "was kept: see docs/operations.md, Upgrading", name)


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

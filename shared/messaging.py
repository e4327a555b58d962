"""Reliable events: an outbox-backed publisher and a consumer that never drops.

Why not nameko's ``EventDispatcher`` / ``@event_handler`` (see README "Delivery"):

- a dispatch sent before the consumer's queue exists is silently dropped;
- a handler that raises has its message acked and dropped, or with
  ``requeue_on_error`` redelivered at once, forever (a hot loop);
- an undecodable body is logged (personal data included) and dropped;
- a state change written to Redis and its event published separately diverge
  when the process dies in between.

Here instead:

- :class:`EventBus` publishes persistent messages with publisher confirms and
  ``mandatory=True`` to ``whistle.events``; every service declares the whole
  topology at start-up. Events are first written to a per-service outbox hash
  in Redis *in the same atomic write as the state change* (see ``shared.store``), then
  published in batches by a background thread, one wait for the confirms per
  batch (``shared.publishing``), and removed; a relay thread republishes anything
  left behind by a crash or a broker outage. Delivery is therefore at-least-once, and every
  consumer is idempotent by ``event_id``.
- :class:`EventSubscriber` (``@subscribe(EventModel)``) validates each body into
  its pydantic model, acks only after the worker returns, and on failure
  republishes the message to a delay queue (bounded exponential backoff), then
  to ``whistle.dead-letter`` with the reason once ``WHISTLE_MAX_ATTEMPTS`` is
  reached. Invalid or undecodable messages go straight to the dead-letter queue.
  An outage of our own store (Redis) is not the event's fault: the event waits
  through the delay queue, with backoff, for as long as the outage lasts, and is
  never dead-lettered for it (:func:`plan_failure`).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from logging import getLogger
from typing import Any

import eventlet
from kombu import Connection
from nameko.amqp.publish import Publisher
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import DependencyProvider
from nameko.messaging import Consumer
from pydantic import ValidationError

from shared import config as cfg
from shared.amqp_reads import read_ahead
from shared.consuming import FailoverQueueConsumer
from shared.contracts import Event
from shared.errors import InvalidPayload, Unavailable
from shared.jsoncodec import dumps, loads, read_message_body, use_for_kombu
from shared.privacy import scrub_text
from shared.publishing import BatchPublisher, PublishedEvent
from shared.store import REDIS_ERRORS, Keys, connect
from shared.topology import (
    CONSUMED_EVENT_TYPES,
    DEAD_LETTER_QUEUE_NAME,
    EVENTS_EXCHANGE,
    declare_topology,
    subscription_for,
)

_log = getLogger(__name__)

ATTEMPTS_HEADER = "x-whistle-attempts"
# How many times the event waited for an outage of the store; never dead-letters it.
WAITS_HEADER = "x-whistle-waits"
ERROR_HEADER = "x-whistle-error"
QUEUE_HEADER = "x-whistle-queue"
ROUTING_KEY_HEADER = "x-whistle-routing-key"
FAILED_AT_HEADER = "x-whistle-failed-at"
SOURCE_HEADER = "x-whistle-source"
# The routing key is lost when a message comes back from its retry queue; the
# type travels in a header too.
EVENT_TYPE_HEADER = "x-whistle-event-type"
MAX_RETRY_DELAY_S = 60.0
# Our own store being down: shared.store turns Redis errors into Unavailable, but
# some callers (notify's delivery records and desk outbox) let the raw ones through.
OUTAGE_ERRORS = (Unavailable, *REDIS_ERRORS)


class Deferred(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a handler that cannot act *yet* (e.g. a message waiting for the one
    before it). The event goes back through the delay queue after ``delay_s``
    without counting as a failed attempt, and the worker is free at once: waiting
    inside the worker would hold it while the message waited for might need it."""

    def __init__(self, delay_s: float, reason: str):
        super().__init__(reason)
        self.delay_s = delay_s


def invalid_reason(invalid: InvalidPayload) -> str:
    """A dead letter's reason for an event that failed validation: each field with what
    is wrong with it (never its value), so the operator reading ``whistle dlq`` knows
    why, not only where (``invalid IssueReceived: occurred_at (occurred_at must be …)``)."""
    why = "; ".join(f"{f['field']} {f['message']}" for f in invalid.errors)
    return f"{invalid.message} ({why})" if why else invalid.message


def make_publisher(amqp_uri: str) -> Publisher:
    """Persistent, confirmed, mandatory: an unroutable message is an error, not a drop."""
    return Publisher(amqp_uri, use_confirms=True, mandatory=True, delivery_mode=2,
                     serializer="json")


def is_mandatory(event_type: str) -> bool:
    """Whether the broker must route this event to a queue (see ``CONSUMED_EVENT_TYPES``)."""
    return event_type in CONSUMED_EVENT_TYPES


def envelope(event: Event, source: str, call_id_stack: list[str] | None = None) -> dict[str, Any]:
    """What the outbox holds for one event: enough to publish it from anywhere."""
    return _envelope(event, source, call_id_stack, event.model_dump(mode="json"))


def _envelope(event: Event, source: str, call_id_stack: list[str] | None,
              body: dict[str, Any]) -> dict[str, Any]:
    headers = {
        # "nameko."-prefixed headers become the consumer's context data, so the
        # trace follows the issue into every worker and on into its RPC calls.
        "nameko.trace_id": event.trace_id,
        "nameko.call_id_stack": list(call_id_stack or []),
        SOURCE_HEADER: source,
        EVENT_TYPE_HEADER: event.event_type,
    }
    return {
        "id": event.event_id,
        "routing_key": event.event_type,
        "body": body,
        "headers": headers,
        "staged_at": time.time(),
    }


class EventBus(DependencyProvider):
    """Stages events in the Redis outbox and publishes them in the background.

    A worker writes its events to the outbox with its state change, hands them to
    the bus and returns: it never waits for the broker. One publishing thread per
    container takes everything handed over so far, publishes it as one batch and
    waits once for the broker's confirms (``shared.publishing``), then removes the
    confirmed entries from the outbox in one round trip. Under load the batches
    grow by themselves, so the cost per event falls as the rate rises.

    Anything not confirmed stays in the outbox, and the relay thread publishes it
    once it is older than ``RELAY_GRACE_S``: after a broker outage, or a crash
    between the commit and the publish.

    Usage::

        class RoutingService:
            name = "routing"
            bus = EventBus()

            def route(self, event):
                applied = self.store.apply(issue_id, event.event_id,
                                           lambda r: (new, self.bus.stage(e1, e2)), self.name)
                self.bus.publish(applied.outbox)
    """

    RELAY_INTERVAL_S = 1.0
    # Entries younger than this are probably being published by the publishing
    # thread right now; the relay leaves them alone to avoid needless duplicates.
    RELAY_GRACE_S = 3.0
    BATCH_LIMIT = 500
    # Confirmed entries leave the outbox in one HDEL at most this often, rather than
    # one round trip per batch (at moderate load, a batch is one or two events).
    REMOVE_EVERY_S = 0.1

    def setup(self):
        config = self.container.config
        read_ahead()  # patches py-amqp's transport class: every connection in the process
        self.amqp_uri = cfg.get(config, cfg.AMQP_URI)
        self.queue_type = cfg.get(config, cfg.QUEUE_TYPE)
        self.publisher = BatchPublisher(self.amqp_uri, EVENTS_EXCHANGE.name)
        self.redis = connect(cfg.get(config, cfg.REDIS_URL))
        self.outbox_key = Keys(cfg.get(config, cfg.KEY_PREFIX)).outbox(self.container.service_name)
        self._pending: dict[str, str] = {}
        self._confirmed: list[str] = []  # published, still to be removed from the outbox
        self._removed_at = 0.0
        self._handed_over = threading.Event()  # green under nameko
        self._threads = []

    def start(self):
        with Connection(self.amqp_uri) as connection:
            declare_topology(connection, self.queue_type)
        self._threads = [self.container.spawn_managed_thread(self._publish_forever),
                         self.container.spawn_managed_thread(self._relay_forever)]

    def stop(self):
        # Workers have finished: publish what they handed over, then stop.
        self._publish_pending()
        with contextlib.suppress(Exception):  # Redis down: the relay republishes them later
            self._remove_confirmed()
        self._stop_threads()
        self.publisher.close()
        self.redis.close()

    def kill(self):
        self._stop_threads()
        self.publisher.close()

    def _stop_threads(self):
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.kill()

    def get_dependency(self, worker_ctx):
        return BoundEventBus(self, worker_ctx)

    # ------------------------------------------------------------ publishing

    def hand_over(self, entries: dict[str, str]) -> None:
        """Publish these committed outbox entries soon; returns at once."""
        self._pending.update(entries)
        self._handed_over.set()

    def publish_entries(self, entries: dict[str, str], remove_now: bool = True) -> list[str]:
        """Publish outbox entries as one batch; the ids the broker confirmed.

        The confirmed entries are removed from the outbox in one round trip, now or
        (``remove_now=False``) by the next :meth:`_remove_confirmed`. Raises once the
        batch is done if any entry was not confirmed (it stays in the outbox for the
        relay).
        """
        messages = []
        for message_id, raw in entries.items():
            entry = loads(raw)
            messages.append(PublishedEvent(message_id, entry["routing_key"], entry["body"],
                                           entry["headers"],
                                           mandatory=is_mandatory(entry["routing_key"])))
        result = self.publisher.publish(messages)
        self._confirmed += result.confirmed
        if remove_now:
            self._remove_confirmed()
        if result.failed:
            reasons = sorted(set(result.failed.values()))
            raise PublishFailed(f"{len(result.failed)} event(s) not confirmed: "
                                f"{'; '.join(reasons)}")
        return result.confirmed

    def _remove_confirmed(self) -> None:
        # Removing late is safe: an entry still in the outbox after a crash is only
        # published again by the relay (at-least-once; consumers are idempotent).
        confirmed, self._confirmed = self._confirmed, []
        if confirmed:
            try:
                self.redis.hdel(self.outbox_key, *confirmed)
            except Exception:
                self._confirmed = confirmed + self._confirmed  # Redis down: next round
                raise
        self._removed_at = time.monotonic()

    def _publish_pending(self) -> None:
        while self._pending:
            batch = dict(itertools.islice(self._pending.items(), self.BATCH_LIMIT))
            for message_id in batch:
                del self._pending[message_id]
            try:
                self.publish_entries(batch, remove_now=False)
            except Exception as exc:  # broker or Redis trouble: the relay takes them later
                _log.warning("publish of %d event(s) left to the outbox relay: %s",
                             len(batch), type(exc).__name__)

    def _publish_forever(self):
        while True:
            self._handed_over.wait(timeout=self.REMOVE_EVERY_S)
            self._handed_over.clear()
            self._publish_pending()
            if time.monotonic() - self._removed_at >= self.REMOVE_EVERY_S:
                try:
                    self._remove_confirmed()
                except Exception as exc:  # Redis down: kept for the next round
                    _log.warning("outbox clean-up deferred: %s", type(exc).__name__)

    def relay_once(self, grace_s: float | None = None) -> int:
        """Publish outbox entries older than the grace period (crash or outage leftovers)."""
        grace = self.RELAY_GRACE_S if grace_s is None else grace_s
        now = time.time()
        stale = [(mid, raw) for mid, raw in self.redis.hgetall(self.outbox_key).items()
                 if now - loads(raw).get("staged_at", 0) >= grace]
        return sum(len(self.publish_entries(dict(stale[i:i + self.BATCH_LIMIT])))
                   for i in range(0, len(stale), self.BATCH_LIMIT))

    def _relay_forever(self):
        while True:
            try:
                relayed = self.relay_once()
                if relayed:
                    _log.info("outbox relayed %d message(s) for %s", relayed,
                              self.container.service_name)
            except Exception as exc:  # broker or Redis down: try again next round
                _log.warning("outbox relay deferred: %s", type(exc).__name__)
            eventlet.sleep(self.RELAY_INTERVAL_S)


class PublishFailed(Exception):
    """Some events of a batch were not confirmed by the broker; they stay in the outbox."""


class BoundEventBus:
    """The per-worker face of :class:`EventBus`."""

    def __init__(self, bus: EventBus, worker_ctx):
        self._bus = bus
        self._worker_ctx = worker_ctx

    def stage(self, *events: Event) -> dict[str, str]:
        """Outbox entries for ``events``, to be written with the state change."""
        stack = self._worker_ctx.call_id_stack
        source = self._worker_ctx.service_name
        # The body as Python values, not JSON's: ``dumps`` writes the same text, and
        # writes the datetimes (an issue.dispatched holds two per agency) in C, where
        # pydantic's JSON mode spends microseconds on each.
        return {event.event_id: dumps(_envelope(event, source, stack, event.model_dump()))
                for event in events}

    def publish(self, entries: dict[str, str]) -> None:
        """Publish these committed entries soon, without waiting for the broker: with
        the broker down they stay in the outbox and the relay publishes them later."""
        if entries:
            self._bus.hand_over(entries)


DEFER, WAIT, RETRY, DEAD_LETTER = "defer", "wait", "retry", "dead-letter"


@dataclass(frozen=True)
class FailurePlan:
    """What becomes of a message whose handler failed (:func:`plan_failure`)."""

    action: str  # DEFER, WAIT, RETRY or DEAD_LETTER
    delay_s: float = 0.0  # before it comes back from the delay queue (DEFER, WAIT, RETRY)
    attempts: int = 0  # failed attempts, this one included (RETRY, DEAD_LETTER)
    waits: int = 0  # waits for the store, this one included (WAIT)


def backoff(base_s: float, n: int) -> float:
    """The ``n``-th delay (from 1): ``base_s`` doubling, capped at ``MAX_RETRY_DELAY_S``."""
    return min(base_s * 2 ** (n - 1), MAX_RETRY_DELAY_S)


def plan_failure(exc: BaseException, attempts: int, waits: int, max_attempts: int,
                 retry_delay_s: float) -> FailurePlan:
    """What to do with a message whose handler raised ``exc``. Pure.

    ``attempts`` and ``waits`` are what the message's headers say so far.

    - :class:`Deferred`: back after its own delay; counts nothing.
    - Our store is down (``OUTAGE_ERRORS``): the event waits, with backoff, and
      counts a wait, never an attempt: it is not dead-lettered however long the
      outage lasts.
    - :class:`InvalidPayload`: dead-lettered at once.
    - Anything else spends an attempt: retried with backoff, dead-lettered at the
      ``max_attempts``-th.
    """
    if isinstance(exc, Deferred):
        return FailurePlan(DEFER, exc.delay_s, attempts, waits)
    if isinstance(exc, OUTAGE_ERRORS):
        return FailurePlan(WAIT, backoff(retry_delay_s, waits + 1), attempts, waits + 1)
    attempts += 1
    if isinstance(exc, InvalidPayload) or attempts >= max_attempts:
        return FailurePlan(DEAD_LETTER, 0.0, attempts, waits)
    return FailurePlan(RETRY, backoff(retry_delay_s, attempts), attempts, waits)


def plan_acks(finished: Iterable[int], in_flight: Iterable[int]) -> tuple[int | None, list[int]]:
    """How to acknowledge ``finished`` delivery tags in as few frames as possible. Pure.

    One ``multiple`` ack covers every finished tag below the oldest message still
    in flight (the broker acks all outstanding tags up to it, so none may still be
    in the works); each finished tag above that gets its own ack, so one slow
    message never holds back the acks, and with them the prefetch window, of the
    messages after it. Returns (the tag to ack with ``multiple``, or None; the rest).
    """
    oldest = min(in_flight, default=None)
    covered = [tag for tag in finished if oldest is None or tag < oldest]
    rest = sorted(tag for tag in finished if oldest is not None and tag > oldest)
    return (max(covered) if covered else None), rest


class DeadLetteringQueueConsumer(FailoverQueueConsumer):
    """nameko's QueueConsumer, but an undecodable body is dead-lettered, not dropped,
    a message whose connection died under it is left to the broker, acks are sent in
    batches, and a body is decoded once, from its bytes (:meth:`_on_message`). Like every Whistle consumer, it registers its consumers again
    when an ack was the first to find the connection lost (``shared.consuming``).

    nameko's ack/requeue ignore only ``amqp.exceptions.ConnectionError``; when the
    broker goes away (restart, ``stop_app``) the socket error escapes instead, kills
    the worker's thread and with it the whole container, which then never consumes
    again. The broker redelivers every unacked message of a dead connection, so
    there is nothing to do but carry on.

    Acks: nameko sends one frame per message. Here a finished message's ack waits
    up to ``ACK_DELAY_S`` for others, then they go together (:func:`plan_acks`).
    A process that dies in between has its messages redelivered, which at-least-once
    delivery and idempotent handlers already allow for.
    """

    ACK_DELAY_S = 0.002

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ack_channel = None  # the channel the tags below belong to
        self._in_flight: set[int] = set()
        self._finished: dict[int, object] = {}  # tag -> message, ack not sent yet
        self._flush_pending = False

    def adopt_channel(self, channel) -> None:
        """Consume on a new channel (every (re)connection): the old one's unacked
        messages are the broker's again, and delivery tags start afresh."""
        self.flush_acks()
        self._ack_channel, self._in_flight, self._finished = channel, set(), {}

    def handle_message(self, provider, body, message):
        if message.channel is self._ack_channel:
            self._in_flight.add(message.delivery_tag)
        # nameko gives every message a green thread of its own, which then spawns the
        # worker's: two a message. It does so because handling may block (a worker
        # pool that is full, a dead letter to publish), and the consumer's thread must
        # not. When nothing can block, the worker is spawned from here.
        if not provider.spawn_worker_now(body, message):
            super().handle_message(provider, body, message)

    def ack_message(self, message):
        if message.channel is not self._ack_channel:
            return  # its connection is gone: the broker redelivers it
        self._in_flight.discard(message.delivery_tag)
        self._finished[message.delivery_tag] = message
        if not self._flush_pending:
            self._flush_pending = True
            eventlet.spawn_after(self.ACK_DELAY_S, self.flush_acks)

    def requeue_message(self, message):
        if message.channel is self._ack_channel:
            self._in_flight.discard(message.delivery_tag)
        self._unless_connection_lost("requeue", super().requeue_message, message)

    def on_iteration(self):
        self.flush_acks()  # before nameko may stop consuming and close the channel
        super().on_iteration()

    def stop(self):
        self.flush_acks()
        super().stop()

    def flush_acks(self):
        self._flush_pending = False
        if not self._finished:
            return
        finished, self._finished = self._finished, {}
        upto, singles = plan_acks(finished, self._in_flight)
        if upto is not None:
            self._unless_connection_lost(
                "ack", lambda m: m.channel.basic_ack(upto, multiple=True), finished[upto])
        for tag in singles:
            self._unless_connection_lost("ack", super().ack_message, finished[tag])

    @staticmethod
    def _unless_connection_lost(what, action, message):
        if not message.channel.connection:
            return  # closed: the broker has taken its messages back
        try:
            action(message)
        except OSError as exc:
            _log.warning("could not %s, connection lost (%s): the broker redelivers it",
                         what, type(exc).__name__)

    def get_consumers(self, consumer_cls, channel):
        self.adopt_channel(channel)  # called on every (re)connection
        # Bodies stay bytes, decoded once in _on_message: py-amqp would turn each into
        # text first, for kombu and orjson to turn back (a retry or a dead letter
        # republishes the same bytes either way).
        channel.auto_decode = False
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            consumer.on_decode_error = partial(self._on_decode_error, provider)
            consumer.on_message = partial(self._on_message, provider)
        return consumers

    def _on_message(self, provider, message):
        """kombu's ``Consumer.receive`` for one message (kombu calls ``on_message``
        instead of decoding it and calling the callbacks), with the body read by
        :func:`~shared.jsoncodec.read_message_body`; one it cannot decode goes where
        kombu would send it, to ``on_decode_error``."""
        try:
            body = read_message_body(message)
        except Exception as exc:
            self._on_decode_error(provider, message, exc)
            return
        self.handle_message(provider, body, message)

    def _on_decode_error(self, provider, message, exc):
        try:
            provider.dead_letter(message, f"undecodable message: {type(exc).__name__}")
        except Exception:
            _log.warning("could not dead-letter an undecodable message; requeueing")
            self.requeue_message(message)
            return
        self.ack_message(message)


class EventSubscriber(Consumer):
    """Consume one event type from this method's queue in ``shared.topology``.

    ``requeue_on_error`` is not used: nameko requeues at once and without limit.
    Failures are retried with exponential backoff through a delay queue and
    dead-lettered with their reason after ``WHISTLE_MAX_ATTEMPTS``; while the store
    is down, events wait instead, without spending attempts (:func:`plan_failure`).
    The message is acked only after the worker returned or the retry was confirmed
    published, so a process killed mid-handler gets it redelivered.

    Usage::

        @subscribe(IssueReceived)
        def route_issue(self, event: IssueReceived): ...

        @subscribe(IssueReceived, IssueDispatched)   # one queue, in publishing order
        def on_event(self, event: IssueReceived | IssueDispatched): ...

    ``dead_lettered``: the name of a method of the service, called with the event once
    its worker's failure dead-lettered it (its attempts used up, or ``InvalidPayload``),
    by the same worker: to let go of what only an event still to come back needs kept.
    Its failure is logged and changes nothing (the dead letter is published already).
    """

    queue_consumer = DeadLetteringQueueConsumer()

    def __init__(self, *event_classes: type[Event], dead_lettered: str | None = None,
                 **kwargs):
        self.dead_lettered = dead_lettered
        # A deferral, or a wait for the store, is routine, not a worker error: nameko
        # logs expected ones as warnings.
        expected = kwargs.pop("expected_exceptions", ())
        expected = expected if isinstance(expected, tuple) else (expected,)
        kwargs["expected_exceptions"] = (Deferred, *OUTAGE_ERRORS, *expected)
        self.event_classes = {cls.event_type: cls for cls in event_classes}
        super().__init__(queue=None, **kwargs)

    def setup(self):
        subscription = subscription_for(self.container.service_name, self.method_name)
        if set(subscription.binding_keys) != set(self.event_classes):
            raise TypeError(f"{subscription.queue_name} carries "
                            f"{', '.join(subscription.binding_keys)}, "
                            f"not {', '.join(self.event_classes)}")
        self.subscription = subscription
        config = self.container.config
        self.queue = subscription.queue_of(cfg.get(config, cfg.QUEUE_TYPE))
        self.max_attempts = int(cfg.get(config, cfg.MAX_ATTEMPTS))
        self.retry_delay_s = int(cfg.get(config, cfg.RETRY_DELAY_MS)) / 1000
        self.publisher = make_publisher(cfg.get(config, cfg.AMQP_URI))
        use_for_kombu()
        read_ahead()
        super().setup()

    def event_class(self, message) -> type[Event] | None:
        if len(self.event_classes) == 1:
            return next(iter(self.event_classes.values()))
        # Back from the retry queue the routing key is the queue's name: the type
        # travels in a header as well.
        event_type = ((message.headers or {}).get(EVENT_TYPE_HEADER)
                      or message.delivery_info.get("routing_key"))
        return self.event_classes.get(event_type)

    def _parse(self, body, message) -> tuple[Event | None, str | None]:
        """The event in this message, or why it has none."""
        event_cls = self.event_class(message)
        if event_cls is None:
            return None, "unknown event type"
        try:
            return event_cls.model_validate(body), None
        except ValidationError as exc:
            return None, invalid_reason(InvalidPayload.from_validation_error(
                exc, event_cls.__name__))

    def spawn_worker_now(self, body, message) -> bool:
        """Spawn the event's worker without blocking, or return False and do nothing.

        Called from the queue consumer's own thread, which must never wait: so only
        for a valid event (an invalid one is dead-lettered, which is a publish) when
        the container has a free worker slot (else spawning waits for one). Anything
        else goes to :meth:`handle_message`, in a thread of its own.
        """
        if self.container._worker_pool.free() == 0:  # nameko 2.14's pool; pinned
            return False
        event, _ = self._parse(body, message)
        if event is None:
            return False
        self._spawn_worker(event, message)
        return True

    def handle_message(self, body, message):
        event, invalid = self._parse(body, message)
        if event is None:
            self._finish(message, dead_letter_reason=invalid)
            return
        self._spawn_worker(event, message)

    def unpack_message_headers(self, message):
        """nameko's (``HeaderDecoder``): every header, ``nameko.`` taken off the names
        that have it; without its method call and ``str.format`` for each header, which
        cost about 20k instructions a message for four headers (this: about 8k)."""
        prefix = f"{self.header_prefix}."
        cut = len(prefix)
        context_data = {}
        for name, value in message.headers.items():
            context_data[name[cut:] if name[:cut] == prefix else name] = value
        return context_data

    def _spawn_worker(self, event: Event, message) -> None:
        context_data = self.unpack_message_headers(message)
        context_data["trace_id"] = event.trace_id
        try:
            self.container.spawn_worker(self, (event,), {}, context_data=context_data,
                                        handle_result=partial(self.handle_result, message))
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)

    def handle_result(self, message, worker_ctx, result=None, exc_info=None):
        """nameko's, and the service's ``dead_lettered`` method once the event is
        dead-lettered: still in the worker, its dependencies at hand."""
        if self.handle_message_processed(message, result, exc_info) and self.dead_lettered:
            try:
                getattr(worker_ctx.service, self.dead_lettered)(*worker_ctx.args)
            except Exception as exc:
                _log.warning("%s: %s after its dead letter failed: %s",
                             self.subscription.queue_name, self.dead_lettered,
                             type(exc).__name__)
        return result, exc_info

    def handle_message_processed(self, message, result=None, exc_info=None) -> bool:
        """Ack, defer, retry or dead-letter the message; whether it was dead-lettered."""
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            return False
        exc = exc_info[1]
        headers = message.headers or {}
        plan = plan_failure(exc, int(headers.get(ATTEMPTS_HEADER, 0)),
                            int(headers.get(WAITS_HEADER, 0)), self.max_attempts,
                            self.retry_delay_s)
        if plan.action == DEFER:
            self._finish(message, defer_s=plan.delay_s)
            return False
        queue = self.subscription.queue_name
        reason = scrub_text(f"{type(exc).__name__}: {exc}")[:500]
        if plan.action == WAIT:
            _log.warning("%s waits for the store (wait %d), retrying in %.1fs without "
                         "spending an attempt: %s", queue, plan.waits, plan.delay_s, reason)
            self._finish(message, defer_s=plan.delay_s,
                         headers={WAITS_HEADER: plan.waits, ERROR_HEADER: reason})
        elif plan.action == RETRY:
            _log.warning("%s failed (attempt %d/%d), retrying in %.1fs: %s",
                         queue, plan.attempts, self.max_attempts, plan.delay_s, reason)
            self._finish(message, defer_s=plan.delay_s,
                         headers={ATTEMPTS_HEADER: plan.attempts, ERROR_HEADER: reason})
        else:
            return self._finish(message, dead_letter_reason=reason, attempts=plan.attempts)
        return False

    def _finish(self, message, dead_letter_reason=None, attempts=1, defer_s=None,
                headers=None) -> bool:
        """Dead-letter the message, or send it back through the delay queue after
        ``defer_s`` with ``headers`` added; ack it once that is published. Whether it
        was (requeued instead when it could not be)."""
        try:
            if dead_letter_reason is not None:
                self.dead_letter(message, dead_letter_reason, attempts)
            else:
                self._republish(message, routing_key=f"{self.subscription.queue_name}.retry",
                                extra_headers=headers or {}, expiration=defer_s)
        except Exception as exc:
            # Could not park it (broker trouble): put it back rather than lose it.
            _log.warning("could not retry/dead-letter message: %s", type(exc).__name__)
            self.queue_consumer.requeue_message(message)
            return False
        self.queue_consumer.ack_message(message)
        return True

    def dead_letter(self, message, reason, attempts=1):
        _log.error("%s dead-lettered after %d attempt(s): %s",
                   self.subscription.queue_name, attempts, reason)
        self._republish(message, routing_key=DEAD_LETTER_QUEUE_NAME, extra_headers={
            ATTEMPTS_HEADER: attempts,
            ERROR_HEADER: scrub_text(reason)[:500],
            QUEUE_HEADER: self.subscription.queue_name,
            ROUTING_KEY_HEADER: (message.headers or {}).get(EVENT_TYPE_HEADER)
            or message.delivery_info.get("routing_key"),
            FAILED_AT_HEADER: datetime.now(UTC).isoformat(),
        })

    def _republish(self, message, routing_key, extra_headers, expiration=None):
        headers = dict(message.headers or {})
        # The routing key does not survive the detour: keep the event type with it.
        headers.setdefault(EVENT_TYPE_HEADER, message.delivery_info.get("routing_key"))
        headers.update(extra_headers)
        self.publisher.publish(
            message.body, exchange="", routing_key=routing_key, headers=headers,
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
            expiration=expiration,
        )


subscribe = EventSubscriber.decorator

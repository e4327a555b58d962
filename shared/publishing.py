"""Publishing many events for the price of one wait: confirms, collected per batch.

Publishing one persistent message with a publisher confirm costs a round trip to
the broker; waiting for each confirm in turn (what ``nameko.amqp.publish.Publisher``
does) costs one per event. :class:`BatchPublisher` puts a whole batch on one channel
in confirm mode, then waits once until the broker has confirmed (or refused, or
returned) every message of it. RabbitMQ confirms a persistent message once it is
on disk or replicated, so a confirmed message survives a broker restart.

It speaks py-amqp (the transport kombu and nameko use) directly, because kombu's
``Producer`` waits for every confirm on its own.

Usage::

    publisher = BatchPublisher("amqp://guest:guest@127.0.0.1:5672/")
    result = publisher.publish([PublishedEvent("id-1", "issue.received", body, headers,
                                                mandatory=True)])
    result.confirmed   # ["id-1"]: safe on the broker
    result.failed      # {message id: why} for the others (nacked, unroutable, lost)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import amqp
from kombu import Connection

from shared.jsoncodec import dumps_bytes

CONFIRM_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class PublishedEvent:
    """One event as the broker gets it: JSON, persistent, with our headers."""

    message_id: str
    routing_key: str
    body: dict[str, Any]
    headers: dict[str, Any]
    mandatory: bool = True


@dataclass
class BatchResult:
    confirmed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def _one_write(transport):
    """The frames written inside go to the socket in one ``sendall`` at the end.

    py-amqp sends each message with its own system call. On loopback a send also
    runs the broker's side of the TCP delivery, so a batch of n messages cost n of
    them, and the broker n reads. Nothing else writes on a publisher's connection
    while a batch is put together (``BatchPublisher._lock``; no heartbeats).
    ``transport._write`` is py-amqp's own hook for this (``sock.sendall``);
    ``transport.write`` keeps its error handling for the one real write. If the
    batch fails half-way nothing is sent, and the connection is dropped.
    """
    frames: list[bytes] = []
    send = transport._write
    # py-amqp hands over a view of a buffer it reuses for the next frame: copy it.
    transport._write = lambda frame: frames.append(bytes(frame))
    try:
        yield
    finally:
        transport._write = send
    if frames:
        transport.write(b"".join(frames))


class BatchPublisher:
    """One connection and one confirm-mode channel, used by one batch at a time.

    Any error drops the connection; the next batch opens a new one. A message is
    reported confirmed only when the broker acked it and did not return it as
    unroutable; everything else is reported failed, so its outbox entry stays.
    """

    def __init__(self, amqp_uri: str, exchange: str,
                 confirm_timeout_s: float = CONFIRM_TIMEOUT_S):
        self.amqp_uri = amqp_uri
        self.exchange = exchange
        self.confirm_timeout_s = confirm_timeout_s
        # Green under nameko's monkey-patching: a batch waits for the one before it.
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._channel: amqp.Channel | None = None
        self._last_tag = 0  # the delivery tag of the last message published on the channel
        self._acked: set[int] = set()
        self._acked_upto = 0  # every tag up to this one is settled (a "multiple" ack or nack)
        self._nacked: set[int] = set()
        self._returned: set[str] = set()

    def publish(self, messages: Sequence[PublishedEvent]) -> BatchResult:
        if not messages:
            return BatchResult()
        with self._lock:
            try:
                return self._publish(messages)
            except Exception:
                self.close()
                raise

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to do
                connection.close()

    # ------------------------------------------------------------- internals

    def _publish(self, messages: Sequence[PublishedEvent]) -> BatchResult:
        channel = self._ensure_channel()
        first = self._last_tag + 1
        tags = {}
        with _one_write(self._connection.connection.transport):
            for message in messages:
                channel.basic_publish(self._amqp_message(message), exchange=self.exchange,
                                      routing_key=message.routing_key,
                                      mandatory=message.mandatory)
                self._last_tag += 1
                tags[self._last_tag] = message.message_id
        self._wait_for_confirms(first, self._last_tag)
        result = BatchResult()
        for tag, message_id in tags.items():
            if tag in self._nacked:
                result.failed[message_id] = "nacked by the broker"
            elif message_id in self._returned:
                result.failed[message_id] = "unroutable: no queue is bound for it"
            else:
                result.confirmed.append(message_id)
        self._forget(tags)
        return result

    def _wait_for_confirms(self, first: int, last: int) -> None:
        connection = self._connection
        while not all(self._settled(tag) for tag in range(first, last + 1)):
            try:
                connection.drain_events(timeout=self.confirm_timeout_s)
            except TimeoutError as exc:  # socket.timeout
                raise TimeoutError(f"no confirm from the broker in {self.confirm_timeout_s}s"
                                   ) from exc

    def _settled(self, tag: int) -> bool:
        return tag <= self._acked_upto or tag in self._acked or tag in self._nacked

    def _forget(self, tags: dict[int, str]) -> None:
        self._acked.difference_update(tags)
        self._nacked.difference_update(tags)
        self._returned.difference_update(tags.values())

    def _ensure_channel(self) -> amqp.Channel:
        if self._channel is not None:
            return self._channel
        connection = Connection(self.amqp_uri, connect_timeout=CONNECT_TIMEOUT_S)
        connection.connect()
        channel = connection.connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._connection, self._channel = connection, channel
        # Delivery tags count from 1 on every new confirm-mode channel.
        self._last_tag = self._acked_upto = 0
        self._acked, self._nacked, self._returned = set(), set(), set()
        return channel

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_upto = max(self._acked_upto, delivery_tag)
        else:
            self._acked.add(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        upto = range(self._acked_upto + 1, delivery_tag + 1) if multiple else (delivery_tag,)
        self._nacked.update(tag for tag in upto if tag not in self._acked)

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        # A returned message is followed by its ack: remember it is not delivered.
        self._returned.add(message.properties.get("message_id"))

    @staticmethod
    def _amqp_message(message: PublishedEvent) -> amqp.Message:
        # What kombu's producer sends for serializer="json": consumers decode it the same.
        return amqp.Message(
            dumps_bytes(message.body),
            content_type="application/json", content_encoding="utf-8",
            application_headers=message.headers, delivery_mode=2,
            message_id=message.message_id)

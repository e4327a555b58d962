"""How the benchmark sees an issue through Whistle, without taking anything from it.

- **The event stream.** Like ``whistle tail``, an exclusive, auto-deleting queue
  bound to ``whistle.events`` gets a copy of ``issue.dispatched``, and only that:
  a copy of every event would be the benchmark's own load on the broker. An issue is
  *dispatched to all its agencies* when its ``issue.dispatched``, which carries every
  assignment, has been published: it is then in agency's queue. The time is when it
  reached the benchmark.
- **The resident's "received" message.** notify records each message in
  ``{p}:issue:{id}:notifications``, with its kind and audience, after the channel
  took it. The record carries ``sent_at``, so the time is notify's own, whenever the
  benchmark reads it. The poller reads the oldest waiting issues' records in one
  pipelined round trip.
- **Queue backlogs.** The ready messages of every subscription queue, sampled with
  passive declares, show where work waits when the load is more than Whistle takes.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from kombu import Connection, Queue

from services.notify.delivery import FINAL
from services.notify.recipients import RESIDENT
from shared.heartbeats import drain
from shared.jsoncodec import loads, use_for_kombu
from shared.store import Keys, connect
from shared.topology import DEAD_LETTER_QUEUE, EVENTS_EXCHANGE, SUBSCRIPTIONS

POLL_INTERVAL_S = 0.05
# Messages are recorded roughly in the order issues were accepted, so each round reads
# only the oldest few waiting issues: a large backlog costs Redis no more than a small one.
POLL_BATCH = 32
SAMPLE_INTERVAL_S = 0.5
OBSERVED = "issue.dispatched"


@dataclass
class Told:
    status: str
    at: float


class Observer:
    """Follows the event stream and the "received" records; start before any load."""

    def __init__(self, amqp_uri: str, redis_url: str, prefix: str):
        self.amqp_uri = amqp_uri
        self.redis = connect(redis_url)
        self.keys = Keys(prefix)
        self.dispatched_at: dict[str, float] = {}  # issue -> when its issue.dispatched came
        self.agencies: dict[str, int] = {}  # issue -> the assignments its dispatch carried
        self.told: dict[str, Told] = {}
        self.waiting: dict[str, None] = {}  # issues whose message is not recorded yet, oldest first
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []

    # -------------------------------------------------------------- lifecycle

    def start(self) -> Observer:
        use_for_kombu()  # decode the copies as the services do: the observer's CPU is on the bill
        for target in (self._follow_events, self._poll_messages):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._ready.wait(10):
            raise RuntimeError("could not bind the benchmark's queue to whistle.events")
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self.redis.close()

    def watch(self, issue_id: str) -> None:
        """An accepted issue: look out for its resident's "received" record."""
        self.waiting[issue_id] = None

    def complete_at(self, issue_id: str) -> float | None:
        """When the issue was both dispatched and its resident's message recorded."""
        dispatched, told = self.dispatched_at.get(issue_id), self.told.get(issue_id)
        if dispatched is None or told is None:
            return None
        return max(dispatched, told.at)

    # ---------------------------------------------------------- event stream

    def _follow_events(self) -> None:
        queue = Queue(f"whistle.bench.{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True,
                      durable=False)
        with Connection(self.amqp_uri, heartbeat=30) as connection:
            channel = connection.channel()
            EVENTS_EXCHANGE.bind(channel).declare()
            bound = queue.bind(channel)
            bound.declare()
            bound.bind_to(exchange=EVENTS_EXCHANGE.name, routing_key=OBSERVED)
            with connection.Consumer(bound, callbacks=[self._on_event], accept=["json"],
                                     no_ack=True):
                self._ready.set()
                while not self._stop.is_set():
                    drain(connection, timeout=0.5)

    def _on_event(self, body, message) -> None:
        """An ``issue.dispatched``: the only key bound (an issue merged instead of
        dispatched never comes, and counts as incomplete)."""
        seen = time.time()
        issue_id = body.get("issue_id") if isinstance(body, dict) else None
        if issue_id:
            self.dispatched_at.setdefault(issue_id, seen)
            self.agencies[issue_id] = len(body["assignments"])

    # --------------------------------------------------------------- messages

    def _poll_messages(self) -> None:
        self._ready.wait(10)
        while not self._stop.is_set():
            if self.poll_once() < POLL_BATCH:
                self._stop.wait(POLL_INTERVAL_S)

    def poll_once(self) -> int:
        """Read the oldest waiting issues' messages; how many "received" ones were settled."""
        batch = list(itertools.islice(self.waiting, POLL_BATCH))
        if not batch:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for issue_id in batch:
            pipe.hvals(self.keys.notifications(issue_id))
        settled = 0
        for issue_id, raws in zip(batch, pipe.execute(), strict=True):
            record = next((r for r in map(loads, raws)
                           if r["kind"] == "received" and r["audience"] == RESIDENT), None)
            if record and record["status"] in FINAL:
                when = record.get("sent_at") or record.get("last_attempt_at")
                self.told[issue_id] = Told(record["status"], datetime.fromisoformat(when)
                                           .timestamp())
                self.waiting.pop(issue_id, None)
                settled += 1
        return settled


class QueueSampler:
    """The most messages seen waiting in each subscription queue, sampled in the background."""

    def __init__(self, amqp_uri: str):
        self.amqp_uri = amqp_uri
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> QueueSampler:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _sample(self) -> None:
        with Connection(self.amqp_uri) as connection:
            channel = connection.channel()
            while not self._stop.is_set():
                for sub in SUBSCRIPTIONS:
                    ready = Queue(sub.queue_name, durable=True).bind(channel).queue_declare(
                        passive=True).message_count
                    self.peak[sub.queue_name] = max(self.peak.get(sub.queue_name, 0), ready)
                self._stop.wait(SAMPLE_INTERVAL_S)


def dead_letters(amqp_uri: str) -> int:
    """Messages waiting in ``whistle.dead-letter`` now (0 if it does not exist yet)."""
    with Connection(amqp_uri) as connection:
        channel = connection.channel()
        return DEAD_LETTER_QUEUE.bind(channel).queue_declare(passive=True).message_count

"""Delivery records: each recipient gets each message once, and the desk sees its fate.

A message id is derived from the event id, the message kind and, for a merged
reporter, the report it is addressed to, so a redelivered event maps to the
same record. Records live under the issue whose resident was told (or, for a
supervisor, the escalated issue) and say whom they were for (``audience``).

A record's life::

    queued --(channel accepts)--------------------------------> sent
       |  \\--(channel refuses, attempts < NOTIFY_MAX_ATTEMPTS)--> queued (last_error;
       |                                        the event is retried with backoff)
       \\----(channel refuses, attempts = NOTIFY_MAX_ATTEMPTS)---> failed (detail;
                                                 the message goes to the desk's outbox)

``sent`` and ``failed`` are final: a redelivered or retried event never sends
that message again. Marking "sent" happens *after* the channel answered (never a
"seen" marker before the work: a crash in between would lose the message; a
crash after the send re-sends it, with the same ``Idempotency-Key`` or
``Message-ID``, so the receiver can drop it). A short lease stops two notify
instances sending the same message at the same moment; the loser retries later
and finds it sent. The lease names its owner and is renewed while the channel
works, however slow: a held lease means a live worker is sending the message now,
which the ordering wait relies on (:func:`ordering_wait`); a dead worker's lease
lapses within ``LEASE_SECONDS``.

The desk is the exception, and the common case: its outbox is in the same Redis,
so one script pushes the message and records it sent, atomically (no lease, no
``queued`` step, one round trip).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Collection, Hashable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice

import redis

from services.notify.channels import DESK, Channels, DeskOutboxChannel, OutgoingMessage
from services.notify.recipients import AFTER, PREDECESSOR, RESIDENT, SUPERVISOR
from shared import config as cfg
from shared.issue import TimelineEntry
from shared.jsoncodec import dumps, loads, utc_moment, utc_text
from shared.messaging import Deferred, backoff
from shared.privacy import mask_email, mask_name, mask_phone
from shared.store import Keys

# A lease lapses this long after its worker last renewed it: how long a dead worker's
# message can hold up the resident's next one. Renewed every LEASE_RENEW_S while the
# channel works (a webhook may take 5 s, an SMTP server 10 s: longer than a lease
# never renewed could safely be).
LEASE_SECONDS = 10
LEASE_RENEW_S = LEASE_SECONDS / 3
# ...but not for ever: a send stuck past this (every channel has a shorter timeout)
# lets its lease lapse, so the resident's next message stops waiting for it. Should
# the send still end, a second try is dropped by the receiver (idempotency key).
LEASE_MAX_HOLD_S = 60
LEASE_RECHECK_S = 1.0
# A direct send (webhook, email) holds a worker for up to the channel's timeout. At most
# NOTIFY_MAX_DIRECT_SENDS of them per channel are on the wire at once in one process;
# another message for that channel goes round the delay queue (Deferred: no attempt
# spent, the worker free at once) and looks for a free slot again this often. As often
# as a slow predecessor is looked at (service.ORDERING_SLOW_RECHECK_S), and well within
# ORDERING_GRACE_S, so the mark it leaves (slot_waits_key) keeps the resident's next
# message waiting behind it.
SLOT_RECHECK_S = 0.5
# A message's mark is removed once an attempt at it is recorded (sent, refused, or given
# up on and handed to the desk; sent through the desk's outbox, when its channel became
# the desk's while it waited): from then on its record says where it stands. Kept at
# most this long regardless (a backstop): long past the grace it counts for, short
# enough not to pile up.
SLOT_WAIT_MARK_TTL_S = 600
# A message put off for a slot keeps its place in this process's line for the channel
# while it keeps coming back: a slot that frees goes to the longest-waiting of them, and a
# message arriving afresh waits behind them all, so a channel that stays busy cannot pass
# one over for ever. A place not claimed again within this long is given up (its event
# came back to another notify process, or waits out a retry's backoff), and the slot it
# kept goes to the next in line: four rounds of the delay queue.
SLOT_PLACE_KEPT_S = 4 * SLOT_RECHECK_S
# A place kept for a message another process has attempted since (its mark gone) is given
# up at once (Deliveries._leave_attempted); not in the moment between a message taking its
# place and writing its mark (one round trip), when it has no mark yet.
SLOT_MARK_WRITTEN_S = 0.1
QUEUED, SENT, FAILED = "queued", "sent", "failed"
SENT_TO_DESK = "sent to desk"
"""The end of a failed record's detail once its message is in the desk's outbox."""
FINAL = frozenset({SENT, FAILED})


class DeliveryFailed(Exception):
    """The channel refused or could not be reached, below ``NOTIFY_MAX_ATTEMPTS``: the
    event is retried (with backoff) and the message tried again."""


@dataclass(frozen=True)
class Outcome:
    fresh: bool  # this call settled the message (sent it, or gave up on it)
    status: str  # "queued" (to be retried) | "sent" | "failed"
    channel: str
    detail: str = ""
    note: str = ""  # why it did not go by the resident's preferred channel
    noted: bool = False  # its timeline note was written with the record


@dataclass(frozen=True)
class TimelineNote:
    """The note a settled message leaves on an issue's timeline (``IssueStore.add_note``)."""

    issue_id: str
    note_id: str
    entry: TimelineEntry


NoteFor = Callable[[Outcome], TimelineNote]
"""The timeline note to write for an outcome, when it is written with the record."""


def message_id(event_id: str, kind: str, reporter: str | None = None) -> str:
    """Deterministic id of one message; ``reporter`` names a merged report it goes to.

    Without ``reporter`` (the event's own issue) the id is what it always was.
    """
    key = f"{event_id}:{kind}" if reporter is None else f"{event_id}:{kind}:{reporter}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class SendPlan:
    """Whether a message goes to its channel now (:func:`plan_send`)."""

    now: bool
    delay_s: float = 0.0  # when not now: look for a free slot again after this
    reason: str = ""
    # When not now though slots are free: the messages put off earlier they are kept for
    # (SendSlots' waiters), first first; those that took their places just now left out.
    kept_for: tuple[Hashable, ...] = ()


SEND_NOW = SendPlan(True)


def plan_send(channel: str, in_flight: int, most: int, waiting_ahead: int = 0) -> SendPlan:
    """Send now, or defer: ``in_flight`` of this process's sends are on ``channel``'s
    wire, ``most`` may be at once (``NOTIFY_MAX_DIRECT_SENDS``), and ``waiting_ahead``
    messages put off for a slot earlier keep their places before this one. Pure.

    The desk is never capped: its outbox is our own Redis, a few milliseconds, and it is
    where messages go when a resident's own channel gives up. A direct channel at its
    cap defers the message: not dropped and not failed (no attempt spent, so retry
    limits and dead-lettering are as they were), and no worker held while it waits. A
    free slot kept for a message that waited longer defers it too.
    """
    if channel == DESK or in_flight + waiting_ahead < most:
        return SEND_NOW
    if in_flight < most:
        return SendPlan(False, SLOT_RECHECK_S, f"{channel}: the free slots are kept for "
                                               f"{waiting_ahead} messages put off before it")
    return SendPlan(False, SLOT_RECHECK_S,
                    f"{channel}: {in_flight} sends on the wire, the most at once")


class SendSlots:
    """How many direct sends each channel has on the wire in this process, bounded by
    :func:`plan_send`, and the line of messages put off for one (``SLOT_PLACE_KEPT_S``).
    In-process on purpose: the cap protects this process's workers, and counting here
    costs no Redis round trip on the common path."""

    def __init__(self, most: int, place_kept_s: float = SLOT_PLACE_KEPT_S,
                 clock: Callable[[], float] = time.monotonic):
        if most < 1:
            raise ValueError("at least one send per channel must be allowed")
        self.most = most
        self.place_kept_s, self._clock = place_kept_s, clock
        self._lock = threading.Lock()  # green under nameko's monkey-patching
        self._in_flight: dict[str, int] = {}
        # channel -> the messages put off for a slot, in the order they were first put
        # off -> when each last came back (clock)
        self._line: dict[str, dict[Hashable, float]] = {}

    def take(self, channel: str, waiter: Hashable | None = None) -> SendPlan:
        """A slot on ``channel`` (give it back with :meth:`give_back`), or why not.

        ``waiter``: the message, when it will come back for a slot if put off (it then
        keeps its place in the line); ``None`` for one that will not (a resend)."""
        if channel == DESK:
            return SEND_NOW
        with self._lock:
            line = self._line.get(channel)
            ahead = self._ahead_of(line, waiter) if line else 0
            in_flight = self._in_flight.get(channel, 0)
            plan = plan_send(channel, in_flight, self.most, ahead)
            if plan.now:
                self._in_flight[channel] = in_flight + 1
                if line and waiter in line:
                    del line[waiter]
                return plan
            if line and in_flight < self.most:  # free slots, kept for those ahead of it
                marked = self._clock() - SLOT_MARK_WRITTEN_S
                plan = replace(plan, kept_for=tuple(
                    w for w in islice(line, self.most - in_flight) if line[w] < marked))
            if waiter is not None:  # its place, kept (a dict keeps the first order)
                self._line.setdefault(channel, {})[waiter] = self._clock()
        return plan

    def _ahead_of(self, line: dict[Hashable, float], waiter: Hashable | None) -> int:
        """How many in ``line`` come before ``waiter`` (all of them, for a newcomer), once
        the places not claimed within ``place_kept_s`` are given up. Under the lock."""
        given_up = self._clock() - self.place_kept_s
        for lapsed in [w for w, seen in line.items() if seen < given_up]:
            del line[lapsed]
        if waiter in line:
            return list(line).index(waiter)
        return len(line)

    def leave(self, channel: str, waiter: Hashable) -> None:
        """``waiter`` will not come back for a slot (found settled): its place goes."""
        with self._lock:
            line = self._line.get(channel)
            if line:
                line.pop(waiter, None)

    def waiting(self, channel: str) -> list[Hashable]:
        """The line for a slot on ``channel``, first first (places not yet given up)."""
        with self._lock:
            return list(self._line.get(channel, {}))

    def give_back(self, channel: str) -> None:
        if channel == DESK:
            return
        with self._lock:
            self._in_flight[channel] = max(0, self._in_flight.get(channel, 0) - 1)

    def in_flight(self, channel: str) -> int:
        with self._lock:
            return self._in_flight.get(channel, 0)


class Wakeups:
    """Workers of this process waiting for news of one issue's messages, woken by key.

    A resident's messages come from one queue in publishing order, so the message one
    waits for ("dispatched" waits for "received") is nearly always being sent at that
    moment by another worker *of the same process*. Waking the waiter when that worker
    records it replaces polling Redis every few milliseconds, which cost notify about
    two extra reads an issue flat out. Only the waiters of that key wake.
    """

    def __init__(self):
        self._lock = threading.Lock()  # green under nameko's monkey-patching
        self._events: dict[str, tuple[threading.Event, int]] = {}  # key -> (event, waiters)

    def wait(self, key: str, timeout: float) -> bool:
        """Until :meth:`wake` is called for ``key`` or ``timeout`` seconds pass."""
        with self._lock:
            event, waiters = self._events.get(key) or (threading.Event(), 0)
            self._events[key] = (event, waiters + 1)
        try:
            return event.wait(timeout)
        finally:
            with self._lock:
                current = self._events.get(key)
                if current is not None and current[0] is event:
                    if current[1] <= 1:
                        del self._events[key]
                    else:
                        self._events[key] = (event, current[1] - 1)

    def wake(self, key: str) -> None:
        with self._lock:
            entry = self._events.pop(key, None)
        if entry is not None:
            entry[0].set()

    def waiters(self) -> int:
        """How many workers wait now, on any key."""
        with self._lock:
            return sum(count for _, count in self._events.values())


# Only the lease's owner renews or releases it: a worker whose lease lapsed (it was
# stopped for longer than LEASE_SECONDS) must not extend or delete the next owner's.
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then " \
         "return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then " \
           "return redis.call('DEL', KEYS[1]) end return 0"


# A message put off for a slot (Deliveries._put_off). KEYS: the issue's delivery records,
# its slot-wait marks[, its event's marks (message id -> issue id)]; ARGV: the message
# id, its mark ('' for none), the marks' TTL[, the issue id]. Settled already: its
# record, and any mark of it removed. Else the mark, written, and listed under its event.
_MARK_UNLESS_SETTLED = f"""
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local status = cjson.decode(raw)['status']
  if status == '{SENT}' or status == '{FAILED}' then
    redis.call('HDEL', KEYS[2], ARGV[1])
    return raw
  end
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  if #KEYS == 3 then
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
    redis.call('EXPIRE', KEYS[3], ARGV[3])
  end
end
return false
"""


class Deliveries:
    def __init__(self, client: redis.Redis, prefix: str, channels: Channels,
                 max_attempts: int = 4, lease_s: int = LEASE_SECONDS,
                 renew_s: float = LEASE_RENEW_S, max_hold_s: float = LEASE_MAX_HOLD_S,
                 direct_sends: int = cfg.DEFAULTS[cfg.NOTIFY_MAX_DIRECT_SENDS],
                 retry_delay_s: float = cfg.DEFAULTS[cfg.RETRY_DELAY_MS] / 1000):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < renew_s < lease_s:
            raise ValueError("a lease must be renewed before it lapses")
        self.redis = client
        self.keys = Keys(prefix)
        self.channels = channels
        self.prefix = prefix
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s  # the events' (WHISTLE_RETRY_DELAY_MS)
        self.lease_s, self.renew_s, self.max_hold_s = lease_s, renew_s, max_hold_s
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._mark_unless_settled = client.register_script(_MARK_UNLESS_SETTLED)
        self.wakeups = Wakeups()
        self.slots = SendSlots(direct_sends)

    def deliver_once(self, message: OutgoingMessage, audience: str = RESIDENT,
                     note_for: NoteFor | None = None, single_attempt: bool = False,
                     event_id: str | None = None) -> Outcome:
        """Send unless already settled; record it under ``message.issue_id``'s notifications.

        ``message.recipient`` is a resident's contact (possibly empty: the desk relays
        it), or a supervisor's role, level and office name. Raises ``Deferred`` when
        another worker is sending it right now, or when its channel has as many sends
        on the wire as it may, or its free slots are kept for messages put off before
        it (:class:`SendSlots`). Through the desk, ``note_for``'s note is
        written in the same step as the record (``Outcome.noted``). Wakes this process's
        workers waiting on the issue's messages (:meth:`await_settled`).

        ``single_attempt``: a message nothing will retry (a rating link the desk resends
        while it waits for the answer): a refusal is final, ``failed``, and it stays off
        the desk's outbox (the desk asked, and hears the refusal itself).

        ``event_id``: the event the message tells of; a mark the message leaves when put
        off for a slot is listed under it, for :meth:`forget_slot_waits`.
        """
        try:
            return self._deliver_once(message, audience, note_for, single_attempt, event_id)
        finally:
            self.wakeups.wake(message.issue_id)

    def await_settled(self, issue_id: str, kind: str, count: int, within_s: float,
                      poll_s: float) -> bool:
        """Whether ``count`` messages of ``kind`` to the issue's resident settle within
        ``within_s``: looked at again whenever this process records one of the issue's
        messages, and every ``poll_s`` for those another process sends."""
        give_up = time.monotonic() + within_s
        while not self.settled(issue_id, kind, count):
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                return False
            self.wakeups.wait(issue_id, min(remaining, poll_s))
        return True

    def _deliver_once(self, message: OutgoingMessage, audience: str,
                      note_for: NoteFor | None, single_attempt: bool = False,
                      event_id: str | None = None) -> Outcome:
        nid = message.notification_id
        key = self.keys.notifications(message.issue_id)
        channel, note = self.channels.for_message(message, supervisor=audience == SUPERVISOR)
        if channel.name == DESK:
            outcome = self._deliver_to_desk(channel, message, audience, key, note, note_for)
            if outcome is not None:
                return outcome
        # A resend is refused, not queued: it keeps no place in the line, leaves no mark.
        waiter = None if single_attempt else (message.issue_id, nid)
        plan = self.slots.take(channel.name, waiter)
        if plan.kept_for and self._leave_attempted(channel.name, plan.kept_for):
            plan = self.slots.take(channel.name, waiter)
        if not plan.now:
            raw = self._put_off(message, key, marked=not single_attempt, event_id=event_id)
            if raw is not None:
                # A retried or redelivered event comes back with messages settled
                # already: those need no slot, and will not come back for one.
                self.slots.leave(channel.name, (message.issue_id, nid))
                record = loads(raw)
                return Outcome(False, record["status"], record["channel"],
                               record.get("detail", ""))
            raise Deferred(plan.delay_s, f"message {nid} waits for a free slot: {plan.reason}")
        try:
            return self._deliver_leased(message, audience, key, channel, note, single_attempt)
        finally:
            self.slots.give_back(channel.name)

    def _put_off(self, message: OutgoingMessage, key: str, marked: bool,
                 event_id: str | None = None) -> str | None:
        """The message's record if it is settled already (sent or given up on), its mark
        removed if one was left; else ``None``, and (``marked``) a mark saying it waits for
        a free slot, not lost: the resident's next message waits behind it
        (:func:`ordering_wait`) as long as it keeps coming back; listed under
        ``event_id``, if given, should the event never come back (dead-lettered:
        :meth:`forget_slot_waits`). One atomic step, so a mark is never written after
        another worker recorded the message settled and removed it. Only when a message
        is deferred, never on the common path."""
        mark = dumps({"kind": message.kind, "at": _now()}) if marked else ""
        keys = [key, self.slot_waits_key(message.issue_id)]
        args = [message.notification_id, mark, SLOT_WAIT_MARK_TTL_S]
        if event_id is not None:
            keys.append(self.event_slot_waits_key(event_id))
            args.append(message.issue_id)
        return self._mark_unless_settled(keys=keys, args=args)

    def forget_slot_waits(self, event_id: str) -> None:
        """Remove the slot-wait marks of the event's messages: the event was dead-lettered
        (its retries used up for another reason, or found invalid), so its messages put
        off for a slot will not come back for one, and the residents' next messages must
        not wait behind them. Idempotent: a second call finds nothing listed."""
        index = self.event_slot_waits_key(event_id)
        listed = self.redis.hgetall(index)
        if not listed:
            return
        with self.redis.pipeline() as pipe:
            for nid, issue_id in listed.items():
                pipe.hdel(self.slot_waits_key(issue_id), nid)
            pipe.hdel(index, *listed)
            pipe.execute()

    def _leave_attempted(self, channel: str, waiters: tuple[tuple[str, str], ...]) -> bool:
        """Whether some of ``waiters`` (issue id, message id), for whom free slots on
        ``channel`` are kept, were attempted since by another notify process (their
        marks are gone): those leave this process's line, rather than keep a slot empty
        until their places are given up. Read only when a free slot is kept for others."""
        with self.redis.pipeline(transaction=False) as pipe:
            for issue_id, nid in waiters:
                pipe.hexists(self.slot_waits_key(issue_id), nid)
            marked = pipe.execute()
        for waiter, still in zip(waiters, marked, strict=True):
            if not still:
                self.slots.leave(channel, waiter)
        return not all(marked)

    def slot_waits_key(self, issue_id: str) -> str:
        return f"{self.prefix}:notify:slot-waits:{issue_id}"

    def event_slot_waits_key(self, event_id: str) -> str:
        """Hash: the event's messages with a slot-wait mark -> the issue it is under."""
        return f"{self.prefix}:notify:event-slot-waits:{event_id}"

    def _deliver_leased(self, message: OutgoingMessage, audience: str, key: str, channel,
                        note: str, single_attempt: bool) -> Outcome:
        nid = message.notification_id
        lease, owner = self.lease_key(nid), uuid.uuid4().hex
        if not self.redis.set(lease, owner, nx=True, ex=self.lease_s):
            # Not a failure: another worker is sending it, or died holding the lease.
            # Come back when it may have settled, without spending one of the event's
            # attempts (a dead worker's lease would otherwise outlive them all).
            raise Deferred(LEASE_RECHECK_S, f"message {nid} is being sent by another worker")
        try:
            # Read under the lease: a worker that held it a moment ago may have settled
            # the message since (read before taking it, it could be sent twice).
            raw = self.redis.hget(key, nid)
            record = loads(raw) if raw else None
            if record and record["status"] in FINAL:
                return Outcome(False, record["status"], record["channel"],
                               record.get("detail", ""))
            if record is not None and (wait_s := retry_wait(record, datetime.now(UTC),
                                                            self.retry_delay_s)):
                # Another copy of the event (at-least-once), come before the backoff of
                # this message's refusal is over: it waits it out, no attempt spent.
                raise Deferred(wait_s, f"message {nid} was refused {record['attempts']} "
                                       f"time(s): tried again in {wait_s:.2f} s")
            now = _now()
            if record is None:
                record = new_record(message, audience, channel.name, now)
                self.redis.hset(key, nid, dumps(record))
            with self._renewed(lease, owner):
                result = channel.deliver(message)
            record = attempted(record, message, result.ok, result.channel, result.detail,
                               note, _now(), 1 if single_attempt else self.max_attempts)
            if record["status"] == FAILED and audience == RESIDENT and not single_attempt:
                # Given up on: the desk relays it (by phone, in person), as for a
                # resident who chose the desk. Pushed before the record says so; the
                # push is once per message id, so a crash in between repeats nothing.
                self.channels.desk.deliver(message)
                record = relayed_by_desk(record, message)
            # The attempt recorded and the message's slot-wait mark gone, in one step: the
            # record says where it stands now, and a mark left would hold the resident's
            # next message for nothing (a redelivered copy finds it settled: _put_off).
            with self.redis.pipeline() as pipe:
                pipe.hset(key, nid, dumps(record))
                pipe.hdel(self.slot_waits_key(message.issue_id), nid)
                pipe.execute()
        finally:
            self._release(keys=[lease], args=[owner])
        detail = record["last_error"] if record["status"] == QUEUED else record["detail"]
        return Outcome(record["status"] in FINAL, record["status"], record["channel"], detail,
                       note)

    def lease_key(self, notification_id: str) -> str:
        return f"{self.prefix}:notify:lease:{notification_id}"

    @contextmanager
    def _renewed(self, lease: str, owner: str) -> Iterator[None]:
        """The lease kept alive while the body runs (a slow channel), by a thread of
        its own (green under nameko) that renews it every ``renew_s``, for at most
        ``max_hold_s``: a stuck send must not hold the resident's next message for ever."""
        done = threading.Event()
        give_up = time.monotonic() + self.max_hold_s

        def renew():
            while not done.wait(self.renew_s) and time.monotonic() < give_up:
                # Tried again at the next tick; the lease lapses if Redis stays away.
                with suppress(redis.RedisError):
                    self._renew(keys=[lease], args=[owner, self.lease_s])

        keeper = threading.Thread(target=renew, name="notify-lease", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def _deliver_to_desk(self, desk: DeskOutboxChannel, message: OutgoingMessage,
                         audience: str, key: str, note: str,
                         note_for: NoteFor | None) -> Outcome | None:
        """The desk in one atomic step: pushed, recorded sent and its slot-wait mark
        removed (put off for a webhook or email slot before its channel became the
        desk's), or already settled.

        No lease is needed: the script is atomic. ``None`` when an earlier attempt
        through another channel left the message part-way (queued): that record's
        attempts carry on through the general path.
        """
        now = _now()
        record = attempted(new_record(message, audience, DESK, now), message, True, DESK, "",
                           note, now, self.max_attempts)
        sent = Outcome(True, SENT, DESK, record["detail"], note, noted=note_for is not None)
        timeline = note_for(sent) if note_for is not None else None
        raw = desk.deliver_recorded(
            message, key, dumps(record), self.slot_waits_key(message.issue_id),
            note=timeline and (self.keys.notes(timeline.issue_id), timeline.note_id,
                               timeline.entry.model_dump_json()))
        if raw is None:
            return sent
        existing = loads(raw)
        if existing["status"] in FINAL:
            return Outcome(False, existing["status"], existing["channel"],
                           existing.get("detail", ""))
        return None

    def settled(self, issue_id: str, kind: str, count: int) -> bool:
        """Whether ``count`` messages of ``kind`` to the issue's resident are settled.

        Settled means sent or given up on. One that is failing (queued after a failed
        attempt) counts as settled too: its retry comes with the event's backoff, and
        the resident should rather hear the next news than nothing.
        """
        return self.settled_in(self.redis.hgetall(self.keys.notifications(issue_id)), kind,
                               count)

    @staticmethod
    def settled_in(raw_records: dict[str, str], kind: str, count: int) -> bool:
        """:meth:`settled`, on the issue's delivery records as read (id -> JSON)."""
        # Only the kind, the audience, the status and the attempts are read: the records'
        # moments are not respelled for it, as history_of does (_parsed).
        return _settled([r for r in map(loads, raw_records.values())
                         if r["kind"] == kind and r.get("audience", RESIDENT) == RESIDENT],
                        count)

    def why_wait(self, issue_id: str, kind: str, count: int, since: datetime,
                 grace_s: float) -> str | None:
        """Why a message to the issue's resident must still wait for ``count`` messages
        of ``kind``, or ``None``: :func:`ordering_wait` on the records as they are now,
        and the leases of those being sent (read only when some may be)."""
        # The marks of messages waiting for a free slot come in the same round trip.
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.notifications(issue_id))
            pipe.hgetall(self.slot_waits_key(issue_id))
            raw_records, raw_marks = pipe.execute()
        records = [loads(raw) for raw in raw_records.values()]
        candidates = maybe_in_flight(records, kind)
        held = self.redis.mget([self.lease_key(n) for n in candidates]) if candidates else []
        live = {nid for nid, owner in zip(candidates, held, strict=True) if owner}
        return ordering_wait(records, kind, count, live, since, datetime.now(UTC), grace_s,
                             slot_waits=[loads(raw) for raw in raw_marks.values()])

    def history(self, issue_id: str) -> list[dict]:
        return history_of(self.redis.hgetall(self.keys.notifications(issue_id)))


def _chain_up_to(kind: str) -> frozenset[str]:
    """``kind`` and every kind a resident reads before it (:data:`AFTER`, and
    :data:`PREDECESSOR` for a merged reporter), however far back."""
    seen, todo = {kind}, [kind]
    while todo:
        later = todo.pop()
        before = [k for k, _ in AFTER.get(later, ())]
        before += [PREDECESSOR[later]] if later in PREDECESSOR else []
        before += ["merged"] if later not in ("received", "merged") else []
        for earlier in before:
            if earlier not in seen:
                seen.add(earlier)
                todo.append(earlier)
    return frozenset(seen)


def maybe_in_flight(records: list[dict], kind: str) -> list[str]:
    """The ids of the resident's messages up to ``kind`` in the chain that no attempt
    has finished yet (queued, none made): in flight if their lease is held. Pure."""
    chain = _chain_up_to(kind)
    return [r["notification_id"] for r in records
            if r.get("audience", RESIDENT) == RESIDENT and r["kind"] in chain
            and r["status"] == QUEUED and not r["attempts"]]


def ordering_wait(records: list[dict], kind: str, count: int, live_leases: Collection[str],
                  since: datetime, now: datetime, grace_s: float,
                  slot_waits: Collection[dict] = ()) -> str | None:
    """Why a message must still wait for ``count`` messages of ``kind`` to its resident,
    or ``None`` to send it now. Pure.

    ``records``: the resident's delivery records (parsed); ``live_leases``: the ids of
    those whose delivery lease is held; ``since``: when the waiting message's event
    happened. It goes when those messages are settled (:meth:`Deliveries.settled_in`:
    sent, failed and handed to the desk, or failing and retried later). Otherwise it
    waits, without a bound, while one of the resident's messages up to ``kind`` in the
    chain is being sent by a live worker (its lease held: renewed while the channel
    works, lapsed soon after its worker died), however slow the channel; and for
    ``grace_s`` after the event or the chain's last attempt, whichever is later, for a
    message not begun yet (its own event just came back from waiting for the one
    before it). A message whose sender died, or that never comes, holds it no longer.

    ``slot_waits``: the resident's messages deferred for want of a free slot on their
    channel (``{"kind", "at"}``, :meth:`Deliveries._put_off`; removed once attempted).
    Each time one comes back and is put off again counts as the chain's progress, as an
    attempt does: the message behind it keeps waiting while it does, and a slow
    gateway's backlog cannot let "dispatched" overtake "received".
    """
    mine = [r for r in records if r.get("audience", RESIDENT) == RESIDENT]
    if _settled([r for r in mine if r["kind"] == kind], count):
        return None
    chain = _chain_up_to(kind)
    for record in mine:
        if record["notification_id"] in live_leases and record["kind"] in chain \
                and record["status"] == QUEUED and not record["attempts"]:
            return f"{record['kind']} is being sent"
    attempts = [datetime.fromisoformat(r["last_attempt_at"]) for r in mine
                if r["kind"] in chain and r.get("last_attempt_at")]
    deferred = [datetime.fromisoformat(w["at"]) for w in slot_waits if w["kind"] in chain]
    progress = max([since, *attempts, *deferred])
    if (now - progress).total_seconds() < grace_s:
        if deferred and progress == max(deferred):
            return f"{kind} is not sent yet: a message before it waits for a free slot"
        return f"{kind} is not sent yet"
    return None


def _settled(of_kind: list[dict], count: int) -> bool:
    """Whether ``count`` of these messages (one kind, to one resident) are settled: see
    :meth:`Deliveries.settled`."""
    return (sum(r["status"] in FINAL for r in of_kind) >= count
            or any(r["status"] == QUEUED and r["attempts"] for r in of_kind))


def history_of(raw_records: dict[str, str]) -> list[dict]:
    """Delivery records (id -> JSON, from Redis or the archive), oldest first."""
    # By the moment, not its text: records stored before moments were spelled with Z
    # say +00:00, and the two spellings of one second do not sort as their moments.
    return sorted(_parsed(raw_records), key=lambda r: datetime.fromisoformat(r["created_at"]))


_RECORD_MOMENTS = ("created_at", "last_attempt_at", "sent_at")


def _parsed(raw_records: dict[str, str]) -> list[dict]:
    records = [loads(v) for v in raw_records.values()]
    for record in records:
        record.setdefault("audience", RESIDENT)  # recorded before supervisors were told
        for moment in _RECORD_MOMENTS:  # stored before moments were spelled with Z
            if record.get(moment):
                record[moment] = utc_text(record[moment])
    return records


def new_record(message: OutgoingMessage, audience: str, channel: str, now: str) -> dict:
    return {
        "notification_id": message.notification_id, "issue_id": message.issue_id,
        "kind": message.kind, "language": message.language, "text": message.text,
        "channel": channel, "audience": audience,
        "recipient": _as_recorded(message.recipient, audience),
        "status": QUEUED, "attempts": 0, "detail": "", "last_error": None,
        "created_at": now, "last_attempt_at": None, "sent_at": None,
    }


def attempted(record: dict, message: OutgoingMessage, ok: bool, channel: str, detail: str,
              note: str, now: str, max_attempts: int) -> dict:
    """The record after one attempt. Pure.

    Sent: ``detail`` is the channel's answer, or the note when it went to the desk
    instead of the resident's choice. Refused: ``last_error`` says why, and the record
    stays queued until the ``max_attempts``-th refusal marks it failed.
    """
    new = dict(record, attempts=record["attempts"] + 1, channel=channel, last_attempt_at=now,
               text=message.text_via(channel))
    if ok:
        new.update(status=SENT, sent_at=now, detail="; ".join(d for d in (note, detail) if d))
    elif new["attempts"] >= max_attempts:
        new.update(status=FAILED, last_error=detail or "failed", detail=detail or "failed")
    else:
        new.update(status=QUEUED, last_error=detail or "failed")
    return new


def retry_wait(record: dict, now: datetime, retry_delay_s: float) -> float:
    """How long a refused message must still wait before it is tried again, in seconds
    (0: it may go now). Pure.

    A refusal's backoff is the event's (``shared.messaging.backoff``, from
    ``retry_delay_s``, ``WHISTLE_RETRY_DELAY_MS``), counted from the refusal by the
    message's own attempts: the copy of the event that was refused comes back after at
    least that (its attempts count every refusal of this message it carried, and more),
    and any other copy (at-least-once delivery) must not come sooner."""
    if record["status"] != QUEUED or not record["attempts"] or not record.get("last_attempt_at"):
        return 0.0
    due = (datetime.fromisoformat(record["last_attempt_at"])
           + timedelta(seconds=backoff(retry_delay_s, record["attempts"])))
    return max(0.0, (due - now).total_seconds())


def relayed_by_desk(record: dict, message: OutgoingMessage) -> dict:
    """A failed record once its message is in the desk's outbox for staff to relay. Pure.

    It stays ``failed`` on the channel the resident chose (that channel never took it);
    its ``detail`` says the desk has it, so the desk knows to call or visit, and its
    ``text`` is the desk's copy, what the desk says to the resident. (The resident's own
    list shows it without the instruction to staff that ends a rating request's copy:
    ``shared.authz.notifications_view``.)"""
    return dict(record, detail=f"{record['detail']}; {SENT_TO_DESK}",
                text=message.text_via(DESK))


def _now() -> str:
    return utc_moment(datetime.now(UTC))


def _as_recorded(recipient: dict[str, str], audience: str) -> dict[str, str | None]:
    """A resident's contact is personal data: masked. A supervisor is an office: kept."""
    if audience == RESIDENT:
        return {"name": mask_name(recipient.get("name")),
                "phone": mask_phone(recipient.get("phone")),
                "email": mask_email(recipient.get("email"))}
    return dict(recipient)

"""Redis: the key scheme, the client provider, and the issue store.

Key scheme (``{p}`` is ``WHISTLE_KEY_PREFIX``, default ``whistle``)::

    {p}:issue:{id}                  string  IssueRecord as JSON (status, assignments, timeline)
    {p}:issue:{id}:contact          hash    resident's name and phone (personal data)
    {p}:issue:{id}:applied          set     event ids already applied to this issue
    {p}:issue:{id}:notes            hash    note id -> timeline entry (JSON): steps that change no state
    {p}:issue:{id}:notifications    hash    notification id -> delivery record (JSON)
    {p}:issues                      zset    every issue id, scored by received time
    {p}:idx:status:{status}         set     issue ids by status
    {p}:idx:community:{community}   set     issue ids by community
    {p}:idx:agency:{agency}         set     issue ids assigned to an agency
    {p}:idx:agency:{agency}:open    set     issue ids with that agency's part unresolved
    {p}:issue:{id}:journal          list    every event about the issue, in commit order (JSON)
    {p}:deadlines                   zset    "issue|agency|acknowledge|resolve" -> due time (epoch s)
    {p}:dedupe:{category}:{scope}   string  the open issue that owns a duplicate bucket (TTL)
    {p}:seq:{yyyymmdd}              string  daily counter behind WH-yyyymmdd-nnnn ids
    {p}:outbox:{service}            hash    message id -> envelope not yet confirmed by the broker
    {p}:desk:outbox                 list    messages for residents, read by the desk
    {p}:desk:pushed:{notification}  string  marks a message pushed to the desk (1 day)
    {p}:notify:lease:{notification} string  a notify worker is sending it (webhook, email; 30 s)

Every state change goes through :meth:`IssueStore.apply`: WATCH the issue,
skip if the event was already applied, run the pure domain function, then in
one MULTI write the new record, mark the event applied, update the indexes and
put the events that announce the change in the outbox and the journal. The
change and its announcement therefore commit together or not at all, and a
redelivered event changes nothing (at-least-once delivery made effectively-once).

Indexes are updated by difference: an apply writes only the index entries that
its change moved. Steps that change nothing but the story (an agency received
its assignment, a resident was told) are *notes*: one idempotent write each,
beside the record, merged into the timeline when the issue is read
(:meth:`IssueStore.get_with_notes`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from nameko.extensions import DependencyProvider

from shared import config as cfg
from shared.contracts import AssignmentStatus, IssueFilter
from shared.errors import NotFound, Unavailable
from shared.issue import IssueRecord, TimelineEntry, pending_deadlines

ISSUE_ID = re.compile(r"WH-\d{8}-\d{4,}")

# Redis outages surface as these; callers turn them into 503 / a retried message.
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
                redis.exceptions.ReadOnlyError)


def connect(url: str) -> redis.Redis:
    """A client that fails fast on an outage instead of hanging the eventlet hub."""
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                socket_connect_timeout=3, health_check_interval=15)


class Keys:
    """The key scheme above, in one place."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def issue(self, issue_id: str) -> str:
        return f"{self.prefix}:issue:{issue_id}"

    def contact(self, issue_id: str) -> str:
        return f"{self.prefix}:issue:{issue_id}:contact"

    def applied(self, issue_id: str) -> str:
        return f"{self.prefix}:issue:{issue_id}:applied"

    def notes(self, issue_id: str) -> str:
        return f"{self.prefix}:issue:{issue_id}:notes"

    def notifications(self, issue_id: str) -> str:
        return f"{self.prefix}:issue:{issue_id}:notifications"

    @property
    def all_issues(self) -> str:
        return f"{self.prefix}:issues"

    def by_status(self, status: str) -> str:
        return f"{self.prefix}:idx:status:{status}"

    def by_community(self, community: str) -> str:
        return f"{self.prefix}:idx:community:{community}"

    def by_agency(self, agency: str) -> str:
        return f"{self.prefix}:idx:agency:{agency}"

    def open_for_agency(self, agency: str) -> str:
        return f"{self.prefix}:idx:agency:{agency}:open"

    def journal(self, issue_id: str) -> str:
        return f"{self.prefix}:issue:{issue_id}:journal"

    @property
    def deadlines(self) -> str:
        return f"{self.prefix}:deadlines"

    def dedupe(self, category: str, scope: str) -> str:
        return f"{self.prefix}:dedupe:{category}:{scope}"

    def sequence(self, day: str) -> str:
        return f"{self.prefix}:seq:{day}"

    def outbox(self, service: str) -> str:
        return f"{self.prefix}:outbox:{service}"

    @property
    def desk_outbox(self) -> str:
        return f"{self.prefix}:desk:outbox"


@dataclass
class Applied:
    """Result of :meth:`IssueStore.apply`."""

    record: IssueRecord
    changed: bool
    outbox: dict[str, str] = field(default_factory=dict)


Change = Callable[[IssueRecord], tuple[IssueRecord, dict[str, str]]]


class IssueStore:
    """Issue records in Redis, changed only through atomic, idempotent applies."""

    MAX_CONFLICT_RETRIES = 50

    def __init__(self, client: redis.Redis, prefix: str):
        self.redis = client
        self.keys = Keys(prefix)
        # Registered once: a Script object hashes its source and runs by EVALSHA.
        self._claim_script = client.register_script(self._CLAIM)
        self._note_script = client.register_script(self._NOTE)
        self._read_script = client.register_script(self._READ)

    # ------------------------------------------------------------------ reads

    def get(self, issue_id: str) -> IssueRecord:
        self._check_id(issue_id)
        return self._parse(issue_id, self._call(self.redis.get, self.keys.issue(issue_id)))

    def get_with_notes(self, issue_id: str) -> IssueRecord:
        """The record with its notes merged into the timeline, in time order: what
        people read. State changes never need the notes, so :meth:`get` skips them."""
        record, raws = self._get_with(issue_id, lambda pipe: pipe.hvals(
            self.keys.notes(issue_id)))
        if raws:
            notes = [TimelineEntry.model_validate_json(raw) for raw in raws]
            # sorted() is stable: a note at the same instant as a step comes after it.
            record.timeline = sorted([*record.timeline, *notes], key=lambda e: e.at)
        return record

    def get_with_contact(self, issue_id: str) -> tuple[IssueRecord, dict[str, str]]:
        """The record and the resident's contact, in one round trip."""
        return self._get_with(issue_id, lambda pipe: pipe.hgetall(self.keys.contact(issue_id)))

    def _get_with(self, issue_id: str, also: Callable[[Any], Any]) -> tuple[IssueRecord, Any]:
        """The record and one more read (``also`` queues it on a pipeline), in one round trip."""
        self._check_id(issue_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.issue(issue_id))
        also(pipe)
        raw, other = self._call(pipe.execute)
        return self._parse(issue_id, raw), other

    @staticmethod
    def _check_id(issue_id: str) -> None:
        if not isinstance(issue_id, str) or not ISSUE_ID.fullmatch(issue_id):
            # Never echo a malformed id: callers paste all sorts of things in there.
            raise NotFound("no such issue (issue ids look like WH-20261121-0001)")

    @staticmethod
    def _parse(issue_id: str, raw: str | None) -> IssueRecord:
        if raw is None:
            raise NotFound(f"no issue {issue_id}")
        return IssueRecord.model_validate_json(raw)

    def contact(self, issue_id: str) -> dict[str, str]:
        return self._call(self.redis.hgetall, self.keys.contact(issue_id))

    def find(self, query: IssueFilter) -> list[IssueRecord]:
        sets = []
        if query.status:
            sets.append(self.keys.by_status(query.status.value))
        if query.agency:
            sets.append(self.keys.by_agency(query.agency))
        if query.community:
            sets.append(self.keys.by_community(query.community))
        if sets:
            ids = sorted(self._call(self.redis.sinter, sets), reverse=True)[: query.limit]
        else:
            ids = self._call(self.redis.zrevrange, self.keys.all_issues, 0, query.limit - 1)
        return self._load_many(ids)

    def open_for_agency(self, agency: str) -> list[IssueRecord]:
        ids = sorted(self._call(self.redis.smembers, self.keys.open_for_agency(agency)))
        return self._load_many(ids)

    def _load_many(self, ids: list[str]) -> list[IssueRecord]:
        if not ids:
            return []
        raws = self._call(self.redis.mget, [self.keys.issue(i) for i in ids])
        return [IssueRecord.model_validate_json(raw) for raw in raws if raw]

    # ----------------------------------------------------------------- writes

    def next_issue_id(self, day: str) -> str:
        """``WH-20261121-0007``: stable, human-readable, unique per day."""
        key = self.keys.sequence(day)
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, 3 * 24 * 3600)
        number, _ = self._call(pipe.execute)
        return f"WH-{day}-{number:04d}"

    def create(self, record: IssueRecord, contact: dict[str, str], service: str,
               outbox: dict[str, str]) -> None:
        """Store a new issue, its contact, indexes and announcing events, all at once."""
        keys = self.keys
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.issue(record.issue_id), record.model_dump_json())
        if contact:
            pipe.hset(keys.contact(record.issue_id), mapping=contact)
        pipe.zadd(keys.all_issues, {record.issue_id: record.received_at.timestamp()})
        self._index(pipe, None, record)
        self._announce(pipe, service, outbox)
        self._call(pipe.execute)

    def apply(self, issue_id: str, event_id: str | None, change: Change,
              service: str) -> Applied:
        """Atomically apply ``change`` to an issue, once per ``event_id``.

        ``change`` is a pure function from the current record to the new record
        and the outbox entries announcing it. It may raise a domain error, which
        propagates and leaves Redis untouched.
        """
        keys = self.keys
        for _ in range(self.MAX_CONFLICT_RETRIES):
            try:
                with self.redis.pipeline(transaction=True) as pipe:
                    pipe.watch(keys.issue(issue_id), keys.applied(issue_id))
                    raw, seen = self._read_watched(pipe, issue_id, event_id or "")
                    if raw is None:
                        raise NotFound(f"no issue {issue_id}")
                    current = IssueRecord.model_validate_json(raw)
                    if event_id and seen:
                        return Applied(current, changed=False)
                    new, outbox = change(current)
                    pipe.multi()
                    pipe.set(keys.issue(issue_id), new.model_dump_json())
                    if event_id:
                        pipe.sadd(keys.applied(issue_id), event_id)
                    self._index(pipe, current, new)
                    self._announce(pipe, service, outbox)
                    pipe.execute()
                    return Applied(new, changed=True, outbox=outbox)
            except redis.WatchError:
                continue
            except REDIS_ERRORS as exc:
                raise Unavailable(f"issue store unavailable: {type(exc).__name__}") from exc
        raise Unavailable(f"issue {issue_id} is changing too fast; try again")

    # The record and whether the event was applied, in one round trip.
    _READ = """
    return {redis.call('GET', KEYS[1]), redis.call('SISMEMBER', KEYS[2], ARGV[1])}
    """

    def _read_watched(self, pipe: Any, issue_id: str, event_id: str) -> tuple[str | None, bool]:
        # On the WATCHing connection (a pipeline in immediate mode), so a change made
        # after this read still fails the EXEC.
        keys = (self.keys.issue(issue_id), self.keys.applied(issue_id))
        try:
            raw, seen = pipe.evalsha(self._read_script.sha, 2, *keys, event_id)
        except redis.exceptions.NoScriptError:  # Redis restarted since: send the source
            raw, seen = pipe.eval(self._READ, 2, *keys, event_id)
        return raw, bool(seen)

    def _index(self, pipe: Any, old: IssueRecord | None, new: IssueRecord) -> None:
        """Write the index entries the change moved, and only those."""
        issue_id = new.issue_id
        before = self.index_sets(old) if old is not None else set()
        after = self.index_sets(new)
        for key in sorted(before - after):
            pipe.srem(key, issue_id)
        for key in sorted(after - before):
            pipe.sadd(key, issue_id)
        # The deadline watch is derived from state, so it can never disagree with it.
        was = {d.member: d.due.timestamp() for d in pending_deadlines(old)} if old else {}
        watched = {d.member: d.due.timestamp() for d in pending_deadlines(new)}
        stale = was.keys() - watched.keys()
        if stale:
            pipe.zrem(self.keys.deadlines, *sorted(stale))
        moved = {member: due for member, due in watched.items() if was.get(member) != due}
        if moved:
            pipe.zadd(self.keys.deadlines, moved)

    def index_sets(self, record: IssueRecord) -> set[str]:
        """The index sets the record belongs in (see the key scheme). Pure."""
        keys = self.keys
        sets = {keys.by_status(record.status.value), keys.by_community(record.location.community)}
        for assignment in record.assignments:
            sets.add(keys.by_agency(assignment.agency))
            if assignment.status is not AssignmentStatus.resolved:
                sets.add(keys.open_for_agency(assignment.agency))
        return sets

    def _announce(self, pipe: Any, service: str, outbox: dict[str, str]) -> None:
        """Queue the announcing events in the outbox and append them to their journals,
        inside the caller's MULTI: an event is journaled exactly when it is committed."""
        if not outbox:
            return
        pipe.hset(self.keys.outbox(service), mapping=outbox)
        for raw in outbox.values():
            entry = journal_entry(json.loads(raw))
            pipe.rpush(self.keys.journal(entry["issue_id"]), dumps(entry))

    # ------------------------------------------------------------------ notes

    # A note is written once per id, and only for an issue that exists.
    _NOTE = """
    if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
    return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
    """

    def add_note(self, issue_id: str, note_id: str, entry: TimelineEntry) -> bool:
        """Put a step that changes no state on the issue's timeline, once per ``note_id``.

        One round trip, instead of a whole optimistic apply for one line. Returns
        whether it was new; raises ``NotFound`` for an unknown issue.
        """
        written = self._call(self._note_script, [self.keys.issue(issue_id),
                                                 self.keys.notes(issue_id)],
                             [note_id, entry.model_dump_json()])
        if written == -1:
            raise NotFound(f"no issue {issue_id}")
        return bool(written)

    # ---------------------------------------------------------------- journal

    def journal(self, issue_id: str) -> list[dict[str, Any]]:
        return self.journals([issue_id])[0]

    def journals(self, issue_ids: list[str]) -> list[list[dict[str, Any]]]:
        """Several issues' journals, in the order asked, in one round trip (a pipeline)."""
        if not issue_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for issue_id in issue_ids:
            pipe.lrange(self.keys.journal(issue_id), 0, -1)
        return [[json.loads(raw) for raw in raws] for raws in self._call(pipe.execute)]

    def issue_ids_received(self, start: datetime, end: datetime) -> list[str]:
        """Ids of the issues received in ``[start, end]``, oldest first (``{p}:issues``)."""
        return self._call(self.redis.zrangebyscore, self.keys.all_issues,
                          start.timestamp(), end.timestamp())

    # ----------------------------------------------------------------- merging

    # The first claimant owns every bucket; later claimants learn the owner. One
    # script, so two simultaneous identical reports can never both win. ARGV[3] is
    # an owner to replace (a closed issue): two reports taking over from it at
    # once cannot both win either.
    _CLAIM = """
    for _, key in ipairs(KEYS) do
        local owner = redis.call('GET', key)
        if owner and owner ~= ARGV[1] and owner ~= ARGV[3] then return owner end
    end
    for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'EX', ARGV[2]) end
    return ARGV[1]
    """

    def claim_buckets(self, bucket_keys: list[str], issue_id: str, ttl_s: int,
                      replacing: str | None = None) -> str:
        """Who owns these duplicate buckets: ``issue_id`` if it just claimed them.

        ``replacing``: an owner that no longer counts (its issue is closed); the
        buckets are taken over from it, unless someone else already did.
        """
        return self._call(self._claim_script, bucket_keys, [issue_id, ttl_s, replacing or ""])

    # -------------------------------------------------------------- deadlines

    def due_deadlines(self, now_ts: float, limit: int = 100) -> list[tuple[str, float]]:
        return self._call(lambda: self.redis.zrangebyscore(
            self.keys.deadlines, "-inf", now_ts, start=0, num=limit, withscores=True))

    # ----------------------------------------------------------------- outbox

    def outbox_entries(self, service: str) -> dict[str, str]:
        return self._call(self.redis.hgetall, self.keys.outbox(service))

    def outbox_done(self, service: str, message_ids: Iterable[str]) -> None:
        ids = list(message_ids)
        if ids:
            self._call(self.redis.hdel, self.keys.outbox(service), *ids)

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except REDIS_ERRORS as exc:
            raise Unavailable(f"issue store unavailable: {type(exc).__name__}") from exc


class RedisProvider(DependencyProvider):
    """Builds one Redis client per container in ``setup()``; workers share it.

    redis-py's connection pool is safe to share between eventlet green threads.

    Usage::

        class IntakeService:
            name = "intake"
            store = Store()

            @rpc
            def get_issue(self, issue_id):
                return self.store.get(issue_id)
    """

    def setup(self):
        config = self.container.config
        self.client = connect(cfg.get(config, cfg.REDIS_URL))
        self.prefix = cfg.get(config, cfg.KEY_PREFIX)

    def stop(self):
        self.client.close()

    def kill(self):
        with contextlib.suppress(Exception):  # kill() must not raise
            self.client.close()


class Store(RedisProvider):
    """Injects an :class:`IssueStore`."""

    def setup(self):
        super().setup()
        self.store = IssueStore(self.client, self.prefix)

    def get_dependency(self, worker_ctx):
        return self.store


def day_of(moment: datetime, tz: str) -> str:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(tz)).strftime("%Y%m%d")


def journal_entry(envelope: dict[str, Any]) -> dict[str, Any]:
    """An outbox envelope (``shared.messaging.envelope``) as its journal entry: the
    event, its type, the call id of the worker that produced it, and when."""
    stack = envelope["headers"].get("nameko.call_id_stack") or [None]
    return {"event_type": envelope["routing_key"], **envelope["body"], "call_id": stack[-1],
            "recorded_at": datetime.fromtimestamp(envelope["staged_at"], UTC).isoformat()}


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

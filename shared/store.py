"""Redis: the key scheme, the client provider, and the issue store.

Key scheme (``{p}`` is ``WHISTLE_KEY_PREFIX``, default ``whistle``)::

    {p}:issue:{id}                  string  IssueRecord as JSON (status, assignments, timeline)
    {p}:issue:{id}:contact          hash    resident's name and phone (personal data)
    {p}:issue:{id}:applied          set     event ids already applied to this issue
    {p}:issue:{id}:notes            hash    note id -> timeline entry (JSON): steps that change no state
    {p}:issue:{id}:notifications    hash    notification id -> delivery record (JSON)
    {p}:issues                      zset    every issue id, scored by received time
    {p}:idx:status:{status}         set     issue ids by status
    {p}:idx:community:{folded}      set     issue ids by community, its name folded (shared.folding)
    {p}:idx:agency:{agency}         set     issue ids assigned to an agency
    {p}:idx:agency:{agency}:open    set     issue ids with that agency's part unresolved
    {p}:idx:agency:{agency}:withdrawn set   issue ids a reroute took from that agency (no part now)
    {p}:idx:triage                  set     issue ids the desk must still triage (held or flagged)
    {p}:issue:{id}:journal          list    every event about the issue, in commit order (JSON)
    {p}:deadlines                   zset    "issue|agency|acknowledge|resolve" -> due time (epoch s)
    {p}:dedupe:{category}:{scope}   string  the open issue that owns a duplicate bucket (TTL)
    {p}:seq:{yyyymmdd}              string  daily counter behind WH-yyyymmdd-nnnn ids
    {p}:outbox:{service}            hash    message id -> envelope not yet confirmed by the broker
    {p}:desk:outbox                 list    messages the desk still has to relay, newest first
    {p}:desk:relayed                hash    notification id -> its relay (who, when; JSON)
    {p}:desk:relayed:at             zset    notification id -> when it was relayed (epoch s)
    {p}:desk:pushed:{notification}  string  marks a message pushed to the desk (1 day)
    {p}:notify:lease:{notification} string  a notify worker is sending it (webhook, email; 10 s, renewed while it sends)
    {p}:notify:slot-waits:{id}      hash    notification id -> its kind and when last put off for a slot (JSON; 10 min)
    {p}:notify:event-slot-waits:{event} hash notification id put off for a slot -> its issue id (10 min)
    {p}:idx:closed                  zset    closed issue ids, scored by closed_at (epoch s)
    {p}:archive:lease:{id}          string  an archiver is moving the issue to PostgreSQL (60 s)
    {p}:rl:resend:{id}              string  a rating link was resent for the report (cooldown, TTL)
    {p}:upgrades                    set     the key migrations done (:meth:`IssueStore.fold_community_index`, ``fill_withdrawn_index``)

Issues closed for ``WHISTLE_HOT_RETENTION`` leave Redis for PostgreSQL
(``shared.archiver``). The reads below then fall back to the archive
(``IssueStore.archive``), so callers get the same answer for an archived issue as for
a hot one.

Every state change goes through :meth:`IssueStore.apply`: read the issue and
whether the event was already applied, run the pure domain function, then in one
script (:class:`Writes`, compare-and-set) check that the record is still the one
read and the event still unapplied, write the new record, mark the event applied,
update the indexes and put the events that announce the change in the outbox and
the journal. The change and its announcement therefore commit together or not at
all, a change that raced another is recomputed on the fresh record, and a
redelivered event changes nothing (at-least-once delivery made effectively-once).

Indexes are updated by difference: an apply writes only the index entries that
its change moved. Steps that change nothing but the story (an agency received
its assignment, a resident was told) are *notes*: one idempotent write each,
beside the record, merged into the timeline when the issue is read
(:meth:`IssueStore.get_with_notes`).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

import redis
from nameko.extensions import DependencyProvider
from pydantic import BaseModel
from redis.client import NEVER_DECODE
from redis.commands.core import Script

from shared import config as cfg
from shared import round_trips
from shared.contracts import (
    ISSUE_ID,
    AssignmentStatus,
    IssueFilter,
    IssueStatus,
    decode_cursor,
    encode_cursor,
)
from shared.errors import InvalidTransition, NotFound, Unavailable
from shared.folding import folded
from shared.issue import (
    IssueRecord,
    TimelineEntry,
    list_entry,
    merged_group,
    watched_deadlines,
)
from shared.jsoncodec import dumps, loads, utc_moment, utc_text
from shared.redis_pool import lean_client

SEQUENCE_TTL_S = 3 * 24 * 3600  # a day's id counter outlives its day (time zones)
COMMITTED = 1  # what the commit script answers when it wrote
# {p}:upgrades' member once the community index is keyed by folded names.
COMMUNITY_INDEX_FOLDED = "community-index-folded"
WITHDRAWN_INDEX_FILLED = "withdrawn-index-filled"
# {p}:upgrades' member once the desk's outbox holds only messages still to relay.
DESK_OUTBOX_PENDING_ONLY = "desk-outbox-pending-only"
RELAYED_KEPT_S = 7 * 24 * 3600
"""How long a relay is remembered at most (its issue's archive forgets it sooner): long
enough that the desk's second press of 已转告, or a page sent again, gets the first
relay's answer; the delivery record keeps the relay for good."""
RELAYED_PRUNED_A_MARK = 100
"""Relays past ``RELAYED_KEPT_S`` forgotten by each new relay, at most: a bounded step."""
Model = TypeVar("Model", bound=BaseModel)


# Redis outages surface as these; callers turn them into 503 / a retried message.
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
                redis.exceptions.ReadOnlyError)


def connect(url: str, share_round_trips: bool = False) -> redis.Redis:
    """A client that fails fast on an outage instead of hanging the eventlet hub.

    Its pool skips redis-py's per-command lock and socket check for a connection used
    moments ago (``shared.redis_pool``). ``share_round_trips``: a service's client, whose
    scripts (:func:`run_script`) from workers waiting at the same moment share round
    trips (``shared.round_trips``)."""
    def new_client() -> redis.Redis:
        return lean_client(url, decode_responses=True, socket_timeout=5,
                           socket_connect_timeout=3, health_check_interval=15)

    client = new_client()
    if share_round_trips:
        round_trips.share_round_trips(client, url, new_client)
    return client


def run_script(script: Script, keys: Sequence[Any], args: Sequence[Any] = (),
               **options: Any) -> Any:
    """``script(keys=keys, args=args)``: EVALSHA, and on NOSCRIPT (Redis restarted, its
    scripts gone) SCRIPT LOAD and EVALSHA again, as redis-py's ``Script.__call__`` does.
    ``options`` go to ``execute_command`` (``NEVER_DECODE``: the reply as bytes).

    Without its per-call work for a client that may be a pipeline (an import, an
    ``isinstance``, the keys and args copied twice, two more calls down to
    ``execute_command``): a few thousand instructions a call, and a submission makes
    three (the door's, the day's counter, the create)."""
    client = script.registered_client
    try:
        return round_trips.execute(client, "EVALSHA", script.sha, len(keys), *keys, *args,
                                   **options)
    except redis.exceptions.NoScriptError:
        client.script_load(script.script)  # the same text: the same sha
        return round_trips.execute(client, "EVALSHA", script.sha, len(keys), *keys, *args,
                                   **options)


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

    @property
    def closed(self) -> str:
        return f"{self.prefix}:idx:closed"

    def resend_cooldown(self, issue_id: str) -> str:
        return f"{self.prefix}:rl:resend:{issue_id}"

    def archive_lease(self, issue_id: str) -> str:
        return f"{self.prefix}:archive:lease:{issue_id}"

    def by_status(self, status: str) -> str:
        return f"{self.prefix}:idx:status:{status}"

    def by_community(self, community: str) -> str:
        """The index of ``community`` however it is written: 缤泰社區 and 缤泰社区 are one
        set, as a desk token's communities compare (``shared.authz.in_communities``)."""
        return f"{self.prefix}:idx:community:{folded(community)}"

    @property
    def upgrades(self) -> str:
        return f"{self.prefix}:upgrades"

    def by_agency(self, agency: str) -> str:
        return f"{self.prefix}:idx:agency:{agency}"

    def open_for_agency(self, agency: str) -> str:
        return f"{self.prefix}:idx:agency:{agency}:open"

    def withdrawn_from_agency(self, agency: str) -> str:
        return f"{self.prefix}:idx:agency:{agency}:withdrawn"

    @property
    def triage(self) -> str:
        return f"{self.prefix}:idx:triage"

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

    @property
    def desk_relayed(self) -> str:
        """Hash: notification id -> who relayed it from the desk's outbox, when (JSON)."""
        return f"{self.prefix}:desk:relayed"

    @property
    def desk_relayed_at(self) -> str:
        """Zset: notification id -> when it was relayed (epoch s), to forget old relays."""
        return f"{self.prefix}:desk:relayed:at"


class Writes:
    """Writes to commit in one script call (``IssueStore._COMMIT``), atomically.

    Its methods mirror redis-py's for the commands the store writes with. One
    script call is one round trip and one reply, where a WATCH/MULTI/EXEC costs
    three round trips and a reply per queued command: the apply on every event's
    path was the busiest code in routing's profile.
    """

    def __init__(self, *fixed_keys: str):
        self.keys: list[str] = list(fixed_keys)
        self._index: dict[str, int] = {k: n for n, k in enumerate(self.keys, 1)}
        self.args: list[Any] = []

    def _add(self, command: str, key: str, *args: Any) -> None:
        index = self._index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._index[key] = len(self.keys)
        # Each write travels as: how many arguments, the command, its key's index in
        # KEYS (scripts must name the keys they touch), the arguments.
        self.args += [len(args), command, index, *args]

    def set(self, key: str, value: str) -> None:
        self._add("SET", key, value)

    def sadd(self, key: str, *members: str) -> None:
        self._add("SADD", key, *members)

    def srem(self, key: str, *members: str) -> None:
        self._add("SREM", key, *members)

    def zadd(self, key: str, mapping: dict[str, float]) -> None:
        self._add("ZADD", key, *(x for member, score in mapping.items()
                                 for x in (repr(float(score)), member)))

    def zrem(self, key: str, *members: str) -> None:
        self._add("ZREM", key, *members)

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        self._add("HSET", key, *(x for pair in mapping.items() for x in pair))

    def rpush(self, key: str, *values: str) -> None:
        self._add("RPUSH", key, *values)

    def xadd(self, entry: StreamEntry) -> None:
        self._add("XADD", entry.stream, "MAXLEN", "~", entry.maxlen, "*",
                  *(x for pair in entry.fields.items() for x in pair))


class StreamEntry(NamedTuple):
    """An entry for a capped stream, written with a store write (the audit log's)."""

    stream: str
    fields: dict[str, str]
    maxlen: int


class Read(NamedTuple):
    """An issue's record as stored (None: no such issue), and whether the event being
    applied was applied already."""

    raw: str | None
    seen: bool


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

    def __init__(self, client: redis.Redis, prefix: str, archive: Any = None):
        self.redis = client
        self.keys = Keys(prefix)
        # shared.archive.Archive: where issues no longer in Redis are read from (None:
        # nowhere, as in the tests of Redis alone).
        self.archive = archive
        # Registered once: a Script object hashes its source and runs by EVALSHA.
        self._claim_script = client.register_script(self._CLAIM)
        self._move_script = client.register_script(self._MOVE)
        self._notes_script = client.register_script(self._NOTES)
        self._read_script = client.register_script(self._READ)
        self._commit_script = client.register_script(self._COMMIT)
        self._resync_script = client.register_script(self._RESYNC)
        self._next_script = client.register_script(self._NEXT)

    # ------------------------------------------------------------------ reads

    def get(self, issue_id: str) -> IssueRecord:
        self._check_id(issue_id)
        raw = self._call(self.redis.get, self.keys.issue(issue_id))
        if raw is None and self.archive is not None:
            return self.archive.record(issue_id)
        return self._parse(issue_id, raw)

    def get_with_notes(self, issue_id: str) -> IssueRecord:
        """The record with its notes merged into the timeline, in time order: what
        people read. State changes never need the notes, so :meth:`get` skips them."""
        self._check_id(issue_id)  # before the archive: it was asked 7, NUL bytes, phones
        try:
            record, (raws,) = self.get_with(issue_id, lambda pipe: pipe.hvals(
                self.keys.notes(issue_id)))
        except NotFound:
            if self.archive is None:
                raise
            return self.archive.record(issue_id, with_notes=True)
        if raws:
            notes = [TimelineEntry.model_validate_json(raw) for raw in raws]
            # sorted() is stable: a note at the same instant as a step comes after it.
            record.timeline = sorted([*record.timeline, *notes], key=lambda e: e.at)
        return record

    def get_with_contact_and_notifications(self, issue_id: str
                                           ) -> tuple[IssueRecord, dict[str, str], dict[str, str]]:
        """The record, the contact and the resident's delivery records (id -> JSON, as
        notify keeps them), in one round trip: all notify reads before telling them."""
        return self.view_with_contact_and_notifications(issue_id, IssueRecord)

    # Its reply is read undecoded: the record's JSON (some 3 KB) goes to pydantic as
    # Redis sent it, instead of being decoded into a str that pydantic encodes again.
    _RECORD_CONTACT_NOTIFICATIONS = """
    return {redis.call('GET', KEYS[1]), redis.call('HGETALL', KEYS[2]),
            redis.call('HGETALL', KEYS[3])}
    """

    @cached_property
    def _record_contact_notifications(self) -> Script:
        return self.redis.register_script(self._RECORD_CONTACT_NOTIFICATIONS)

    def view_with_contact_and_notifications(self, issue_id: str, view: type[Model]
                                            ) -> tuple[Model, dict[str, str], dict[str, str]]:
        """:meth:`get_with_contact_and_notifications`, the record read as ``view``: a
        model of only the record's fields the caller uses (``extra="ignore"``), so the
        others are never made into Python objects. Notify's reads took a quarter of its
        CPU with the whole ``IssueRecord``; one script call instead of a pipeline of
        three commands is cheaper too."""
        self._check_id(issue_id)
        script = self._record_contact_notifications
        keys = (self.keys.issue(issue_id), self.keys.contact(issue_id),
                self.keys.notifications(issue_id))
        raw, contact, notifications = self._call(run_script, script, keys,
                                                 **{NEVER_DECODE: True})
        if raw is None:
            raise NotFound(f"no issue {issue_id}")
        return view.model_validate_json(raw), _decoded_hash(contact), _decoded_hash(notifications)

    def get_with(self, issue_id: str, *reads: Callable[[Any], Any]) -> tuple[IssueRecord, list]:
        """The record and more reads (each queues one on a pipeline), in one round trip."""
        self._check_id(issue_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.issue(issue_id))
        for read in reads:
            read(pipe)
        raw, *others = self._call(pipe.execute)
        return self._parse(issue_id, raw), others

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
        contact = self._call(self.redis.hgetall, self.keys.contact(issue_id))
        if not contact and self._archived(issue_id):
            return self.archive.contact(issue_id)
        return contact

    def _archived(self, issue_id: str) -> bool:
        """Gone from Redis and in the archive (only asked when Redis had nothing)."""
        return (self.archive is not None
                and not self._call(self.redis.exists, self.keys.issue(issue_id))
                and self.archive.has(issue_id))

    def notifications(self, issue_id: str) -> dict[str, str]:
        """The issue's delivery records (id -> JSON, as notify keeps them), from the
        archive once the issue has left Redis."""
        records = self._call(self.redis.hgetall, self.keys.notifications(issue_id))
        if not records and self._archived(issue_id):
            return self.archive.notifications(issue_id)
        return records

    def _filter_sets(self, query: IssueFilter) -> list[str]:
        """The index sets whose intersection is the filter's hot issues."""
        sets = []
        if query.status:
            sets.append(self.keys.by_status(query.status.value))
        if query.agency:
            sets.append(self.keys.by_agency(query.agency))
        if query.triage:
            sets.append(self.keys.triage)
        if query.community:
            sets.append(self.keys.by_community(query.community))
        return sets

    def get_many(self, issue_ids: list[str]) -> list[IssueRecord]:
        """Several issues in one round trip, in the order asked; unknown ids left out.
        Those no longer in Redis come from the archive (one query)."""
        ids = [i for i in issue_ids if ISSUE_ID.fullmatch(i)]
        hot = {r.issue_id: r for r in self._load_many(ids)}
        missing = [i for i in ids if i not in hot]
        if missing and self.archive is not None:
            hot.update(self.archive.records(missing))
        return [hot[i] for i in ids if i in hot]

    def contacts(self, issue_ids: list[str]) -> dict[str, dict[str, str]]:
        """Several issues' contacts (issue id -> contact, ``{}`` when none), archived or not."""
        if not issue_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for issue_id in issue_ids:
            pipe.hgetall(self.keys.contact(issue_id))
        found = dict(zip(issue_ids, self._call(pipe.execute), strict=True))
        empty = [i for i, contact in found.items() if not contact]
        if empty and self.archive is not None:
            found.update(self.archive.contacts(empty))
        return found

    def merged_groups(self, issue_ids: list[str]) -> dict[str, set[str]]:
        """Each issue's merged group (``shared.issue.merged_group``), by issue id: the
        records, then the issues they were folded into, two round trips. An issue not
        found is a group of one."""
        records = self.get_many(issue_ids)
        parents = {r.issue_id: r for r in self.get_many(
            sorted({r.merged_into for r in records if r.merged_into}))}
        groups = {i: {i} for i in issue_ids}
        for r in records:
            groups[r.issue_id] = merged_group(r, parents.get(r.merged_into or ""))
        return groups

    def residents_names(self, records: Sequence[IssueRecord]) -> dict[str, list[str | None]]:
        """Each record's resident's name and those of the neighbours merged into it (issue id
        -> names), read together: what agencies' views mask in staff notes and table tasks
        (``shared.authz.mask_assignment_notes``, ``mask_task_notes``)."""
        reporters = {r.issue_id: [r.issue_id, *r.reporters] for r in records}
        contacts = self.contacts(list(dict.fromkeys(i for ids in reporters.values() for i in ids)))
        return {issue_id: [(contacts.get(i) or {}).get("name") for i in ids]
                for issue_id, ids in reporters.items()}

    def page(self, queries: list[IssueFilter], limit: int,
             keep: Callable[[IssueRecord], bool] | None = None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``GET /issues`` across Redis and the archive, newest first: the
        list entries (``shared.issue.list_entry``) of the issues any of ``queries``
        matches (scopes: one per community, say; their cursor is the same), and the
        cursor of the next page (None on the last). Keyset-paginated on (received_at,
        issue_id), so a page costs the same however deep it is, and issues arriving
        meanwhile shift nothing. ``keep``: a last check on each record of the page (an
        entry it refuses is left out; the cursor still moves past it)."""
        cursor_text = queries[0].cursor if queries else None
        before = decode_cursor(cursor_text) if cursor_text else None
        want = limit + 1
        records: dict[str, IssueRecord] = {}
        entries: dict[str, dict[str, Any]] = {}
        for query in queries:
            for record in self._load_many(self._hot_page_ids(query, before, want)):
                records[record.issue_id] = record
                entries[record.issue_id] = list_entry(record)
            if self.archive is not None:
                for e in self.archive.summaries(
                        query.status.value if query.status else None, query.agency,
                        query.community, before, want):
                    # Redis first: an issue being archived is in both for a moment.
                    entries.setdefault(e["issue_id"], dict(
                        e, received_at=utc_moment(e["received_at"]),
                        updated_at=utc_moment(e["updated_at"])))
        ordered = sorted(entries.values(), key=lambda e: (
            datetime.fromisoformat(e["received_at"]), e["issue_id"]), reverse=True)
        page = ordered[:limit]
        cursor = (encode_cursor(datetime.fromisoformat(page[-1]["received_at"]),
                                page[-1]["issue_id"]) if len(ordered) > limit else None)
        if keep is not None:
            cold = [e["issue_id"] for e in page if e["issue_id"] not in records]
            if cold and self.archive is not None:
                records.update(self.archive.records(cold))
            page = [e for e in page if e["issue_id"] in records and keep(records[e["issue_id"]])]
        return page, cursor

    def _hot_page_ids(self, query: IssueFilter, before: tuple[datetime, str] | None,
                      want: int) -> list[str]:
        """Ids of the hot issues on the page: up to ``want`` after ``before``."""
        sets = self._filter_sets(query)
        top = before[0].timestamp() if before else float("inf")
        if sets:
            ids = list(self._call(self.redis.sinter, sets))
            scores = self._call(self.redis.zmscore, self.keys.all_issues, ids) if ids else []
            scored = [(s, i) for i, s in zip(ids, scores, strict=True) if s is not None]
        else:
            # Enough to cover issues received at the very instant of the cursor.
            scored = [(s, i) for i, s in self._call(
                self.redis.zrevrangebyscore, self.keys.all_issues, top, "-inf", start=0,
                num=want + 16, withscores=True)]
        if before:
            scored = [(s, i) for s, i in scored if (s, i) < (top, before[1])]
        return [i for _, i in sorted(scored, reverse=True)[:want]]

    def only_in_communities(self, issue_ids: list[str], communities: Iterable[str]) -> list[str]:
        """``issue_ids`` (order kept) that belong to one of ``communities`` (the index)."""
        keys = [self.keys.by_community(c) for c in communities]
        members = set(self._call(self.redis.sunion, keys)) if keys else set()
        return [i for i in issue_ids if i in members]

    # ---------------------------------------------------------------- upgrades

    # One community's index set as an earlier release keyed it (the name as written),
    # merged into the set of its folded name and removed, in one step, so an issue is in
    # one of the two at every moment. KEYS: that set, the folded one. Returns its size.
    _MERGE_INTO_FOLDED = """
    local ids = redis.call('SCARD', KEYS[1])
    if ids > 0 then redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1]) end
    redis.call('DEL', KEYS[1])
    return ids
    """

    @cached_property
    def _merge_into_folded(self) -> Script:
        return self.redis.register_script(self._MERGE_INTO_FOLDED)

    def fold_community_index(self, count: int = 1000) -> int | None:
        """Move the community index of an earlier release, keyed by each name as written,
        to the keys of the folded names (:meth:`Keys.by_community`), so that the issues it
        indexed are listed, put on the board and counted under either spelling.

        Once per key prefix: ``{p}:upgrades`` remembers it was done, so a start-up after
        that costs one command instead of a ``SCAN`` of every key. Running it again, or
        two at once, changes nothing. How many sets it merged (None: done before)."""
        if self._call(self.redis.sismember, self.keys.upgrades, COMMUNITY_INDEX_FOLDED):
            return None
        prefix = self.keys.by_community("")
        keys = self._call(lambda: list(self.redis.scan_iter(
            match=glob_escaped(prefix) + "*", count=count)))
        merged = 0
        for key in keys:
            target = self.keys.by_community(key[len(prefix):])
            if target != key:
                self._call(run_script, self._merge_into_folded, [key, target])
                merged += 1
        self._call(self.redis.sadd, self.keys.upgrades, COMMUNITY_INDEX_FOLDED)
        return merged

    # Adds a record's withdrawn index entries only if the record is still the one read
    # (an apply since then kept the index by difference from it). KEYS: the record, then
    # the sets. ARGV: the record as read, the issue id. Returns 1 if added, 0 if the
    # record changed.
    _ADD_IF_UNCHANGED = """
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
    for i = 2, #KEYS do redis.call('SADD', KEYS[i], ARGV[2]) end
    return 1
    """

    @cached_property
    def _add_if_unchanged(self) -> Script:
        return self.redis.register_script(self._ADD_IF_UNCHANGED)

    def fill_withdrawn_index(self, count: int = 500, attempts: int = 5) -> int | None:
        """Index the hot issues a reroute took a part from before the withdrawn index
        existed (``{p}:idx:agency:{agency}:withdrawn``, added in the release of issue 15):
        it moves by difference from the record an apply read, so a part withdrawn
        before it is never added by a later apply, and the agency's "withdrawn from us"
        list missed the issue until it was archived (the archive's own index, migration
        0007, reads the records themselves).

        Once per key prefix (``{p}:upgrades``); running it again, or two at once, adds
        nothing twice. Records are read ``count`` at a time, and only those whose
        ``withdrawn`` is not empty are parsed. How many issues it indexed (None: done
        before)."""
        if self._call(self.redis.sismember, self.keys.upgrades, WITHDRAWN_INDEX_FILLED):
            return None
        ids = [issue_id for issue_id, _ in self._call(lambda: list(self.redis.zscan_iter(
            self.keys.all_issues, count=count)))]
        indexed = 0
        for start in range(0, len(ids), count):
            batch = ids[start:start + count]
            for _ in range(attempts):  # again for the records an apply changed meanwhile
                raws = self._call(self.redis.mget, [self.keys.issue(i) for i in batch])
                changed = []
                for issue_id, raw in zip(batch, raws, strict=True):
                    if raw is None or '"withdrawn":' not in raw or '"withdrawn":[]' in raw:
                        continue  # archived meanwhile, or nothing withdrawn (compact JSON)
                    record = IssueRecord.model_validate_json(raw)
                    sets = sorted(key for key in self.index_sets(record)
                                  if key.endswith(":withdrawn"))
                    if not sets:
                        continue
                    if self._call(run_script, self._add_if_unchanged,
                                  [self.keys.issue(issue_id), *sets], [raw, issue_id]):
                        indexed += 1
                    else:
                        changed.append(issue_id)
                if not changed:
                    break
                batch = changed
        self._call(self.redis.sadd, self.keys.upgrades, WITHDRAWN_INDEX_FILLED)
        return indexed

    def open_for_agency(self, agency: str) -> list[IssueRecord]:
        ids = sorted(self._call(self.redis.smembers, self.keys.open_for_agency(agency)))
        return self._load_many(ids)

    def withdrawn_from_agency(self, agency: str) -> list[IssueRecord]:
        """The hot issues a reroute took from ``agency`` (it has no part on them now)."""
        ids = sorted(self._call(self.redis.smembers, self.keys.withdrawn_from_agency(agency)))
        return self._load_many(ids)

    def archived_withdrawn_from_agency(self, agency: str, since: datetime) -> list[IssueRecord]:
        """The archived issues a reroute took from ``agency`` at ``since`` or later (none
        without an archive). ``Unavailable`` when the archive cannot be read: the caller
        decides whether the hot ones alone are worth an answer."""
        if self.archive is None:
            return []
        return self.archive.withdrawn_from_agency(agency, since)

    def pressing_ids(self, statuses: list[str], filter_keys: list[str],
                     any_of_keys: list[str] | None = None) -> list[str]:
        """Ids of the issues in any of ``statuses``, in every index set of ``filter_keys``
        and (when given, ``[]`` included: then none) in one of ``any_of_keys``, most
        pressing first: those with no deadline yet (waiting to be
        routed or triaged), newest first, then by their earliest pending deadline
        (``{p}:deadlines``). One round trip; the desk's board reads records for the
        first few only."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(self.keys.deadlines, 0, -1)
        for status in statuses:
            pipe.smembers(self.keys.by_status(status))
        for key in [*filter_keys, *(any_of_keys or [])]:
            pipe.smembers(key)
        members, *sets = self._call(pipe.execute)
        wanted = set().union(*sets[:len(statuses)])
        for index in sets[len(statuses):len(statuses) + len(filter_keys)]:
            wanted &= index
        if any_of_keys is not None:
            wanted &= set().union(*sets[len(statuses) + len(filter_keys):])
        by_deadline, seen = [], set()
        for member in members:
            issue_id = member.split("|", 1)[0]
            if issue_id in wanted and issue_id not in seen:
                seen.add(issue_id)
                by_deadline.append(issue_id)
        return sorted(wanted - seen, reverse=True) + by_deadline

    def load_many(self, ids: list[str]) -> list[IssueRecord]:
        """Records by id, in that order (unknown ids left out)."""
        return self._load_many(ids)

    def _load_many(self, ids: list[str]) -> list[IssueRecord]:
        if not ids:
            return []
        raws = self._call(self.redis.mget, [self.keys.issue(i) for i in ids])
        return [IssueRecord.model_validate_json(raw) for raw in raws if raw]

    # ----------------------------------------------------------------- writes

    _NEXT = """
    local n = redis.call('INCR', KEYS[1])
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    return n
    """

    def next_issue_id(self, day: str) -> str:
        """``WH-20261121-0007``: stable, human-readable, unique per day."""
        # One script rather than MULTI, INCR, EXPIRE, EXEC: one reply to read, not four.
        number = self._call(run_script, self._next_script, [self.keys.sequence(day)],
                            [SEQUENCE_TTL_S])
        return f"WH-{day}-{number:04d}"

    # After a lost counter: move the day's counter up to the highest id in use
    # (ids received in the last ARGV[2] seconds that start with ARGV[1]).
    _RESYNC = """
    local top = 0
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], '+inf')) do
        if string.sub(id, 1, #ARGV[1]) == ARGV[1] then
            top = math.max(top, tonumber(string.sub(id, #ARGV[1] + 1)) or 0)
        end
    end
    if top > tonumber(redis.call('GET', KEYS[1]) or '0') then
        redis.call('SET', KEYS[1], top, 'EX', ARGV[3])
    end
    return top
    """

    def resync_sequence(self, day: str, now_ts: float) -> int:
        """Move the day's counter past every id in use; the highest one found."""
        return self._call(run_script, self._resync_script,
                          [self.keys.sequence(day), self.keys.all_issues],
                          [f"WH-{day}-", now_ts - SEQUENCE_TTL_S, SEQUENCE_TTL_S])

    def create(self, record: IssueRecord, contact: dict[str, str], service: str,
               outbox: dict[str, str], audit: StreamEntry | None = None) -> bool:
        """Store a new issue, its contact, indexes and announcing events, all at once,
        and ``audit``, the submission's audit entry, with them.

        False, with nothing written, if an issue with that id exists already (the
        day's counter was lost, say, by a Redis restart): never overwrite one.
        """
        keys = self.keys
        writes = Writes(keys.issue(record.issue_id), keys.applied(record.issue_id))
        writes.set(keys.issue(record.issue_id), stored_json(record))
        if contact:
            writes.hset(keys.contact(record.issue_id), mapping=contact)
        writes.zadd(keys.all_issues, {record.issue_id: record.received_at.timestamp()})
        self._index(writes, None, record)
        self._announce(writes, service, outbox)
        if audit is not None:
            writes.xadd(audit)
        return self._commit(writes, None, "") == COMMITTED

    def apply(self, issue_id: str, event_id: str | None, change: Change,
              service: str, read: Read | None = None) -> Applied:
        """Atomically apply ``change`` to an issue, once per ``event_id``.

        ``change`` is a pure function from the current record to the new record
        and the outbox entries announcing it. It may raise a domain error, which
        propagates and leaves Redis untouched. If another change lands between
        the read and the write, the write is refused and ``change`` runs again on
        the fresh record. ``read``: the record as just read for this event (see
        :meth:`claim_buckets_and_read`), to start from instead of reading it again.
        """
        self._check_id(issue_id)  # a path's {id} as typed: the archive is asked it on a miss
        keys = self.keys
        for _ in range(self.MAX_CONFLICT_RETRIES):
            raw, seen = read if read is not None else self._read(issue_id, event_id or "")
            read = None  # a retry reads afresh
            if raw is None:
                self._refuse_archived(issue_id, event_id, change)
                raise NotFound(f"no issue {issue_id}")
            current = IssueRecord.model_validate_json(raw)
            if event_id and seen:
                return Applied(current, changed=False)
            new, outbox = change(current)
            writes = Writes(keys.issue(issue_id), keys.applied(issue_id))
            writes.set(keys.issue(issue_id), stored_json(new))
            if event_id:
                writes.sadd(keys.applied(issue_id), event_id)
            self._index(writes, current, new)
            self._announce(writes, service, outbox)
            if self._commit(writes, raw, event_id or "") == COMMITTED:
                return Applied(new, changed=True, outbox=outbox)
            # Changed meanwhile, or the event was applied meanwhile: read again.
        raise Unavailable(f"issue {issue_id} is changing too fast; try again")

    def _refuse_archived(self, issue_id: str, event_id: str | None, change: Change) -> None:
        """A person's request (no event id: a rating, a table step) on an archived issue
        gets the answer it would have had while the issue was hot: the change runs on
        the archived record and its domain error propagates. An archived issue never
        changes, so one that would is refused all the same. Events for an archived
        issue stay NotFound, as their handlers expect."""
        if event_id or self.archive is None:
            return
        try:
            record = self.archive.record(issue_id)
        except NotFound:
            return
        change(record)
        raise InvalidTransition(f"issue {issue_id} is {record.status.value} and archived; "
                                "it can no longer change")

    # The record and whether the event was applied, in one round trip.
    _READ = """
    return {redis.call('GET', KEYS[1]), redis.call('SISMEMBER', KEYS[2], ARGV[1])}
    """

    def _read(self, issue_id: str, event_id: str) -> Read:
        raw, seen = self._call(run_script, self._read_script,
                               [self.keys.issue(issue_id), self.keys.applied(issue_id)],
                               [event_id])
        return Read(raw, bool(seen))

    # Compare-and-set: the writes (see Writes) happen only if the record is still
    # the one read (same SHA1; '' for "must not exist") and the event is still
    # unapplied. Returns 1 when written, 0 when the record changed, -1 when the
    # event was applied meanwhile.
    _COMMIT = """
    local current = redis.call('GET', KEYS[1])
    if (current and redis.sha1hex(current) or '') ~= ARGV[1] then return 0 end
    if ARGV[2] ~= '' and redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return -1 end
    local i = 3
    while i <= #ARGV do
        local n = tonumber(ARGV[i])
        local call = {ARGV[i + 1], KEYS[tonumber(ARGV[i + 2])]}
        for j = 1, n do call[j + 2] = ARGV[i + 2 + j] end
        redis.call(unpack(call))
        i = i + 3 + n
    end
    return 1
    """

    def _commit(self, writes: Writes, read: str | None, event_id: str) -> int:
        expected = hashlib.sha1(read.encode()).hexdigest() if read is not None else ""
        return self._call(run_script, self._commit_script, writes.keys,
                          [expected, event_id, *writes.args])

    def _index(self, writes: Writes, old: IssueRecord | None, new: IssueRecord) -> None:
        """Write the index entries the change moved, and only those."""
        issue_id = new.issue_id
        before = self.index_sets(old) if old is not None else set()
        after = self.index_sets(new)
        for key in sorted(before - after):
            writes.srem(key, issue_id)
        for key in sorted(after - before):
            writes.sadd(key, issue_id)
        # Closed issues wait here for the archiver, oldest first.
        if new.status is IssueStatus.closed and new.closed_at is not None:
            if old is None or old.status is not IssueStatus.closed or old.closed_at != new.closed_at:
                writes.zadd(self.keys.closed, {issue_id: new.closed_at.timestamp()})
        elif old is not None and old.status is IssueStatus.closed:
            writes.zrem(self.keys.closed, issue_id)
        # The deadline watch is derived from state, so it can never disagree with it.
        was = watched_deadlines(old) if old else {}
        watched = watched_deadlines(new)
        stale = was.keys() - watched.keys()
        if stale:
            writes.zrem(self.keys.deadlines, *sorted(stale))
        moved = {member: due for member, due in watched.items() if was.get(member) != due}
        if moved:
            writes.zadd(self.keys.deadlines, moved)

    def index_sets(self, record: IssueRecord) -> set[str]:
        """The index sets the record belongs in (see the key scheme). Pure."""
        keys = self.keys
        sets = {keys.by_status(record.status.value), keys.by_community(record.location.community)}
        if record.triage is not None and record.triage.pending:
            sets.add(keys.triage)
        for assignment in record.assignments:
            sets.add(keys.by_agency(assignment.agency))
            if assignment.status is not AssignmentStatus.resolved:
                sets.add(keys.open_for_agency(assignment.agency))
        current = set(record.agencies())
        for assignment in record.withdrawn:  # given back by a later reroute: work again
            if assignment.agency not in current:
                sets.add(keys.withdrawn_from_agency(assignment.agency))
        return sets

    def _announce(self, writes: Writes, service: str, outbox: dict[str, str]) -> None:
        """Queue the announcing events in the outbox and append them to their journals,
        in the caller's atomic write: an event is journaled exactly when it is committed."""
        if not outbox:
            return
        writes.hset(self.keys.outbox(service), mapping=outbox)
        for raw in outbox.values():
            entry = journal_entry(loads(raw))
            writes.rpush(self.keys.journal(entry["issue_id"]), dumps(entry))

    # ------------------------------------------------------------------ notes

    # A note is written once per id, and only for an issue that exists.
    # KEYS: the record, its notes. ARGV: note id, entry, note id, entry, ...
    # Returns -1 for an unknown issue, else 1 or 0 per note: whether it was new.
    _NOTES = """
    if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
    local written = {}
    for i = 1, #ARGV, 2 do
        written[#written + 1] = redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
    end
    return written
    """

    # ------------------------------------------------------------ desk outbox
    # The desk's outbox (services.notify.channels.DeskOutboxChannel pushes, newest first)
    # holds the messages the desk still has to relay: a relay takes its entry off in the
    # same script that records it, so reading the list costs what is left to relay.

    def oldest_desk_messages(self, skip: int, count: int) -> list[str]:
        """Up to ``count`` outbox entries (raw JSON), oldest first, after the ``skip``
        oldest: the desk reads its list from the oldest end, a chunk at a time."""
        newest_first = self._call(self.redis.lrange, self.keys.desk_outbox,
                                  -(skip + count), -(skip + 1))
        return newest_first[::-1]

    def desk_message(self, notification_id: str) -> tuple[str, dict[str, Any]] | None:
        """The outbox entry of message ``notification_id``: (raw JSON, entry), or None."""
        for raw in self._call(self.redis.lrange, self.keys.desk_outbox, 0, -1):
            if f'"{notification_id}"' in raw and (
                    entry := loads(raw)).get("notification_id") == notification_id:
                return raw, entry
        return None

    # KEYS: relayed hash, relayed-at zset, outbox.
    # ARGV: id, relay (JSON), its outbox entry ('' when none), now, forget before, how many.
    _RELAY = """
    if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
        redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
    end
    if ARGV[3] ~= '' then redis.call('LREM', KEYS[3], 0, ARGV[3]) end
    local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5], 'LIMIT', 0, ARGV[6])
    if #old > 0 then
        redis.call('HDEL', KEYS[1], unpack(old))
        redis.call('ZREM', KEYS[2], unpack(old))
    end
    return redis.call('HGET', KEYS[1], ARGV[1])
    """

    @cached_property
    def _relay(self) -> Script:
        return self.redis.register_script(self._RELAY)

    def relay_desk_message(self, notification_id: str, relay: str, raw_entry: str | None,
                           now_ts: float) -> str:
        """Record the desk's relay of a message (unless one is recorded: the first wins)
        and take its entry ``raw_entry`` off the outbox, in one step; forget a few relays
        older than ``RELAYED_KEPT_S`` on the way. The relay recorded (JSON)."""
        keys = self.keys
        return self._call(run_script, self._relay,
                          [keys.desk_relayed, keys.desk_relayed_at, keys.desk_outbox],
                          [notification_id, relay, raw_entry or "", now_ts,
                           now_ts - RELAYED_KEPT_S, RELAYED_PRUNED_A_MARK])

    def relays(self, notification_ids: Sequence[str]) -> dict[str, str]:
        """The relays recorded of these messages (id -> JSON), those that have one."""
        if not notification_ids:
            return {}
        found = self._call(self.redis.hmget, self.keys.desk_relayed, list(notification_ids))
        return {nid: raw for nid, raw in zip(notification_ids, found, strict=True) if raw}

    def forget_relays(self, notification_ids: Iterable[str]) -> None:
        """Forget the relays of these messages (their issue left Redis, or was erased)."""
        ids = list(notification_ids)
        if ids:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(self.keys.desk_relayed, *ids)
            pipe.zrem(self.keys.desk_relayed_at, *ids)
            self._call(pipe.execute)

    def forget_desk_messages(self, issue_id: str, notification_ids: Iterable[str] = ()) -> int:
        """Take ``issue_id``'s messages off the desk's outbox, which keeps its resident's
        contact in full for the desk to call (``/desk/relay``), and forget the relays of
        ``notification_ids`` (its messages): for a contact erased. How many entries went."""
        gone = 0
        for raw in self.redis.lrange(self.keys.desk_outbox, 0, -1):
            if issue_id in raw and loads(raw).get("issue_id") == issue_id:
                gone += self.redis.lrem(self.keys.desk_outbox, 0, raw)
        self.forget_relays(notification_ids)
        return gone

    # KEYS: outbox, relayed hash, relayed-at zset. ARGV: now.
    # An earlier release kept relayed entries in the outbox: rewrite it with the others
    # only (one pass, not an LREM each), and time the relays kept from now.
    _PENDING_ONLY = """
    local raws = redis.call('LRANGE', KEYS[1], 0, -1)
    local kept, gone = {}, 0
    for _, raw in ipairs(raws) do
        local ok, entry = pcall(cjson.decode, raw)
        local nid = ok and type(entry) == 'table' and entry['notification_id']
        if type(nid) == 'string' and redis.call('HEXISTS', KEYS[2], nid) == 1 then
            gone = gone + 1
        else
            kept[#kept + 1] = raw
        end
    end
    if gone > 0 then
        redis.call('DEL', KEYS[1])
        for i = 1, #kept, 1000 do
            redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 999, #kept)))
        end
    end
    local ids = redis.call('HKEYS', KEYS[2])
    for _, nid in ipairs(ids) do redis.call('ZADD', KEYS[3], 'NX', ARGV[1], nid) end
    return gone
    """

    def desk_outbox_pending_only(self, now_ts: float) -> int | None:
        """Take the entries an earlier release left in the desk's outbox once relayed off
        it, and give the relays it kept a time (from now) to be forgotten by. Once per key
        prefix, like :meth:`fold_community_index`. How many entries went (None: done)."""
        if self._call(self.redis.sismember, self.keys.upgrades, DESK_OUTBOX_PENDING_ONLY):
            return None
        keys = self.keys
        gone = self._call(self.redis.eval, self._PENDING_ONLY, 3, keys.desk_outbox,
                          keys.desk_relayed, keys.desk_relayed_at, now_ts)
        self._call(self.redis.sadd, keys.upgrades, DESK_OUTBOX_PENDING_ONLY)
        return gone

    def add_note(self, issue_id: str, note_id: str, entry: TimelineEntry) -> bool:
        """Put a step that changes no state on the issue's timeline, once per ``note_id``.

        One round trip, instead of a whole optimistic apply for one line. Returns
        whether it was new; raises ``NotFound`` for an unknown issue.
        """
        return self.add_notes(issue_id, {note_id: entry})[note_id]

    def add_notes(self, issue_id: str, entries: dict[str, TimelineEntry]) -> dict[str, bool]:
        """:meth:`add_note` for several notes at once, in one round trip: for each note id,
        whether it was new."""
        args: list[str] = []
        for note_id, entry in entries.items():
            entry.refuse_naive_moments()
            args += [note_id, entry.model_dump_json()]
        written = self._call(run_script, self._notes_script,
                             [self.keys.issue(issue_id), self.keys.notes(issue_id)], args)
        if written == -1:
            raise NotFound(f"no issue {issue_id}")
        return {note_id: bool(new) for note_id, new in zip(entries, written, strict=True)}

    # ---------------------------------------------------------------- journal

    def journal(self, issue_id: str) -> list[dict[str, Any]]:
        journal = self.journals([issue_id])[0]
        if not journal and self._archived(issue_id):
            journal = self.archive.journal(issue_id)
        for entry in journal:  # journaled before moments were spelled with Z
            if "recorded_at" in entry:
                entry["recorded_at"] = utc_text(entry["recorded_at"])
        return journal

    def journals(self, issue_ids: list[str]) -> list[list[dict[str, Any]]]:
        """Several issues' journals, in the order asked, in one round trip (a pipeline)."""
        if not issue_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for issue_id in issue_ids:
            pipe.lrange(self.keys.journal(issue_id), 0, -1)
        return [[loads(raw) for raw in raws] for raws in self._call(pipe.execute)]

    def journal_lengths(self, issue_ids: list[str]) -> list[int]:
        """How many events each issue's journal holds (0 once archived), in one round trip."""
        if not issue_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for issue_id in issue_ids:
            pipe.llen(self.keys.journal(issue_id))
        return self._call(pipe.execute)

    def issue_ids_received(self, start: datetime, end: datetime) -> list[str]:
        """Ids of the issues received in ``[start, end]``, oldest first (``{p}:issues``)."""
        return self._call(self.redis.zrangebyscore, self.keys.all_issues,
                          start.timestamp(), end.timestamp())

    # ----------------------------------------------------------------- merging

    # The first claimant owns every bucket; later claimants learn the owner. One
    # script, so two simultaneous identical reports can never both win. ARGV[3] is
    # an owner to replace (a closed issue): two reports taking over from it at
    # once cannot both win either. KEYS[1] and KEYS[2] are the claimant's record and
    # applied set, read in the same trip (routing applies to it next).
    _CLAIM = """
    local owner = ARGV[1]
    for i = 3, #KEYS do
        local current = redis.call('GET', KEYS[i])
        if current and current ~= ARGV[1] and current ~= ARGV[3] then
            owner = current
            break
        end
    end
    if owner == ARGV[1] then
        for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2]) end
    end
    return {owner, redis.call('GET', KEYS[1]), redis.call('SISMEMBER', KEYS[2], ARGV[4])}
    """

    # KEYS: the buckets to give up (ARGV[2] of them), then those to take; ARGV: the
    # issue, that count, the milliseconds left of its merging window. Only buckets the
    # issue owns are given up, and only free ones taken (another open issue keeps its own).
    _MOVE = """
    local n_old = tonumber(ARGV[2])
    for i = 1, n_old do
        if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
    end
    local taken = 0
    for i = n_old + 1, #KEYS do
        local current = redis.call('GET', KEYS[i])
        if not current or current == ARGV[1] then
            redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[3])
            taken = taken + 1
        end
    end
    return taken
    """

    def move_buckets(self, old_keys: list[str], new_keys: list[str], issue_id: str,
                     ttl_ms: int) -> int:
        """The desk gave ``issue_id`` another category: its duplicate buckets follow it
        (given up in the old category, taken in the new one where free, for ``ttl_ms``).
        How many it took."""
        return int(self._call(run_script, self._move_script, [*old_keys, *new_keys],
                              [issue_id, len(old_keys), max(1, int(ttl_ms))]))

    def claim_buckets(self, bucket_keys: list[str], issue_id: str, ttl_s: int,
                      replacing: str | None = None) -> str:
        """Who owns these duplicate buckets: ``issue_id`` if it just claimed them.

        ``replacing``: an owner that no longer counts (its issue is closed); the
        buckets are taken over from it, unless someone else already did.
        """
        return self.claim_buckets_and_read(bucket_keys, issue_id, ttl_s, replacing)[0]

    def claim_buckets_and_read(self, bucket_keys: list[str], issue_id: str, ttl_s: int,
                               replacing: str | None = None, event_id: str = ""
                               ) -> tuple[str, Read]:
        """:meth:`claim_buckets`, and the claimant's record as :meth:`apply` reads it
        (for ``event_id``), in one round trip: pass it to :meth:`apply` as ``read``."""
        owner, raw, seen = self._call(
            run_script, self._claim_script,
            [self.keys.issue(issue_id), self.keys.applied(issue_id), *bucket_keys],
            [issue_id, ttl_s, replacing or "", event_id])
        return owner, Read(raw, bool(seen))

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
        self.client = connect(cfg.get(config, cfg.REDIS_URL), share_round_trips=True)
        self.prefix = cfg.get(config, cfg.KEY_PREFIX)

    def stop(self):
        self.client.close()

    def kill(self):
        with contextlib.suppress(Exception):  # kill() must not raise
            self.client.close()


_archives: dict[str, Any] = {}
# How many dependency providers hold each pool (archive_for, release_archive): the last
# to stop closes it.
_archive_users: dict[str, int] = {}
_archives_lock = threading.Lock()  # green under eventlet's monkey-patching


def archive_for(url: str):
    """The process's :class:`shared.archive.Archive` for ``url``, its schema checked once.

    One pool per process, however many services ``whistle up`` hosts in it. Raises
    ``shared.archive.SchemaBehind`` (the service does not start) when migrations are
    pending; a database that is down only delays archiving (see ``check_schema``).
    Each caller gives it back with :func:`release_archive` when it stops.
    """
    from shared.archive import Archive, check_schema

    # The services of one process set up side by side, and the schema check waits on
    # the database: without the lock each of them made a pool of its own, and all but
    # the last were never closed.
    with _archives_lock:
        if url not in _archives:
            check_schema(url)
            _archives[url] = Archive(url)
        _archive_users[url] = _archive_users.get(url, 0) + 1
        return _archives[url]


def release_archive(url: str) -> None:
    """One holder of ``url``'s pool (:func:`archive_for`) is done with it; the last one
    closes it. A service stops its dependencies after its last worker, and under
    ``nameko run`` nothing else closed the pool: its ``__del__``, at the interpreter's
    exit, tried to join its threads from a dying greenlet and printed a traceback."""
    with _archives_lock:
        users = _archive_users.pop(url, 0) - 1
        if users > 0:
            _archive_users[url] = users
            return
        archive = _archives.pop(url, None)
    if archive is not None:  # outside the lock: closing waits for the pool's threads
        archive.close()


def close_archives() -> None:
    """Close the process's archive pools: at the end of ``whistle up``, while eventlet's
    hub still runs. Left to the interpreter's exit, each pool's ``__del__`` tried to join
    its worker threads from a dying greenlet and printed a traceback per pool."""
    _archive_users.clear()
    while _archives:
        _archives.popitem()[1].close()


class HoldsArchive:
    """A dependency provider's share of the process's archive pool: taken at setup,
    given back at stop or kill (once, whichever comes; not at all if setup failed)."""

    _archive_url: str | None = None

    def hold_archive(self, container: Any):
        url = cfg.get(container.config, cfg.DATABASE_URL)
        archive = archive_for(url)
        self._archive_url = url
        return archive

    def give_back_archive(self) -> None:
        url, self._archive_url = self._archive_url, None
        if url is not None:
            release_archive(url)


class Store(HoldsArchive, RedisProvider):
    """Injects an :class:`IssueStore` that reads archived issues from PostgreSQL too."""

    def setup(self):
        super().setup()
        self.store = IssueStore(self.client, self.prefix, self.hold_archive(self.container))

    def stop(self):
        super().stop()
        self.give_back_archive()

    def kill(self):
        super().kill()
        with contextlib.suppress(Exception):  # kill() must not raise
            self.give_back_archive()

    def get_dependency(self, worker_ctx):
        return self.store


def _decoded_hash(flat: list[bytes]) -> dict[str, str]:
    """An undecoded ``HGETALL`` reply (field, value, field, value...) as a dict of str."""
    pairs = iter(flat)
    return {field.decode(): value.decode() for field, value in zip(pairs, pairs, strict=True)}


def glob_escaped(text: str) -> str:
    """``text`` as a ``SCAN MATCH`` pattern that matches only itself."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def day_of(moment: datetime, tz: str) -> str:
    """The moment's date in the time zone ``tz``, ``yyyymmdd``: ``strftime("%Y%m%d")``'s
    text, formatted here for half its instructions (it goes through a time tuple)."""
    day = moment.astimezone(ZoneInfo(tz))
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def stored_json(record: IssueRecord) -> str:
    """``record.model_dump_json()``, the same text, in about two thirds of the CPU.

    pydantic's JSON serializer spends some microseconds on each aware datetime, and a
    dispatched record holds a dozen or more (its assignments' deadlines, its
    timeline); orjson writes them in C (``jsoncodec.dumps``: ``Z`` for UTC, as pydantic
    writes it). Floats, non-ASCII text, control characters and other offsets come
    out the same too (``tests/unit/test_store_json.py``).

    A record holding a naive moment (assigned after it was built: construction refuses
    one) is refused, pydantic's ``ValidationError`` naming the field, and nothing is
    written: kept without a zone, it would be read back as UTC whatever its writer
    meant. The archive copies the text written here, so it is refused there too."""
    record.refuse_naive_moments()
    return dumps(record.model_dump())


def journal_entry(envelope: dict[str, Any]) -> dict[str, Any]:
    """An outbox envelope (``shared.messaging.envelope``) as its journal entry: the
    event, its type, the call id of the worker that produced it, and when.

    ``recorded_at`` stays a datetime: :func:`dumps` writes it (``...Z``) in C, once per
    event on the write path, where formatting it in Python would cost a call."""
    stack = envelope["headers"].get("nameko.call_id_stack") or [None]
    return {"event_type": envelope["routing_key"], **envelope["body"], "call_id": stack[-1],
            "recorded_at": datetime.fromtimestamp(envelope["staged_at"], UTC)}

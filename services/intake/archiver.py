"""Moving finished issues from Redis to PostgreSQL (docs/archive.md).

An issue closed for ``WHISTLE_HOT_RETENTION`` (``{p}:idx:closed`` holds closed issues
by the time they closed) is archived with everything it has, and with the merged
reports folded into it, then removed from Redis. One pass of :meth:`Archiver.run_once`:

1. **claim** each due issue with a lease (``SET {p}:archive:lease:{id} token NX EX``)
   and read all of it in the same script, with a digest of what was read;
2. **commit** the batch to PostgreSQL in one transaction (``Archive.store_bundles``:
   ``ON CONFLICT``, so a batch committed before a crash is the same rows again);
3. **remove** each issue from Redis in one script, only if the lease is still the
   pass's own and the digest still matches: an issue that changed after it was read
   (a late delivery record, say) stays, and the next pass archives it afresh.

Killed anywhere, nothing is lost (Redis lets go only after the commit) and nothing is
duplicated (the tables' keys; a lease left by a dead archiver expires). Two archivers
at once claim disjoint issues, and if a lease expires under a slow one, the other's
rows are the same rows. Intake runs a pass every ``WHISTLE_ARCHIVE_INTERVAL_S``
(each intake instance; the leases keep them apart), and ``whistle archive`` runs
passes from the command line.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from logging import getLogger

from nameko.extensions import DependencyProvider

from services.routing.merging import buckets
from shared import config as cfg
from shared.archive import Archive, Bundle
from shared.contracts import IssueStatus
from shared.errors import Unavailable
from shared.issue import IssueRecord
from shared.store import REDIS_ERRORS, HoldsArchive, IssueStore, connect

_log = getLogger(__name__)

LEASE_S = 60

# A digest of everything the archive copies: the record, the contact, notes and delivery
# records (sorted: hash order is not guaranteed), and the journal's length (append-only).
_DIGEST = """
local function digest(record, contact, notes, notifications, journal)
    local parts = {redis.call('GET', record) or ''}
    for _, key in ipairs({contact, notes, notifications}) do
        local flat = redis.call('HGETALL', key)
        local items = {}
        for i = 1, #flat, 2 do items[#items + 1] = flat[i] .. '\\1' .. flat[i + 1] end
        table.sort(items)
        parts[#parts + 1] = table.concat(items, '\\2')
    end
    parts[#parts + 1] = tostring(redis.call('LLEN', journal))
    return redis.sha1hex(table.concat(parts, '\\0'))
end
"""

# KEYS: record, contact, notes, notifications, journal, lease. ARGV: token, lease seconds.
# Nil when another archiver holds the issue; else everything, and its digest.
_CLAIM_AND_READ = _DIGEST + """
if not redis.call('SET', KEYS[6], ARGV[1], 'NX', 'EX', ARGV[2]) then return nil end
return {redis.call('GET', KEYS[1]) or false, redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),
        redis.call('LRANGE', KEYS[5], 0, -1),
        digest(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])}
"""

# KEYS: record, contact, notes, notifications, journal, lease, applied, {p}:issues,
# {p}:idx:closed, {p}:desk:relayed, {p}:desk:relayed:at, then ARGV[4] index sets, then
# duplicate buckets.
# ARGV: token, digest, issue id, how many index sets.
# 1 removed; 0 changed since read (left, lease released); -1 the lease is not ours.
# The desk's relays of the issue's messages are forgotten with it: they are on its
# delivery records, archived, and its relayed messages are off the desk's outbox.
_REMOVE = _DIGEST + """
if redis.call('GET', KEYS[6]) ~= ARGV[1] then return -1 end
if digest(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]) ~= ARGV[2] then
    redis.call('DEL', KEYS[6])
    return 0
end
local messages = redis.call('HKEYS', KEYS[4])
for i = 1, #messages, 1000 do
    local some = {unpack(messages, i, math.min(i + 999, #messages))}
    redis.call('HDEL', KEYS[10], unpack(some))
    redis.call('ZREM', KEYS[11], unpack(some))
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[7], KEYS[6])
redis.call('ZREM', KEYS[8], ARGV[3])
redis.call('ZREM', KEYS[9], ARGV[3])
local sets = tonumber(ARGV[4])
for i = 12, 11 + sets do redis.call('SREM', KEYS[i], ARGV[3]) end
for i = 12 + sets, #KEYS do
    if redis.call('GET', KEYS[i]) == ARGV[3] then redis.call('DEL', KEYS[i]) end
end
return 1
"""


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass
class _Claimed:
    issue_id: str
    bundle: Bundle
    record: IssueRecord
    digest: str


@dataclass
class Pass:
    """What one pass did."""

    archived: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # changed after being read: next pass
    busy: int = 0  # held by another archiver


class Archiver:
    """Archives due issues in batches. ``retention_s``: how long an issue stays closed in
    Redis first."""

    def __init__(self, store: IssueStore, archive: Archive, retention_s: float,
                 batch: int = 200, lease_s: int = LEASE_S):
        self.store, self.archive = store, archive
        self.keys = store.keys
        self.retention_s, self.batch, self.lease_s = retention_s, batch, lease_s
        self._claim = store.redis.register_script(_CLAIM_AND_READ)
        self._remove = store.redis.register_script(_REMOVE)

    def due(self, now_ts: float) -> list[str]:
        """One batch of issues closed at least ``retention_s`` ago: drawn from the oldest
        few batches, so that archivers running at once mostly claim different ones."""
        oldest = self.store._call(self.store.redis.zrangebyscore, self.keys.closed, "-inf",
                                  now_ts - self.retention_s, start=0, num=self.batch * 4)
        return random.sample(oldest, min(self.batch, len(oldest)))

    def run_once(self, now_ts: float) -> Pass:
        """One batch: claim, commit to PostgreSQL, then remove from Redis.

        Raises ``Unavailable`` when PostgreSQL (or Redis) is down: the claimed issues
        stay in Redis, and their leases expire for the next pass."""
        done = Pass()
        token = uuid.uuid4().hex
        claimed = self._claim_all(self.due(now_ts), token, done)
        # Merged reports go with the issue they were folded into.
        merged = [r for c in claimed for r in c.record.reporters if r != c.issue_id]
        if merged:
            claimed += [c for c in self._claim_all(merged, token, done)
                        if c.record.status is IssueStatus.merged]
        if not claimed:
            return done
        try:
            self.archive.store_bundles(c.bundle for c in claimed)
        except Unavailable:
            self._release(claimed, token)  # for the next pass, not in a minute
            raise
        self._remove_all(claimed, token, done)
        return done

    _RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"

    def _release(self, claimed: list[_Claimed], token: str) -> None:
        """Give back this pass's leases (best effort: they expire anyway)."""
        with contextlib.suppress(Unavailable, *REDIS_ERRORS):
            pipe = self.store.redis.pipeline(transaction=False)
            for c in claimed:
                pipe.eval(self._RELEASE, 1, self.keys.archive_lease(c.issue_id), token)
            pipe.execute()

    def run_until_idle(self, now_ts: float, max_passes: int = 1_000_000) -> Pass:
        """Passes until nothing due is left to move (each pass one batch)."""
        total = Pass()
        for _ in range(max_passes):
            done = self.run_once(now_ts)
            total.archived += done.archived
            total.changed += done.changed
            total.busy += done.busy
            if not done.archived and not done.changed:
                break  # nothing due, or all of it held by another archiver
        return total

    def _claim_all(self, ids: list[str], token: str, done: Pass) -> list[_Claimed]:
        keys = self.keys
        pipe = self.store.redis.pipeline(transaction=False)
        for issue_id in ids:
            self._claim(keys=[keys.issue(issue_id), keys.contact(issue_id), keys.notes(issue_id),
                              keys.notifications(issue_id), keys.journal(issue_id),
                              keys.archive_lease(issue_id)],
                        args=[token, self.lease_s], client=pipe)
        claimed = []
        for issue_id, reply in zip(ids, self.store._call(pipe.execute), strict=True):
            if reply is None:
                done.busy += 1
                continue
            raw, contact, notes, notifications, journal, digest = reply
            if not raw:  # gone already (another archiver finished it): drop the leftovers
                self.store._call(self.store.redis.zrem, keys.closed, issue_id)
                self.store._call(self.store.redis.delete, keys.archive_lease(issue_id))
                continue
            record = IssueRecord.model_validate_json(raw)
            claimed.append(_Claimed(issue_id, Bundle(raw, _pairs(contact), _pairs(notes),
                                                     _pairs(notifications), journal),
                                    record, digest))
        return claimed

    def _remove_all(self, claimed: list[_Claimed], token: str, done: Pass) -> None:
        keys = self.keys
        pipe = self.store.redis.pipeline(transaction=False)
        for c in claimed:
            index_sets = sorted(self.store.index_sets(c.record))
            dedupe = ([keys.dedupe(category, scope)
                       for category, scope in buckets(c.record.category, c.record.location)]
                      if c.record.category else [])
            self._remove(
                keys=[keys.issue(c.issue_id), keys.contact(c.issue_id), keys.notes(c.issue_id),
                      keys.notifications(c.issue_id), keys.journal(c.issue_id),
                      keys.archive_lease(c.issue_id), keys.applied(c.issue_id),
                      keys.all_issues, keys.closed, keys.desk_relayed,
                      keys.desk_relayed_at, *index_sets, *dedupe],
                args=[token, c.digest, c.issue_id, len(index_sets)], client=pipe)
        for c, outcome in zip(claimed, self.store._call(pipe.execute), strict=True):
            if outcome == 1:
                done.archived.append(c.issue_id)
            elif outcome == 0:
                done.changed.append(c.issue_id)
            else:
                done.busy += 1


class ArchiverProvider(HoldsArchive, DependencyProvider):
    """Runs archive passes for the service that hosts it (intake), at most one pass
    every ``WHISTLE_ARCHIVE_INTERVAL_S``, however often its timer ticks.

    Usage::

        class IntakeService:
            archiver = ArchiverProvider()

            @timer(interval=ARCHIVE_TICK_S)
            def archive_closed(self):
                self.archiver.tick()
    """

    def setup(self):
        config = self.container.config
        self.client = connect(cfg.get(config, cfg.REDIS_URL))
        store = IssueStore(self.client, cfg.get(config, cfg.KEY_PREFIX),
                           self.hold_archive(self.container))
        self.archiver = Archiver(store, store.archive,
                                 cfg.duration_s(cfg.get(config, cfg.HOT_RETENTION)))
        self.interval_s = float(cfg.get(config, cfg.ARCHIVE_INTERVAL_S))
        self.next_at = 0.0
        self.running = False

    def stop(self):
        self.client.close()
        self.give_back_archive()

    def kill(self):
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.give_back_archive()

    def get_dependency(self, worker_ctx):
        return self

    def tick(self) -> Pass | None:
        """A pass (batches until nothing is due) if one is due; None otherwise. PostgreSQL
        or Redis being down is logged and retried at the next interval."""
        now = time.time()
        if self.running or now < self.next_at:
            return None
        self.running, self.next_at = True, now + self.interval_s
        try:
            done = self.archiver.run_until_idle(now)
        except Unavailable as exc:
            _log.warning("archive pass failed, retrying in %.0f s: %s", self.interval_s, exc)
            return None
        finally:
            self.running = False
        if done.archived or done.changed:
            _log.info("archived %d issues (%d changed meanwhile, left for the next pass)",
                      len(done.archived), len(done.changed))
        return done

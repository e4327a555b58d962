"""PostgreSQL: the system of record for finished issues (docs/archive.md).

Redis keeps what is hot (open issues, deadlines, outboxes, idempotency); an issue
closed for ``WHISTLE_HOT_RETENTION`` moves here with everything it has (record,
journal, notes, delivery records, contact) and is then removed from Redis
(``shared.archiver``). This module is the adapter to the database:

- the schema, versioned by the plain-SQL migrations in ``shared/migrations`` and
  applied by yoyo (:func:`upgrade`, ``whistle db upgrade``); :func:`check_schema` is
  what services run at start-up;
- :meth:`Archive.store_bundles`, the one write path: a batch of issues COPYed into
  temporary tables and moved into the real ones with ``ON CONFLICT`` in one
  transaction, so writing the same issue twice changes nothing (the archiver and
  ``bench.scale`` both use it);
- the reads ``shared.store.IssueStore`` falls back to when Redis no longer has an
  issue, the listing's archived half, erasure, and the rows behind ``GET /stats``.

psycopg waits for the server with ``select()`` here (``PSYCOPG_WAIT_FUNC``): its
default C wait loop would block the whole eventlet hub, while eventlet's green
``select`` lets other workers run during a query.
"""

from __future__ import annotations

import os

os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_select")

import contextlib  # noqa: E402
from collections.abc import Iterable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime  # noqa: E402
from logging import getLogger  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402
import psycopg_pool  # noqa: E402

from shared.errors import NotFound, Unavailable  # noqa: E402
from shared.folding import folded  # noqa: E402
from shared.issue import IssueRecord, TimelineEntry  # noqa: E402
from shared.jsoncodec import dumps, loads  # noqa: E402
from shared.privacy import (  # noqa: E402
    contact_erased_from,
    mask_email,
    mask_name,
    mask_phone,
)

_log = getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DB_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


class SchemaBehind(RuntimeError):
    """The database lacks migrations this code needs: run ``whistle db upgrade``."""


# ------------------------------------------------------------------ migrations


def _yoyo_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


def _backend_and_migrations(url: str):
    from yoyo import get_backend, read_migrations

    return get_backend(_yoyo_url(url)), read_migrations(str(MIGRATIONS))


def pending_migrations(url: str) -> list[str]:
    """Ids of the migrations not applied to the database at ``url``."""
    backend, migrations = _backend_and_migrations(url)
    try:
        return [m.id for m in backend.to_apply(migrations)]
    finally:
        backend.connection.close()


def upgrade(url: str) -> list[str]:
    """Apply every pending migration (under yoyo's lock); the ids applied."""
    backend, migrations = _backend_and_migrations(url)
    try:
        with backend.lock():
            todo = backend.to_apply(migrations)
            backend.apply_migrations(todo)
        return [m.id for m in todo]
    finally:
        backend.connection.close()


def check_schema(url: str) -> None:
    """Raise :class:`SchemaBehind` when migrations are pending.

    An unreachable database is not an error here: finished issues wait in Redis
    until it is back (the archiver retries), so services start without it.
    """
    try:
        pending = pending_migrations(url)
    except psycopg.OperationalError:
        return
    if pending:
        raise SchemaBehind(f"the database at {redact(url)} is behind this code: migrations "
                           f"{', '.join(pending)} are not applied; run `whistle db upgrade`")


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':')[0]}@{host}"


# --------------------------------------------------------------------- bundles


def masked_contact(contact: dict[str, str]) -> dict[str, str | None]:
    """What may be shown of a contact, and all that is left after erasure."""
    return {"name": mask_name(contact.get("name")), "phone": mask_phone(contact.get("phone")),
            "email": mask_email(contact.get("email")),
            "preferred_channel": contact.get("preferred_channel")}


@dataclass
class Bundle:
    """One issue with everything it has, as Redis holds it (the JSON strings verbatim)."""

    record: str
    contact: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    notifications: dict[str, str] = field(default_factory=dict)
    journal: list[str] = field(default_factory=list)


def _ts(value: Any) -> str | None:
    return None if value is None else value.isoformat() if isinstance(value, datetime) else value


def seconds_between(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds()


def _cycle_agencies(facts, subject: str, cycle: int) -> tuple[str, str]:
    """The agencies with an assignment in ``subject``'s ``cycle`` and when each was created
    (array literals), from this issue's own facts."""
    found = [(a.agency, a.created) for a in facts.assignments
             if a.issue_id == subject and a.cycle == cycle]
    return ("{" + ",".join(f'"{agency}"' for agency, _ in found) + "}",
            "{" + ",".join(f'"{created.isoformat()}"' for _, created in found) + "}")


def _bundle_rows(bundle: Bundle) -> dict[str, list[tuple]]:
    """The rows of every table for one issue."""
    from services.intake.stats import issue_facts

    record = loads(bundle.record)
    issue_id = record["issue_id"]
    received = record["received_at"]
    community = record["location"]["community"]
    journal = [loads(raw) for raw in bundle.journal]
    facts = issue_facts(journal)
    agencies = "{" + ",".join(f'"{a["agency"]}"' for a in record.get("assignments", [])) + "}"
    return {
        "archived_issue": [(issue_id, received, record.get("closed_at"), record["status"],
                            record.get("category"), record.get("priority"),
                            record["location"]["community"], agencies, record["updated_at"],
                            bundle.record)],
        "issue_contact": [(issue_id, dumps(bundle.contact), dumps(masked_contact(bundle.contact)))],
        "issue_event": [(issue_id, seq, entry["event_type"], entry["occurred_at"], raw)
                        for seq, (entry, raw) in enumerate(zip(journal, bundle.journal,
                                                               strict=True))],
        "issue_note": [(issue_id, note_id, raw) for note_id, raw in bundle.notes.items()],
        "issue_notification": [(issue_id, nid, raw) for nid, raw in bundle.notifications.items()],
        "stat_assignment": [(issue_id, a.agency, a.cycle, community, received, _ts(a.created),
                             _ts(a.acknowledged), a.on_time, _ts(a.resolved), _ts(a.escalated_at),
                             seconds_between(a.created, a.acknowledged), seconds_between(a.created, a.resolved))
                            for a in facts.assignments],
        "stat_agency": [(agency,) for agency in {a.agency for a in facts.assignments}],
        "stat_rating": [(issue_id, r.event_id, r.issue_id, community, r.cycle, received, _ts(r.at),
                         r.satisfied, *_cycle_agencies(facts, r.issue_id, r.cycle), r.by_desk)
                        for r in facts.ratings],
        "stat_escalation": [(issue_id, e.event_id, e.issue_id, community, e.agency, received,
                             _ts(e.at))
                            for e in facts.escalations],
    }


# Columns COPYed per table, and how the staged rows join the real table. Rows already
# archived are left as they are (ON CONFLICT DO NOTHING): an issue is archived only
# once it is closed, and Redis removes it only if it did not change meanwhile
# (shared.archiver), so a second copy of the same issue is the same rows. The record,
# notes and delivery records are the exception: refreshed, in case an earlier attempt
# archived an issue that then changed before its removal.
_TABLES: dict[str, tuple[str, str]] = {
    "archived_issue": ("issue_id, received_at, closed_at, status, category, priority, "
                       "community, agencies, updated_at, record",
                       "ON CONFLICT (issue_id) DO UPDATE SET record = EXCLUDED.record, "
                       "status = EXCLUDED.status, closed_at = EXCLUDED.closed_at, "
                       "updated_at = EXCLUDED.updated_at, agencies = EXCLUDED.agencies"),
    "issue_contact": ("issue_id, contact, masked", "ON CONFLICT (issue_id) DO NOTHING"),
    "issue_event": ("issue_id, seq, event_type, occurred_at, entry", "ON CONFLICT DO NOTHING"),
    "issue_note": ("issue_id, note_id, entry",
                   "ON CONFLICT (issue_id, note_id) DO UPDATE SET entry = EXCLUDED.entry"),
    "issue_notification": ("issue_id, notification_id, record",
                           "ON CONFLICT (issue_id, notification_id) "
                           "DO UPDATE SET record = EXCLUDED.record"),
    "stat_assignment": ("issue_id, agency, cycle, community, received_at, created_at, "
                        "acknowledged_at, "
                        "on_time, resolved_at, escalated_at, ack_s, res_s",
                        "ON CONFLICT (issue_id, agency, cycle) DO UPDATE SET "
                        "acknowledged_at = EXCLUDED.acknowledged_at, on_time = EXCLUDED.on_time, "
                        "resolved_at = EXCLUDED.resolved_at, escalated_at = EXCLUDED.escalated_at, "
                        "ack_s = EXCLUDED.ack_s, res_s = EXCLUDED.res_s"),
    "stat_agency": ("agency", "ON CONFLICT DO NOTHING"),
    "stat_rating": ("issue_id, event_id, subject, community, cycle, received_at, at, satisfied, "
                    "agencies, "
                    "agencies_created, by_desk",
                    "ON CONFLICT DO NOTHING"),
    "stat_escalation": ("issue_id, event_id, subject, community, agency, received_at, at",
                        "ON CONFLICT DO NOTHING"),
}
_COMMUNITY = _TABLES["archived_issue"][0].split(", ").index("community")  # in a row
# Rows whose key two archivers' batches can share (an agency's first issue), inserted in
# the key's order so that the two wait for each other instead of deadlocking: unordered,
# each inserted a different one of two new agencies first and waited for the other's
# (PostgreSQL's log, CI's two-archiver scenario). Every other table's rows belong to the
# batch's own issues, which no other archiver holds (leases).
_IN_KEY_ORDER = {"stat_agency": "ORDER BY agency "}


# The issues archived per day and community (stat_issue_day: GET /stats's count of the
# issues it read, without counting them one by one). Only the rows this statement
# inserted count (``xmax = 0``: a row that was already there comes back updated), so
# archiving an issue again, or two archivers at once, count it once: the second waits
# on the first's row and then updates it. The day rows are incremented last, in one
# order, so that concurrent archivers hold them only while they commit.
_NEW_ISSUES = """
WITH written AS ({insert} RETURNING community, received_at, xmax = 0 AS inserted)
INSERT INTO stage_new_issues SELECT community, received_at FROM written WHERE inserted
"""
_COUNT_NEW_ISSUES = """
INSERT INTO stat_issue_day (day, community, issues)
SELECT date_trunc('day', received_at, 'UTC'), community, count(*) FROM stage_new_issues
GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (day, community) DO UPDATE SET issues = stat_issue_day.issues + EXCLUDED.issues
"""


# Communities compare folded (``shared.folding``: 缤泰社區 is 缤泰社区), as a desk token's do
# (``shared.authz.in_communities``). SQL cannot fold, so the archive keeps every spelling
# it holds with its folded form (``community_spelling``, migration 0006), added as the
# issues that bring a new one are archived: a scope's folded names find every spelling,
# and the tables go on comparing ``community`` as written, through their indexes.
# New spellings in one order, so that two archivers wait for each other's, never deadlock.
_NEW_SPELLINGS = """
INSERT INTO community_spelling (community, community_key)
SELECT * FROM unnest(%s::text[], %s::text[]) ORDER BY 1
ON CONFLICT (community) DO NOTHING
"""
_SPELLINGS = "SELECT community FROM community_spelling WHERE community_key = ANY({keys})"


def add_spellings(cursor: psycopg.Cursor, communities: Iterable[str]) -> None:
    """Record the spellings among ``communities`` the archive does not know yet."""
    names = sorted(set(communities))
    if names:
        cursor.execute(_NEW_SPELLINGS, (names, [folded(name) for name in names]))


def community_keys(communities: Iterable[str]) -> list[str]:
    """A scope's communities as :func:`in_scope` compares them. Pure."""
    return sorted({folded(community) for community in communities})


def in_scope(column: str, keys: str) -> str:
    """SQL: ``column`` (a community as written) is one of the communities whose
    :func:`community_keys` the parameter ``keys`` holds (a ``text[]``). The spellings are
    looked up once per statement (an InitPlan), then compared as an array was before."""
    return f"{column} = ANY(ARRAY({_SPELLINGS.format(keys=keys)}))"


def _listed_triage(triage: dict | None) -> dict | None:
    """The triage fields a list entry shows (``shared.issue.list_entry``), from the record."""
    from shared.issue import TRIAGE_LISTED, TriageState

    if triage is None:
        return None
    return TriageState.model_validate(triage).model_dump(mode="json", include=TRIAGE_LISTED)


def _spellings(conn: psycopg.Connection, community: str) -> list[str]:
    """Every spelling of ``community`` the archive holds (compared folded)."""
    rows = conn.execute(_SPELLINGS.format(keys="%s"), (community_keys([community]),)).fetchall()
    return [spelling for (spelling,) in rows]


def _summaries_query(status: str | None, agency: str | None, spellings: list[str] | None,
                     before: tuple[datetime, str] | None) -> tuple[str, list[Any]]:
    """:meth:`Archive.summaries`'s statement (its LIMIT's value to add) and arguments."""
    where, args = [], []
    if status:
        where.append("status = %s")
        args.append(status)
    if agency:
        where.append("agencies @> ARRAY[%s]::text[]")
        args.append(agency)
    if spellings is not None:
        # One spelling (nearly always) is compared as before the folding: the page stays
        # one range of archived_issue_community, already in order (PostgreSQL 15 sorts
        # what an index scan for an array of values finds).
        where.append("community = %s" if len(spellings) == 1 else "community = ANY(%s)")
        args.append(spellings[0] if len(spellings) == 1 else spellings)
    if before is not None:
        where.append("(received_at, issue_id) < (%s, %s)")
        args += list(before)
    sql = ("SELECT issue_id, status, category, priority, community, agencies, received_at, "
           "updated_at, record->'triage' FROM archived_issue"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY received_at DESC, issue_id DESC LIMIT %s")
    return sql, args


# A batch's transaction that PostgreSQL broke off to resolve a deadlock (or a
# serialization failure) is written again: the standard client answer, safe here
# because every statement of it is an upsert.
RETRIED_ERRORS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
WRITE_ATTEMPTS = 3


# ------------------------------------------------------------------ the archive


# How long the withdrawn list waits for a connection (Archive.withdrawn_from_agency): a
# connection comes in milliseconds when the database is up.
WITHDRAWN_WAIT_S = 1.0

# Every archive connection's session settings. UTC, so timestamps read back as they were
# written. No JIT: the archive's statements run in milliseconds, and PostgreSQL compiled
# the /stats statements whenever their estimated cost passed jit_above_cost (which it
# does with many issues still in Redis), spending about 250 ms compiling a statement
# that then ran in 27 ms.
OPTIONS = "-c TimeZone=UTC -c jit=off"


class Archive:
    """Archived issues in PostgreSQL, through a psycopg connection pool.

    The pool opens in the background: a database that is down when a service starts
    only makes archived reads answer 503 (:class:`~shared.errors.Unavailable`) until
    it is back.
    """

    def __init__(self, url: str, max_size: int = 8, timeout_s: float = 5.0):
        self.url = url
        self.timeout_s = timeout_s
        # check: a connection is tested as it is handed out, so one cut by a database
        # restart is replaced instead of failing a request. reconnect_timeout: the pool
        # gives up a failed reconnection after 2 s, and the next request connects afresh;
        # psycopg_pool's default keeps retrying with a delay doubling up to 5 minutes,
        # and left the archive unused for most of a minute after the database was back.
        self.pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=max_size, open=False, timeout=timeout_s,
            check=psycopg_pool.ConnectionPool.check_connection, reconnect_timeout=2.0,
            kwargs={"connect_timeout": 3, "options": OPTIONS}, name="whistle-archive")
        self.pool.open(wait=False)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pool.close(timeout=2)

    @contextlib.contextmanager
    def connection(self, timeout_s: float | None = None) -> Iterator[psycopg.Connection]:
        """A connection of the pool, waited for ``timeout_s`` (default the pool's)."""
        try:
            with self.pool.connection(timeout=timeout_s) as conn:
                yield conn
        except DB_ERRORS as exc:
            raise Unavailable(f"archive unavailable: {type(exc).__name__}") from exc

    def ping(self) -> bool:
        try:
            with self.connection() as conn:
                conn.execute("SELECT 1")
            return True
        except Unavailable:
            return False

    # ------------------------------------------------------------------ writes

    def store_bundles(self, bundles: Iterable[Bundle]) -> int:
        """Archive issues in one transaction (COPY into staging, then INSERT ... ON
        CONFLICT). Idempotent. Returns how many bundles were written."""
        rows: dict[str, list[tuple]] = {table: [] for table in _TABLES}
        count, seen = 0, set()
        for bundle in bundles:
            bundle_rows = _bundle_rows(bundle)
            issue_id = bundle_rows["archived_issue"][0][0]
            if issue_id in seen:
                continue  # one row per key in a statement (ON CONFLICT DO UPDATE needs it)
            seen.add(issue_id)
            for table, table_rows in bundle_rows.items():
                rows[table].extend(table_rows)
            count += 1
        if count:
            self.store_rows(rows)
        return count

    def store_rows(self, rows: dict[str, list[tuple]]) -> None:
        """Write a batch in one transaction; one that PostgreSQL broke off as a deadlock
        (the cause CI once found is gone: :data:`_IN_KEY_ORDER`) is rolled back whole and
        written again, at most :data:`WRITE_ATTEMPTS` times: every statement is an upsert,
        so a second attempt writes what the first would have."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return self._store_rows_once(rows)
            except Unavailable as exc:
                if attempt == WRITE_ATTEMPTS or not isinstance(exc.__cause__, RETRIED_ERRORS):
                    raise
                _log.warning("archive write broken off (%s); writing the batch again",
                             type(exc.__cause__).__name__)

    def _store_rows_once(self, rows: dict[str, list[tuple]]) -> None:
        with self.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for table, (columns, conflict) in _TABLES.items():
                if not rows.get(table):
                    continue
                stage = f"stage_{table}"
                cur.execute(f"CREATE TEMP TABLE {stage} (LIKE {table} INCLUDING DEFAULTS) "
                            "ON COMMIT DROP")
                with cur.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
                    for row in rows[table]:
                        copy.write_row(row)
                insert = (f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} "
                          f"{_IN_KEY_ORDER.get(table, '')}{conflict}")
                if table == "archived_issue":
                    cur.execute("CREATE TEMP TABLE stage_new_issues (community text, "
                                "received_at timestamptz) ON COMMIT DROP")
                    cur.execute(_NEW_ISSUES.format(insert=insert))
                else:
                    cur.execute(insert)
            if rows.get("archived_issue"):
                add_spellings(cur, (row[_COMMUNITY] for row in rows["archived_issue"]))
                cur.execute(_COUNT_NEW_ISSUES)

    # ------------------------------------------------------------------- reads

    def record(self, issue_id: str, with_notes: bool = False) -> IssueRecord:
        """The archived record (timeline with its notes merged when ``with_notes``)."""
        with self.connection() as conn:
            row = conn.execute("SELECT record::text FROM archived_issue WHERE issue_id = %s",
                               (issue_id,)).fetchone()
            notes = conn.execute("SELECT entry::text FROM issue_note WHERE issue_id = %s",
                                 (issue_id,)).fetchall() if row and with_notes else []
        if row is None:
            raise NotFound(f"no issue {issue_id}")
        record = IssueRecord.model_validate_json(row[0])
        if notes:
            entries = [TimelineEntry.model_validate_json(raw) for (raw,) in notes]
            record.timeline = sorted([*record.timeline, *entries], key=lambda e: e.at)
        return record

    def records(self, issue_ids: list[str]) -> dict[str, IssueRecord]:
        """The archived ones among ``issue_ids`` (their records as stored, without notes)."""
        with self.connection() as conn:
            rows = conn.execute("SELECT issue_id, record::text FROM archived_issue "
                                "WHERE issue_id = ANY(%s)", (issue_ids,)).fetchall()
        return {issue_id: IssueRecord.model_validate_json(raw) for issue_id, raw in rows}

    def withdrawn_from_agency(self, agency: str, since: datetime) -> list[IssueRecord]:
        """The archived issues a reroute took from ``agency`` at ``since`` or later (it has
        no part on them now), the latest withdrawal first: one range of the index
        ``archived_withdrawal_recent`` (migration 0007), then the records it names.

        A connection is waited for :data:`WITHDRAWN_WAIT_S` only: the agency's workspace
        reads this beside its work on every view, and with the database down the pool's
        own wait (5 s) held every view that long; the list then shows what Redis holds."""
        with self.connection(WITHDRAWN_WAIT_S) as conn:
            rows = conn.execute(
                "SELECT a.record::text FROM archived_withdrawal w "
                "JOIN archived_issue a ON a.issue_id = w.issue_id "
                "WHERE w.agency = %s AND w.withdrawn_at >= %s "
                "ORDER BY w.withdrawn_at DESC, w.issue_id DESC", (agency, since)).fetchall()
        return [IssueRecord.model_validate_json(raw) for (raw,) in rows]

    def contacts(self, issue_ids: list[str]) -> dict[str, dict[str, str]]:
        """:meth:`contact` for several issues at once (archived ones only)."""
        with self.connection() as conn:
            rows = conn.execute("SELECT issue_id, contact, masked FROM issue_contact "
                                "WHERE issue_id = ANY(%s)", (issue_ids,)).fetchall()
        return {issue_id: contact if contact is not None
                else {k: v for k, v in masked.items() if v} for issue_id, contact, masked in rows}

    def has(self, issue_id: str) -> bool:
        with self.connection() as conn:
            return conn.execute("SELECT 1 FROM archived_issue WHERE issue_id = %s",
                                (issue_id,)).fetchone() is not None

    def contact(self, issue_id: str) -> dict[str, str]:
        """The contact as Redis held it; only its masked form once erased."""
        return self.contacts([issue_id]).get(issue_id, {})

    def journal(self, issue_id: str) -> list[dict[str, Any]]:
        with self.connection() as conn:
            rows = conn.execute("SELECT entry::text FROM issue_event WHERE issue_id = %s "
                                "ORDER BY seq", (issue_id,)).fetchall()
        return [loads(raw) for (raw,) in rows]

    def notifications(self, issue_id: str) -> dict[str, str]:
        """Delivery records, id -> JSON, as notify kept them in Redis."""
        with self.connection() as conn:
            rows = conn.execute("SELECT notification_id, record::text FROM issue_notification "
                                "WHERE issue_id = %s", (issue_id,)).fetchall()
        return dict(rows)

    def erase_contact(self, issue_id: str) -> bool:
        """Erase the resident's contact, keeping its masked form. False if already erased;
        NotFound if the issue is not archived.

        The resident's name, phone and email are masked where their own words repeat
        them too (the description, in the record and in its journal, and the notes):
        kept there, a public Open311 read, which masks the reporter's names by the
        contact, showed the name in clear once the contact was gone."""
        with self.connection() as conn, conn.transaction():
            row = conn.execute("SELECT record::text FROM archived_issue WHERE issue_id = %s "
                               "FOR UPDATE", (issue_id,)).fetchone()
            if row is None:
                raise NotFound(f"no archived issue {issue_id}")
            found = conn.execute("SELECT contact FROM issue_contact WHERE issue_id = %s "
                                 "AND contact IS NOT NULL FOR UPDATE", (issue_id,)).fetchone()
            if found is None:
                return False
            contact = found[0]
            record = contact_erased_from(loads(row[0]), contact)
            conn.execute("UPDATE archived_issue SET record = %s WHERE issue_id = %s",
                         (dumps(record), issue_id))
            for table, key in (("issue_event", "seq"), ("issue_note", "note_id")):
                rows = conn.execute(f"SELECT {key}, entry::text FROM {table} "
                                    "WHERE issue_id = %s", (issue_id,)).fetchall()
                for at, raw in rows:
                    entry = loads(raw)
                    erased = contact_erased_from(entry, contact)
                    if erased != entry:
                        conn.execute(f"UPDATE {table} SET entry = %s "
                                     f"WHERE issue_id = %s AND {key} = %s",
                                     (dumps(erased), issue_id, at))
            conn.execute("UPDATE issue_contact SET contact = NULL, erased_at = now() "
                         "WHERE issue_id = %s", (issue_id,))
        return True

    # ----------------------------------------------------------------- listing

    def summaries(self, status: str | None, agency: str | None, community: str | None,
                  before: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
        """Archived issues' list entries, newest first, strictly after the cursor
        ``before`` = (received_at, issue_id) in that order. Keyset pagination: one index
        range scan per page, however deep. ``community``: any of its spellings."""
        with self.connection() as conn:
            spellings = _spellings(conn, community) if community else None
            sql, args = _summaries_query(status, agency, spellings, before)
            rows = conn.execute(sql, [*args, limit]).fetchall()
        return [{"issue_id": r[0], "status": r[1], "category": r[2], "priority": r[3],
                 "community": r[4], "agencies": list(r[5]), "received_at": r[6],
                 "updated_at": r[7], "triage": _listed_triage(r[8])} for r in rows]

    # ------------------------------------------------------------------- stats

    def stat_rows(self, sql: str, args: dict[str, Any]) -> list[tuple]:
        with self.connection() as conn:
            return conn.execute(sql, args).fetchall()

    def size_bytes(self) -> int:
        """Bytes the archive's tables and indexes take on disk: every table of the schema
        but the migration tool's own, so that the tables triggers fill
        (``stat_rating_agency``, ``archived_withdrawal``) count too."""
        with self.connection() as conn:
            return conn.execute(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname = current_schema() "
                "AND c.relname NOT LIKE '%%yoyo%%'").fetchone()[0] or 0

    def count(self) -> int:
        with self.connection() as conn:
            return conn.execute("SELECT count(*) FROM archived_issue").fetchone()[0]

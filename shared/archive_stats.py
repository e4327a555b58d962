"""The three rates (三率) over the archive and the hot issues together, in SQL.

``services.intake.stats`` defines the figures and computes them by replaying
journals. Replaying a month of history on every request does not scale, so the
archive keeps each issue's *facts* (``stat_assignment``, ``stat_rating``,
``stat_escalation``: ``services.intake.stats.issue_facts``, written when the issue is
archived), and :func:`stats_over` asks PostgreSQL for the same figures over the
facts of one window, read through indexes on their times. The issues still in Redis
are replayed into facts here and sent along as arrays, so one query counts both.

Which store counts an issue: Redis is read first, then PostgreSQL, leaving out
every issue read from Redis. The archiver commits to PostgreSQL before it removes
from Redis, so an issue moving meanwhile is counted exactly once.

The results equal ``compute_stats`` on the same journals
(tests/integration/test_archive_stats.py).
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy
import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format

from services.intake.stats import (
    LOOKBACK,
    RATERS,
    IssueFacts,
    _iso,
    _rate,
    issue_facts,
    nearest_rank_index,
    rating_figures,
)
from shared.archive import Archive, community_keys, in_scope, seconds_between
from shared.jsoncodec import dumps


def _in_scope(column: str) -> str:
    """SQL: whether ``column``, a community as written, is counted: every one when the
    parameter ``communities`` is NULL, else those it names folded
    (:func:`shared.archive.in_scope`: 缤泰社區 counts for a desk of 缤泰社区)."""
    return f"(%(communities)s::text[] IS NULL OR {in_scope(column, '%(communities)s::text[]')})"


# Every CTE sees the window (since, until), the as-of instant, the issues' received
# range (rfrom, rto) and the hot issues: their ids, and their assignments' facts. Those
# two come as one JSON text each (:func:`_parameters`), not as arrays: psycopg builds an
# array parameter element by element in Python, for each of the four statements, which
# cost about a second for 5,000 issues still in Redis (docs/benchmarks.md, "/stats with
# issues still in Redis"). Materialized, so each is read once and can be hashed.
_HOT = """
WITH hot_ids AS MATERIALIZED (SELECT json_array_elements_text(%(hot_ids)s::json) AS issue_id),
hot_a AS MATERIALIZED (
    SELECT * FROM json_to_recordset(%(hot_a)s::json)
        AS t(issue_id text, agency text, cycle int, created_at timestamptz,
             acknowledged_at timestamptz, on_time bool, resolved_at timestamptz,
             escalated_at timestamptz, ack_s float8, res_s float8))
"""

# The window's assignments of agency ``g``: a range of the covering index
# (agency, created_at), and the hot ones.
_WINDOW_ROWS = """
        SELECT s.acknowledged_at, s.on_time, s.resolved_at, s.escalated_at, s.ack_s, s.res_s
        FROM stat_assignment s
        WHERE s.agency = g.agency AND s.created_at >= %(since)s AND s.created_at < %(until)s
          AND s.created_at < %(as_of)s AND s.received_at BETWEEN %(rfrom)s AND %(rto)s
          AND """ + _in_scope("s.community") + """
          AND NOT EXISTS (SELECT 1 FROM hot_ids h WHERE h.issue_id = s.issue_id)
        UNION ALL
        SELECT h.acknowledged_at, h.on_time, h.resolved_at, h.escalated_at, h.ack_s, h.res_s
        FROM hot_a h
        WHERE h.agency = g.agency AND h.created_at >= %(since)s AND h.created_at < %(until)s
          AND h.created_at < %(as_of)s
"""

# One row per agency, from one pass over each agency's index range: the agencies are
# walked in order, so the rows arrive grouped and nothing sorts them to group. The
# durations come back whole, as arrays: their nearest-rank percentiles, per agency and
# overall, are picked out of them here by selection (:func:`_percentiles`), which costs
# a fraction of the sorts percentile_disc did in PostgreSQL (a sort per agency and one
# of every duration for the overall row, on each of two durations: most of the
# statement's time at 10^6 archived issues). Every count is per agency and adds up to
# the overall one (an assignment is one agency's).
_ASSIGNMENTS = _HOT + """,
agencies AS (
    SELECT agency FROM stat_agency UNION SELECT agency FROM hot_a ORDER BY agency)
SELECT g.agency,
       count(*),
       count(*) FILTER (WHERE acknowledged_at < %(as_of)s),
       count(*) FILTER (WHERE acknowledged_at < %(as_of)s AND on_time),
       count(*) FILTER (WHERE resolved_at < %(as_of)s),
       count(*) FILTER (WHERE resolved_at IS NULL OR resolved_at >= %(as_of)s),
       count(*) FILTER (WHERE (resolved_at IS NULL OR resolved_at >= %(as_of)s)
                          AND escalated_at < %(as_of)s),
       array_agg(ack_s) FILTER (WHERE acknowledged_at < %(as_of)s),
       array_agg(res_s) FILTER (WHERE resolved_at < %(as_of)s)
FROM agencies g CROSS JOIN LATERAL (""" + _WINDOW_ROWS + """) w
GROUP BY g.agency
"""

# An archived rating in the window, not of an issue read from Redis (``{r}``: its alias).
_RATING_IN_WINDOW = """{r}.at >= %(since)s AND {r}.at < %(until)s AND {r}.at < %(as_of)s
      AND {r}.received_at BETWEEN %(rfrom)s AND %(rto)s
      AND """ + _in_scope("{r}.community") + """
      AND NOT EXISTS (SELECT 1 FROM hot_ids h WHERE h.issue_id = {r}.issue_id)"""

# Of the ratings counted, those the desk recorded on a call-back (rated_by's "desk").
_BY_DESK = "count(*) FILTER (WHERE by_desk), count(*) FILTER (WHERE by_desk AND satisfied)"

# Ratings in the window, each event once, however many journals hold it. An archived
# rating journaled under the rated issue itself (nearly all of them) is counted straight
# from the covering partial index of them alone (stat_rating_own): one row per event.
# Per agency, the same ratings are counted one agency at a time, each agency's one
# range of the covering index of stat_rating_agency (a row per rating and agency of its cycle, with when that
# agency's assignment was created), aggregated inside the range: nothing unnested,
# sorted or grouped. The copies elsewhere (a merged report's journal) and the hot
# ratings are counted once per event, and not at all when the rated issue's own copy is
# counted; they find their agencies among the hot facts or the archived assignments of
# the rated issue (by the primary key's prefix, never a scan). An agency may have a row
# from each part: the caller adds them up.
_RATINGS = _HOT + """,
copies AS (
    SELECT DISTINCT ON (event_id) event_id, subject, cycle, satisfied, by_desk
    FROM (
        SELECT r.event_id, r.subject, r.cycle, r.satisfied, r.by_desk FROM stat_rating r
        WHERE r.subject <> r.issue_id AND """ + _RATING_IN_WINDOW.format(r="r") + """
        UNION ALL
        SELECT event_id, subject, cycle, satisfied, by_desk
        FROM unnest(%(r_event)s::text[], %(r_subject)s::text[], %(r_cycle)s::int[],
                    %(r_satisfied)s::bool[], %(r_at)s::timestamptz[], %(r_by_desk)s::bool[])
            AS t(event_id, subject, cycle, satisfied, at, by_desk)
        WHERE at >= %(since)s AND at < %(until)s AND at < %(as_of)s) every
    WHERE NOT EXISTS (SELECT 1 FROM stat_rating o
                      WHERE o.issue_id = every.subject AND o.subject = every.subject
                        AND o.event_id = every.event_id
                        AND """ + _RATING_IN_WINDOW.format(r="o") + """)
    ORDER BY event_id)
SELECT NULL, count(*), count(*) FILTER (WHERE satisfied), """ + _BY_DESK + """ FROM (
    SELECT r.satisfied, r.by_desk FROM stat_rating r
    WHERE r.subject = r.issue_id AND """ + _RATING_IN_WINDOW.format(r="r") + """
    UNION ALL
    SELECT satisfied, by_desk FROM copies) every
UNION ALL
SELECT g.agency, own.rated, own.satisfied, own.desk_rated, own.desk_satisfied
FROM stat_agency g CROSS JOIN LATERAL (
    SELECT count(*) AS rated, count(*) FILTER (WHERE r.satisfied) AS satisfied,
           count(*) FILTER (WHERE r.by_desk) AS desk_rated,
           count(*) FILTER (WHERE r.by_desk AND r.satisfied) AS desk_satisfied
    FROM stat_rating_agency r
    WHERE r.agency = g.agency AND r.created_at < %(as_of)s
      AND """ + _RATING_IN_WINDOW.format(r="r") + """) own
WHERE own.rated > 0
UNION ALL
SELECT agency, count(*), count(*) FILTER (WHERE satisfied), """ + _BY_DESK + """ FROM (
    SELECT r.event_id, s.agency, r.satisfied, r.by_desk
    FROM copies r JOIN stat_assignment s ON s.issue_id = r.subject AND s.cycle = r.cycle
    WHERE s.created_at < %(as_of)s AND s.received_at BETWEEN %(rfrom)s AND %(rto)s
      AND NOT EXISTS (SELECT 1 FROM hot_ids h WHERE h.issue_id = s.issue_id)
    UNION
    SELECT r.event_id, h.agency, r.satisfied, r.by_desk
    FROM copies r JOIN hot_a h ON h.issue_id = r.subject AND h.cycle = r.cycle
    WHERE h.created_at < %(as_of)s) copied
GROUP BY agency
"""

_ESCALATIONS = _HOT + """,
escalations AS (
    SELECT DISTINCT ON (event_id) subject, agency FROM (
        SELECT e.event_id, e.subject, e.agency FROM stat_escalation e
        WHERE e.received_at BETWEEN %(rfrom)s AND %(rto)s
          AND """ + _in_scope("e.community") + """
          AND e.at >= %(since)s AND e.at < %(until)s AND e.at < %(as_of)s
          AND NOT EXISTS (SELECT 1 FROM hot_ids h WHERE h.issue_id = e.issue_id)
        UNION ALL
        SELECT event_id, subject, agency
        FROM unnest(%(e_event)s::text[], %(e_subject)s::text[], %(e_agency)s::text[],
                    %(e_at)s::timestamptz[]) AS t(event_id, subject, agency, at)
        WHERE at >= %(since)s AND at < %(until)s AND at < %(as_of)s) every)
SELECT agency, count(*), count(DISTINCT subject)
FROM escalations GROUP BY GROUPING SETS ((agency), ())
"""

# How many archived issues the window read: those received in [rfrom, rto]. Its whole
# UTC days [first_day, last_day) are summed from stat_issue_day; the partial days at
# either end, [rfrom, first_day) and [last_day, rto], are counted in archived_issue
# through its received_at index (:func:`_whole_days`); the issues read from Redis that
# are archived too are taken off (by primary key).
_ISSUES = """
SELECT
    coalesce((SELECT sum(d.issues) FROM stat_issue_day d
              WHERE d.day >= %(first_day)s AND d.day < %(last_day)s
                AND """ + _in_scope("d.community") + """), 0)::bigint
  + (SELECT count(*) FROM archived_issue a
     WHERE (a.received_at >= %(rfrom)s AND a.received_at < %(first_day)s
            OR a.received_at >= %(last_day)s AND a.received_at <= %(rto)s)
       AND """ + _in_scope("a.community") + """)
  - (SELECT count(*) FROM archived_issue a
     WHERE a.issue_id IN (SELECT json_array_elements_text(%(hot_ids)s::json))
       AND a.received_at BETWEEN %(rfrom)s AND %(rto)s
       AND """ + _in_scope("a.community") + """)
"""


def _whole_days(rfrom: datetime, rto: datetime) -> tuple[datetime, datetime]:
    """``(first_day, last_day)``: the UTC midnights bounding the whole days of
    ``[rfrom, rto]``; both ``rto`` when it holds none (the partial ranges then cover it)."""
    first = rfrom.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if first < rfrom:
        first += timedelta(days=1)
    last = rto.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (first, last) if first < last else (rto, rto)


def _parameters(hot: dict[str, IssueFacts], since: datetime, until: datetime,
                as_of: datetime, communities: frozenset[str] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "since": since, "until": until, "as_of": as_of, "rfrom": since - LOOKBACK,
        "rto": until, "hot_ids": dumps(list(hot)),
        **dict(zip(("first_day", "last_day"), _whole_days(since - LOOKBACK, until),
                   strict=True)),
        "communities": community_keys(communities) if communities is not None else None}
    for name in ("r_event", "r_subject", "r_cycle", "r_satisfied", "r_at", "r_by_desk",
                 "e_event", "e_subject", "e_agency", "e_at"):
        params[name] = []
    assignments = []
    for issue_id, facts in hot.items():
        for a in facts.assignments:
            assignments.append({
                "issue_id": issue_id, "agency": a.agency, "cycle": a.cycle,
                "created_at": a.created, "acknowledged_at": a.acknowledged,
                "on_time": a.on_time, "resolved_at": a.resolved,
                "escalated_at": a.escalated_at,
                "ack_s": seconds_between(a.created, a.acknowledged),
                "res_s": seconds_between(a.created, a.resolved)})
        for r in facts.ratings:
            params["r_event"].append(r.event_id)
            params["r_subject"].append(r.issue_id)
            params["r_cycle"].append(r.cycle)
            params["r_satisfied"].append(r.satisfied)
            params["r_at"].append(r.at)
            params["r_by_desk"].append(r.by_desk)
        for e in facts.escalations:
            params["e_event"].append(e.event_id)
            params["e_subject"].append(e.issue_id)
            params["e_agency"].append(e.agency)
            params["e_at"].append(e.at)
    params["hot_a"] = dumps(assignments)
    return params


def _empty_block() -> dict[str, Any]:
    return {"assigned": 0, "acknowledged": 0, "acknowledged_on_time": 0, "resolved": 0,
            "rated": 0, "satisfied": 0, "response_rate": None, "resolution_rate": None,
            "satisfaction_rate": None,
            "rated_by": {rater: rating_figures(0, 0) for rater in RATERS},
            "time_to_acknowledge_s": {"median": None, "p90": None},
            "time_to_resolve_s": {"median": None, "p90": None},
            "open": 0, "overdue": 0, "escalated": 0, "escalated_issues": 0}


_FLOAT8_ARRAY = psycopg.postgres.types["float8"].array_oid
# A float8[] in PostgreSQL's binary format: ndim, has-nulls flag, element type, then per
# dimension its length and lower bound, then per element its length and big-endian value.
_ARRAY_HEADER = struct.Struct("!iiI")
_DIMENSION = struct.Struct("!ii")
_ELEMENT = numpy.dtype([("length", ">i4"), ("value", ">f8")])


class _DurationsLoader(Loader):
    """A one-dimensional float8[] in binary as a numpy array; NULLs are left out, as
    percentile_disc leaves them out (no duration is NULL: the figures filter on the time
    the duration ends)."""

    format = Format.BINARY

    def load(self, data: Buffer) -> numpy.ndarray:
        ndim, has_nulls, _ = _ARRAY_HEADER.unpack_from(data)
        if ndim == 0:
            return numpy.empty(0)
        if ndim != 1:
            raise ValueError(f"expected durations in one dimension, got {ndim}")
        start = _ARRAY_HEADER.size + _DIMENSION.size
        if not has_nulls:
            return numpy.frombuffer(data, _ELEMENT, offset=start)["value"].astype(numpy.float64)
        values, offset = [], start
        while offset < len(data):
            (length,) = struct.unpack_from("!i", data, offset)
            offset += 4
            if length >= 0:
                values.append(struct.unpack_from("!d", data, offset)[0])
                offset += length
        return numpy.array(values, dtype=numpy.float64)


def _durations(values: numpy.ndarray | None) -> numpy.ndarray:
    """An agency's durations (None: it had none)."""
    return numpy.empty(0) if values is None else values


def _percentiles(durations: numpy.ndarray) -> dict[str, float | None]:
    """The median and 90th nearest-rank percentiles, exactly ``nearest_rank``'s, found by
    selection (numpy.partition: linear time, no sort)."""
    if not durations.size:
        return {"median": None, "p90": None}
    ranks = [nearest_rank_index(durations.size, p) for p in (50, 90)]
    median, p90 = numpy.partition(durations, ranks)[ranks]
    return {"median": round(float(median), 3), "p90": round(float(p90), 3)}


def _assignment_figures(block: dict[str, Any], counts: list[int], ack: numpy.ndarray,
                        res: numpy.ndarray) -> None:
    assigned, acknowledged, on_time, resolved, open_, overdue = counts
    block.update(assigned=assigned, acknowledged=acknowledged, acknowledged_on_time=on_time,
                 resolved=resolved, open=open_, overdue=overdue,
                 response_rate=_rate(on_time, assigned), resolution_rate=_rate(resolved, assigned),
                 time_to_acknowledge_s=_percentiles(ack), time_to_resolve_s=_percentiles(res))


def stats_over(archive: Archive, hot: dict[str, list[dict]], since: datetime,
               until: datetime, now: datetime,
               communities: frozenset[str] | None = None) -> dict[str, Any]:
    """``compute_stats``'s answer for ``[since, until)`` over the archived issues and the
    ``hot`` ones (issue id -> journal, read from Redis: the issues received in
    ``[since - LOOKBACK, until]``). ``communities``: only the archived issues of these
    (a desk's scope; ``hot`` is narrowed by the caller)."""
    return stats_over_facts(archive, {issue_id: issue_facts(journal)
                                      for issue_id, journal in hot.items()},
                            since, until, now, communities)


def stats_over_facts(archive: Archive, hot: dict[str, IssueFacts], since: datetime,
                     until: datetime, now: datetime,
                     communities: frozenset[str] | None = None) -> dict[str, Any]:
    """:func:`stats_over`, given the hot issues' facts (``issue_facts`` of their journals)."""
    as_of = min(until, now)
    params = _parameters(hot, since, until, as_of, communities)
    blocks: dict[str | None, dict[str, Any]] = {None: _empty_block()}

    def block(agency: str | None) -> dict[str, Any]:
        return blocks.setdefault(agency, _empty_block())

    # Four statements on four connections at once: PostgreSQL runs them side by side.
    queries = {"assignments": (_ASSIGNMENTS, "all"),
               "ratings": (_RATINGS, "all"), "escalations": (_ESCALATIONS, "all"),
               "issues": (_ISSUES, "one")}

    def run(name: str):
        sql, how = queries[name]
        with archive.connection() as conn, conn.cursor(binary=True) as cursor:
            # Binary results, and the durations' arrays straight into numpy: printing,
            # parsing and boxing some 200,000 floats a request cost more than selecting
            # the percentiles out of them.
            cursor.adapters.register_loader(_FLOAT8_ARRAY, _DurationsLoader)
            # Never prepared: psycopg prepares a statement on its fifth run, and PostgreSQL
            # then plans it once for any parameters; a plan made for a few hot issues,
            # used for thousands, took seconds (docs/benchmarks.md).
            cursor.execute(sql, params, prepare=False)
            return cursor.fetchall() if how == "all" else cursor.fetchone()[0]

    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        results = dict(zip(queries, pool.map(run, queries), strict=True))
    assignments = results["assignments"]
    ratings, escalations = results["ratings"], results["escalations"]
    archived_issues = results["issues"]

    every_ack, every_res = [], []
    totals = [0] * 6
    for agency, *counts, ack, res in assignments:
        ack, res = _durations(ack), _durations(res)
        every_ack.append(ack)
        every_res.append(res)
        totals = [total + count for total, count in zip(totals, counts, strict=True)]
        _assignment_figures(block(agency), counts, ack, res)
    if totals[0]:  # an empty window has no overall assignment figures
        _assignment_figures(block(None), totals, numpy.concatenate(every_ack),
                            numpy.concatenate(every_res))
    for agency, rated, satisfied, desk_rated, desk_satisfied in ratings:
        if agency is None and not rated:
            continue
        b = block(agency)
        b.update(rated=b["rated"] + rated, satisfied=b["satisfied"] + satisfied)
        b["satisfaction_rate"] = _rate(b["satisfied"], b["rated"])
        by = b["rated_by"]
        desk = (by["desk"]["rated"] + desk_rated, by["desk"]["satisfied"] + desk_satisfied)
        by["desk"] = rating_figures(*desk)
        by["resident"] = rating_figures(b["rated"] - desk[0], b["satisfied"] - desk[1])
    for agency, escalated, escalated_issues in escalations:
        if agency is None and not escalated:
            continue
        block(agency).update(escalated=escalated, escalated_issues=escalated_issues)

    overall = blocks.pop(None)
    return {
        "window": {"since": _iso(since), "until": _iso(until), "as_of": _iso(as_of),
                   "issues": archived_issues + len(hot)},
        "overall": overall,
        "agencies": {agency: blocks[agency] for agency in sorted(blocks)},
    }

"""The three rates (三率): response, resolution and satisfaction, from the journal. Pure.

Every figure is computed from the events intake journaled (``{p}:issue:{id}:journal``),
never from counters, so it can be recomputed for any window and cannot drift.

Definitions
-----------

Events are read per issue in the order they occurred (``occurred_at``; arrival
order breaks ties), each ``event_id`` once across all journals, and only those that
occurred before the **as-of** instant, ``min(until, now)``. A window's figures are
therefore those it had at its end, and later events do not change them.

*Assignment*
    ``(issue, agency, cycle)``. ``issue.dispatched`` creates one in cycle 0 for every
    agency it lists. ``assignment.created`` (an agency invited to a table) creates one
    in the issue's current cycle: 0, or the ``cycle`` of the last ``issue.reopened``
    before it. ``issue.reopened`` creates one in its ``cycle`` for every agency it
    lists. ``assignment.withdrawn`` (the desk rerouted the issue) takes the agency's
    current assignment away: it is not counted for or against the agency, and a later
    ``assignment.created`` for it starts afresh. A repeated creation of the same triple
    is ignored: journals from before
    dispatches stopped publishing ``assignment.created`` hold both for a dispatch, and
    count it once. An assignment *is in the window* when it was created
    in ``[since, until)``; those are the ones counted (``assigned``).
Acknowledged on time
    The agency's first ``assignment.acknowledged`` on that issue after the assignment
    was created (and before the agency's next cycle), with ``on_time`` true. Later
    acknowledgements of the same assignment are ignored.
Resolved
    An ``assignment.resolved`` by the agency on that issue after the assignment was
    created and before the agency's next cycle (the same cycle).
Response rate
    acknowledged on time / assigned.
Resolution rate
    resolved / assigned.
Satisfaction rate
    ``issue.rated`` events in ``[since, until)`` rated ``satisfied`` / all of them.
    Every reporter's rating counts (a merged neighbour rates too). For an agency:
    the ratings of issues on which the agency had an assignment in the rated
    ``cycle``, whenever that assignment was created.
Rated by
    The same ratings split by who recorded them (``rated_by``): ``resident``, given
    through the resident's own link, and ``desk``, recorded by the desk on the
    resident's behalf after a call-back or visit (电话回访: the event has
    ``recorded_by``); each with its ``rated``, ``satisfied`` and ``satisfaction_rate``.
    The two add up to ``rated`` and ``satisfied``.
Time to acknowledge / to resolve
    Seconds from the assignment's creation to its acknowledgement / resolution, over
    the assignments in the window that were acknowledged / resolved (on time or
    not). ``median`` and ``p90`` use the **nearest-rank** method: the p-th percentile
    of n sorted values is the value of rank ``ceil(p/100 * n)`` (1-based), always an
    observed value; the median is the 50th percentile (the lower middle value when n
    is even). ``null`` when there are none.
Open
    Assignments in the window not resolved by the as-of instant.
Overdue
    Open assignments for which an ``issue.escalated`` names the agency, after the
    assignment was created (a missed acknowledge or resolve deadline, 三级吹哨).
Escalated
    ``issue.escalated`` events in ``[since, until)``: ``escalated`` counts the events
    and ``escalated_issues`` the distinct issues. For an agency: those naming it.
Merged issues
    Their journals hold ``issue.received`` and ``issue.merged`` only, so they have
    no assignments; a rating by their reporter is journaled under the open issue
    they joined, and an event present in several journals counts once.

Rates are ``null`` when their denominator is 0, otherwise rounded to 4 places.
Durations are in seconds, rounded to the millisecond.

Which issues are read
---------------------

The service reads the issues *received* in ``[since - 60 days, until]``
(:data:`LOOKBACK`, by the ``{p}:issues`` score): an assignment created or a rating
given in the window belongs to an issue received at most 60 days before it starts.
An issue reopened more than 60 days after it was received is not seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator, model_validator

from shared.contracts import Strict, bounded_text, utcnow
from shared.jsoncodec import utc_moment

DEFAULT_WINDOW = timedelta(days=30)
MAX_WINDOW = timedelta(days=366)
LOOKBACK = timedelta(days=60)
# The moments a window may name. Its reads reach LOOKBACK (and, unset, DEFAULT_WINDOW)
# before ``since`` and a day past ``until``: near year 1 or 9999 that arithmetic
# overflows (a 500), and no issue was ever received outside these years.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


class StatsWindow(Strict):
    """``GET /stats?since=&until=`` / ``rpc.intake.stats({...})``: ISO datetimes with a zone.

    ``until`` defaults to now and ``since`` to 30 days before ``until``.
    """

    # ``until`` first, so that ``since`` is checked against it and any error names ``since``.
    until: AwareDatetime = Field(default_factory=utcnow)
    since: AwareDatetime | None = None

    @field_validator("until", "since")
    @classmethod
    def _within_reach(cls, moment: datetime | None) -> datetime | None:
        if moment is None:
            return moment
        try:
            inside = EARLIEST <= moment.astimezone(UTC) < LATEST
        except OverflowError:  # 9999-12-31T23:00:00-14:00 is past the last UTC instant
            inside = False
        if not inside:
            raise ValueError(f"must be from {EARLIEST.year} to {LATEST.year - 1}")
        return moment

    @field_validator("since")
    @classmethod
    def _before_until(cls, since: datetime | None, info: ValidationInfo) -> datetime | None:
        until = info.data.get("until")
        if since is None or until is None:
            return since
        if since >= until:
            raise ValueError("must be earlier than until")
        if until - since > MAX_WINDOW:
            raise ValueError(f"the window must not be longer than {MAX_WINDOW.days} days")
        return since

    @model_validator(mode="after")
    def _default_since(self) -> StatsWindow:
        if self.since is None:
            self.since = self.until - DEFAULT_WINDOW
        return self

    def issues_received(self) -> tuple[datetime, datetime]:
        """The received-time range of the issues to read (see the module docstring)."""
        return self.since - LOOKBACK, self.until


class StatsScope(Strict):
    """``rpc.intake.stats(window, communities)``'s second argument: the communities of a
    desk scoped to them, as the board takes them (``BoardFilter.communities``)."""

    communities: list[bounded_text(64)] = Field(max_length=100)


# ------------------------------------------------------------------ the history


@dataclass
class _Assignment:
    issue_id: str
    agency: str
    cycle: int
    created: datetime
    acknowledged: datetime | None = None
    on_time: bool = False
    resolved: datetime | None = None
    escalated: bool = False
    escalated_at: datetime | None = None  # the first escalation while this was the agency's


@dataclass
class _Rating:
    issue_id: str
    cycle: int
    at: datetime
    satisfied: bool
    event_id: str = ""
    by_desk: bool = False  # recorded by the desk on a call-back (电话回访), not by the link


@dataclass
class _Escalation:
    issue_id: str
    agency: str
    at: datetime
    event_id: str = ""


@dataclass
class _History:
    assignments: list[_Assignment]
    ratings: list[_Rating]
    escalations: list[_Escalation]
    # (issue, cycle) -> agencies with an assignment in that cycle
    cycles: dict[tuple[str, int], set[str]]


def _moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ordered(journal: list[dict], seen: set[str], as_of: datetime
             ) -> list[tuple[datetime, dict]]:
    """The journal's events not seen before, before ``as_of``, in the order they occurred."""
    events = []
    for entry in journal:
        event_id = entry.get("event_id")
        if event_id:
            if event_id in seen:
                continue
            seen.add(event_id)
        at = _moment(entry["occurred_at"])
        if at < as_of:
            events.append((at, entry))
    events.sort(key=lambda pair: pair[0])  # stable: arrival order breaks ties
    return events


def _replay(journals: Iterable[list[dict]], as_of: datetime) -> _History:
    history = _History([], [], [], {})
    seen: set[str] = set()
    for journal in journals:
        _replay_issue(_ordered(journal, seen, as_of), history)
    return history


def _replay_issue(events: list[tuple[datetime, dict]], history: _History) -> None:
    cycle = 0
    current: dict[str, _Assignment] = {}  # agency -> its latest assignment on this issue

    def create(issue_id: str, agency: str, in_cycle: int, at: datetime) -> None:
        agencies = history.cycles.setdefault((issue_id, in_cycle), set())
        if agency not in agencies:
            agencies.add(agency)
            current[agency] = _Assignment(issue_id, agency, in_cycle, at)
            history.assignments.append(current[agency])

    for at, event in events:
        kind, issue_id = event["event_type"], event["issue_id"]
        if kind == "issue.dispatched":
            for summary in event["assignments"]:
                create(issue_id, summary["agency"], cycle, at)
        elif kind == "assignment.created":
            create(issue_id, event["assignment"]["agency"], cycle, at)
        elif kind == "issue.reopened":
            cycle = event["cycle"]
            for summary in event["assignments"]:
                create(issue_id, summary["agency"], cycle, at)
        elif kind == "assignment.withdrawn":
            agency = event["agency"]["agency"]
            withdrawn = current.pop(agency, None)
            if withdrawn is not None:
                history.assignments = [a for a in history.assignments if a is not withdrawn]
                history.cycles.get((issue_id, withdrawn.cycle), set()).discard(agency)
        elif kind == "assignment.acknowledged":
            assignment = current.get(event["agency"])
            if assignment and assignment.acknowledged is None:
                assignment.acknowledged, assignment.on_time = at, bool(event["on_time"])
        elif kind == "assignment.resolved":
            assignment = current.get(event["agency"])
            if assignment and assignment.resolved is None:
                assignment.resolved = at
        elif kind == "issue.escalated":
            agency = event["agency"]["agency"]
            history.escalations.append(_Escalation(issue_id, agency, at,
                                                   event.get("event_id") or ""))
            if agency in current:
                current[agency].escalated = True
                if current[agency].escalated_at is None:
                    current[agency].escalated_at = at
        elif kind == "issue.rated":
            history.ratings.append(_Rating(issue_id, event["cycle"], at,
                                           event["rating"] == "satisfied",
                                           event.get("event_id") or "",
                                           by_desk=bool(event.get("recorded_by"))))


@dataclass
class IssueFacts:
    """One issue's part in the three rates, replayed once from its whole journal.

    Events are replayed in the order they occurred, so the history as of any instant
    is a prefix of the whole one: an assignment, acknowledgement, resolution, rating or
    escalation counts as of ``t`` exactly when its own time is before ``t``, and
    ``escalated_at`` (the first escalation naming the agency while the assignment was
    its latest) says whether it was overdue by then. That is what lets the archive keep
    these rows instead of the journal for GET /stats (``shared.archive``).
    """

    assignments: list[_Assignment]
    ratings: list[_Rating]
    escalations: list[_Escalation]


FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def issue_facts(journal: list[dict]) -> IssueFacts:
    """The facts of one issue's journal (every event, however late). Pure."""
    history = _History([], [], [], {})
    _replay_issue(_ordered(journal, set(), FAR_FUTURE), history)
    return IssueFacts(history.assignments, history.ratings, history.escalations)


# ------------------------------------------------------------------- the figures


def nearest_rank_index(count: int, percentile: int) -> int:
    """Where the nearest-rank percentile of ``count`` sorted values is: the 0-based index
    of rank ``ceil(p/100 * n)`` (at least the first)."""
    return max(1, math.ceil(percentile * count / 100)) - 1


def nearest_rank(values: list[float], percentile: int) -> float | None:
    """The nearest-rank percentile: the value of rank ``ceil(p/100 * n)`` once sorted."""
    if not values:
        return None
    return sorted(values)[nearest_rank_index(len(values), percentile)]


def _durations(pairs: Iterable[tuple[datetime, datetime | None]]) -> dict[str, float | None]:
    seconds = [(end - start).total_seconds() for start, end in pairs if end is not None]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {"median": rounded(nearest_rank(seconds, 50)), "p90": rounded(nearest_rank(seconds, 90))}


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


RATERS = ("resident", "desk")  # ``rated_by``: through the resident's link; by the desk


def rating_figures(rated: int, satisfied: int) -> dict[str, Any]:
    """One ``rated_by`` part: how many ratings, how many satisfied, and the rate."""
    return {"rated": rated, "satisfied": satisfied,
            "satisfaction_rate": _rate(satisfied, rated)}


def _rated_by(ratings: list[_Rating]) -> dict[str, dict[str, Any]]:
    parts = {"resident": [r for r in ratings if not r.by_desk],
             "desk": [r for r in ratings if r.by_desk]}
    return {rater: rating_figures(len(part), sum(r.satisfied for r in part))
            for rater, part in parts.items()}


def _block(assignments: list[_Assignment], ratings: list[_Rating],
           escalations: list[_Escalation]) -> dict[str, Any]:
    acknowledged = [a for a in assignments if a.acknowledged is not None]
    on_time = sum(a.on_time for a in acknowledged)
    resolved = sum(a.resolved is not None for a in assignments)
    satisfied = sum(r.satisfied for r in ratings)
    open_ = [a for a in assignments if a.resolved is None]
    return {
        "assigned": len(assignments),
        "acknowledged": len(acknowledged),
        "acknowledged_on_time": on_time,
        "resolved": resolved,
        "rated": len(ratings),
        "satisfied": satisfied,
        "response_rate": _rate(on_time, len(assignments)),
        "resolution_rate": _rate(resolved, len(assignments)),
        "satisfaction_rate": _rate(satisfied, len(ratings)),
        "rated_by": _rated_by(ratings),
        "time_to_acknowledge_s": _durations((a.created, a.acknowledged) for a in assignments),
        "time_to_resolve_s": _durations((a.created, a.resolved) for a in assignments),
        "open": len(open_),
        "overdue": sum(a.escalated for a in open_),
        "escalated": len(escalations),
        "escalated_issues": len({e.issue_id for e in escalations}),
    }


def compute_stats(journals: Iterable[list[dict]], window_start: datetime,
                  window_end: datetime, now: datetime) -> dict[str, Any]:
    """The three rates over ``[window_start, window_end)``, overall and per agency.

    ``journals`` holds each issue's journal entries as stored
    (``{"event_type": ..., **event fields}``, ``occurred_at`` in ISO 8601). The
    definitions are in this module's docstring.
    """
    as_of = min(window_end, now)
    journals = list(journals)
    history = _replay(journals, as_of)

    def in_window(at: datetime) -> bool:
        return window_start <= at < window_end

    assignments = [a for a in history.assignments if in_window(a.created)]
    ratings = [r for r in history.ratings if in_window(r.at)]
    escalations = [e for e in history.escalations if in_window(e.at)]

    def rated_for(agency: str) -> list[_Rating]:
        return [r for r in ratings if agency in history.cycles.get((r.issue_id, r.cycle), ())]

    agencies = sorted({a.agency for a in assignments} | {e.agency for e in escalations}
                      | {agency for r in ratings
                         for agency in history.cycles.get((r.issue_id, r.cycle), ())})
    return {
        "window": {"since": _iso(window_start), "until": _iso(window_end), "as_of": _iso(as_of),
                   "issues": len(journals)},
        "overall": _block(assignments, ratings, escalations),
        "agencies": {
            agency: _block([a for a in assignments if a.agency == agency], rated_for(agency),
                           [e for e in escalations if e.agency == agency])
            for agency in agencies
        },
    }


def _iso(moment: datetime) -> str:
    return utc_moment(moment.astimezone(UTC))

"""The three rates (三率) from a known, hand-built history: every figure checked exactly."""

from datetime import UTC, datetime, timedelta

import pytest

from services.intake.stats import StatsWindow, compute_stats, nearest_rank
from shared.contracts import (
    AgencyRef,
    AssignmentAcknowledged,
    AssignmentCreated,
    AssignmentResolved,
    AssignmentSummary,
    AssignmentWithdrawn,
    IssueDispatched,
    IssueEscalated,
    IssueMerged,
    IssueRated,
    IssueReceived,
    IssueReopened,
    Location,
)
from shared.errors import InvalidPayload
from shared.web import validate
from whistle.stats_cli import duration, percent

SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=7)  # h(168)
NOW = SINCE + timedelta(days=9)
PLACE = Location(community="缤泰社区", address="丽德花园3号楼")


def h(hours: float) -> datetime:
    """``hours`` after the window starts."""
    return SINCE + timedelta(hours=hours)


def stored(event) -> dict:
    """A journal entry exactly as intake stores it."""
    return {"event_type": event.event_type, **event.model_dump(mode="json")}


def envelope(issue_id: str, at: datetime) -> dict:
    return {"trace_id": f"trace-{issue_id}", "issue_id": issue_id, "occurred_at": at}


def summary(agency: str) -> AssignmentSummary:
    return AssignmentSummary(agency=agency, agency_name=agency, agency_name_en=agency,
                             sector="other", role="lead", acknowledge_by=SINCE,
                             resolve_by=SINCE)


def ref(agency: str) -> AgencyRef:
    return AgencyRef(agency=agency, agency_name=agency, agency_name_en=agency)


def created(issue_id, agency, at):
    return stored(AssignmentCreated(**envelope(issue_id, at), category="other",
                                    priority="normal", assignment=summary(agency)))


def dispatched(issue_id, at, *agencies):
    return stored(IssueDispatched(**envelope(issue_id, at), category="other", priority="normal",
                                  assignments=[summary(a) for a in agencies]))


def acked(issue_id, agency, at, on_time):
    return stored(AssignmentAcknowledged(**envelope(issue_id, at), agency=agency,
                                         agency_name=agency, agency_name_en=agency,
                                         staff_id="s-1", on_time=on_time))


def resolved(issue_id, agency, at):
    return stored(AssignmentResolved(**envelope(issue_id, at), agency=agency,
                                     agency_name=agency, agency_name_en=agency,
                                     staff_id="s-1", note="done"))


def escalated(issue_id, agency, at, deadline="acknowledge"):
    return stored(IssueEscalated(**envelope(issue_id, at), agency=ref(agency),
                                 deadline=deadline, missed=at, level="street",
                                 supervisor="街道办", supervisor_en="Street office"))


def rated(issue_id, at, rating, cycle, method=None):
    """``method``: the desk recorded it on a call-back (电话回访), not the resident's link."""
    by_desk = {"recorded_by": "d-1", "method": method} if method else {}
    return stored(IssueRated(**envelope(issue_id, at), rating=rating,
                             reporter_issue_id=issue_id, cycle=cycle, **by_desk))


def reopened(issue_id, at, cycle, *agencies):
    return stored(IssueReopened(**envelope(issue_id, at), reason="还是不行", level="street",
                                cycle=cycle, assignments=[summary(a) for a in agencies]))


def received(issue_id, at):
    return stored(IssueReceived(**envelope(issue_id, at), description="电线耷拉", location=PLACE,
                                channel="desk", language="zh", has_contact=False))


A, B, C, D, E, F = (f"WH-2026110{n}-0001" for n in range(1, 7))


def known_history(since: datetime) -> dict[str, list[dict]]:
    """Six issues' journals around a 7-day window starting at ``since``."""

    def h(hours: float) -> datetime:
        return since + timedelta(hours=hours)

    before = since - timedelta(days=12)
    a_rated = rated(A, h(30), "satisfied", 0, "visit")  # the desk recorded it
    return {
        # A: power on time; water late, escalated before its 报到, resolved; rated satisfied
        # (the desk recorded it on a visit).
        A: [
            received(A, h(1)), dispatched(A, h(1), "power", "water"),
            acked(A, "power", h(2), True),
            acked(A, "power", h(3), False),  # a second 报到 of the same assignment: ignored
            resolved(A, "power", h(5)),
            escalated(A, "water", h(9)), acked(A, "water", h(11), False),
            resolved(A, "water", h(25)), a_rated,
        ],
        # B: gas resolves, the resident is unsatisfied, cycle 1 is resolved and rated
        # satisfied (by the desk, on a call-back).
        B: [
            created(B, "gas", h(3)), acked(B, "gas", h(3.5), True), resolved(B, "gas", h(7)),
            rated(B, h(10), "unsatisfied", 0), reopened(B, h(10), 1, "gas"),
            acked(B, "gas", h(12), True), resolved(B, "gas", h(20)),
            rated(B, h(22), "satisfied", 1, "phone"),
        ],
        # C: housing reports in but never resolves; power never reports in; both escalated.
        # Arrival order differs from occurrence (housing's 报到 journaled before its creation).
        # Journaled as dispatches were before they stopped publishing assignment.created:
        # the dispatch and one creation per agency, counted once.
        C: [
            acked(C, "housing", h(52), True), dispatched(C, h(50), "housing", "power"),
            created(C, "housing", h(50)), created(C, "power", h(50)),
            escalated(C, "power", h(60)), escalated(C, "power", h(100), "acknowledge"),
            escalated(C, "housing", h(120), "resolve"),
        ],
        # D: a neighbour's duplicate merged into A; its journal also holds A's rating
        # (counted once).
        D: [received(D, h(4)),
            stored(IssueMerged(**envelope(D, h(4)), into_issue_id=A, category="other")),
            a_rated],
        # E: created before the window; rated unsatisfied inside it and reopened: cycle 1 is
        # in the window, reports in on time, resolves only after the window ends.
        E: [
            created(E, "water", before), escalated(E, "water", before + timedelta(hours=80)),
            acked(E, "water", before + timedelta(hours=81), False),
            resolved(E, "water", before + timedelta(hours=90)),
            rated(E, before + timedelta(hours=95), "satisfied", 0),  # outside: not counted
            rated(E, h(40), "unsatisfied", 0), reopened(E, h(40), 1, "water"),
            acked(E, "water", h(41), True), resolved(E, "water", h(200)),
        ],
        # F: everything at or after the window's end.
        F: [created(F, "municipal_roads", h(170)), escalated(F, "municipal_roads", h(180)),
            created(F, "power", h(168))],
    }


JOURNALS = list(known_history(SINCE).values())


def times(median, p90):
    return {"median": median, "p90": p90}


def rated_by(resident: tuple[int, int], desk: tuple[int, int]) -> dict:
    """``rated_by``: (rated, satisfied) through the resident's link, and by the desk."""
    return {rater: {"rated": n, "satisfied": ok,
                    "satisfaction_rate": round(ok / n, 4) if n else None}
            for rater, (n, ok) in (("resident", resident), ("desk", desk))}


EXPECTED_OVERALL = {
    # A/power, A/water, B/gas c0, B/gas c1, C/housing, C/power, E/water c1
    "assigned": 7, "acknowledged": 6, "acknowledged_on_time": 5, "resolved": 4,
    "rated": 4, "satisfied": 2,
    "response_rate": 0.7143, "resolution_rate": 0.5714, "satisfaction_rate": 0.5,
    # the links: B c0 and E c0, unsatisfied; the desk: A and B c1, satisfied
    "rated_by": rated_by(resident=(2, 0), desk=(2, 2)),
    # acknowledge: 1800, 3600, 3600, 7200, 7200, 36000 -> ranks 3 and 6
    "time_to_acknowledge_s": times(3600.0, 36000.0),
    # resolve: 14400, 14400, 36000, 86400 -> ranks 2 and 4
    "time_to_resolve_s": times(14400.0, 86400.0),
    "open": 3, "overdue": 2, "escalated": 4, "escalated_issues": 2,
}

EXPECTED_AGENCIES = {
    "gas": {
        "assigned": 2, "acknowledged": 2, "acknowledged_on_time": 2, "resolved": 2,
        "rated": 2, "satisfied": 1,
        "response_rate": 1.0, "resolution_rate": 1.0, "satisfaction_rate": 0.5,
        "rated_by": rated_by(resident=(1, 0), desk=(1, 1)),
        "time_to_acknowledge_s": times(1800.0, 7200.0),
        "time_to_resolve_s": times(14400.0, 36000.0),
        "open": 0, "overdue": 0, "escalated": 0, "escalated_issues": 0,
    },
    "housing": {
        "assigned": 1, "acknowledged": 1, "acknowledged_on_time": 1, "resolved": 0,
        "rated": 0, "satisfied": 0,
        "response_rate": 1.0, "resolution_rate": 0.0, "satisfaction_rate": None,
        "rated_by": rated_by(resident=(0, 0), desk=(0, 0)),
        "time_to_acknowledge_s": times(7200.0, 7200.0),
        "time_to_resolve_s": times(None, None),
        "open": 1, "overdue": 1, "escalated": 1, "escalated_issues": 1,
    },
    "power": {
        "assigned": 2, "acknowledged": 1, "acknowledged_on_time": 1, "resolved": 1,
        "rated": 1, "satisfied": 1,
        "response_rate": 0.5, "resolution_rate": 0.5, "satisfaction_rate": 1.0,
        "rated_by": rated_by(resident=(0, 0), desk=(1, 1)),
        "time_to_acknowledge_s": times(3600.0, 3600.0),
        "time_to_resolve_s": times(14400.0, 14400.0),
        "open": 1, "overdue": 1, "escalated": 2, "escalated_issues": 1,
    },
    "water": {
        # A/water (late, resolved) and E/water cycle 1 (on time, open at the window's end)
        "assigned": 2, "acknowledged": 2, "acknowledged_on_time": 1, "resolved": 1,
        # A cycle 0 satisfied, E cycle 0 unsatisfied (E's cycle-0 assignment predates the window)
        "rated": 2, "satisfied": 1,
        "response_rate": 0.5, "resolution_rate": 0.5, "satisfaction_rate": 0.5,
        "rated_by": rated_by(resident=(1, 0), desk=(1, 1)),
        "time_to_acknowledge_s": times(3600.0, 36000.0),
        "time_to_resolve_s": times(86400.0, 86400.0),
        "open": 1, "overdue": 0, "escalated": 1, "escalated_issues": 1,
    },
}


def test_every_figure_of_a_known_history():
    report = compute_stats(JOURNALS, SINCE, UNTIL, NOW)
    assert report["window"] == {"since": "2026-11-01T00:00:00Z",
                                "until": "2026-11-08T00:00:00Z",
                                "as_of": "2026-11-08T00:00:00Z", "issues": 6}
    assert report["overall"] == EXPECTED_OVERALL
    assert report["agencies"] == EXPECTED_AGENCIES
    assert list(report["agencies"]) == sorted(EXPECTED_AGENCIES)


def test_journal_order_and_iteration_do_not_matter():
    shuffled = [list(reversed(j)) for j in reversed(JOURNALS)]
    report = compute_stats(iter(shuffled), SINCE, UNTIL, NOW)
    assert report["overall"] == EXPECTED_OVERALL
    assert report["agencies"] == EXPECTED_AGENCIES


def test_figures_are_as_of_now_when_the_window_has_not_ended():
    now = h(24)  # A/water has reported in (late) but not resolved; B's cycle 1 is done
    report = compute_stats(JOURNALS, SINCE, UNTIL, now)
    assert report["window"]["as_of"] == "2026-11-02T00:00:00Z"
    overall = report["overall"]
    assert (overall["assigned"], overall["acknowledged_on_time"], overall["resolved"],
            overall["open"], overall["overdue"]) == (4, 3, 3, 1, 1)
    assert (overall["rated"], overall["satisfied"], overall["satisfaction_rate"]) == (2, 1, 0.5)
    assert overall["escalated"] == 1 and sorted(report["agencies"]) == ["gas", "power", "water"]


def test_window_is_half_open():
    journal = [created(A, "power", SINCE), created(B, "gas", UNTIL),
               rated(A, UNTIL, "satisfied", 0), escalated(A, "power", SINCE)]
    report = compute_stats([journal[:1] + journal[3:], journal[1:3]], SINCE, UNTIL, NOW)
    assert report["overall"]["assigned"] == 1 and report["overall"]["rated"] == 0
    assert report["overall"]["overdue"] == 1 and report["overall"]["escalated"] == 1
    assert list(report["agencies"]) == ["power"]


def test_nothing_recorded_gives_nulls_not_zeros():
    report = compute_stats([], SINCE, UNTIL, NOW)
    overall = report["overall"]
    assert overall["assigned"] == 0 and report["agencies"] == {}
    assert overall["response_rate"] is overall["resolution_rate"] is None
    assert overall["satisfaction_rate"] is None
    assert overall["time_to_acknowledge_s"] == times(None, None)
    assert overall["time_to_resolve_s"] == times(None, None)


@pytest.mark.parametrize(("percentile", "value"), [(5, 15), (30, 20), (40, 20), (50, 35),
                                                   (90, 50), (100, 50)])
def test_nearest_rank_percentile(percentile, value):
    # The textbook example: ranks ceil(p/100 * 5) of 15, 20, 35, 40, 50.
    assert nearest_rank([50, 15, 40, 20, 35], percentile) == value


def test_nearest_rank_median_of_an_even_count_is_the_lower_middle():
    assert nearest_rank([4, 1, 3, 2], 50) == 2
    assert nearest_rank([7], 90) == 7
    assert nearest_rank([], 50) is None


# ------------------------------------------------------------------- the window


def test_window_defaults_to_the_last_30_days():
    window = validate(StatsWindow, {})
    assert window.until.tzinfo is not None
    assert abs((datetime.now(UTC) - window.until).total_seconds()) < 5
    assert window.until - window.since == timedelta(days=30)
    bounded = validate(StatsWindow, {"until": "2026-11-08T00:00:00+08:00"})
    assert bounded.since == datetime(2026, 10, 9, tzinfo=bounded.until.tzinfo)
    assert bounded.issues_received() == (bounded.since - timedelta(days=60), bounded.until)


def test_window_reaches_from_1970_to_9998():
    early = validate(StatsWindow, {"since": "1970-01-01T00:00:00Z",
                                   "until": "1970-01-02T00:00:00Z"})
    assert early.issues_received()[0] == datetime(1969, 11, 2, tzinfo=UTC)
    late = validate(StatsWindow, {"until": "9998-12-31T09:59:59-14:00"})
    assert late.since == late.until - timedelta(days=30)


def test_window_accepts_iso_with_zone():
    window = validate(StatsWindow, {"since": "2026-11-01T00:00:00Z",
                                    "until": "2026-11-08T00:00:00+08:00"})
    assert window.since == SINCE
    assert window.until == datetime(2026, 11, 7, 16, tzinfo=UTC)


@pytest.mark.parametrize(("payload", "field"), [
    ({"since": "yesterday"}, "since"),
    ({"since": "2026-11-01T00:00:00"}, "since"),  # no zone: ambiguous
    ({"since": "2026-11-08T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "since"),
    ({"since": "2026-11-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "since"),
    ({"since": "2025-01-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "since"),
    ({"until": "soon"}, "until"),
    ({"agency": "power"}, "agency"),
    # The ends of the calendar: the window's reads reach before and after it (were a 500).
    ({"until": "0001-01-05T00:00:00Z"}, "until"),
    ({"until": "9999-12-31T23:59:59-14:00"}, "until"),
    ({"since": "1969-12-31T00:00:00Z", "until": "1970-01-20T00:00:00Z"}, "since"),
])
def test_a_bad_window_names_the_field(payload, field):
    with pytest.raises(InvalidPayload) as caught:
        validate(StatsWindow, payload)
    assert [f["field"] for f in caught.value.errors] == [field]


def test_a_window_in_year_1_names_both_ends_instead_of_overflowing():
    with pytest.raises(InvalidPayload) as caught:
        validate(StatsWindow, {"since": "0001-01-02T00:00:00Z", "until": "0001-01-20T00:00:00Z"})
    assert [f["field"] for f in caught.value.errors] == ["until", "since"]


# ------------------------------------------------------------ the CLI's wording


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0, "0s"), (44.6, "45s"), (60, "1m"), (1800, "30m"), (3671, "1h1m"),
    (3605, "1h"), (36000, "10h"), (86400, "1d"), (90061, "1d1h"), (10 * 86400 + 59, "10d"),
])
def test_durations_are_written_for_people(seconds, text):
    assert duration(seconds) == text


def test_rates_are_written_as_percentages():
    assert (percent(None), percent(0.0), percent(0.7143), percent(1.0)) == (
        "-", "0.0%", "71.4%", "100.0%")


def test_a_withdrawn_assignment_counts_neither_for_nor_against_its_agency():
    """The desk rerouted WH-1 from water to drainage: water never had the job."""
    issue = "WH-20261101-0001"
    withdrawn = stored(AssignmentWithdrawn(**envelope(issue, h(2)), agency=ref("water"),
                                           staff_id="desk-wang", reason="是下水道"))
    journal = [received(issue, h(0)), dispatched(issue, h(1), "water"), withdrawn,
               created(issue, "drainage", h(2)), acked(issue, "drainage", h(3), True),
               rated(issue, h(30), "satisfied", 0)]
    stats = compute_stats([journal], SINCE, UNTIL, NOW)
    assert set(stats["agencies"]) == {"drainage"}
    assert stats["overall"]["assigned"] == 1 and stats["overall"]["response_rate"] == 1.0
    # withdrawn and assigned again later: a fresh assignment, counted once
    again = [*journal, created(issue, "water", h(5))]
    water = compute_stats([again], SINCE, UNTIL, NOW)["agencies"]["water"]
    assert water["assigned"] == 1 and water["acknowledged"] == 0

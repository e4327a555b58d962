"""民事民评: rating, reopening and closing, as pure functions (services.routing.feedback)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.routing import feedback
from services.routing.rules import Supervisor, load_rules
from shared.auth import FeedbackGrant
from shared.contracts import (
    AssignmentStatus,
    Channel,
    ClosedReason,
    DeadlineKind,
    EscalationLevel,
    IssueClosed,
    IssueRated,
    IssueReopened,
    IssueResolved,
    IssueStatus,
    Language,
    Location,
    Priority,
    Rating,
    RatingMethod,
    Role,
)
from shared.errors import InvalidTransition
from shared.issue import (
    NO_AGENCY,
    Assignment,
    Deadline,
    IssueRecord,
    Routing,
    acknowledge,
    dispatch,
    pending_deadlines,
    receive,
    resolve,
)

RULES = load_rules()
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
ISSUE = "WH-20261121-0007"
NEIGHBOUR = "WH-20261121-0008"
WEEK = timedelta(days=7)


def resolved_issue(now: datetime = T0) -> IssueRecord:
    """楼上漏水: water leads, the property manager supports; both finish by T0 + 1h."""
    record = receive(ISSUE, "trace-0007", "楼上漏水，卫生间天花板一直滴水", None,
                     Location(community="缤泰社区", address="丽德花园2号楼201"),
                     Channel.desk, Language.zh, now)
    window = RULES.window(Priority.high)
    parts = []
    for agency, role in (("water", Role.lead), ("property_manager", Role.support)):
        known = RULES.agency(agency)
        parts.append(Assignment(agency=agency, agency_name=known.name,
                                agency_name_en=known.name_en, sector=known.sector, role=role,
                                assigned_at=now, acknowledge_by=now + window.acknowledge,
                                resolve_by=now + window.resolve))
    record = dispatch(record, "pipe_leak", Priority.high,
                      Routing(rule="pipe_leak", keywords=["楼上漏水"], category_source="keywords"),
                      parts, now)
    done = now + timedelta(hours=1)
    for agency in ("water", "property_manager"):
        record = acknowledge(record, agency, f"{agency}-1", done)
        record = resolve(record, agency, f"{agency}-1", "已修复", done)
    assert record.status is IssueStatus.resolved
    return record


def resolved_event(record: IssueRecord) -> IssueResolved:
    return IssueResolved(trace_id=record.trace_id, issue_id=record.issue_id,
                         occurred_at=T0 + timedelta(hours=1), agencies=record.agencies())


def awaiting() -> IssueRecord:
    record = resolved_issue()
    return feedback.await_rating(record, resolved_event(record), WEEK)


def grant(cycle: int = 0, reporter: str = ISSUE, issue: str = ISSUE) -> FeedbackGrant:
    return FeedbackGrant(reporter_issue_id=reporter, issue_id=issue, cycle=cycle)


def test_rating_window_opens_once_and_is_watched_as_a_deadline():
    record = awaiting()
    assert record.feedback_due == T0 + timedelta(hours=1) + WEEK
    assert record.timeline[-1].step == "awaiting_rating"
    again = feedback.await_rating(record, resolved_event(record), WEEK)
    assert again.feedback_due == record.feedback_due and again.timeline == record.timeline
    [rating_deadline] = pending_deadlines(record)
    assert (rating_deadline.agency, rating_deadline.kind) == (NO_AGENCY, DeadlineKind.feedback)


def test_satisfied_closes_the_issue():
    now = T0 + timedelta(hours=3)
    new, events = feedback.rate(awaiting(), grant(), Rating.satisfied, "修得很快，谢谢", RULES, now)
    assert (new.status, new.closed_reason, new.closed_at) == (
        IssueStatus.closed, ClosedReason.satisfied, now)
    assert new.feedback_due is None and pending_deadlines(new) == []
    rated, closed = events
    assert isinstance(rated, IssueRated) and rated.rating is Rating.satisfied
    assert rated.comment == "修得很快，谢谢" and rated.cycle == 0
    assert isinstance(closed, IssueClosed) and closed.reason is ClosedReason.satisfied
    assert closed.causation_id == rated.event_id and closed.trace_id == rated.trace_id
    assert [s.step for s in new.timeline[-2:]] == ["rated", "closed"]


def test_unsatisfied_reopens_with_fresh_deadlines_one_level_up():
    now = T0 + timedelta(days=1)
    window = RULES.window(Priority.high)
    new, (rated, reopened) = feedback.rate(awaiting(), grant(), Rating.unsatisfied,
                                           "还在滴水", RULES, now)
    assert new.status is IssueStatus.dispatched and new.reopen_count == 1
    assert new.escalation_level is EscalationLevel.street
    for a in new.assignments:
        assert a.status is AssignmentStatus.assigned
        assert (a.acknowledge_by, a.resolve_by) == (now + window.acknowledge, now + window.resolve)
        assert a.acknowledged_at is None and a.resolved_at is None
    assert isinstance(reopened, IssueReopened)
    assert (reopened.level, reopened.cycle, reopened.reason) == (EscalationLevel.street, 1,
                                                                 "还在滴水")
    assert [s.agency for s in reopened.assignments] == ["water", "property_manager"]
    assert "还在滴水" in new.timeline[-1].detail and new.timeline[-1].step == "reopened"
    kinds = {(d.agency, d.kind) for d in pending_deadlines(new)}
    assert ("water", DeadlineKind.acknowledge) in kinds
    assert all(kind is not DeadlineKind.feedback for _, kind in kinds)


def test_reopening_at_the_district_already_says_nothing_went_up():
    """The district already followed the issue up: reopening took it nowhere higher, and
    the timeline, the event (so the residents' message) and the pages said "escalated to
    district" all the same."""
    now = T0 + timedelta(days=1)
    at_top = awaiting().model_copy(update={"escalation_level": EscalationLevel.district})
    new, (_, reopened) = feedback.rate(at_top, grant(), Rating.unsatisfied, "还在滴水",
                                       RULES, now)
    assert new.escalation_level is EscalationLevel.district and new.reopen_count == 1
    assert (reopened.level, reopened.escalated) == (EscalationLevel.district, False)
    assert new.timeline[-1].detail == ("the resident is not satisfied: 还在滴水; back to "
                                       "water, property_manager, still with district")
    # One level below the top, it does go up, and says so.
    at_street = awaiting().model_copy(update={"escalation_level": EscalationLevel.street})
    new, (_, reopened) = feedback.rate(at_street, grant(), Rating.unsatisfied, None, RULES, now)
    assert (reopened.level, reopened.escalated) == (EscalationLevel.district, True)
    assert new.timeline[-1].detail.endswith(", escalated to district")


def test_a_reopen_names_the_supervisor_at_its_level_from_the_rules():
    """notify tells that supervisor (in its language), as at a missed deadline; the
    event named none, and the street office never heard of a reopen to it."""
    now = T0 + timedelta(days=1)
    district = Supervisor(name="朝阳区政府", name_en="Chaoyang District", language="en")
    rules = RULES.model_copy(update={"supervisors": {**RULES.supervisors,
                                                     EscalationLevel.district: district}})
    _, (_, to_street) = feedback.rate(awaiting(), grant(), Rating.unsatisfied, None, rules, now)
    street = rules.supervisor(EscalationLevel.street)
    assert (to_street.supervisor, to_street.supervisor_en, to_street.supervisor_language) == (
        street.name, street.name_en, Language.zh)
    at_top = awaiting().model_copy(update={"escalation_level": EscalationLevel.district})
    _, (_, still) = feedback.rate(at_top, grant(), Rating.unsatisfied, None, rules, now)
    assert (still.escalated, still.supervisor, still.supervisor_en,
            still.supervisor_language) == (False, "朝阳区政府", "Chaoyang District", Language.en)


def test_a_comment_is_kept_with_phone_numbers_and_the_raters_name_masked():
    """The comment lands in the rating, the timeline and both events (the journal, the
    tail): masked there, as the logs mask them; the desk reads the rest of the text."""
    new, (rated, reopened) = feedback.rate(
        awaiting(), grant(), Rating.unsatisfied, "还是漏，联系我13900001111，孙建国", RULES,
        T0 + timedelta(days=1), names=["孙建国"])
    masked = "还是漏，联系我139****1111，孙**"
    assert (new.ratings[-1].comment, rated.comment, reopened.reason) == (masked,) * 3
    assert masked in new.timeline[-1].detail
    assert "13900001111" not in new.model_dump_json() and "孙建国" not in new.model_dump_json()


def resolved_again(reopened, staff, at):
    """Both agencies report in and resolve the reopened issue again ("彻底更换了管道"), and
    it awaits the resident's rating of the second cycle."""
    record = reopened
    for agency in ("water", "property_manager"):
        record = acknowledge(record, agency, staff, at)
        record = resolve(record, agency, staff, "彻底更换了管道", at)
    return feedback.await_rating(record, IssueResolved(
        trace_id=record.trace_id, issue_id=ISSUE, occurred_at=at, agencies=["water"]), WEEK)


def test_the_second_cycle_can_be_resolved_and_rated_again():
    reopened, _ = feedback.rate(awaiting(), grant(), Rating.unsatisfied, None, RULES,
                                T0 + timedelta(days=1))
    later = T0 + timedelta(days=2)
    record = resolved_again(reopened, "s", later)
    with pytest.raises(InvalidTransition, match="already been rated"):  # the old link
        feedback.rate(record, grant(cycle=0), Rating.satisfied, None, RULES, later)
    with pytest.raises(InvalidTransition, match="not waiting"):  # a link from the future
        feedback.rate(record, grant(cycle=2), Rating.satisfied, None, RULES, later)
    closed, _ = feedback.rate(record, grant(cycle=1), Rating.satisfied, None, RULES, later)
    assert closed.status is IssueStatus.closed and len(closed.ratings) == 2


def test_a_reopening_keeps_what_each_agency_claimed_done_and_a_second_one_adds_to_it():
    """Unsatisfied sends every part back to work; the resolution the resident rejected
    (note, who, when, which cycle) stays on the assignment, the latest one apart."""
    first_reopen = T0 + timedelta(days=1)
    reopened, _ = feedback.rate(awaiting(), grant(), Rating.unsatisfied, "还在滴水", RULES,
                                first_reopen)
    for a in reopened.assignments:
        assert a.resolution_note is None and a.resolved_by is None
        [earlier] = a.earlier_resolutions
        assert (earlier.cycle, earlier.note, earlier.resolved_by, earlier.resolved_at) == (
            0, "已修复", f"{a.agency}-1", T0 + timedelta(hours=1))
    later = T0 + timedelta(days=2)
    record = resolved_again(reopened, "s-2", later)
    water = record.assignment_for("water")
    assert water.resolution_note == "彻底更换了管道"
    assert [e.note for e in water.earlier_resolutions] == ["已修复"]
    again, _ = feedback.rate(record, grant(cycle=1), Rating.unsatisfied, None, RULES,
                             later + timedelta(hours=1))
    water = again.assignment_for("water")
    assert [(e.cycle, e.note, e.resolved_by) for e in water.earlier_resolutions] == [
        (0, "已修复", "water-1"), (1, "彻底更换了管道", "s-2")]


def test_a_part_never_resolved_adds_no_earlier_resolution():
    """Only what was claimed done is kept: a part with no resolution on it keeps an empty
    history, not an empty entry."""
    record = awaiting()
    unresolved = record.model_copy(deep=True)
    unresolved.assignments[1] = unresolved.assignments[1].model_copy(update={
        "resolved_at": None, "resolved_by": None, "resolution_note": None})
    reopened, _ = feedback.rate(unresolved, grant(), Rating.unsatisfied, None, RULES,
                                T0 + timedelta(days=1))
    assert len(reopened.assignments[0].earlier_resolutions) == 1
    assert reopened.assignments[1].earlier_resolutions == []


def test_a_record_stored_before_earlier_resolutions_still_loads():
    """Records in Redis and archived in PostgreSQL were written without the field."""
    stored = awaiting().model_dump(mode="json")
    for a in stored["assignments"]:
        del a["earlier_resolutions"]
    loaded = IssueRecord.model_validate_json(json.dumps(stored))
    assert all(a.earlier_resolutions == [] for a in loaded.assignments)
    reopened, _ = feedback.rate(loaded, grant(), Rating.unsatisfied, None, RULES,
                                T0 + timedelta(days=1))
    assert [e.note for e in reopened.assignments[0].earlier_resolutions] == ["已修复"]


def test_a_token_cannot_rate_twice_nor_another_issue():
    closed, _ = feedback.rate(awaiting(), grant(), Rating.satisfied, None, RULES, T0 + WEEK / 2)
    with pytest.raises(InvalidTransition, match="already been rated"):
        feedback.rate(closed, grant(), Rating.unsatisfied, None, RULES, T0 + WEEK / 2)
    with pytest.raises(InvalidTransition, match="another issue"):
        feedback.rate(awaiting(), grant(issue="WH-20261121-0099"), Rating.satisfied, None,
                      RULES, T0)


def joined() -> IssueRecord:
    """:func:`awaiting`, with the neighbour's report merged into it (one of its reporters)."""
    return awaiting().model_copy(update={"reporters": [NEIGHBOUR]})


def test_a_merged_neighbour_rates_the_issue_they_joined():
    new, (rated, _closed) = feedback.rate(joined(), grant(reporter=NEIGHBOUR),
                                          Rating.satisfied, None, RULES, T0 + WEEK / 2)
    assert rated.reporter_issue_id == NEIGHBOUR and new.ratings[0].reporter_issue_id == NEIGHBOUR


def test_a_report_split_off_no_longer_rates_the_issue_it_left():
    """The neighbour's rating link names the issue they had joined; once the desk split
    their report off (merging.leave), that link rated the issue all the same, and could
    close it for its other residents."""
    split_off = joined().model_copy(update={"reporters": []})
    for on_behalf in (None, BY_PHONE):
        with pytest.raises(InvalidTransition, match=f"{NEIGHBOUR} was split from issue {ISSUE}"):
            feedback.rate(split_off, grant(reporter=NEIGHBOUR), Rating.satisfied, None, RULES,
                          T0 + WEEK / 2, on_behalf=on_behalf)
    assert split_off.status is IssueStatus.resolved and split_off.ratings == []


def test_no_rating_within_the_window_closes_as_resolved_without_rating():
    record = awaiting()
    [due] = pending_deadlines(record)
    early, events = feedback.close_unrated(record, due, due.due - timedelta(seconds=1))
    assert early is record and events == []
    new, [closed] = feedback.close_unrated(record, due, due.due + timedelta(seconds=1))
    assert (new.status, new.closed_reason) == (IssueStatus.closed, ClosedReason.no_rating)
    assert closed.reason is ClosedReason.no_rating
    # once rated, the old window is stale and closes nothing
    rated, _ = feedback.rate(record, grant(), Rating.satisfied, None, RULES, T0 + WEEK / 2)
    stale = Deadline(ISSUE, NO_AGENCY, DeadlineKind.feedback, due.due)
    assert feedback.close_unrated(rated, stale, due.due + timedelta(days=1)) == (rated, [])


# ------------------------------------------------ the desk records it (电话回访)

BY_PHONE = feedback.OnBehalf(staff_id="d-7", method=RatingMethod.phone)


def test_the_desk_records_a_residents_answer_with_the_same_effects_and_says_so():
    """Satisfied closes and unsatisfied reopens one level up, as the resident's own link
    would; the rating, the event and the timeline say the desk recorded it, who, how."""
    now = T0 + timedelta(hours=3)
    own = awaiting()
    closed, (rated, closed_event) = feedback.rate(
        own, feedback.desk_grant(own, own), Rating.satisfied, "电话回访，满意", RULES, now,
        on_behalf=BY_PHONE)
    assert (closed.status, closed.closed_reason) == (IssueStatus.closed, ClosedReason.satisfied)
    assert isinstance(closed_event, IssueClosed)
    assert (rated.recorded_by, rated.method, rated.reporter_issue_id) == (
        "d-7", RatingMethod.phone, ISSUE)
    assert (closed.ratings[-1].recorded_by, closed.ratings[-1].method) == (
        "d-7", RatingMethod.phone)
    recorded, rated_step, _closed = closed.timeline[-3:]
    assert (recorded.step, rated_step.step) == ("rating_recorded", "rated")
    assert recorded.detail == f"by the desk (d-7) for the reporter of {ISSUE}, phone: satisfied"
    reopened, (_, event) = feedback.rate(
        awaiting(), feedback.desk_grant(own, own), Rating.unsatisfied, "还在滴水", RULES, now,
        on_behalf=feedback.OnBehalf("d-7", RatingMethod.visit))
    assert isinstance(event, IssueReopened) and reopened.reopen_count == 1
    assert reopened.escalation_level is EscalationLevel.street
    assert [s.step for s in reopened.timeline[-2:]] == ["rating_recorded", "reopened"]


def test_the_desk_cannot_record_after_the_window_nor_twice_nor_after_the_resident():
    record = awaiting()
    own_grant = feedback.desk_grant(record, record)
    with pytest.raises(InvalidTransition, match="rating window closed"):
        feedback.rate(record, own_grant, Rating.satisfied, None, RULES,
                      record.feedback_due + timedelta(seconds=1), on_behalf=BY_PHONE)
    # The resident rated with their own link first (unsatisfied, so the issue is open):
    reopened, _ = feedback.rate(record, grant(), Rating.unsatisfied, None, RULES, T0 + WEEK / 2)
    with pytest.raises(InvalidTransition, match="not waiting"):
        feedback.rate(reopened, feedback.desk_grant(reopened, reopened), Rating.satisfied,
                      None, RULES, T0 + WEEK / 2, on_behalf=BY_PHONE)
    with pytest.raises(InvalidTransition, match="already been rated"):
        feedback.rate(reopened, own_grant, Rating.satisfied, None, RULES, T0 + WEEK / 2,
                      on_behalf=BY_PHONE)


def test_the_desk_rates_for_a_merged_neighbour_the_issue_they_joined():
    primary = joined()
    neighbour = primary.model_copy(update={"issue_id": NEIGHBOUR, "merged_into": ISSUE,
                                           "status": IssueStatus.merged})
    desk_grant = feedback.desk_grant(neighbour, primary)
    assert (desk_grant.reporter_issue_id, desk_grant.issue_id, desk_grant.cycle) == (
        NEIGHBOUR, ISSUE, 0)
    new, (rated, _) = feedback.rate(primary, desk_grant, Rating.satisfied, None, RULES,
                                    T0 + WEEK / 2, on_behalf=BY_PHONE)
    assert rated.reporter_issue_id == NEIGHBOUR and new.status is IssueStatus.closed
    with pytest.raises(InvalidTransition, match="handled as"):
        feedback.desk_grant(neighbour, neighbour)

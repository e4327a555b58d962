"""三级吹哨: deadlines derived from the record, and escalation of a missed one.

Pure tests of shared.issue.pending_deadlines / Deadline and services.routing.escalation,
with the shipped rules (urgent: report in within 2h, resolve within 24h) and a fixed clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.routing import feedback, table
from services.routing.escalation import escalate, is_still_due
from services.routing.rules import RuleSet, load_rules
from shared.auth import FeedbackGrant
from shared.contracts import (
    AgencyRef,
    AssignmentStatus,
    Channel,
    DeadlineKind,
    EscalationLevel,
    IssueEscalated,
    IssueResolved,
    IssueStatus,
    Language,
    Location,
    Priority,
    Rating,
    Role,
)
from shared.issue import (
    Assignment,
    Deadline,
    IssueRecord,
    Routing,
    acknowledge,
    dispatch,
    part_level,
    pending_deadlines,
    receive,
    resolve,
)

RULES = load_rules()
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
ISSUE_ID = "WH-20261121-0001"
TRACE_ID = "trace-5f0c2a9e4b7d4e01"
URGENT = RULES.window(Priority.urgent)
HIGH = RULES.window(Priority.high)


def make_assignment(agency: str, role: Role, priority: Priority, now: datetime) -> Assignment:
    known = RULES.agency(agency)
    window = RULES.window(priority)
    return Assignment(agency=agency, agency_name=known.name, agency_name_en=known.name_en,
                      sector=known.sector, role=role, assigned_at=now,
                      acknowledge_by=now + window.acknowledge, resolve_by=now + window.resolve)


def flying_wire(now: datetime = T0) -> IssueRecord:
    """An urgent flying wire (飞线) in 缤泰社区: the power company leads alone."""
    record = receive(ISSUE_ID, TRACE_ID, "楼道里有根电线耷拉下来，不知道有没有电", None,
                     Location(community="缤泰社区", address="丽德花园3号楼", grid="3-1"),
                     Channel.hotline, Language.zh, now)
    return dispatch(record, "flying_wire", Priority.urgent,
                    Routing(rule="flying_wire", keywords=["电线耷拉"], category_source="keywords"),
                    [make_assignment("power", Role.lead, Priority.urgent, now)], now)


def pipe_leak(now: datetime = T0) -> IssueRecord:
    """Water through a ceiling: the water utility leads, the property manager supports."""
    record = receive("WH-20261121-0002", TRACE_ID, "Water is coming through my ceiling from upstairs",
                     None, Location(community="和平里社区", address="7号楼1单元502"),
                     Channel.app, Language.en, now)
    return dispatch(record, "pipe_leak", Priority.high,
                    Routing(rule="pipe_leak", keywords=["water is coming through"],
                            category_source="keywords"),
                    [make_assignment("water", Role.lead, Priority.high, now),
                     make_assignment("property_manager", Role.support, Priority.high, now)], now)


def ack_deadline(record: IssueRecord, agency: str = "power") -> Deadline:
    return Deadline(record.issue_id, agency, DeadlineKind.acknowledge,
                    record.assignment_for(agency).acknowledge_by)


def resolve_deadline(record: IssueRecord, agency: str = "power") -> Deadline:
    return Deadline(record.issue_id, agency, DeadlineKind.resolve,
                    record.assignment_for(agency).resolve_by)


def the_event(events) -> IssueEscalated:
    assert len(events) == 1
    assert isinstance(events[0], IssueEscalated)
    return events[0]


# ------------------------------------------------------------------ pending_deadlines


def test_windows_are_the_shipped_urgent_ones():
    # The numbers below rely on them: report in within 2h, resolve within 24h.
    assert (URGENT.acknowledge, URGENT.resolve) == (timedelta(hours=2), timedelta(hours=24))


def test_assigned_watches_acknowledge_and_resolve():
    assert pending_deadlines(flying_wire()) == [
        Deadline(ISSUE_ID, "power", DeadlineKind.acknowledge, T0 + timedelta(hours=2)),
        Deadline(ISSUE_ID, "power", DeadlineKind.resolve, T0 + timedelta(hours=24)),
    ]


def test_acknowledged_watches_resolve_only():
    record = acknowledge(flying_wire(), "power", "gd-017", T0 + timedelta(minutes=20))
    assert pending_deadlines(record) == [
        Deadline(ISSUE_ID, "power", DeadlineKind.resolve, T0 + timedelta(hours=24))]


def test_resolved_watches_nothing():
    record = acknowledge(flying_wire(), "power", "gd-017", T0 + timedelta(minutes=20))
    record = resolve(record, "power", "gd-017", "已剪除飞线，恢复正常供电", T0 + timedelta(hours=1))
    assert record.status is IssueStatus.resolved
    assert pending_deadlines(record) == []


def test_received_issue_watches_nothing():
    record = receive(ISSUE_ID, TRACE_ID, "有煤气味", None,
                     Location(community="缤泰社区", address="丽德花园5号楼"),
                     Channel.desk, Language.zh, T0)
    assert pending_deadlines(record) == []


def test_each_agency_is_watched_by_its_own_state():
    record = acknowledge(pipe_leak(), "water", "zls-03", T0 + timedelta(hours=1))
    assert [(d.agency, d.kind, d.due) for d in pending_deadlines(record)] == [
        ("water", DeadlineKind.resolve, T0 + HIGH.resolve),
        ("property_manager", DeadlineKind.acknowledge, T0 + HIGH.acknowledge),
        ("property_manager", DeadlineKind.resolve, T0 + HIGH.resolve),
    ]


# --------------------------------------------------------------------------- Deadline


def test_deadline_member_and_round_trip():
    deadline = Deadline(ISSUE_ID, "power", DeadlineKind.acknowledge, T0 + timedelta(hours=2))
    assert deadline.member == "WH-20261121-0001|power|acknowledge"
    again = Deadline.from_member(deadline.member, deadline.due.timestamp())
    assert again == deadline
    assert again.due.tzinfo is not None


def test_deadline_round_trip_keeps_microseconds():
    due = datetime(2026, 11, 21, 11, 0, 7, 123457, tzinfo=UTC)
    deadline = Deadline(ISSUE_ID, "property_manager", DeadlineKind.resolve, due)
    assert Deadline.from_member(deadline.member, due.timestamp()) == deadline


def test_escalation_id_names_the_deadline_and_its_due_time():
    deadline = Deadline(ISSUE_ID, "power", DeadlineKind.acknowledge, T0 + timedelta(hours=2))
    expected_ms = int((T0 + timedelta(hours=2)).timestamp() * 1000)
    assert deadline.escalation_id == f"deadline:WH-20261121-0001|power|acknowledge:{expected_ms}"


def test_escalation_id_differs_when_due_differs():
    first = Deadline(ISSUE_ID, "power", DeadlineKind.acknowledge, T0 + timedelta(hours=2))
    moved = Deadline(ISSUE_ID, "power", DeadlineKind.acknowledge, T0 + timedelta(hours=4))
    same = Deadline(ISSUE_ID, "power", DeadlineKind.acknowledge, T0 + timedelta(hours=2))
    assert first.member == moved.member
    assert first.escalation_id != moved.escalation_id
    assert first.escalation_id == same.escalation_id


# --------------------------------------------------------------- escalate: not yet due


@pytest.mark.parametrize("early", [timedelta(hours=1), timedelta(seconds=1)])
def test_before_the_deadline_nothing_changes(early):
    record = flying_wire()
    deadline = ack_deadline(record)
    new, events = escalate(record, deadline, RULES, deadline.due - early)
    assert new is record
    assert events == []
    assert record.escalation_level is EscalationLevel.community


# ---------------------------------------------------- escalate: acknowledge deadline


def test_missed_report_in_escalates_to_the_street_office():
    record = flying_wire()
    deadline = ack_deadline(record)
    now = T0 + timedelta(hours=2, minutes=5)
    new, events = escalate(record, deadline, RULES, now)

    assert new.escalation_level is EscalationLevel.street
    assignment = new.assignment_for("power")
    assert assignment.status is AssignmentStatus.assigned
    assert assignment.acknowledge_overdue is True
    assert assignment.resolve_overdue is False
    assert assignment.acknowledge_by == now + URGENT.acknowledge
    assert assignment.resolve_by == T0 + URGENT.resolve  # still later: not moved
    assert new.status is IssueStatus.dispatched

    event = the_event(events)
    assert event.level is EscalationLevel.street
    assert (event.supervisor, event.supervisor_en) == ("街道办事处", "Street office")
    assert event.deadline is DeadlineKind.acknowledge
    assert event.missed == T0 + timedelta(hours=2)
    assert event.agency == AgencyRef(agency="power", agency_name="供电公司",
                                     agency_name_en="Power company")
    assert (event.trace_id, event.issue_id) == (TRACE_ID, ISSUE_ID)
    assert event.occurred_at == now
    assert event.causation_id is None


def test_escalation_is_recorded_on_the_timeline():
    record = flying_wire()
    now = T0 + timedelta(hours=2, minutes=5)
    new, _ = escalate(record, ack_deadline(record), RULES, now)
    step = new.timeline[-1]
    assert (step.step, step.service, step.agency, step.at) == ("escalated", "routing", "power", now)
    assert step.detail == (
        "供电公司 did not report in by 2026-11-21T11:00:00+00:00: "
        "escalated to Street office (street); "
        "whistled again, new deadline 2026-11-21T13:05:00+00:00")
    assert new.updated_at == now
    assert len(new.timeline) == len(record.timeline) + 1


def test_escalating_exactly_at_the_deadline():
    record = flying_wire()
    deadline = ack_deadline(record)
    new, events = escalate(record, deadline, RULES, deadline.due)
    assert the_event(events).level is EscalationLevel.street
    assert new.assignment_for("power").acknowledge_by == deadline.due + URGENT.acknowledge


def test_escalate_does_not_mutate_its_input():
    record = flying_wire()
    before = record.model_dump()
    escalate(record, ack_deadline(record), RULES, T0 + timedelta(hours=3))
    assert record.model_dump() == before


def test_late_escalation_pushes_resolve_by_past_the_new_acknowledge_by():
    # The watch was down for most of a day: the new 报到 deadline is past the old resolve one.
    record = flying_wire()
    now = T0 + timedelta(hours=23)
    new, _ = escalate(record, ack_deadline(record), RULES, now)
    assignment = new.assignment_for("power")
    assert assignment.acknowledge_by == T0 + timedelta(hours=25)
    assert assignment.resolve_by == T0 + timedelta(hours=25)


def test_second_miss_goes_to_the_district_and_third_stays_there():
    record = flying_wire()
    first_now = T0 + timedelta(hours=2)
    record, events = escalate(record, ack_deadline(record), RULES, first_now)
    assert the_event(events).level is EscalationLevel.street

    second_due = first_now + URGENT.acknowledge
    assert ack_deadline(record).due == second_due
    # The watch sees the new deadline in the derived set, and it passes too.
    assert Deadline(ISSUE_ID, "power", DeadlineKind.acknowledge, second_due) \
        in pending_deadlines(record)
    second_now = second_due + timedelta(minutes=1)
    record, events = escalate(record, ack_deadline(record), RULES, second_now)
    event = the_event(events)
    assert record.escalation_level is EscalationLevel.district
    assert event.level is EscalationLevel.district
    assert (event.supervisor, event.supervisor_en) == ("区政府", "District government")
    assert event.missed == second_due
    assert record.assignment_for("power").acknowledge_by == second_now + URGENT.acknowledge

    third_due = second_now + URGENT.acknowledge
    third_now = third_due + timedelta(minutes=1)
    record, events = escalate(record, ack_deadline(record), RULES, third_now)
    event = the_event(events)
    assert record.escalation_level is EscalationLevel.district
    assert event.level is EscalationLevel.district
    assert event.supervisor == "区政府"
    assert event.missed == third_due
    assert record.assignment_for("power").acknowledge_by == third_now + URGENT.acknowledge
    assert [e.step for e in record.timeline].count("escalated") == 3


def test_a_miss_past_the_top_level_reminds_the_district_and_tells_nobody_it_went_up():
    """The district was told at the second miss; the third and every later one remind it,
    but nothing goes up: the event is a reminder (its reporters are not told "escalated to
    the district" again at every window), and the timeline says so."""
    record = flying_wire()
    now = T0 + timedelta(hours=2)
    reminders = []
    for _ in range(4):
        record, events = escalate(record, ack_deadline(record), RULES, now)
        reminders.append(the_event(events).reminder)
        now = ack_deadline(record).due
    assert reminders == [False, False, True, True]
    assert record.escalation_level is EscalationLevel.district
    assert record.assignment_for("power").missed_deadlines == 4
    steps = [e.detail for e in record.timeline if e.step == "escalated"]
    assert "escalated to District government (district)" in steps[1]
    assert all("still with District government (district), reminded; whistled again"
               in step for step in steps[2:])


def test_the_same_deadline_escalates_once():
    record = flying_wire()
    deadline = ack_deadline(record)
    now = T0 + timedelta(hours=2, minutes=1)
    record, events = escalate(record, deadline, RULES, now)
    assert len(events) == 1
    again, events = escalate(record, deadline, RULES, now + timedelta(minutes=1))
    assert again is record
    assert events == []
    assert record.escalation_level is EscalationLevel.street


def test_reported_in_before_the_deadline_is_not_escalated():
    record = flying_wire()
    deadline = ack_deadline(record)
    record = acknowledge(record, "power", "gd-017", T0 + timedelta(minutes=40))
    now = T0 + timedelta(hours=3)
    assert is_still_due(record, deadline, now) is False
    new, events = escalate(record, deadline, RULES, now)
    assert new is record
    assert events == []
    assert new.escalation_level is EscalationLevel.community
    assert new.assignment_for("power").acknowledge_overdue is False


def test_stale_deadline_is_a_no_op():
    record = flying_wire()
    current = ack_deadline(record)
    stale = Deadline(ISSUE_ID, "power", DeadlineKind.acknowledge, current.due - timedelta(hours=1))
    assert stale.member == current.member
    now = T0 + timedelta(hours=3)
    new, events = escalate(record, stale, RULES, now)
    assert new is record
    assert events == []


def test_deadline_of_an_agency_without_assignment_is_a_no_op():
    record = flying_wire()
    ghost = Deadline(ISSUE_ID, "gas", DeadlineKind.acknowledge, T0 + timedelta(hours=2))
    new, events = escalate(record, ghost, RULES, T0 + timedelta(hours=3))
    assert new is record
    assert events == []


def test_only_the_missing_agency_is_marked_overdue():
    record = acknowledge(pipe_leak(), "water", "zls-03", T0 + timedelta(hours=1))
    now = T0 + HIGH.acknowledge + timedelta(minutes=10)
    new, events = escalate(record, ack_deadline(record, "property_manager"), RULES, now)
    event = the_event(events)
    assert event.agency.agency == "property_manager"
    assert event.agency.agency_name == "物业公司"
    assert new.escalation_level is EscalationLevel.street
    assert new.assignment_for("property_manager").acknowledge_overdue is True
    water = new.assignment_for("water")
    assert water.acknowledge_overdue is False and water.resolve_overdue is False
    assert water.resolve_by == T0 + HIGH.resolve
    assert new.timeline[-1].agency == "property_manager"
    assert new.timeline[-1].detail.startswith(
        "物业公司 did not report in by 2026-11-22T09:00:00+00:00")


# -------------------------------------------------------- escalate: resolve deadline


def test_missed_resolution_after_report_in_escalates_and_moves_resolve_by():
    record = acknowledge(flying_wire(), "power", "gd-017", T0 + timedelta(minutes=30))
    deadline = resolve_deadline(record)
    assert deadline.due == T0 + timedelta(hours=24)
    now = T0 + timedelta(hours=24, minutes=3)
    new, events = escalate(record, deadline, RULES, now)

    assignment = new.assignment_for("power")
    assert assignment.resolve_overdue is True
    assert assignment.acknowledge_overdue is False
    assert assignment.resolve_by == now + URGENT.resolve
    assert assignment.acknowledge_by == T0 + URGENT.acknowledge  # untouched
    assert assignment.acknowledged_on_time is True
    assert new.escalation_level is EscalationLevel.street

    event = the_event(events)
    assert event.deadline is DeadlineKind.resolve
    assert event.missed == T0 + timedelta(hours=24)
    assert event.level is EscalationLevel.street
    assert event.supervisor == "街道办事处"
    assert new.timeline[-1].detail == (
        "供电公司 did not resolve by 2026-11-22T09:00:00+00:00: "
        "escalated to Street office (street); "
        "whistled again, new deadline 2026-11-23T09:03:00+00:00")
    assert pending_deadlines(new) == [
        Deadline(ISSUE_ID, "power", DeadlineKind.resolve, now + URGENT.resolve)]


def test_resolved_part_is_not_escalated():
    record = acknowledge(flying_wire(), "power", "gd-017", T0 + timedelta(minutes=30))
    deadline = resolve_deadline(record)
    record = resolve(record, "power", "gd-017", "已剪除飞线", T0 + timedelta(hours=3))
    new, events = escalate(record, deadline, RULES, T0 + timedelta(days=2))
    assert new is record
    assert events == []


def test_missing_supervisors_fall_back_to_the_defaults():
    rules: RuleSet = RULES.model_copy(update={"supervisors": {}})
    record = flying_wire()
    _, events = escalate(record, ack_deadline(record), rules, T0 + timedelta(hours=2))
    event = the_event(events)
    assert (event.supervisor, event.supervisor_en) == ("街道办事处", "Street office")


def test_the_event_carries_the_supervisors_language_from_the_rules():
    english = RULES.supervisor(EscalationLevel.street).model_copy(update={"language": Language.en})
    rules: RuleSet = RULES.model_copy(update={"supervisors": {EscalationLevel.street: english}})
    record = flying_wire()

    _, shipped = escalate(record, ack_deadline(record), RULES, T0 + timedelta(hours=2))
    _, events = escalate(record, ack_deadline(record), rules, T0 + timedelta(hours=2))

    assert the_event(shipped).supervisor_language is Language.zh
    assert the_event(events).supervisor_language is Language.en


# ----------------------------------------------------------- late 报到 after escalation


def test_late_report_in_after_escalation_is_not_on_time():
    record = flying_wire()
    record, _ = escalate(record, ack_deadline(record), RULES, T0 + timedelta(hours=2))
    new_due = record.assignment_for("power").acknowledge_by
    at = T0 + timedelta(hours=2, minutes=30)
    assert at <= new_due  # before the moved deadline, but the first one was missed
    record = acknowledge(record, "power", "gd-017", at)
    assignment = record.assignment_for("power")
    assert assignment.status is AssignmentStatus.acknowledged
    assert assignment.acknowledged_on_time is False
    assert record.timeline[-1].detail == "供电公司 (gd-017) reported in (after its deadline)"
    assert record.status is IssueStatus.in_progress


def test_report_in_without_escalation_before_the_deadline_is_on_time():
    record = acknowledge(flying_wire(), "power", "gd-017", T0 + timedelta(hours=1, minutes=59))
    assert record.assignment_for("power").acknowledged_on_time is True
    assert record.timeline[-1].detail == "供电公司 (gd-017) reported in"


# ------------------------------------------------------------------ after a reopen
#
# 民事民评 reopens an unsatisfied issue one level up (services.routing.feedback.reopen):
# every agency's part is then followed from that level, so its next miss goes one above
# it, never back to a level the issue already passed, and at the district it stays there.


def reopened(record: IssueRecord, now: datetime) -> IssueRecord:
    """Every part reported in and resolved at ``now``, then rated unsatisfied a minute later."""
    for a in record.assignments:
        if a.status is AssignmentStatus.assigned:
            record = acknowledge(record, a.agency, f"{a.agency}-1", now)
        record = resolve(record, a.agency, f"{a.agency}-1", "已处理", now)
    done = IssueResolved(trace_id=record.trace_id, issue_id=record.issue_id,
                         occurred_at=now, agencies=record.agencies())
    record = feedback.await_rating(record, done, timedelta(days=7))
    grant = FeedbackGrant(reporter_issue_id=record.issue_id, issue_id=record.issue_id,
                          cycle=record.reopen_count)
    record, _ = feedback.rate(record, grant, Rating.unsatisfied, "还是不行", RULES,
                              now + timedelta(minutes=1))
    return record


def miss(record: IssueRecord, agency: str = "power") -> tuple[IssueRecord, IssueEscalated]:
    """The agency's current report-in deadline passes (a minute late)."""
    deadline = ack_deadline(record, agency)
    record, events = escalate(record, deadline, RULES, deadline.due + timedelta(minutes=1))
    return record, the_event(events)


def outcome(record: IssueRecord) -> str:
    """What the latest escalation step on the timeline says happened."""
    step = record.timeline[-1]
    assert step.step == "escalated"
    return step.detail.split(": ", 1)[1].split(";", 1)[0]


def test_after_a_reopen_to_the_street_the_next_miss_goes_to_the_district():
    """Never escalated, resolved, reopened (to the street): the next miss used to say
    "escalated to Street office (street)" again, and the resident read 现已提级到街道一级,
    though the reopen had put the issue with the street already."""
    record = reopened(flying_wire(), T0 + timedelta(hours=1))
    assert record.escalation_level is EscalationLevel.street

    record, event = miss(record)
    assert (event.level, event.reminder) == (EscalationLevel.district, False)
    assert (event.supervisor, event.supervisor_en) == ("区政府", "District government")
    assert record.escalation_level is EscalationLevel.district
    assert outcome(record) == "escalated to District government (district)"

    record, event = miss(record)
    assert (event.level, event.reminder) == (EscalationLevel.district, True)
    assert outcome(record) == "still with District government (district), reminded"


def test_escalated_to_the_street_then_reopened_to_the_district_only_reminds_it():
    """Escalated to the street, resolved, reopened (to the district): the next miss used
    to claim "escalated to District government (district)", a step that did not happen
    (the reopen had taken it there), and tell the residents so once more."""
    record, event = miss(flying_wire())
    assert event.level is EscalationLevel.street
    record = reopened(record, T0 + timedelta(hours=3))
    assert record.escalation_level is EscalationLevel.district

    for _ in range(2):
        record, event = miss(record)
        assert (event.level, event.reminder) == (EscalationLevel.district, True)
        assert outcome(record) == "still with District government (district), reminded"
    assert record.escalation_level is EscalationLevel.district


def test_the_sequence_names_each_level_once_across_reopens():
    """Community → (miss) street → reopen → district → every later miss, and every later
    reopen, stays at the district: no level is claimed twice, none is skipped."""
    record, first = miss(flying_wire())
    record = reopened(record, T0 + timedelta(hours=3))
    record, second = miss(record)
    record = reopened(record, T0 + timedelta(hours=9))
    record, third = miss(record)
    assert [(e.level, e.reminder) for e in (first, second, third)] == [
        (EscalationLevel.street, False),
        (EscalationLevel.district, True),
        (EscalationLevel.district, True)]
    went_up = [e.level for e in (first, second, third) if not e.reminder]
    assert went_up == [EscalationLevel.street]
    reopens = [s.detail.rsplit(", ", 1)[1] for s in record.timeline if s.step == "reopened"]
    assert reopens == ["escalated to district", "still with district"]


def test_after_a_reopen_each_agency_goes_up_from_where_the_reopen_left_it():
    """Two agencies, reopened to the street: each one's first miss goes to the district
    (the level above the street), its next is a reminder; neither claims the street."""
    record = reopened(pipe_leak(), T0 + timedelta(hours=1))
    assert record.escalation_level is EscalationLevel.street
    record, water = miss(record, "water")
    record, manager = miss(record, "property_manager")
    assert (water.level, water.reminder) == (EscalationLevel.district, False)
    assert (manager.level, manager.reminder) == (EscalationLevel.district, False)
    record, water = miss(record, "water")
    assert (water.level, water.reminder) == (EscalationLevel.district, True)


def test_an_agency_invited_after_a_reopen_goes_up_from_the_reopened_level():
    """An agency seated at the table after the reopen put the issue with the street has no
    misses of its own: its first miss still goes to the district, not the street."""
    record = reopened(flying_wire(), T0 + timedelta(hours=1))
    now = T0 + timedelta(hours=2)
    record, _ = table.convene(record, now + timedelta(hours=1), "社区议事厅", ["water"],
                              RULES, now)
    record, event = miss(record, "water")
    assert (event.level, event.reminder) == (EscalationLevel.district, False)


def test_a_reopened_record_stored_before_levels_were_kept_does_not_repeat_a_level():
    """An issue reopened under the old release has neither ``Assignment.level`` nor
    ``IssueRecord.reopened_level`` in its stored JSON: its misses go up from the level it
    is at, as a record reopened now does."""
    record = reopened(flying_wire(), T0 + timedelta(hours=1))
    stored = record.model_dump(mode="json")
    stored.pop("reopened_level", None)
    for a in stored["assignments"]:
        a.pop("level", None)
    old = IssueRecord.model_validate(stored)
    old, event = miss(old)
    assert (event.level, event.reminder) == (EscalationLevel.district, False)
    old, event = miss(old)
    assert (event.level, event.reminder) == (EscalationLevel.district, True)


def test_a_second_agency_first_miss_at_the_district_says_the_issue_stays_there():
    """The water company's two misses took the issue to the district; the property
    manager's first miss goes to the street office (the street whistles it: 三级吹哨 is
    per agency), but the issue stays with the district. The event and the timeline said
    "escalated to 街道办事处 (street)" alone, and the residents, told the district follows
    it up, read that it went down to the street."""
    record = pipe_leak()
    record, _ = miss(record, "water")
    record, water = miss(record, "water")
    assert (water.level, water.issue_level) == (EscalationLevel.district,
                                               EscalationLevel.district)

    record, manager = miss(record, "property_manager")
    assert (manager.level, manager.reminder) == (EscalationLevel.street, False)
    assert manager.issue_level is EscalationLevel.district
    assert record.escalation_level is EscalationLevel.district
    street = RULES.supervisor(EscalationLevel.street).name_en
    district = RULES.supervisor(EscalationLevel.district).name_en
    [step] = [s for s in record.timeline
              if s.step == "escalated" and s.agency == "property_manager"]
    assert step.detail.split(": ", 1)[1].split(";", 1)[0] == (
        f"escalated to {street} (street), the issue stays with {district} (district)")


def test_a_miss_that_takes_the_issue_up_carries_its_own_level_as_the_issues():
    record, event = miss(pipe_leak(), "water")
    assert (event.level, event.issue_level) == (EscalationLevel.street, EscalationLevel.street)
    assert outcome(record) == \
        f"escalated to {RULES.supervisor(EscalationLevel.street).name_en} (street)"


def test_each_part_keeps_since_when_its_own_level_presses_it():
    """The agency's workspace says who presses *it* and since when: the miss that took its
    part to its level, not a later reminder there, nor another agency's miss."""
    record = pipe_leak()
    record, _ = miss(record, "water")
    first = record.assignment_for("water").level_since
    record, _ = miss(record, "water")
    to_district = record.assignment_for("water").level_since
    record, manager = miss(record, "property_manager")
    water, manager_part = (record.assignment_for(a) for a in ("water", "property_manager"))
    assert first is not None and to_district is not None and to_district > first
    assert (water.level_since, manager_part.level_since) == (to_district, manager.occurred_at)
    assert (part_level(record, water), part_level(record, manager_part)) == (
        EscalationLevel.district, EscalationLevel.street)

    record, reminder = miss(record, "water")
    assert reminder.reminder and record.assignment_for("water").level_since == to_district


def test_a_reopen_that_takes_a_part_up_is_when_its_level_presses_it():
    """Reopened to the street (民事民评): every part is pressed by the street office from
    the reopen on; a part whose own miss then takes it to the district, from that miss."""
    at = T0 + timedelta(hours=1)
    record = reopened(pipe_leak(), at)
    assert record.escalation_level is EscalationLevel.street
    reopen = at + timedelta(minutes=1)
    assert [a.level_since for a in record.assignments] == [reopen, reopen]
    record, water_miss = miss(record, "water")
    water, manager = (record.assignment_for(a) for a in ("water", "property_manager"))
    assert (part_level(record, water), part_level(record, manager)) == (
        EscalationLevel.district, EscalationLevel.street)
    assert (water.level_since, manager.level_since) == (water_miss.occurred_at, reopen)

"""问题在桌面解决: the table session (services.routing.table) and 事不完，人不撤 in resolve.

A cracked balcony in 缤泰社区 (complex: 3 days to report in, 15 to resolve): the
housing administration leads, the property manager supports, and the desk convenes
a table in the 红色议事厅 and brings the power company in because of wet wiring.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.routing.escalation import escalate
from services.routing.feedback import close
from services.routing.rules import load_rules
from services.routing.table import (
    DESK,
    check_in,
    close_task,
    complete_task,
    convene,
    invite,
    record_task,
)
from shared.contracts import (
    AgencyRef,
    AssignmentCreated,
    AssignmentStatus,
    Channel,
    ClosedReason,
    DeadlineKind,
    IssueEscalated,
    IssueStatus,
    Language,
    Location,
    Priority,
    Role,
    Sector,
    TableCheckedIn,
    TableConvened,
    TableTaskDone,
    TableTaskRecorded,
)
from shared.errors import Forbidden, InvalidPayload, InvalidTransition
from shared.issue import (
    Assignment,
    Deadline,
    IssueRecord,
    Routing,
    acknowledge,
    dispatch,
    pending_deadlines,
    receive,
    reroute,
    resolve,
)

RULES = load_rules()
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
ISSUE_ID = "WH-20261121-0007"
TRACE_ID = "trace-balcony-0000000007"
WINDOW = RULES.window(Priority.complex)
MEETS_AT = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
PLACE = "缤泰社区红色议事厅"
CONVENED = T0 + timedelta(hours=1)


def make_assignment(agency: str, role: Role, now: datetime = T0) -> Assignment:
    known = RULES.agency(agency)
    return Assignment(agency=agency, agency_name=known.name, agency_name_en=known.name_en,
                      sector=known.sector, role=role, assigned_at=now,
                      acknowledge_by=now + WINDOW.acknowledge, resolve_by=now + WINDOW.resolve)


def received() -> IssueRecord:
    return receive(ISSUE_ID, TRACE_ID, "阳台开裂，下雨时水顺着裂缝流到楼下的电线上", None,
                   Location(community="缤泰社区", address="丽德花园3号楼2单元401", grid="3-1"),
                   Channel.grid_patrol, Language.zh, T0)


def balcony() -> IssueRecord:
    return dispatch(received(), "structural_crack", Priority.complex,
                    Routing(rule="structural_crack", keywords=["阳台开裂"],
                            category_source="keywords"),
                    [make_assignment("housing_admin", Role.lead),
                     make_assignment("property_manager", Role.support)], T0)


def with_table(agencies: tuple[str, ...] = ("power",)) -> IssueRecord:
    record, _ = convene(balcony(), MEETS_AT, PLACE, list(agencies), RULES, CONVENED)
    return record


def reported_in(record: IssueRecord, *agencies: str, at: datetime = CONVENED) -> IssueRecord:
    for agency in agencies:
        record = acknowledge(record, agency, f"staff-{agency}", at)
    return record


def task_for(record: IssueRecord, agency: str, what: str = "检查阳台下方线路并做防水",
             at: datetime = CONVENED) -> IssueRecord:
    record, _ = record_task(record, DESK, agency, what, at + timedelta(days=3), RULES, at)
    return record


# ---------------------------------------------------------------------------- convene


def test_convene_invites_the_assigned_agencies_and_the_new_ones():
    record = balcony()
    before = record.model_dump()
    new, events = convene(record, MEETS_AT, PLACE, ["power"], RULES, CONVENED)

    assert record.model_dump() == before  # pure
    assert new.table is not None
    assert new.table.invited == ["housing_admin", "property_manager", "power"]
    assert (new.table.meets_at, new.table.place, new.table.convened_at) == (
        MEETS_AT, PLACE, CONVENED)
    assert new.table.checked_in == {} and new.table.tasks == []
    assert new.status is IssueStatus.dispatched

    assert [type(e) for e in events] == [TableConvened, AssignmentCreated]
    convened, created = events
    assert convened.agencies == [
        AgencyRef(agency="housing_admin", agency_name="房管所",
                  agency_name_en="Housing administration"),
        AgencyRef(agency="property_manager", agency_name="物业公司",
                  agency_name_en="Property management"),
        AgencyRef(agency="power", agency_name="供电公司", agency_name_en="Power company"),
    ]
    assert (convened.meets_at, convened.place) == (MEETS_AT, PLACE)
    assert (convened.trace_id, convened.issue_id) == (TRACE_ID, ISSUE_ID)
    assert convened.occurred_at == CONVENED

    assert created.causation_id == convened.event_id
    assert (created.trace_id, created.issue_id) == (TRACE_ID, ISSUE_ID)
    assert created.category == "structural_crack"
    assert created.priority is Priority.complex
    assert created.occurred_at == CONVENED
    assert created.assignment.agency == "power"
    assert created.assignment.role is Role.support
    assert created.assignment.acknowledge_by == CONVENED + WINDOW.acknowledge
    assert created.assignment.resolve_by == CONVENED + WINDOW.resolve


def test_a_new_agency_gets_a_support_assignment_with_the_issues_window():
    new = with_table(("power",))
    assert new.agencies() == ["housing_admin", "property_manager", "power"]
    power = new.assignment_for("power")
    assert power.role is Role.support
    assert power.status is AssignmentStatus.assigned
    assert power.sector is Sector.power
    assert (power.agency_name, power.agency_name_en) == ("供电公司", "Power company")
    assert power.assigned_at == CONVENED
    assert power.acknowledge_by == CONVENED + timedelta(days=3)
    assert power.resolve_by == CONVENED + timedelta(days=15)
    # the lead is unchanged
    assert [a.agency for a in new.assignments if a.role is Role.lead] == ["housing_admin"]


def test_a_table_is_not_convened_in_the_past_but_may_sit_now():
    """Every reporter is told when it meets: a time gone by told them of a meeting they
    could not come to. The desk filling the form as the table sits down is not past."""
    with pytest.raises(InvalidPayload) as refused:
        convene(balcony(), CONVENED - timedelta(hours=6), PLACE, [], RULES, CONVENED)
    assert [(f["field"], f["type"]) for f in refused.value.errors] == [("meets_at", "past_due")]
    new, _ = convene(balcony(), CONVENED - timedelta(minutes=10), PLACE, [], RULES, CONVENED)
    assert new.table is not None


def test_convene_records_a_timeline_step():
    new = with_table(("power",))
    step = new.timeline[-1]
    assert (step.step, step.service, step.at) == ("table_convened", "routing", CONVENED)
    assert step.detail == ("table at 缤泰社区红色议事厅, 2026-11-22T14:00:00+00:00: "
                           "房管所、物业公司、供电公司")


def test_convene_with_only_assigned_agencies_creates_no_assignment():
    new, events = convene(balcony(), MEETS_AT, PLACE, ["property_manager", "housing_admin"],
                          RULES, CONVENED)
    assert new.table.invited == ["housing_admin", "property_manager"]
    assert [type(e) for e in events] == [TableConvened]
    assert len(new.assignments) == 2


def test_convene_on_an_issue_in_progress():
    record = reported_in(balcony(), "housing_admin")
    assert record.status is IssueStatus.in_progress
    new, events = convene(record, MEETS_AT, PLACE, [], RULES, CONVENED)
    assert new.table.invited == ["housing_admin", "property_manager"]
    assert new.status is IssueStatus.in_progress
    assert [type(e) for e in events] == [TableConvened]


def _resolved() -> IssueRecord:
    record = reported_in(balcony(), "housing_admin", "property_manager")
    record = resolve(record, "housing_admin", "s", "阳台已加固", T0 + timedelta(days=1))
    return resolve(record, "property_manager", "s", "已清理", T0 + timedelta(days=1))


@pytest.mark.parametrize("make, status", [
    (received, IssueStatus.received),
    (lambda: received().model_copy(update={"status": IssueStatus.merged,
                                           "merged_into": "WH-20261121-0003"}),
     IssueStatus.merged),
    (_resolved, IssueStatus.resolved),
])
def test_convene_needs_a_dispatched_issue(make, status):
    record = make()
    assert record.status is status
    with pytest.raises(InvalidTransition, match=f"is {status.value}"):
        convene(record, MEETS_AT, PLACE, ["power"], RULES, CONVENED)


def test_convene_twice_is_invalid():
    with pytest.raises(InvalidTransition, match="already has a table"):
        convene(with_table(), MEETS_AT, PLACE, ["water"], RULES, CONVENED)


def test_convene_with_an_unknown_agency_names_the_field():
    record = balcony()
    with pytest.raises(InvalidPayload) as caught:
        convene(record, MEETS_AT, PLACE, ["power", "fire_brigade"], RULES, CONVENED)
    assert "fire_brigade" in str(caught.value)
    assert caught.value.errors == [{"field": "agencies", "message": "unknown agency 'fire_brigade'",
                                    "type": "unknown_agency"}]
    assert record.table is None


def _closed_with_table() -> IssueRecord:
    """A table sat, every agency finished, and the resident was satisfied: closed."""
    record = reported_in(with_table(), "housing_admin", "property_manager", "power")
    for agency in ("housing_admin", "property_manager", "power"):
        record = resolve(record, agency, "s", "已处理", CONVENED + timedelta(days=1))
    record, _ = close(record, ClosedReason.satisfied, CONVENED + timedelta(days=2))
    return record


def test_a_closed_issues_table_takes_no_new_agency_or_task():
    """An agency invited to a closed issue's table was given deadlines: they escalated the
    closed issue to the street office, and its resident was told. Now a 409, unchanged."""
    record = _closed_with_table()
    later = CONVENED + timedelta(days=3)
    with pytest.raises(InvalidTransition, match="is closed; a table needs a dispatched"):
        invite(record, DESK, ["municipal_roads"], RULES, later)
    with pytest.raises(InvalidTransition, match="is closed"):
        record_task(record, DESK, "power", "再看看", later + timedelta(days=1), RULES, later)
    assert record.agencies() == ["housing_admin", "property_manager", "power"]
    assert pending_deadlines(record) == []


def test_a_resolved_issue_waiting_for_its_rating_takes_no_new_agency():
    record = reported_in(with_table(()), "housing_admin", "property_manager")
    for agency in ("housing_admin", "property_manager"):
        record = resolve(record, agency, "s", "已处理", CONVENED + timedelta(days=1))
    with pytest.raises(InvalidTransition, match="is resolved"):
        invite(record, DESK, ["power"], RULES, CONVENED + timedelta(days=2))
    assert record.status is IssueStatus.resolved


def test_a_report_waiting_for_triage_cannot_have_a_table():
    """No route yet, so no priority to give invited agencies deadlines from."""
    waiting = received().model_copy(update={"status": IssueStatus.needs_triage})
    with pytest.raises(InvalidTransition, match="is needs_triage"):
        convene(waiting, MEETS_AT, PLACE, ["power"], RULES, CONVENED)


# ----------------------------------------------------------------------------- invite


def test_desk_invites_another_agency():
    record = with_table()
    new, events = invite(record, DESK, ["urban_management", "power"], RULES, CONVENED)
    assert new.table.invited == ["housing_admin", "property_manager", "power",
                                 "urban_management"]
    assert [type(e) for e in events] == [TableConvened, AssignmentCreated]
    announced, created = events
    assert [a.agency for a in announced.agencies] == new.table.invited
    assert created.causation_id == announced.event_id
    assert created.assignment.agency == "urban_management"
    assert created.assignment.role is Role.support
    assert new.assignment_for("urban_management").acknowledge_by == CONVENED + WINDOW.acknowledge
    step = new.timeline[-1]
    assert (step.step, step.agency) == ("table_invited", "urban_management")
    assert step.detail == "城管 invited by the desk"


def test_lead_agency_invites():
    new, events = invite(with_table(), "housing_admin", ["water"], RULES, CONVENED)
    assert "water" in new.table.invited
    assert new.assignment_for("water").role is Role.support
    assert new.timeline[-1].detail == "自来水公司 invited by 房管所"
    assert len(events) == 2


@pytest.mark.parametrize("by", ["property_manager", "power", "water"])
def test_only_desk_or_lead_invites(by):
    with pytest.raises(Forbidden):
        invite(with_table(), by, ["water"], RULES, CONVENED)


@pytest.mark.parametrize("record", [balcony, _closed_with_table],
                         ids=["no table yet", "a closed issue's table"])
def test_an_agency_but_the_lead_is_refused_before_the_tables_state(record):
    """docs/security.md: only the desk or the lead invites and records tasks; any other
    agency gets 403 whatever the table's state, not a 409 that is the allowed caller's."""
    later = CONVENED + timedelta(days=3)
    with pytest.raises(Forbidden, match="only the desk or the lead"):
        invite(record(), "property_manager", ["water"], RULES, later)
    with pytest.raises(Forbidden, match="only the desk or the lead"):
        record_task(record(), "property_manager", "property_manager", "查看",
                    later + timedelta(days=1), RULES, later)


def test_reinviting_is_a_no_op():
    record = with_table()
    new, events = invite(record, DESK, ["power", "property_manager"], RULES, CONVENED)
    assert new is record
    assert events == []


def test_invite_without_a_table_is_invalid():
    with pytest.raises(InvalidTransition, match="has no table"):
        invite(balcony(), DESK, ["power"], RULES, CONVENED)


def test_invite_an_unknown_agency_is_invalid_payload():
    with pytest.raises(InvalidPayload, match="fire_brigade"):
        invite(with_table(), DESK, ["fire_brigade"], RULES, CONVENED)


# --------------------------------------------------------------------------- check_in


def test_invited_agency_checks_in():
    at = MEETS_AT + timedelta(minutes=2)
    new, events = check_in(with_table(), "power", "gd-017", RULES, at)
    assert new.table.checked_in == {"power": at}
    [event] = events
    assert isinstance(event, TableCheckedIn)
    assert event.agency.agency_name == "供电公司"
    assert event.staff_id == "gd-017"
    assert (event.trace_id, event.issue_id, event.occurred_at) == (TRACE_ID, ISSUE_ID, at)
    step = new.timeline[-1]
    assert (step.step, step.agency, step.detail) == (
        "table_checked_in", "power", "供电公司 (gd-017) checked in at the table")


def test_check_in_by_an_agency_not_invited_is_forbidden():
    with pytest.raises(Forbidden):
        check_in(with_table(), "water", "zls-03", RULES, MEETS_AT)


@pytest.mark.parametrize("record", [balcony, with_table], ids=["no table", "a table"])
def test_the_desk_never_checks_in_or_marks_a_task_done_table_or_not(record):
    """docs/security.md: the desk gets 403 for check-in and …/done, not a 409 that tells
    it whether a table sits (it closes a task with close_task instead)."""
    with pytest.raises(Forbidden):
        check_in(record(), DESK, "desk-01", RULES, MEETS_AT)
    with pytest.raises(Forbidden):
        complete_task(record(), DESK, "desk-01", "T1", "done", RULES, MEETS_AT)


def test_check_in_twice_is_invalid():
    record, _ = check_in(with_table(), "power", "gd-017", RULES, MEETS_AT)
    with pytest.raises(InvalidTransition, match="already checked in"):
        check_in(record, "power", "gd-018", RULES, MEETS_AT + timedelta(minutes=1))


# ------------------------------------------------------------------------ record_task


def test_desk_records_tasks_numbered_in_order():
    at = MEETS_AT + timedelta(minutes=30)
    due = at + timedelta(days=2)
    record, events = record_task(with_table(), DESK, "power", "检查阳台下方线路，更换泡水电线",
                                 due, RULES, at)
    [task] = record.table.tasks
    assert (task.task_id, task.agency, task.status, task.due, task.recorded_at) == (
        "T1", "power", "open", due, at)
    assert task.description == "检查阳台下方线路，更换泡水电线"
    [event] = events
    assert isinstance(event, TableTaskRecorded)
    assert (event.task_id, event.agency.agency, event.due) == ("T1", "power", due)
    assert (event.trace_id, event.issue_id) == (TRACE_ID, ISSUE_ID)
    step = record.timeline[-1]
    assert (step.step, step.agency) == ("table_task_recorded", "power")
    assert step.detail == ("T1: 供电公司 to 检查阳台下方线路，更换泡水电线 by "
                           "2026-11-24T14:30:00+00:00")

    record, events = record_task(record, "housing_admin", "property_manager",
                                 "clear the balcony and put up a warning sign", due, RULES, at)
    assert [t.task_id for t in record.table.tasks] == ["T1", "T2"]
    assert events[0].task_id == "T2"
    assert [t.task_id for t in record.table.open_tasks()] == ["T1", "T2"]


@pytest.mark.parametrize("by", ["property_manager", "power"])
def test_only_desk_or_lead_records_tasks(by):
    with pytest.raises(Forbidden):
        record_task(with_table(), by, "power", "检查线路", MEETS_AT + timedelta(days=1), RULES,
                    MEETS_AT)


def test_task_for_an_agency_not_at_the_table_is_refused():
    with pytest.raises(InvalidTransition, match="invite it first"):
        record_task(with_table(), DESK, "water", "检查水管", MEETS_AT + timedelta(days=1), RULES,
                    MEETS_AT)


def test_task_for_an_agency_the_rules_do_not_know_names_the_field():
    with pytest.raises(InvalidPayload) as caught:
        record_task(with_table(), DESK, "nobody", "检查", MEETS_AT + timedelta(days=1), RULES,
                    MEETS_AT)
    assert [e["field"] for e in caught.value.errors] == ["agency"]


@pytest.mark.parametrize("due", [MEETS_AT - timedelta(hours=1), MEETS_AT])
def test_task_due_in_the_past_is_invalid_payload(due):
    with pytest.raises(InvalidPayload) as caught:
        record_task(with_table(), DESK, "power", "检查线路", due, RULES, MEETS_AT)
    assert [e["field"] for e in caught.value.errors] == ["due"]


def resolve_deadline_of(record: IssueRecord, agency: str) -> Deadline:
    return next(d for d in pending_deadlines(record)
                if d.agency == agency and d.kind is DeadlineKind.resolve)


def test_a_later_agreed_date_becomes_the_agencys_resolve_deadline_and_escalation_follows_it():
    # The power company joined at the convening with 15 days to resolve; the table agrees
    # that it rewires the balcony by a date after that: it must not be whistled at (nor
    # its residents told it "did not act in time") before the date everyone agreed.
    record = reported_in(with_table(), "power", at=MEETS_AT)
    before = record.assignment_for("power").resolve_by
    due = before + timedelta(days=1)
    record, events = record_task(record, DESK, "power", "更换泡水线路", due, RULES, MEETS_AT)

    power = record.assignment_for("power")
    assert power.resolve_by == due
    assert resolve_deadline_of(record, "power").due == due
    step = record.timeline[-1]
    assert (step.step, step.agency) == ("deadline_agreed", "power")
    assert step.detail == (f"供电公司: resolve by {due.isoformat()} as agreed at the table "
                           f"(T1), not {before.isoformat()}")
    assert [type(e) for e in events] == [TableTaskRecorded]
    # The other agencies keep their own deadlines.
    assert record.assignment_for("housing_admin").resolve_by == T0 + WINDOW.resolve

    # The old deadline is no longer the current one: passing it changes nothing.
    stale = Deadline(ISSUE_ID, "power", DeadlineKind.resolve, before)
    assert escalate(record, stale, RULES, before + timedelta(seconds=1)) == (record, [])
    # The agreed date missed escalates as any resolve deadline does.
    missed = resolve_deadline_of(record, "power")
    escalated, [event] = escalate(record, missed, RULES, due + timedelta(seconds=1))
    assert isinstance(event, IssueEscalated) and event.missed == due
    assert escalated.assignment_for("power").resolve_overdue is True


def test_an_overdue_agency_given_a_later_date_at_the_table_is_no_longer_overdue():
    record = reported_in(with_table(), "power", at=MEETS_AT)
    missed = resolve_deadline_of(record, "power")
    late = missed.due + timedelta(minutes=5)
    record, _ = escalate(record, missed, RULES, late)
    assert record.assignment_for("power").resolve_overdue is True
    due = record.assignment_for("power").resolve_by + timedelta(days=1)

    record, _ = record_task(record, DESK, "power", "更换泡水线路", due, RULES,
                            late + timedelta(days=5))

    power = record.assignment_for("power")
    assert (power.resolve_by, power.resolve_overdue, power.missed_deadlines) == (due, False, 1)


def test_an_earlier_agreed_date_leaves_the_resolve_deadline_alone():
    record = with_table()
    before = record.assignment_for("power").resolve_by
    due = MEETS_AT + timedelta(days=2)
    record, _ = record_task(record, DESK, "power", "检查线路", due, RULES, MEETS_AT)
    assert record.assignment_for("power").resolve_by == before
    assert record.timeline[-1].step == "table_task_recorded"


def test_a_date_past_the_longest_resolve_window_is_refused_naming_due():
    # 15 days (complex) is the longest any problem may take: a table cannot hold an
    # agency's escalation off for longer.
    due = MEETS_AT + timedelta(days=15, seconds=1)
    with pytest.raises(InvalidPayload) as caught:
        record_task(with_table(), DESK, "power", "整体翻修阳台", due, RULES, MEETS_AT)
    assert [(e["field"], e["type"]) for e in caught.value.errors] == [("due", "too_far")]
    assert "15 days" in caught.value.errors[0]["message"]
    record, _ = record_task(with_table(), DESK, "power", "整体翻修阳台",
                            MEETS_AT + timedelta(days=15), RULES, MEETS_AT)
    assert record.assignment_for("power").resolve_by == MEETS_AT + timedelta(days=15)


def test_a_window_under_a_day_is_said_in_hours_and_minutes_not_a_fraction_of_days():
    """Rules whose longest resolve window is 12 hours said "must be within 0.5 days"."""
    half_day = RULES.model_copy(update={"priorities": {
        priority: window.model_copy(update={"resolve": timedelta(hours=12)})
        for priority, window in RULES.priorities.items()}})
    with pytest.raises(InvalidPayload) as caught:
        record_task(with_table(), DESK, "power", "检查线路", MEETS_AT + timedelta(hours=13),
                    half_day, MEETS_AT + timedelta(microseconds=123456))
    assert caught.value.message == "due is more than 12 hours ahead"
    (error,) = caught.value.errors
    assert error["message"].startswith("must be within 12 hours (the longest resolve window")
    latest = (MEETS_AT + timedelta(hours=12)).replace(microsecond=0).isoformat()
    assert f"by {latest} (UTC):" in error["message"]  # to the second, and said to be UTC
    assert error["within_seconds"] == 12 * 3600  # for the pages to say in their language


@pytest.mark.parametrize(("window", "en", "zh"), [
    (timedelta(days=15), "15 days", "15天"),
    (timedelta(hours=12), "12 hours", "12小时"),
    (timedelta(days=1, hours=12), "1 day 12 hours", "1天12小时"),
    (timedelta(hours=1, minutes=30), "1 hour 30 minutes", "1小时30分钟"),
    (timedelta(minutes=1), "1 minute", "1分钟"),
    (timedelta(seconds=45), "45 seconds", "45秒"),
])
def test_a_window_is_said_as_a_person_says_it(window, en, zh):
    from services.routing.rules import spoken_duration

    assert (spoken_duration(window), spoken_duration(window, "zh")) == (en, zh)


def test_record_task_without_a_table_is_invalid():
    with pytest.raises(InvalidTransition, match="has no table"):
        record_task(balcony(), DESK, "housing_admin", "加固阳台", T0 + timedelta(days=1), RULES, T0)


def test_no_task_can_be_recorded_on_a_resolved_issue():
    record = reported_in(with_table(()), "housing_admin", "property_manager")
    record = resolve(record, "housing_admin", "s", "阳台已加固", T0 + timedelta(days=1))
    record = resolve(record, "property_manager", "s", "已清理", T0 + timedelta(days=1))
    assert record.status is IssueStatus.resolved
    with pytest.raises(InvalidTransition):
        record_task(record, DESK, "property_manager", "重新粉刷楼道",
                    T0 + timedelta(days=5), RULES, T0 + timedelta(days=2))


# ---------------------------------------------------------------------- complete_task


def test_agency_completes_its_task():
    record = task_for(reported_in(with_table(), "power"), "power")
    at = CONVENED + timedelta(days=1)
    new, events = complete_task(record, "power", "power-li", "T1", "已更换泡水电线，线路绝缘正常",
                                RULES, at)
    [task] = new.table.tasks
    assert (task.status, task.done_at, task.note) == ("done", at, "已更换泡水电线，线路绝缘正常")
    assert new.table.open_tasks() == []
    assert record.table.tasks[0].status == "open"  # pure
    [event] = events
    assert isinstance(event, TableTaskDone)
    assert (event.task_id, event.agency.agency, event.note) == (
        "T1", "power", "已更换泡水电线，线路绝缘正常")
    assert (event.trace_id, event.issue_id, event.occurred_at) == (TRACE_ID, ISSUE_ID, at)
    step = new.timeline[-1]
    assert (step.step, step.agency) == ("table_task_done", "power")
    assert step.detail == "T1 done by 供电公司 (power-li): 已更换泡水电线，线路绝缘正常"
    assert (task.closed_by, task.closed_by_staff) == ("power", "power-li")


def test_only_the_tasks_agency_completes_it():
    record = task_for(reported_in(with_table(), "power", "housing_admin"), "power")
    with pytest.raises(Forbidden, match="belongs to power"):
        complete_task(record, "housing_admin", "staff-1", "T1", "done", RULES, MEETS_AT)


def test_completing_an_unknown_task_is_invalid_payload():
    record = task_for(reported_in(with_table(), "power"), "power")
    with pytest.raises(InvalidPayload) as caught:
        complete_task(record, "power", "staff-1", "T9", "done", RULES, MEETS_AT)
    assert [e["field"] for e in caught.value.errors] == ["task_id"]


@pytest.mark.parametrize("again", [
    lambda r, at: complete_task(r, "power", "staff-1", "T1", "已处理", RULES, at),
    lambda r, at: close_task(r, "desk-01", "T1", "核实", RULES, at),  # the desk: the agency's
], ids=["agency", "desk"])
def test_completing_twice_is_invalid(again):
    record = task_for(reported_in(with_table(), "power"), "power")
    record, _ = complete_task(record, "power", "staff-1", "T1", "已处理", RULES, MEETS_AT)
    with pytest.raises(InvalidTransition, match="already done"):
        again(record, MEETS_AT + timedelta(hours=1))


def test_completing_before_report_in_is_invalid():
    record = task_for(with_table(), "power")
    assert record.assignment_for("power").status is AssignmentStatus.assigned
    with pytest.raises(InvalidTransition, match="report in"):
        complete_task(record, "power", "staff-1", "T1", "已处理", RULES, MEETS_AT)


# ------------------------------------------------------------------------- close_task


def test_desk_closes_an_agencys_task_with_a_note():
    record = task_for(with_table(), "power")  # power has not even reported in
    at = CONVENED + timedelta(days=1)
    new, events = close_task(record, "desk-01", "T1", "已现场核实，线路已修复", RULES, at)
    [task] = new.table.tasks
    assert (task.status, task.done_at, task.note) == ("done", at, "已现场核实，线路已修复")
    assert (task.closed_by, task.closed_by_staff) == (DESK, "desk-01")
    assert record.table.tasks[0].status == "open"  # pure
    [event] = events
    assert isinstance(event, TableTaskDone)
    assert (event.task_id, event.agency.agency, event.note) == ("T1", "power", "已现场核实，线路已修复")
    assert (event.closed_by, event.staff_id) == ("desk", "desk-01")
    step = new.timeline[-1]
    assert (step.step, step.service, step.agency) == ("table_task_done", "routing", "power")
    assert step.detail == "T1 done by the desk (desk-01) for 供电公司: 已现场核实，线路已修复"


def test_agency_completion_is_marked_as_the_agencys():
    record = task_for(reported_in(with_table(), "power"), "power")
    new, [event] = complete_task(record, "power", "staff-1", "T1", "已处理", RULES, MEETS_AT)
    assert (new.table.tasks[0].closed_by, new.table.tasks[0].closed_by_staff) == (
        "power", "staff-1")
    assert (event.closed_by, event.staff_id) == ("agency", None)


def test_a_retried_desk_close_changes_nothing():
    record = task_for(with_table(), "power")
    record, _ = close_task(record, "desk-01", "T1", "议定不再需要", RULES, MEETS_AT)
    again, events = close_task(record, "desk-01", "T1", "议定不再需要", RULES,
                               MEETS_AT + timedelta(minutes=1))
    assert events == [] and again == record


def test_desk_closing_an_unknown_task_or_without_a_table_is_refused():
    record = task_for(with_table(), "power")
    with pytest.raises(InvalidPayload) as caught:
        close_task(record, "desk-01", "T9", "核实", RULES, MEETS_AT)
    assert [e["field"] for e in caught.value.errors] == ["task_id"]
    with pytest.raises(InvalidTransition, match="has no table"):
        close_task(balcony(), "desk-01", "T1", "核实", RULES, MEETS_AT)


def test_a_task_the_desk_closed_no_longer_holds_resolution():
    record = task_for(reported_in(with_table(()), "housing_admin", "property_manager"),
                      "property_manager")
    at = CONVENED + timedelta(days=1)
    record = resolve(record, "housing_admin", "s", "阳台已加固", at)
    record, _ = close_task(record, "desk-01", "T1", "议定不再需要", RULES, at)
    record = resolve(record, "property_manager", "s", "已清理", at)
    assert record.status is IssueStatus.resolved


def test_an_old_task_done_event_reads_as_the_agencys():
    old = {"trace_id": TRACE_ID, "issue_id": ISSUE_ID, "schema_version": 1,
           "occurred_at": MEETS_AT.isoformat(), "task_id": "T1", "note": "已处理",
           "agency": {"agency": "power", "agency_name": "供电公司", "agency_name_en": "Power"}}
    event = TableTaskDone.model_validate(old)
    assert (event.closed_by, event.staff_id) == ("agency", None)



# ------------------------------------------------------------- 事不完，人不撤 (resolve)


def test_agency_with_an_open_task_cannot_resolve():
    record = task_for(reported_in(with_table(), "power"), "power")
    with pytest.raises(InvalidTransition) as caught:
        resolve(record, "power", "gd-017", "线路已处理", MEETS_AT + timedelta(hours=2))
    assert "T1 (power)" in str(caught.value)
    assert "事不完，人不撤" in str(caught.value)


def test_other_agencies_resolve_while_a_task_is_open_unless_they_are_last():
    record = reported_in(with_table(), "housing_admin", "property_manager", "power")
    record = task_for(record, "power")
    at = MEETS_AT + timedelta(days=1)
    record = resolve(record, "housing_admin", "s-ha", "阳台已加固", at)
    record = resolve(record, "property_manager", "s-pm", "已清理阳台", at)
    assert record.status is IssueStatus.in_progress


def test_last_remaining_part_cannot_resolve_while_any_task_is_open():
    # 物业 finished its part, then the table gave it one more job: 房管所, the last
    # one working, cannot close the issue until that job is done.
    record = reported_in(with_table(()), "housing_admin", "property_manager")
    record = resolve(record, "property_manager", "s-pm", "已清理阳台杂物", MEETS_AT)
    record = task_for(record, "property_manager", "重新粉刷楼道外墙", at=MEETS_AT)
    with pytest.raises(InvalidTransition) as caught:
        resolve(record, "housing_admin", "s-ha", "阳台已加固", MEETS_AT + timedelta(days=1))
    assert "T1 (property_manager)" in str(caught.value)
    assert record.status is IssueStatus.in_progress

    record, _ = complete_task(record, "property_manager", "staff-1", "T1", "外墙已粉刷", RULES,
                              MEETS_AT + timedelta(days=2))
    record = resolve(record, "housing_admin", "s-ha", "阳台已加固", MEETS_AT + timedelta(days=3))
    assert record.status is IssueStatus.resolved


def test_after_the_task_is_done_the_issue_resolves():
    record = reported_in(with_table(), "housing_admin", "property_manager", "power")
    record = task_for(record, "power")
    at = MEETS_AT + timedelta(days=1)
    record = resolve(record, "housing_admin", "s-ha", "阳台已加固", at)
    record = resolve(record, "property_manager", "s-pm", "已清理阳台", at)
    record, _ = complete_task(record, "power", "staff-1", "T1", "已更换电线", RULES, at)
    record = resolve(record, "power", "s-power", "线路恢复正常", at + timedelta(hours=1))
    assert record.status is IssueStatus.resolved
    assert all(a.status is AssignmentStatus.resolved for a in record.assignments)
    assert record.timeline[-1].step == "resolved"


def test_every_table_action_is_on_the_timeline():
    record = with_table()
    record, _ = invite(record, "housing_admin", ["urban_management"], RULES, CONVENED)
    record, _ = check_in(record, "power", "gd-017", RULES, MEETS_AT)
    record = reported_in(record, "power", at=MEETS_AT)
    record, _ = record_task(record, DESK, "power", "更换电线", MEETS_AT + timedelta(days=1),
                            RULES, MEETS_AT + timedelta(minutes=10))
    record, _ = complete_task(record, "power", "staff-1", "T1", "已更换", RULES,
                              MEETS_AT + timedelta(hours=5))
    assert [(e.step, e.service, e.agency) for e in record.timeline] == [
        ("received", "intake", None),
        ("dispatched", "routing", None),
        ("table_convened", "routing", None),
        ("table_invited", "routing", "urban_management"),
        ("table_checked_in", "routing", "power"),
        ("acknowledged", "agency", "power"),
        ("table_task_recorded", "routing", "power"),
        ("table_task_done", "routing", "power"),
    ]


# ------------------------------------------------------------------- after a reroute


def without_power(record: IssueRecord) -> IssueRecord:
    """The desk reroutes the balcony to the housing administration alone: power (invited to
    the table) and the property manager are withdrawn."""
    return reroute(record, "structural_crack", Priority.complex, record.routing,
                   [make_assignment("housing_admin", Role.lead, CONVENED)], "d-1",
                   "the wiring was never wet", CONVENED).record


def test_a_reroute_takes_a_withdrawn_agency_off_the_table():
    record = without_power(with_table())
    assert record.table.invited == ["housing_admin"]
    with pytest.raises(Forbidden, match="no assignment"):
        check_in(record, "power", "gd-017", RULES, MEETS_AT)
    with pytest.raises(InvalidTransition, match="invite it first"):
        record_task(record, DESK, "power", "更换电线", MEETS_AT + timedelta(days=1), RULES,
                    MEETS_AT)


@pytest.mark.parametrize("record", [balcony, with_table], ids=["no table", "a table"])
def test_an_agency_a_reroute_withdrew_is_refused_at_the_table_table_or_not(record):
    """docs/security.md: an agency a reroute withdrew may not check in (403), and it gets
    the 403 before a table sits too, not a 409 saying there is none."""
    withdrawn = without_power(record()) if record is with_table else reroute(
        balcony(), "structural_crack", Priority.complex, balcony().routing,
        [make_assignment("housing_admin", Role.lead, CONVENED)], "d-1", "no", CONVENED).record
    with pytest.raises(Forbidden):
        check_in(withdrawn, "property_manager", "wy-1", RULES, MEETS_AT)
    with pytest.raises(Forbidden):
        complete_task(withdrawn, "property_manager", "wy-1", "T1", "done", RULES, MEETS_AT)


def test_an_agency_rerouted_away_before_the_table_forgot_it_has_no_seat_there():
    """A record stored before reroutes took withdrawn agencies off the table still lists
    power as invited: power acts there no more, and re-inviting it seats it again."""
    record = without_power(with_table())
    record.table.invited = ["housing_admin", "property_manager", "power"]
    with pytest.raises(Forbidden, match="no assignment"):
        check_in(record, "power", "gd-017", RULES, MEETS_AT)
    with pytest.raises(InvalidTransition, match="invite it first"):
        record_task(record, DESK, "power", "更换电线", MEETS_AT + timedelta(days=1), RULES,
                    MEETS_AT)
    record, events = invite(record, DESK, ["power"], RULES, MEETS_AT)
    # The property manager, withdrawn too, is no longer listed once the record is read.
    assert record.table.invited == ["housing_admin", "power"]
    assert [e.assignment.agency for e in events if isinstance(e, AssignmentCreated)] == ["power"]
    record, _ = check_in(record, "power", "gd-017", RULES, MEETS_AT)
    assert "power" in record.table.checked_in


def as_an_old_release_stored_it() -> str:
    """The balcony's table after power checked in, rerouted to the housing administration
    alone, as a release before session 24 stored it: power and the property manager
    withdrawn, yet both still invited to the table, power checked in (JSON, as in Redis
    and the archive)."""
    record, _ = check_in(with_table(), "power", "gd-017", RULES, MEETS_AT)
    stored = without_power(record).model_dump(mode="json")
    stored["table"]["invited"] = ["housing_admin", "property_manager", "power"]
    stored["table"]["checked_in"] = {"power": MEETS_AT.isoformat()}
    assert {a["agency"] for a in stored["withdrawn"]} == {"power", "property_manager"}
    return json.dumps(stored, ensure_ascii=False)


def test_a_table_stored_before_reroutes_took_withdrawn_agencies_off_it_reads_without_them():
    """Read back, the table lists only the agencies still on the issue, for every reader:
    the record (the desk's JSON, the agencies' view, the issue page), the withdrawn
    agency's own workspace. Power stays in the history: its withdrawn part, the timeline."""
    from services.agency.domain import table_view
    from shared.authz import agency_view, desk_view

    record = IssueRecord.model_validate_json(as_an_old_release_stored_it())
    assert record.table.invited == ["housing_admin"]
    assert record.table.checked_in == {}
    for view in (desk_view(record, None), agency_view(record, None, "housing_admin"),
                 agency_view(record, None, "power")):
        assert view["table"]["invited"] == ["housing_admin"]
        assert view["table"]["checked_in"] == {}
    assert table_view(record, "power") is None
    assert table_view(record, "housing_admin")["place"] == PLACE
    assert [a.agency for a in record.withdrawn] == ["property_manager", "power"]
    assert any(e.step == "table_checked_in" and e.agency == "power" for e in record.timeline)
    # Read twice, or written back and read again: the same table.
    again = IssueRecord.model_validate_json(record.model_dump_json())
    assert again.table == record.table


def test_an_agency_withdrawn_and_brought_back_keeps_its_seat_on_an_old_record():
    """Only an agency with no part left is taken off: one a later reroute brought back
    (assigned again, an earlier part in ``withdrawn``) keeps its seat and its check-in."""
    stored = json.loads(as_an_old_release_stored_it())
    power = next(a for a in stored["withdrawn"] if a["agency"] == "power")
    stored["assignments"].append({**power, "status": "assigned", "withdrawn_at": None,
                                  "withdrawn_by": None})
    record = IssueRecord.model_validate(stored)
    assert record.table.invited == ["housing_admin", "power"]
    assert list(record.table.checked_in) == ["power"]


def desk_reroute(record: IssueRecord, at: datetime = CONVENED, **body):
    """The desk's reroute as routing applies it (services.routing.desk), by desk-li."""
    from services.routing import desk
    from shared.contracts import Reroute

    body.setdefault("category", "structural_crack")
    body.setdefault("reason", "水已漫到配电箱")
    return desk.reroute(record, Reroute(**body), body["reason"], "desk-li", RULES, at)


def test_a_reroute_seats_a_newly_involved_agency_at_the_table_as_an_invitation_would():
    """The balcony's table sits; the desk reroutes it to the housing administration with
    the water utility, dropping the property manager and power (which had checked in).
    The water utility is at the table at once: invited, announced with everyone now
    invited (the residents are told of the table as for an invitation), on the timeline,
    given tasks, in its workspace; the two withdrawn are off it, check-in and all."""
    from services.agency.domain import table_view

    record, _ = check_in(with_table(), "power", "gd-017", RULES, CONVENED)
    change = desk_reroute(record, lead="housing_admin", support=["water"])
    new = change.record

    assert new.table.invited == ["housing_admin", "water"]
    assert new.table.checked_in == {}  # power left, its check-in with it
    rerouted, *_ = change.events
    (convened,) = [e for e in change.events if isinstance(e, TableConvened)]
    assert [a.agency for a in convened.agencies] == ["housing_admin", "water"]
    assert (convened.meets_at, convened.place) == (MEETS_AT, PLACE)
    assert convened.causation_id == rerouted.event_id and convened.trace_id == TRACE_ID
    invited = [e for e in new.timeline if e.step == "table_invited"]
    assert [(e.agency, e.detail) for e in invited] == [("water", "自来水公司 invited by the desk")]
    assert table_view(new, "water") is not None and table_view(new, "power") is None

    tasked, _ = record_task(new, DESK, "water", "关闭楼上进水阀", MEETS_AT + timedelta(days=1),
                            RULES, MEETS_AT)
    assert table_view(tasked, "water")["tasks"][0]["description"] == "关闭楼上进水阀"
    checked, _ = check_in(tasked, "water", "zls-3", RULES, MEETS_AT)
    assert "water" in checked.table.checked_in


def test_a_retried_reroute_seats_no_one_twice_and_one_brought_back_is_invited_afresh():
    record, _ = check_in(with_table(), "power", "gd-017", RULES, CONVENED)
    new = desk_reroute(record, lead="housing_admin", support=["water"]).record
    assert desk_reroute(new, lead="housing_admin", support=["water"]) is None

    back = desk_reroute(new, CONVENED + timedelta(hours=1), lead="housing_admin",
                        support=["water", "power"])
    assert back.record.table.invited == ["housing_admin", "water", "power"]
    assert "power" not in back.record.table.checked_in  # it checks in again
    (convened,) = [e for e in back.events if isinstance(e, TableConvened)]
    assert [a.agency for a in convened.agencies] == ["housing_admin", "water", "power"]


def test_a_reroute_without_a_table_convenes_none():
    change = desk_reroute(balcony(), lead="housing_admin", support=["water"])
    assert change.record.table is None
    assert not any(isinstance(e, TableConvened) for e in change.events)

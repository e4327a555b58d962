"""The issue aggregate (shared.issue) and the agency's pure actions (services.agency.domain).

receive -> dispatch (精准派单) -> acknowledge (部门报到) -> resolve (及时结单), with one or
several agencies. Every transition is pure: it returns a new record and leaves its input alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.agency.domain import assignment_view, delivery_notes, finish_part, report_in
from services.routing.escalation import escalate
from services.routing.rules import load_rules
from shared.contracts import (
    AssignmentAcknowledged,
    AssignmentCreated,
    AssignmentResolved,
    AssignmentStatus,
    Channel,
    DeadlineKind,
    IssueDispatched,
    IssueResolved,
    IssueStatus,
    Language,
    Location,
    Priority,
    Role,
    Sector,
)
from shared.errors import Forbidden, InvalidTransition
from shared.issue import (
    Assignment,
    Deadline,
    IssueRecord,
    Routing,
    acknowledge,
    dispatch,
    public_view,
    receive,
    resolve,
)

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
ISSUE_ID = "WH-20261121-0001"
TRACE_ID = "trace-0123456789abcdef"
ACK_WINDOW = timedelta(minutes=30)
RESOLVE_WINDOW = timedelta(hours=24)


def make_assignment(agency: str, role: Role = Role.lead, *, assigned_at: datetime = T0,
                    sector: Sector = Sector.power) -> Assignment:
    return Assignment(
        agency=agency, agency_name=f"{agency}-中文名", agency_name_en=f"{agency} office",
        sector=sector, role=role, assigned_at=assigned_at,
        acknowledge_by=assigned_at + ACK_WINDOW, resolve_by=assigned_at + RESOLVE_WINDOW,
    )


def received(now: datetime = T0) -> IssueRecord:
    return receive(
        ISSUE_ID, TRACE_ID, "楼道里有根电线耷拉下来", None,
        Location(community="和平里社区", address="3号楼2单元"), Channel.hotline, Language.zh, now,
    )


ROUTING = Routing(rule="flying_wire", keywords=["电线"], category_source="keywords")


def dispatched(*agencies: tuple[str, Role], now: datetime = T0) -> IssueRecord:
    assignments = [make_assignment(a, r, assigned_at=now) for a, r in agencies]
    return dispatch(received(now), "flying_wire", Priority.urgent, ROUTING, assignments, now)


def single() -> IssueRecord:
    return dispatched(("power", Role.lead))


def multi() -> IssueRecord:
    return dispatched(("power", Role.lead), ("property_manager", Role.support),
                      ("housing", Role.support))


# ------------------------------------------------------------------------ receive


def test_receive_starts_received_with_one_timeline_entry():
    record = received()
    assert record.status is IssueStatus.received
    assert record.issue_id == ISSUE_ID and record.trace_id == TRACE_ID
    assert record.assignments == []
    assert record.received_at == T0 and record.updated_at == T0
    assert [(e.step, e.service, e.agency) for e in record.timeline] == [
        ("received", "intake", None)]
    assert record.timeline[0].detail == "accepted via hotline"


# ----------------------------------------------------------------------- dispatch


def test_dispatch_attaches_routing_and_assignments():
    later = T0 + timedelta(seconds=3)
    record = dispatch(received(), "flying_wire", Priority.urgent, ROUTING,
                      [make_assignment("power"), make_assignment("property_manager", Role.support)],
                      later)
    assert record.status is IssueStatus.dispatched
    assert record.category == "flying_wire"
    assert record.priority is Priority.urgent
    assert record.routing == ROUTING
    assert record.agencies() == ["power", "property_manager"]
    assert all(a.status is AssignmentStatus.assigned for a in record.assignments)
    assert record.updated_at == later
    last = record.timeline[-1]
    assert (last.step, last.service, last.agency) == ("dispatched", "routing", None)
    assert "power-中文名 (lead)" in last.detail
    assert "property_manager-中文名 (support)" in last.detail
    assert "rule flying_wire" in last.detail


@pytest.mark.parametrize("roles", [
    [],
    [Role.support],
    [Role.support, Role.support],
    [Role.lead, Role.lead],
    [Role.lead, Role.support, Role.lead],
], ids=["none", "support-only", "two-supports", "two-leads", "lead-support-lead"])
def test_dispatch_needs_exactly_one_lead(roles):
    assignments = [make_assignment(f"agency_{i}", role) for i, role in enumerate(roles)]
    with pytest.raises(ValueError, match="exactly one lead"):
        dispatch(received(), "flying_wire", Priority.urgent, ROUTING, assignments, T0)


def test_cannot_dispatch_twice():
    record = single()
    with pytest.raises(InvalidTransition, match="already dispatched"):
        dispatch(record, "flying_wire", Priority.urgent, ROUTING, [make_assignment("power")], T0)


def test_cannot_dispatch_in_progress_or_resolved_issue():
    in_progress = acknowledge(single(), "power", "staff-1", T0 + timedelta(minutes=1))
    with pytest.raises(InvalidTransition, match="already in_progress"):
        dispatch(in_progress, "x_cat", Priority.normal, ROUTING, [make_assignment("power")], T0)
    done = resolve(in_progress, "power", "staff-1", "fixed", T0 + timedelta(minutes=2))
    with pytest.raises(InvalidTransition, match="already resolved"):
        dispatch(done, "x_cat", Priority.normal, ROUTING, [make_assignment("power")], T0)


# -------------------------------------------------------------------- acknowledge


def test_acknowledge_on_time():
    at = T0 + timedelta(minutes=10)
    record = acknowledge(single(), "power", "staff-7", at)
    assignment = record.assignment_for("power")
    assert assignment.status is AssignmentStatus.acknowledged
    assert assignment.acknowledged_at == at
    assert assignment.acknowledged_by == "staff-7"
    assert assignment.acknowledged_on_time is True
    assert record.status is IssueStatus.in_progress
    assert record.timeline[-1].detail == "power-中文名 (staff-7) reported in"


def test_acknowledge_exactly_at_deadline_is_on_time():
    record = acknowledge(single(), "power", "staff-7", T0 + ACK_WINDOW)
    assert record.assignment_for("power").acknowledged_on_time is True


def test_acknowledge_late_is_flagged():
    record = acknowledge(single(), "power", "staff-7", T0 + ACK_WINDOW + timedelta(seconds=1))
    assignment = record.assignment_for("power")
    assert assignment.status is AssignmentStatus.acknowledged
    assert assignment.acknowledged_on_time is False
    assert record.timeline[-1].detail == "power-中文名 (staff-7) reported in (after its deadline)"


def test_acknowledge_twice_is_invalid():
    record = acknowledge(single(), "power", "staff-7", T0 + timedelta(minutes=1))
    with pytest.raises(InvalidTransition, match="already acknowledged"):
        acknowledge(record, "power", "staff-8", T0 + timedelta(minutes=2))


def test_acknowledge_after_resolve_is_invalid():
    record = acknowledge(single(), "power", "staff-7", T0 + timedelta(minutes=1))
    record = resolve(record, "power", "staff-7", "done", T0 + timedelta(minutes=2))
    with pytest.raises(InvalidTransition, match="already resolved"):
        acknowledge(record, "power", "staff-7", T0 + timedelta(minutes=3))


def test_acknowledge_by_unknown_agency_is_forbidden():
    with pytest.raises(Forbidden, match="'water' has no assignment on issue WH-20261121-0001"):
        acknowledge(single(), "water", "staff-7", T0 + timedelta(minutes=1))


def test_acknowledge_undispatched_issue_is_forbidden():
    with pytest.raises(Forbidden):
        acknowledge(received(), "power", "staff-7", T0)


def test_second_agency_acknowledging_keeps_issue_in_progress():
    record = acknowledge(multi(), "housing", "h-1", T0 + timedelta(minutes=1))
    assert record.status is IssueStatus.in_progress
    record = acknowledge(record, "power", "p-1", T0 + timedelta(minutes=2))
    assert record.status is IssueStatus.in_progress
    statuses = {a.agency: a.status for a in record.assignments}
    assert statuses == {"power": AssignmentStatus.acknowledged,
                        "property_manager": AssignmentStatus.assigned,
                        "housing": AssignmentStatus.acknowledged}


def test_the_report_in_note_is_kept_on_the_assignment_the_timeline_and_the_event():
    at = T0 + timedelta(minutes=5)
    record, (event,) = report_in(single(), "power", "staff-7", at, "抢修班组已出发")
    assert record.assignment_for("power").acknowledge_note == "抢修班组已出发"
    assert record.timeline[-1].step == "acknowledged"
    assert record.timeline[-1].detail.endswith("reported in: 抢修班组已出发")
    assert isinstance(event, AssignmentAcknowledged) and event.note == "抢修班组已出发"
    view = assignment_view(record, "power", at)
    assert view["acknowledge_note"] == "抢修班组已出发"
    assert public_view(record, None)["assignments"][0]["acknowledge_note"] == "抢修班组已出发"


def test_an_agencys_assignment_reads_the_resident_masked_in_notes_and_its_tasks():
    """As agency_view shows them (names given); as written without (the desk)."""
    at = T0 + timedelta(minutes=5)
    record, _ = report_in(single(), "power", "staff-7", at, "已联系孙建国，电话13812345678")
    assert assignment_view(record, "power", at, ["孙建国"])["acknowledge_note"] == (
        "已联系孙**，电话138****5678")
    assert assignment_view(record, "power", at)["acknowledge_note"] == (
        "已联系孙建国，电话13812345678")


def test_a_report_in_without_a_note_keeps_none_and_old_events_read_as_no_note():
    record, (event,) = report_in(single(), "power", "staff-7", T0 + timedelta(minutes=5))
    assert record.assignment_for("power").acknowledge_note is None
    assert record.timeline[-1].detail.endswith("reported in") and event.note is None
    # without a note, the body is what it was before notes were carried (in a queue or
    # a journal), and reads back as no note
    old = event.model_dump(mode="json")
    assert "note" not in old
    assert AssignmentAcknowledged.model_validate(old).note is None


# ------------------------------------------------------------------------ resolve


def test_resolve_before_acknowledge_is_invalid():
    with pytest.raises(InvalidTransition, match="must acknowledge"):
        resolve(single(), "power", "staff-7", "fixed", T0 + timedelta(minutes=5))


def test_resolve_single_agency_resolves_issue():
    record = acknowledge(single(), "power", "staff-7", T0 + timedelta(minutes=5))
    at = T0 + timedelta(hours=2)
    record = resolve(record, "power", "staff-9", "cable removed", at)
    assignment = record.assignment_for("power")
    assert assignment.status is AssignmentStatus.resolved
    assert assignment.resolved_at == at
    assert assignment.resolved_by == "staff-9"
    assert assignment.resolution_note == "cable removed"
    assert record.status is IssueStatus.resolved
    assert record.updated_at == at


def test_resolve_twice_is_invalid():
    record = acknowledge(single(), "power", "staff-7", T0 + timedelta(minutes=5))
    record = resolve(record, "power", "staff-7", "done", T0 + timedelta(hours=1))
    with pytest.raises(InvalidTransition, match="already resolved"):
        resolve(record, "power", "staff-7", "done again", T0 + timedelta(hours=2))


def test_resolve_by_unknown_agency_is_forbidden():
    with pytest.raises(Forbidden):
        resolve(single(), "water", "staff-7", "done", T0)


def test_multi_agency_issue_resolves_only_when_every_part_is_resolved():
    record = multi()
    for i, agency in enumerate(["power", "property_manager", "housing"]):
        record = acknowledge(record, agency, f"s-{agency}", T0 + timedelta(minutes=i + 1))
    record = resolve(record, "power", "s-power", "cut power", T0 + timedelta(hours=1))
    assert record.status is IssueStatus.in_progress
    record = resolve(record, "housing", "s-housing", "checked", T0 + timedelta(hours=2))
    assert record.status is IssueStatus.in_progress
    assert record.timeline[-1].step == "assignment_resolved"
    # who finished the part, by name on the timeline (the desk asks them, not the agency)
    assert record.timeline[-1].detail == "housing-中文名 (s-housing) resolved its part: checked"
    record = resolve(record, "property_manager", "s-pm", "removed", T0 + timedelta(hours=3))
    assert record.status is IssueStatus.resolved
    assert [e.step for e in record.timeline[-2:]] == ["assignment_resolved", "resolved"]


def test_one_part_resolved_while_another_is_unacknowledged_keeps_issue_open():
    record = dispatched(("power", Role.lead), ("housing", Role.support))
    record = acknowledge(record, "power", "p", T0 + timedelta(minutes=1))
    record = resolve(record, "power", "p", "done", T0 + timedelta(minutes=2))
    assert record.status is IssueStatus.in_progress
    assert record.assignment_for("housing").status is AssignmentStatus.assigned


# ----------------------------------------------------------------------- timeline


def test_timeline_records_step_service_and_agency_in_order():
    record = dispatched(("power", Role.lead), ("housing", Role.support))
    record = acknowledge(record, "housing", "h", T0 + timedelta(minutes=1))
    record = acknowledge(record, "power", "p", T0 + timedelta(minutes=2))
    record = resolve(record, "power", "p", "cut", T0 + timedelta(minutes=3))
    record = resolve(record, "housing", "h", "checked", T0 + timedelta(minutes=4))
    assert [(e.step, e.service, e.agency) for e in record.timeline] == [
        ("received", "intake", None),
        ("dispatched", "routing", None),
        ("acknowledged", "agency", "housing"),
        ("acknowledged", "agency", "power"),
        ("assignment_resolved", "agency", "power"),
        ("assignment_resolved", "agency", "housing"),
        ("resolved", "agency", None),
    ]
    assert [e.at for e in record.timeline] == [
        T0, T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2),
        T0 + timedelta(minutes=3), T0 + timedelta(minutes=4), T0 + timedelta(minutes=4)]
    assert record.timeline[4].detail == "power-中文名 (p) resolved its part: cut"
    assert record.timeline[-1].detail == "every agency has finished its part"


def test_updated_at_never_goes_backwards():
    record = acknowledge(single(), "power", "p", T0 + timedelta(hours=1))
    earlier = T0 + timedelta(minutes=30)
    record = resolve(record, "power", "p", "done", earlier)
    assert record.updated_at == T0 + timedelta(hours=1)
    assert record.status is IssueStatus.resolved


def test_timeline_stays_in_time_order_when_a_step_arrives_late():
    record = acknowledge(single(), "power", "p", T0 + timedelta(minutes=10))
    record.step(T0 + timedelta(minutes=5), "notify", "delivered", "desk told")
    assert [(e.step, e.at) for e in record.timeline] == [
        ("received", T0),
        ("dispatched", T0),
        ("delivered", T0 + timedelta(minutes=5)),
        ("acknowledged", T0 + timedelta(minutes=10)),
    ]
    assert record.updated_at == T0 + timedelta(minutes=10)


def test_timeline_keeps_insertion_order_for_equal_times():
    record = received()
    for name in ("a", "b", "c"):
        record.step(T0, "notify", name)
    assert [e.step for e in record.timeline] == ["received", "a", "b", "c"]


# -------------------------------------------------------------------------- purity


def test_transitions_do_not_mutate_their_input():
    fresh = received()
    fresh_dump = fresh.model_dump()
    assignments = [make_assignment("power"), make_assignment("housing", Role.support)]
    assignment_dumps = [a.model_dump() for a in assignments]

    routed = dispatch(fresh, "flying_wire", Priority.urgent, ROUTING, assignments, T0)
    assert fresh.model_dump() == fresh_dump
    assert routed is not fresh

    routed_dump = routed.model_dump()
    acked = acknowledge(routed, "power", "p", T0 + timedelta(minutes=1))
    assert routed.model_dump() == routed_dump
    assert routed.status is IssueStatus.dispatched

    acked_dump = acked.model_dump()
    part = resolve(acked, "power", "p", "done", T0 + timedelta(minutes=2))
    assert acked.model_dump() == acked_dump
    assert part.assignment_for("power").status is AssignmentStatus.resolved
    assert acked.assignment_for("power").status is AssignmentStatus.acknowledged

    # the assignments handed to dispatch are not the ones later transitions change
    assert [a.model_dump() for a in assignments] == assignment_dumps


def test_failed_transition_does_not_mutate_its_input():
    record = single()
    before = record.model_dump()
    with pytest.raises(InvalidTransition):
        resolve(record, "power", "p", "done", T0)
    assert record.model_dump() == before


# ------------------------------------------------------------ agency domain: events


def test_report_in_emits_acknowledged_on_time():
    at = T0 + timedelta(minutes=5)
    record, events = report_in(single(), "power", "staff-7", at)
    assert record.status is IssueStatus.in_progress
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, AssignmentAcknowledged)
    assert event.on_time is True
    assert (event.agency, event.staff_id) == ("power", "staff-7")
    assert (event.agency_name, event.agency_name_en) == ("power-中文名", "power office")
    assert event.trace_id == TRACE_ID and event.issue_id == ISSUE_ID
    assert event.occurred_at == at


def test_report_in_late_emits_on_time_false():
    _, [event] = report_in(single(), "power", "staff-7", T0 + ACK_WINDOW + timedelta(minutes=1))
    assert isinstance(event, AssignmentAcknowledged)
    assert event.on_time is False


def test_report_in_twice_is_invalid():
    record, _ = report_in(single(), "power", "s", T0 + timedelta(minutes=1))
    with pytest.raises(InvalidTransition):
        report_in(record, "power", "s", T0 + timedelta(minutes=2))


def test_finish_part_single_agency_emits_assignment_and_issue_resolved():
    record, _ = report_in(single(), "power", "staff-7", T0 + timedelta(minutes=1))
    at = T0 + timedelta(hours=1)
    record, events = finish_part(record, "power", "staff-7", "cable secured", at)
    assert record.status is IssueStatus.resolved
    assert [type(e) for e in events] == [AssignmentResolved, IssueResolved]
    part, whole = events
    assert part.note == "cable secured" and part.agency == "power"
    assert part.remaining_agencies == []
    assert whole.causation_id == part.event_id
    assert whole.trace_id == part.trace_id == TRACE_ID
    assert whole.issue_id == ISSUE_ID
    assert whole.agencies == ["power"]
    assert whole.occurred_at == at
    assert whole.event_id != part.event_id


def test_finish_part_multi_agency_emits_issue_resolved_only_for_last_part():
    record = multi()
    for agency in ("power", "property_manager", "housing"):
        record, _ = report_in(record, agency, f"s-{agency}", T0 + timedelta(minutes=1))

    record, events = finish_part(record, "power", "s-power", "cut", T0 + timedelta(hours=1))
    assert [type(e) for e in events] == [AssignmentResolved]
    assert events[0].remaining_agencies == ["property_manager", "housing"]
    assert record.status is IssueStatus.in_progress

    record, events = finish_part(record, "housing", "s-housing", "ok", T0 + timedelta(hours=2))
    assert [type(e) for e in events] == [AssignmentResolved]
    assert events[0].remaining_agencies == ["property_manager"]

    record, events = finish_part(record, "property_manager", "s-pm", "removed",
                                 T0 + timedelta(hours=3))
    assert [type(e) for e in events] == [AssignmentResolved, IssueResolved]
    part, whole = events
    assert part.agency == "property_manager"
    assert part.remaining_agencies == []
    assert whole.causation_id == part.event_id
    assert whole.trace_id == TRACE_ID
    assert whole.agencies == ["power", "property_manager", "housing"]
    assert record.status is IssueStatus.resolved


def test_finish_part_before_report_in_is_invalid():
    with pytest.raises(InvalidTransition):
        finish_part(single(), "power", "s", "done", T0)


# ------------------------------------------------------------------ assignment_view


def view_overdue(record: IssueRecord, agency: str, now: datetime) -> bool:
    return assignment_view(record, agency, now)["overdue"]


def test_assignment_view_shows_issue_and_other_agencies():
    view = assignment_view(multi(), "housing", T0)
    assert view["agency"] == "housing"
    assert view["status"] == "assigned"
    assert view["issue_id"] == ISSUE_ID
    assert view["issue_status"] == "dispatched"
    assert view["category"] == "flying_wire"
    assert view["priority"] == "urgent"
    assert view["description"] == "楼道里有根电线耷拉下来"
    assert view["location"]["address"] == "3号楼2单元"
    assert view["other_agencies"] == ["power", "property_manager"]
    assert view["overdue"] is False


def test_assignment_view_for_unknown_agency_is_forbidden():
    with pytest.raises(Forbidden):
        assignment_view(single(), "water", T0)


def test_assigned_past_acknowledge_deadline_is_overdue():
    record = single()
    assert view_overdue(record, "power", T0 + ACK_WINDOW) is False
    assert view_overdue(record, "power", T0 + ACK_WINDOW + timedelta(seconds=1)) is True


def test_an_escalated_assignment_stays_overdue_after_it_is_whistled_again():
    """The deadline watch escalates a missed 报到 and moves the deadline one window on:
    the agency's workspace showed a fresh countdown, not late, a second after its miss."""
    missed = T0 + ACK_WINDOW + timedelta(seconds=1)
    record, _ = escalate(single(), Deadline(ISSUE_ID, "power", DeadlineKind.acknowledge,
                                            T0 + ACK_WINDOW), load_rules(), missed)
    assert record.assignment_for("power").acknowledge_by > missed + timedelta(minutes=1)
    assert view_overdue(record, "power", missed + timedelta(seconds=1)) is True
    # Reported in late: that part is done; the resolve deadline has not passed.
    late = acknowledge(record, "power", "p", missed + timedelta(minutes=5))
    assert view_overdue(late, "power", missed + timedelta(minutes=6)) is False
    record, _ = escalate(late, Deadline(ISSUE_ID, "power", DeadlineKind.resolve,
                                        late.assignment_for("power").resolve_by),
                         load_rules(), late.assignment_for("power").resolve_by)
    assert view_overdue(record, "power", record.timeline[-1].at) is True


def test_acknowledged_past_acknowledge_deadline_but_before_resolve_deadline_is_not_overdue():
    record = acknowledge(single(), "power", "p", T0 + ACK_WINDOW + timedelta(minutes=5))
    assert view_overdue(record, "power", T0 + timedelta(hours=2)) is False


def test_unresolved_past_resolve_deadline_is_overdue():
    record = acknowledge(single(), "power", "p", T0 + timedelta(minutes=1))
    assert view_overdue(record, "power", T0 + RESOLVE_WINDOW) is False
    assert view_overdue(record, "power", T0 + RESOLVE_WINDOW + timedelta(seconds=1)) is True


def test_resolved_assignment_is_never_overdue():
    record = acknowledge(single(), "power", "p", T0 + timedelta(minutes=1))
    record = resolve(record, "power", "p", "done", T0 + timedelta(hours=1))
    assert view_overdue(record, "power", T0 + RESOLVE_WINDOW + timedelta(days=3)) is False


# --------------------------------------------------------------------- public_view


def test_public_view_masks_contact():
    view = public_view(single(), {"name": "张三丰", "phone": "13812345678"})
    assert view["contact"] == {"name": "张**", "phone": "138****5678", "email": None,
                               "preferred_channel": None}
    assert view["issue_id"] == ISSUE_ID
    assert view["status"] == "dispatched"
    assert "13812345678" not in repr(view)
    assert "张三丰" not in repr(view)


def test_public_view_without_contact():
    assert public_view(single(), None)["contact"] == {
        "name": None, "phone": None, "email": None, "preferred_channel": None}
    assert public_view(single(), {})["contact"] == {
        "name": None, "phone": None, "email": None, "preferred_channel": None}
    assert public_view(single(), {"phone": "+86 139-8765-4321"})["contact"] == {
        "name": None, "phone": "139****4321", "email": None, "preferred_channel": None}


def test_a_copy_to_change_is_equal_and_shares_nothing():
    record = dispatched(("housing", Role.lead), ("power", Role.support))
    copy = record.copy_to_change()
    assert copy == record

    copy.assignments[0].status = AssignmentStatus.resolved
    copy.timeline.append(copy.timeline[0].model_copy(update={"step": "extra"}))
    copy.routing.keywords.append("extra")

    assert record.assignments[0].status is AssignmentStatus.assigned
    assert [e.step for e in record.timeline] != [e.step for e in copy.timeline]
    assert "extra" not in record.routing.keywords


# ----------------------------------------------------------------- delivery notes


def test_a_dispatch_is_noted_as_delivered_to_each_of_its_agencies_once():
    record = multi()
    event = IssueDispatched(trace_id=TRACE_ID, issue_id=ISSUE_ID, occurred_at=T0,
                            category="flying_wire", priority=Priority.urgent,
                            assignments=[a.summary() for a in record.assignments])
    notes = delivery_notes(event)
    # One note per agency, each with an id of its own that a redelivery repeats.
    assert list(notes) == [f"{event.event_id}:{agency}"
                           for agency in ("power", "property_manager", "housing")]
    assert notes == delivery_notes(event)
    housing = notes[f"{event.event_id}:housing"]
    assert (housing.step, housing.service, housing.agency, housing.at) == (
        "assignment_delivered", "agency", "housing", T0)
    assert housing.detail == "housing-中文名 received the assignment (support)"


def test_an_assignment_added_later_is_noted_under_the_event_that_added_it():
    invited = make_assignment("water", Role.support, sector=Sector.utilities).summary()
    event = AssignmentCreated(trace_id=TRACE_ID, issue_id=ISSUE_ID, occurred_at=T0,
                              causation_id="convened-1", category="flying_wire",
                              priority=Priority.urgent, assignment=invited)
    notes = delivery_notes(event)
    assert list(notes) == ["convened-1:water"]
    assert notes["convened-1:water"].agency == "water"


def test_an_older_releases_assignment_created_for_a_dispatch_is_not_noted_twice():
    record = single()
    dispatched = IssueDispatched(trace_id=TRACE_ID, issue_id=ISSUE_ID, occurred_at=T0,
                                 category="flying_wire", priority=Priority.urgent,
                                 assignments=[a.summary() for a in record.assignments])
    # What releases before this one also published for each of the dispatch's agencies.
    legacy = dispatched.caused(AssignmentCreated, occurred_at=T0, category="flying_wire",
                               priority=Priority.urgent, assignment=dispatched.assignments[0])
    assert list(delivery_notes(legacy)) == list(delivery_notes(dispatched))


# ------------------------------------------------------------------ stored moments

NAIVE = datetime(2026, 11, 21, 9, 0)  # whose 09:00? Beijing's, or UTC's eight hours later


def test_a_naive_moment_from_code_is_refused_naming_the_field():
    """Event moments must have their zone; a record's took a naive one as it came, and
    compared with an aware one later it raised TypeError far from where it was written."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"received_at\n.*timezone"):
        received(NAIVE)
    with pytest.raises(ValidationError, match=r"acknowledge_by\n.*timezone"):
        Assignment(agency="power", agency_name="供电公司", agency_name_en="Power",
                   sector=Sector.power, role=Role.lead, assigned_at=T0,
                   acknowledge_by=NAIVE, resolve_by=T0 + RESOLVE_WINDOW)
    record = single()
    with pytest.raises(ValidationError, match=r"\bat\n.*timezone"):
        record.step(NAIVE, "routing", "escalated")
    # A naive moment set on a copy is refused at the next change's copy, by its place.
    record.assignments[0].resolved_at = NAIVE
    with pytest.raises(ValidationError, match=r"assignments\.0\.resolved_at"):
        record.copy_to_change()


def _with_table(meets_at: str) -> str:
    """A dispatched record's JSON with a table convened at ``meets_at`` as text, as a
    release before ConveneTable required a zone stored it (the desk's "09:00", no zone)."""
    data = single().model_dump(mode="json")
    data["table"] = {"meets_at": meets_at, "place": "红色议事厅",
                     "convened_at": "2026-11-21T08:00:00Z", "invited": ["power"],
                     "checked_in": {"power": "2026-11-21T09:05:00"}}
    return orjson.dumps(data).decode()


def test_a_record_stored_with_naive_moments_by_an_older_release_reads_them_as_utc():
    stored = _with_table("2026-11-22T09:00:00")
    for record in (IssueRecord.model_validate_json(stored),
                   IssueRecord.model_validate(orjson.loads(stored))):
        assert record.table.meets_at == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
        assert record.table.checked_in["power"] == datetime(2026, 11, 21, 9, 5, tzinfo=UTC)
        assert record.table.convened_at == datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    # And a change of it stores them with their zone.
    again = IssueRecord.model_validate_json(stored).copy_to_change().model_dump(mode="json")
    assert again["table"]["meets_at"] == "2026-11-22T09:00:00Z"


def test_a_stored_record_wrong_in_another_way_is_still_refused():
    from pydantic import ValidationError

    broken = orjson.loads(_with_table("2026-11-22T09:00:00"))
    broken["status"] = "nonsense"
    with pytest.raises(ValidationError, match="status"):
        IssueRecord.model_validate_json(orjson.dumps(broken))


@pytest.mark.parametrize(("assign", "place"), [
    (lambda r: setattr(r, "updated_at", NAIVE), r"updated_at"),
    (lambda r: setattr(r.assignments[0], "resolved_at", NAIVE), r"assignments\.0\.resolved_at"),
    (lambda r: setattr(r.timeline[-1], "at", NAIVE), r"timeline\.{last}\.at"),
    (lambda r: r.table.checked_in.__setitem__("power", NAIVE), r"table\.checked_in\.power"),
    (lambda r: setattr(r.table, "meets_at", NAIVE), r"table\.meets_at"),
])
def test_a_naive_moment_assigned_after_construction_is_refused_by_its_place(assign, place):
    """Construction refuses a naive moment, but one assigned afterwards was only refused at
    the next copy_to_change: the store wrote it as it was (no zone), read back as UTC.
    refuse_naive_moments, which the store calls before each write, names where it is."""
    from pydantic import ValidationError

    record = IssueRecord.model_validate_json(_with_table("2026-11-22T09:00:00Z"))
    record.refuse_naive_moments()  # every moment has its zone: nothing to say
    assign(record)
    with pytest.raises(ValidationError, match=place.format(last=len(record.timeline) - 1)
                       + r"\n.*timezone"):
        record.refuse_naive_moments()


def test_every_moment_of_every_stored_part_is_looked_at():
    """A new field holding a moment in a shape the check does not know is refused when
    first checked, not left unchecked in silence."""
    from pydantic import AwareDatetime

    from shared.issue import Stored

    class Odd(Stored):
        moments: list[AwareDatetime]

    with pytest.raises(TypeError, match="does not know this shape"):
        Odd(moments=[T0]).refuse_naive_moments()

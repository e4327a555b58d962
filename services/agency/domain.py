"""agency's pure part: what staff see, and the events their actions announce."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.contracts import (
    AssignmentAcknowledged,
    AssignmentCreated,
    AssignmentResolved,
    AssignmentStatus,
    AssignmentSummary,
    AssignmentWithdrawn,
    Event,
    IssueDispatched,
    IssueResolved,
    IssueStatus,
)
from shared.issue import IssueRecord, TimelineEntry, acknowledge, resolve

# What ?status= accepts, and which assignment states each one means.
STATUS_FILTERS: dict[str, set[AssignmentStatus]] = {
    "open": {AssignmentStatus.assigned, AssignmentStatus.acknowledged},
    "assigned": {AssignmentStatus.assigned},
    "acknowledged": {AssignmentStatus.acknowledged},
    "resolved": {AssignmentStatus.resolved},
    "all": set(AssignmentStatus),
}


def delivery_notes(event: IssueDispatched | AssignmentCreated) -> dict[str, TimelineEntry]:
    """The timeline notes that the 派单 reached each agency it names, by note id (each
    noted once). ``issue.dispatched`` carries the issue's first assignments, one note
    per agency; ``assignment.created``, an assignment added later (a table invitation).

    A note's id is ``<the event announcing the assignment>:<agency>``: for
    ``assignment.created`` that is its cause. Releases before this one announced each
    of a dispatch's assignments again in an ``assignment.created`` caused by the
    dispatch; one of those still queued at an upgrade gets the dispatch's own note id,
    so it is not noted twice.
    """
    if isinstance(event, AssignmentCreated):
        agency = event.assignment.agency
        return {f"{event.causation_id or event.event_id}:{agency}":
                _delivered(event, event.assignment)}
    return {f"{event.event_id}:{a.agency}": _delivered(event, a) for a in event.assignments}


def _delivered(event: Event, assignment: AssignmentSummary) -> TimelineEntry:
    return TimelineEntry(at=event.occurred_at, service="agency", step="assignment_delivered",
                         detail=f"{assignment.agency_name} received the assignment "
                                f"({assignment.role.value})", agency=assignment.agency)


def withdrawal_note(event: AssignmentWithdrawn) -> tuple[str, TimelineEntry]:
    """The timeline note that the agency was told its part was withdrawn, and its id
    (``<event id>:<agency>``: noted once however often the event comes)."""
    agency = event.agency
    return f"{event.event_id}:{agency.agency}", TimelineEntry(
        at=event.occurred_at, service="agency", step="assignment_withdrawn",
        detail=f"{agency.agency_name} was told its part is withdrawn "
               f"(by {event.staff_id}: {event.reason})", agency=agency.agency)


def assignment_view(record: IssueRecord, agency: str, now: datetime) -> dict[str, Any]:
    """One assignment as its agency's staff see it: the problem, the place, the clock."""
    assignment = record.assignment_for(agency)
    view = assignment.model_dump(mode="json")
    # A missed deadline escalates within a second and whistles the agency again (its
    # deadline moves one window on): the escalation's mark, not the new deadline, says
    # it is late, or the card would turn red for a second only.
    overdue = (
        (assignment.status is AssignmentStatus.assigned
         and (assignment.acknowledge_overdue or now > assignment.acknowledge_by))
        or (assignment.status is not AssignmentStatus.resolved
            and (assignment.resolve_overdue or now > assignment.resolve_by))
    )
    view.update(
        issue_id=record.issue_id,
        issue_status=record.status.value,
        category=record.category,
        priority=record.priority.value if record.priority else None,
        description=record.description,
        location=record.location.model_dump(mode="json"),
        other_agencies=[a.agency for a in record.assignments if a.agency != agency],
        # A reopened (民事民评) or escalated issue is back on the card with the same
        # problem: staff must see it was sent back, and who now supervises it.
        reopen_count=record.reopen_count,
        escalation_level=record.escalation_level.value,
        overdue=overdue,
        table=table_view(record, agency),
    )
    return view


def table_view(record: IssueRecord, agency: str) -> dict[str, Any] | None:
    """The table (问题在桌面解决) as one invited agency sees it: when and where, whether it
    has checked in, and its own tasks (another agency's tasks are not its business)."""
    table = record.table
    if table is None or agency not in table.invited:
        return None
    return {"meets_at": table.meets_at.isoformat(), "place": table.place,
            "checked_in": agency in table.checked_in,
            "tasks": [t.model_dump(mode="json") for t in table.tasks if t.agency == agency]}


def report_in(record: IssueRecord, agency: str, staff_id: str, now: datetime,
              note: str | None = None) -> tuple[IssueRecord, list[Event]]:
    """报到: acknowledge the assignment (with its optional note) and announce it."""
    new = acknowledge(record, agency, staff_id, now, note)
    assignment = new.assignment_for(agency)
    event = AssignmentAcknowledged(
        trace_id=record.trace_id, issue_id=record.issue_id, occurred_at=now, agency=agency,
        agency_name=assignment.agency_name,
        agency_name_en=assignment.agency_name_en, staff_id=staff_id,
        on_time=bool(assignment.acknowledged_on_time), note=note,
    )
    return new, [event]


def finish_part(record: IssueRecord, agency: str, staff_id: str, note: str,
                now: datetime) -> tuple[IssueRecord, list[Event]]:
    """Resolve this agency's part; when it was the last part, the issue is resolved too."""
    new = resolve(record, agency, staff_id, note, now)
    assignment = new.assignment_for(agency)
    resolved = AssignmentResolved(
        trace_id=record.trace_id, issue_id=record.issue_id, occurred_at=now, agency=agency,
        agency_name=assignment.agency_name,
        agency_name_en=assignment.agency_name_en, staff_id=staff_id, note=note,
        remaining_agencies=[a.agency for a in new.assignments
                            if a.status is not AssignmentStatus.resolved],
    )
    events: list[Event] = [resolved]
    if new.status is IssueStatus.resolved:
        events.append(resolved.caused(IssueResolved, occurred_at=now, agencies=new.agencies()))
    return new, events

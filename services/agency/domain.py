"""agency's pure part: what staff see, and the events their actions announce."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.addresses import public_address
from shared.authz import mask_assignment_notes, mask_task_notes
from shared.contracts import (
    RECENTLY_WITHDRAWN_DAYS,
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
    Role,
)
from shared.issue import (
    Assignment,
    IssueRecord,
    TimelineEntry,
    acknowledge,
    part_level,
    resolve,
)
from shared.jsoncodec import utc_moment

# What ?status= accepts, and which assignment states each one means.
STATUS_FILTERS: dict[str, set[AssignmentStatus]] = {
    "open": {AssignmentStatus.assigned, AssignmentStatus.acknowledged},
    "assigned": {AssignmentStatus.assigned},
    "acknowledged": {AssignmentStatus.acknowledged},
    "resolved": {AssignmentStatus.resolved},
    "all": set(AssignmentStatus),
    # Parts a desk's reroute took away: read-only, never mixed into the work above.
    "withdrawn": {AssignmentStatus.withdrawn},
}

RECENTLY_WITHDRAWN = timedelta(days=RECENTLY_WITHDRAWN_DAYS)


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


def assignment_view(record: IssueRecord, agency: str, now: datetime,
                    names: list[str | None] | None = None) -> dict[str, Any]:
    """One assignment as its agency's staff see it: the problem, the place, the clock.

    ``names`` (the resident's, and those of the neighbours merged into the issue): the
    notes and the table's tasks masked as ``GET /issues/{id}`` shows them to an agency
    (``shared.authz.agency_view``); ``None``, as written (the desk reads them so).
    """
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
        _the_problem(record),
        location=record.location.model_dump(mode="json"),
        other_agencies=[a.agency for a in record.assignments if a.agency != agency],
        # A supporting agency must know whom it supports: the others alone did not say.
        lead_agency=next((a.agency for a in record.assignments if a.role is Role.lead), None),
        # A reopened (民事民评) or escalated issue is back on the card with the same
        # problem: staff must see it was sent back, and who now supervises it.
        reopen_count=record.reopen_count,
        escalation_level=record.escalation_level.value,
        # Who presses *this* agency (三级吹哨 is per agency): its part can be with the
        # street office while another's misses took the issue to the district. Its own
        # staff only: this view is of their assignment, and names no other's level.
        level=part_level(record, assignment).value,
        overdue=overdue,
        table=table_view(record, agency),
    )
    if names is not None:
        mask_assignment_notes(view, names)
        mask_task_notes(view["table"], names)
    return view


def _the_problem(record: IssueRecord) -> dict[str, Any]:
    """What every card of an issue says about it, whatever the agency's part."""
    return {"issue_id": record.issue_id, "issue_status": record.status.value,
            "category": record.category,
            "priority": record.priority.value if record.priority else None,
            "description": record.description}


def table_view(record: IssueRecord, agency: str) -> dict[str, Any] | None:
    """The table (问题在桌面解决) as one invited agency sees it: when and where, whether it
    has checked in, and its own tasks (another agency's tasks are not its business)."""
    table = record.table
    if table is None or agency not in table.invited:
        return None
    return {"meets_at": utc_moment(table.meets_at), "place": table.place,
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


def latest_withdrawal(record: IssueRecord, agency: str) -> Assignment | None:
    """``agency``'s part that a reroute withdrew, when it has no part now (the latest,
    if it was withdrawn, given back and withdrawn again); ``None`` otherwise."""
    if agency in record.agencies():
        return None
    parts = [a for a in record.withdrawn if a.agency == agency]
    return max(parts, key=lambda a: a.withdrawn_at or a.assigned_at, default=None)


def recently_withdrawn(record: IssueRecord, agency: str, now: datetime) -> bool:
    """Whether the issue belongs in ``agency``'s "withdrawn from us" list."""
    part = latest_withdrawal(record, agency)
    return part is not None and now - (part.withdrawn_at or part.assigned_at) <= RECENTLY_WITHDRAWN


def withdrawn_since(now: datetime) -> datetime:
    """The earliest withdrawal the "withdrawn from us" list still shows."""
    return now - RECENTLY_WITHDRAWN


def recently_withdrawn_records(hot: list[IssueRecord], archived: list[IssueRecord],
                               agency: str, now: datetime) -> list[IssueRecord]:
    """The issues of ``agency``'s "withdrawn from us" list, the latest withdrawal first,
    from the hot issues (Redis) and the archived ones. An issue being archived is in both
    for a moment: Redis's record counts (as for every read of either store)."""
    records = {r.issue_id: r for r in archived}
    records.update((r.issue_id, r) for r in hot)
    recent = [r for r in records.values() if recently_withdrawn(r, agency, now)]
    # A withdrawal without its time (none is written so) sorts by the assignment's.
    return sorted(recent, key=lambda r: (_withdrawal_time(r, agency), r.issue_id), reverse=True)


def _withdrawal_time(record: IssueRecord, agency: str) -> datetime:
    part = latest_withdrawal(record, agency)
    assert part is not None  # only the recently withdrawn are sorted
    return part.withdrawn_at or part.assigned_at


# What a withdrawn part keeps of the assignment: what it was and when it went, not its
# deadlines (nothing is due from the agency any more).
_WITHDRAWN_FIELDS = ("agency", "agency_name", "agency_name_en", "sector", "role", "status",
                     "assigned_at", "acknowledged_at", "acknowledged_by", "resolved_at",
                     "resolved_by", "withdrawn_at", "withdrawn_by")


def withdrawn_view(record: IssueRecord, agency: str) -> dict[str, Any]:
    """A part a reroute took from ``agency``, read-only: the problem (to recognise it),
    the address down to the building (it no longer goes there, as ``GET /issues/{id}``
    shows it), when and by whom it was withdrawn, and who has the issue now."""
    part = latest_withdrawal(record, agency)
    if part is None:
        raise ValueError(f"agency {agency!r} has no withdrawn part on {record.issue_id}")
    view = part.model_dump(mode="json", include=set(_WITHDRAWN_FIELDS))
    location = record.location.model_dump(mode="json")
    location["address"] = public_address(location["address"])
    view.update(_the_problem(record), location=location, now_with=record.agencies())
    return view

"""问题在桌面解决: the table session, as pure functions of the issue record.

The desk convenes a table with a time, a place and the agencies invited; the
desk or the lead agency can invite more. Each invited agency checks in (报到),
decisions are recorded as tasks (an agency, a description, a due date), which the
agency marks done or the desk closes with a note (verified on site, dropped), and the
issue cannot be resolved while one of its table's tasks is open (事不完，人不撤;
enforced in ``shared.issue.resolve``). A task's date is agreed with its agency: one later
than the agency's resolve deadline becomes that deadline, so escalation follows what the
table agreed; a date may be at most the rules' longest resolve window ahead. An invited agency without an assignment
gets a support assignment, so it can act like every other agency on the issue.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.routing.rules import RuleSet, spoken_duration
from shared.contracts import (
    AgencyRef,
    AssignmentCreated,
    AssignmentStatus,
    Event,
    IssueStatus,
    Role,
    TableCheckedIn,
    TableConvened,
    TableTaskDone,
    TableTaskRecorded,
)
from shared.errors import Forbidden, InvalidPayload, InvalidTransition
from shared.issue import Assignment, IssueRecord, TableSession, TableTask

DESK = "desk"  # the principal name of community desk staff (whistle token desk)

# A table convened as it sits down (the desk fills the form at the table) is not "past".
CONVENE_GRACE = timedelta(minutes=30)


def agency_ref(rules: RuleSet, agency: str, field: str = "agencies") -> AgencyRef:
    """The agency's names from the rules; an agency they do not know is a 422 naming
    ``field`` (the payload's field that carried it)."""
    try:
        known = rules.agency(agency)
    except KeyError:
        raise InvalidPayload(f"unknown agency {agency!r}", [
            {"field": field, "message": f"unknown agency {agency!r}",
             "type": "unknown_agency"}]) from None
    return AgencyRef(agency=agency, agency_name=known.name, agency_name_en=known.name_en)


# The table settles work still to do: an issue waiting for its resident's rating, closed,
# merged or not yet routed has no agency to seat, task or whistle (an agency invited to a
# closed issue was given deadlines that escalated it, and its resident was told).
TABLE_STATUSES = (IssueStatus.dispatched, IssueStatus.in_progress)


def _open_issue(record: IssueRecord) -> None:
    if record.status not in TABLE_STATUSES:
        raise InvalidTransition(
            f"issue {record.issue_id} is {record.status.value}; a table needs a dispatched "
            "or in-progress issue")


def _lead(record: IssueRecord) -> str | None:
    return next((a.agency for a in record.assignments if a.role is Role.lead), None)


def _desk_or_lead(record: IssueRecord, by: str, what: str) -> None:
    """Only the desk or the lead agency ``what``: judged before the table and the issue's
    state, so another agency gets 403, never a 409 about a table it may not touch."""
    if by not in (DESK, _lead(record)):
        raise Forbidden(f"only the desk or the lead agency can {what}")


def _agency_with_a_part(record: IssueRecord, agency: str, desk_refusal: str) -> None:
    """Judged before the table: the desk (``desk_refusal``), an agency with no part in the
    issue and one a reroute withdrew get 403 whether a table sits or not, never a 409
    telling them whether one does."""
    if agency == DESK:
        raise Forbidden(desk_refusal)
    record.assignment_for(agency)


def _ensure_assigned(new: IssueRecord, ref: AgencyRef, rules: RuleSet, now: datetime,
                     cause: Event) -> list[Event]:
    """Invite an agency that has no part yet: it joins as support, with deadlines."""
    if ref.agency in new.agencies():
        return []
    window = rules.window(new.priority)
    sector = rules.agency(ref.agency).sector
    assignment = Assignment(agency=ref.agency, agency_name=ref.agency_name,
                            agency_name_en=ref.agency_name_en, sector=sector, role=Role.support,
                            assigned_at=now, acknowledge_by=now + window.acknowledge,
                            resolve_by=now + window.resolve)
    new.assignments.append(assignment)
    return [cause.caused(AssignmentCreated, occurred_at=now, category=new.category,
                         priority=new.priority, assignment=assignment.summary())]


def convene(record: IssueRecord, meets_at: datetime, place: str, agencies: list[str],
            rules: RuleSet, now: datetime) -> tuple[IssueRecord, list[Event]]:
    _open_issue(record)
    if record.table is not None:
        raise InvalidTransition(f"issue {record.issue_id} already has a table; invite agencies to it")
    if meets_at < now - CONVENE_GRACE:
        # Every reporter is told when the table meets ("社区将于…召集"): a time gone by
        # told them of a meeting they could not come to. A table sitting now is fine.
        raise InvalidPayload("meets_at is in the past", [
            {"field": "meets_at", "message": "must not be in the past", "type": "past_due"}])
    invited = list(dict.fromkeys([*record.agencies(), *agencies]))
    refs = [agency_ref(rules, a) for a in invited]
    new = record.copy_to_change()
    new.table = TableSession(meets_at=meets_at, place=place, convened_at=now, invited=invited)
    convened = TableConvened(trace_id=record.trace_id, issue_id=record.issue_id, occurred_at=now,
                             meets_at=meets_at, place=place, agencies=refs)
    events: list[Event] = [convened]
    for ref in refs:
        events += _ensure_assigned(new, ref, rules, now, convened)
    names = "、".join(r.agency_name for r in refs)
    new.step(now, "routing", "table_convened", f"table at {place}, {meets_at.isoformat()}: {names}")
    return new, events


def invite(record: IssueRecord, by: str, agencies: list[str], rules: RuleSet,
           now: datetime) -> tuple[IssueRecord, list[Event]]:
    _desk_or_lead(record, by, "invite agencies to the table")
    table = _table(record)
    _open_issue(record)
    seated = _seated(record, table)
    added = [agency_ref(rules, a) for a in dict.fromkeys(agencies) if a not in seated]
    if not added:
        return record, []
    new = record.copy_to_change()
    convened = _seat(new, added, by, rules, now)
    events: list[Event] = [convened]
    for ref in added:
        events += _ensure_assigned(new, ref, rules, now, convened)
    return new, events


def seat_rerouted(new: IssueRecord, added: list[str], rules: RuleSet, now: datetime,
                  cause: Event) -> list[Event]:
    """A reroute's newly involved agencies (``added``, already assigned) sit down at the
    table the issue already has, as the desk's invitation would seat them: every agency
    involved is at the table (问题在桌面解决), sees it and its tasks in its workspace, and
    the table is announced again with everyone now invited. Changes ``new`` in place;
    nothing when there is no table or no one new to seat (a retried reroute)."""
    if new.table is None:
        return []
    newcomers = [agency_ref(rules, a) for a in dict.fromkeys(added)
                 if a not in _seated(new, new.table)]
    if not newcomers:
        return []
    return [_seat(new, newcomers, DESK, rules, now, cause)]


def _seat(new: IssueRecord, refs: list[AgencyRef], by: str, rules: RuleSet, now: datetime,
          cause: Event | None = None) -> TableConvened:
    """Seat ``refs`` at ``new``'s table, invited ``by`` (the desk or the lead agency), and
    the table re-announced with everyone now invited (``cause``: the event that seated
    them, when it was not an invitation)."""
    names = [ref.agency for ref in refs]
    new.table.invited = [*(a for a in new.table.invited if a not in names), *names]
    fields = dict(occurred_at=now, meets_at=new.table.meets_at, place=new.table.place,
                  agencies=[agency_ref(rules, a) for a in new.table.invited])
    convened = (cause.caused(TableConvened, **fields) if cause is not None else
                TableConvened(trace_id=new.trace_id, issue_id=new.issue_id, **fields))
    for ref in refs:
        new.step(now, "routing", "table_invited",
                 f"{ref.agency_name} invited by {inviter_name(by, rules)}", agency=ref.agency)
    return convened


def inviter_name(by: str, rules: RuleSet) -> str:
    """Who invited, as the timeline names everyone else: "the desk" (as in "done by the
    desk"), or the lead agency by its name. Its code ("invited by housing_admin") was
    what an English reader of the timeline was left with."""
    return "the desk" if by == DESK else agency_ref(rules, by).agency_name


def check_in(record: IssueRecord, agency: str, staff_id: str, rules: RuleSet,
             now: datetime) -> tuple[IssueRecord, list[Event]]:
    _agency_with_a_part(record, agency,
                        "only an agency invited to the table checks in; the desk convenes it")
    table = _table(record)
    if agency not in _seated(record, table):
        raise Forbidden(f"{agency} is not invited to the table of issue {record.issue_id}")
    if agency in table.checked_in:
        raise InvalidTransition(f"{agency} has already checked in at the table")
    new = record.copy_to_change()
    new.table.checked_in[agency] = now
    ref = agency_ref(rules, agency)
    new.step(now, "routing", "table_checked_in",
             f"{ref.agency_name} ({staff_id}) checked in at the table",
             agency=agency)
    return new, [TableCheckedIn(trace_id=record.trace_id, issue_id=record.issue_id,
                                occurred_at=now, agency=ref, staff_id=staff_id)]


def record_task(record: IssueRecord, by: str, agency: str, description: str, due: datetime,
                rules: RuleSet, now: datetime) -> tuple[IssueRecord, list[Event]]:
    _desk_or_lead(record, by, "record the table's decisions")
    table = _table(record)
    _open_issue(record)
    ref = agency_ref(rules, agency, "agency")  # a typo is the caller's to fix: 422, not 409
    if agency not in _seated(record, table):
        raise InvalidTransition(f"{agency} is not at the table; invite it first")
    if due <= now:
        raise InvalidPayload("due must be in the future", [
            {"field": "due", "message": "must be in the future", "type": "past_due"}])
    window = longest_resolve_window(rules)
    latest = now + window
    if due > latest:
        said = spoken_duration(window)
        raise InvalidPayload(f"due is more than {said} ahead", [
            {"field": "due", "type": "too_far",
             # the window in seconds too: the pages say it in their own language
             "within_seconds": int(window.total_seconds()),
             "message": f"must be within {said} (the longest resolve window of the "
                        f"rules), by {latest.replace(microsecond=0).isoformat()} (UTC): "
                        "agree a nearer date, or split the work"}])
    new = record.copy_to_change()
    task = TableTask(task_id=f"T{len(table.tasks) + 1}", agency=agency, description=description,
                     due=due, recorded_at=now)
    new.table.tasks.append(task)
    new.step(now, "routing", "table_task_recorded",
             f"{task.task_id}: {ref.agency_name} to {description} by {due.isoformat()}",
             agency=agency)
    _follow_agreed_date(new, task, now)
    return new, [TableTaskRecorded(trace_id=record.trace_id, issue_id=record.issue_id,
                                   occurred_at=now, task_id=task.task_id, agency=ref,
                                   description=description, due=due)]


def longest_resolve_window(rules: RuleSet) -> timedelta:
    """How far ahead the table may agree a task's date: the longest resolve window the
    rules give any problem (15 days, ``complex``, by default). A later date would hold
    an agency's escalation off for longer than any problem may take (接诉即办)."""
    return max(window.resolve for window in rules.priorities.values())


def _follow_agreed_date(new: IssueRecord, task: TableTask, now: datetime) -> None:
    """The table agreed ``task``'s date with its agency: when it is later than the
    agency's resolve deadline, it becomes that deadline, so the agency is not escalated
    (and its residents told it "did not act in time") before the date everyone agreed.
    A missed agreed date escalates as any resolve deadline does. An earlier date leaves
    the deadline as it was: the task is a step of the agency's part, not all of it."""
    assignment = new.assignment_for(task.agency)
    if assignment.status is AssignmentStatus.resolved or task.due <= assignment.resolve_by:
        return
    before = assignment.resolve_by
    assignment.resolve_by = task.due
    # Overdue marked a missed window; the agency now works to a date the table set.
    assignment.resolve_overdue = False
    new.step(now, "routing", "deadline_agreed",
             f"{assignment.agency_name}: resolve by {task.due.isoformat()} as agreed at the "
             f"table ({task.task_id}), not {before.isoformat()}",
             agency=task.agency)


def complete_task(record: IssueRecord, agency: str, staff_id: str, task_id: str, note: str,
                  rules: RuleSet, now: datetime) -> tuple[IssueRecord, list[Event]]:
    """The agency that owns a task marks it done (after reporting in), by ``staff_id``."""
    _agency_with_a_part(record, agency,
                        "only the task's agency marks it done; the desk closes it (…/close)")
    task = _task(record, task_id)
    if task.agency != agency:
        raise Forbidden(f"task {task_id} belongs to {task.agency}, not {agency}")
    if task.status == "done":
        raise InvalidTransition(f"task {task_id} is already done")
    if record.assignment_for(agency).status is AssignmentStatus.assigned:
        raise InvalidTransition(f"{agency} must report in before completing table tasks")
    return _finish(record, task, note, rules, now, agency_staff=staff_id)


def close_task(record: IssueRecord, staff_id: str, task_id: str, note: str, rules: RuleSet,
               now: datetime) -> tuple[IssueRecord, list[Event]]:
    """The desk closes a task on an agency's behalf, with a note saying why ("verified on
    site", "agreed at the table it is no longer needed"). A retry of a close the desk
    already made changes nothing; a task its agency finished stays the agency's."""
    task = _task(record, task_id)
    if task.status == "done":
        if task.closed_by == DESK:
            return record, []
        raise InvalidTransition(f"task {task_id} is already done by {task.agency}")
    return _finish(record, task, note, rules, now, staff_id=staff_id)


def _task(record: IssueRecord, task_id: str) -> TableTask:
    task = next((t for t in _table(record).tasks if t.task_id == task_id), None)
    if task is None:
        raise InvalidPayload(f"no table task {task_id!r}", [
            {"field": "task_id", "message": "unknown task", "type": "not_found"}])
    return task


def _finish(record: IssueRecord, task: TableTask, note: str, rules: RuleSet, now: datetime,
            staff_id: str | None = None, agency_staff: str | None = None
            ) -> tuple[IssueRecord, list[Event]]:
    """Mark a task done: by its agency's ``agency_staff`` (``staff_id`` None) or by the
    desk staff member ``staff_id``."""
    new = record.copy_to_change()
    done = next(t for t in new.table.tasks if t.task_id == task.task_id)
    closed_by = task.agency if staff_id is None else DESK
    done.status, done.done_at, done.note, done.closed_by = "done", now, note, closed_by
    done.closed_by_staff = staff_id or agency_staff
    ref = agency_ref(rules, task.agency)
    who = (f"{ref.agency_name} ({agency_staff})" if staff_id is None
           else f"the desk ({staff_id}) for {ref.agency_name}")
    new.step(now, "routing", "table_task_done", f"{task.task_id} done by {who}: {note}",
             agency=task.agency)
    return new, [TableTaskDone(trace_id=record.trace_id, issue_id=record.issue_id,
                               occurred_at=now, task_id=task.task_id, agency=ref, note=note,
                               closed_by="desk" if staff_id else "agency", staff_id=staff_id)]


def _seated(record: IssueRecord, table: TableSession) -> list[str]:
    """The invited agencies that still have a part in the issue. A reroute withdraws an
    agency from the table with its assignment (``shared.issue.reroute``), and a record
    rerouted before it did so is read without it (``IssueRecord``); this holds whatever
    a table lists: an agency without a part does not act there."""
    assigned = set(record.agencies())
    return [agency for agency in table.invited if agency in assigned]


def _table(record: IssueRecord) -> TableSession:
    if record.table is None:
        raise InvalidTransition(f"issue {record.issue_id} has no table; the desk convenes one")
    return record.table

"""三级吹哨: deadlines and escalation, as pure functions of the issue record.

Every open assignment has two deadlines: report in (acknowledge) and resolve.
They are kept in a Redis sorted set derived from the record (see
``shared.store``), and routing's deadline watch escalates each one that passed:

- the agency's first miss takes the issue to the street office, its next miss to
  the district (the issue's level is the highest any agency reached), and the
  supervisor at that level is notified;
- after a reopen (民事民评 puts the issue one level up) every part is followed from
  that level: an agency's next miss goes one above it, never back to a level the
  issue already passed (:func:`shared.issue.part_level`);
- the assignment is marked overdue;
- the agency is whistled again: the deadline moves one window ahead, so the
  next miss escalates once more;
- past the top level (an agency whistled up to the district misses again) the
  district is reminded on every miss, but nothing goes up: the event is a
  ``reminder``, and the reporters, told once that the district follows it up,
  are not told "escalated" again at every window;
- an agency whose own misses whistle it to a level below the issue's (its first miss
  while another agency's took the issue to the district) goes to that level's
  supervisor (the street office whistles it), but the issue stays where it is: the
  event carries both (``level``, ``issue_level``) and the timeline says both, so no
  one who was told "the district follows it up" reads that it went down.

A deadline is identified by (issue, agency, kind, due time), which is the
idempotency key of its escalation: it escalates exactly once, however many
routing instances see it and however often.
"""

from __future__ import annotations

from datetime import datetime

from services.routing.rules import RuleSet
from shared.contracts import AgencyRef, DeadlineKind, Event, IssueEscalated
from shared.issue import (
    Deadline,
    IssueRecord,
    higher_level,
    part_level,
    pending_deadlines,
)


def is_still_due(record: IssueRecord, deadline: Deadline, now: datetime) -> bool:
    """True if the deadline is the current one, has passed, and the work is not done."""
    if deadline.due > now:
        return False
    return any(d.same_as(deadline) for d in pending_deadlines(record))


def escalate(record: IssueRecord, deadline: Deadline, rules: RuleSet,
             now: datetime) -> tuple[IssueRecord, list[Event]]:
    """Escalate one missed deadline; a stale or met deadline changes nothing."""
    if not is_still_due(record, deadline, now):
        return record, []
    new = record.copy_to_change()
    assignment = new.assignment_for(deadline.agency)
    window = rules.window(new.priority) if new.priority else None
    if new.reopened_level is None and new.reopen_count:
        # Reopened before the reopen's level was kept: the issue's level now is the
        # closest we know; pinned, so that this miss does not move it for the others.
        new.reopened_level = new.escalation_level
    # The level follows how often *this* agency missed: two agencies silent at the
    # same deadline go to the street office together, not straight to the district.
    before = part_level(new, assignment)
    level = before.next()
    reminder = level is before  # already at the top: nothing goes up
    assignment.missed_deadlines += 1
    assignment.level = level
    if not reminder:
        assignment.level_since = now
    new.escalation_level = higher_level(new.escalation_level, level)
    if deadline.kind is DeadlineKind.acknowledge:
        assignment.acknowledge_overdue = True
        if window:
            assignment.acknowledge_by = now + window.acknowledge
            assignment.resolve_by = max(assignment.resolve_by, assignment.acknowledge_by)
    else:
        assignment.resolve_overdue = True
        if window:
            assignment.resolve_by = now + window.resolve
    supervisor = rules.supervisor(level)
    if deadline.kind is DeadlineKind.acknowledge:
        verb, next_due = "report in", assignment.acknowledge_by
    else:
        verb, next_due = "resolve", assignment.resolve_by
    outcome = (f"still with {supervisor.name_en} ({level.value}), reminded" if reminder
               else f"escalated to {supervisor.name_en} ({level.value})")
    if new.escalation_level is not level:
        above = rules.supervisor(new.escalation_level)
        outcome += (f", the issue stays with {above.name_en} "
                    f"({new.escalation_level.value})")
    new.step(now, "routing", "escalated",
             f"{assignment.agency_name} did not {verb} by {deadline.due.isoformat()}: "
             f"{outcome}; whistled again, new deadline {next_due.isoformat()}",
             agency=deadline.agency)
    event = IssueEscalated(
        trace_id=record.trace_id, issue_id=record.issue_id, occurred_at=now,
        agency=AgencyRef(agency=assignment.agency, agency_name=assignment.agency_name,
                         agency_name_en=assignment.agency_name_en),
        deadline=deadline.kind, missed=deadline.due, level=level,
        supervisor=supervisor.name, supervisor_en=supervisor.name_en,
        supervisor_language=supervisor.language, reminder=reminder,
        issue_level=new.escalation_level,
    )
    return new, [event]

"""intake's pure part: turn a validated submission into a record and its event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.contracts import AssignmentStatus, DeadlineKind, IssueReceived, IssueStatus, SubmitIssue
from shared.issue import IssueRecord, pending_deadlines, receive
from shared.jsoncodec import utc_moment

# The board's "open": everything not yet closed and not folded into another issue.
OPEN_STATUSES = [s for s in IssueStatus if s not in (IssueStatus.closed, IssueStatus.merged)]


def accept_issue(submission: SubmitIssue, issue_id: str, trace_id: str,
                 now: datetime) -> tuple[IssueRecord, dict[str, str], IssueReceived]:
    """The stored record, the resident's contact (kept apart), and ``issue.received``.

    The event carries no name or phone: those stay in Redis with the issue.
    """
    record = receive(issue_id, trace_id, submission.description, submission.category,
                     submission.location, submission.channel, submission.language, now,
                     submission.media_url)
    contact = {}
    if submission.contact is not None:
        contact = {k: v for k, v in submission.contact.model_dump(mode="json").items() if v}
    received = IssueReceived(
        trace_id=trace_id, issue_id=issue_id, occurred_at=now,
        description=submission.description, category=submission.category,
        location=submission.location, channel=submission.channel,
        language=submission.language, has_contact=bool(contact),
    )
    return record, contact, received


def board_row(record: IssueRecord, now: datetime) -> dict[str, Any]:
    """One issue as a line of the desk's live board: its state, its lead agency, how far
    up it has been whistled (三级吹哨), and its next deadline (an agency's 报到 or
    办结, else the resident's rating window). Overdue: a deadline passed with that
    part not done. No description, no contact: the board is read across the room."""
    deadlines = sorted(pending_deadlines(record), key=lambda d: d.due)
    work = [d for d in deadlines if d.kind is not DeadlineKind.feedback]
    upcoming = (work or deadlines or [None])[0]
    lead = next((a for a in record.assignments if a.role.value == "lead"), None)
    overdue = any(
        a.status is not AssignmentStatus.resolved
        and (a.acknowledge_overdue or a.resolve_overdue
             or (a.status is AssignmentStatus.assigned and now > a.acknowledge_by)
             or now > a.resolve_by)
        for a in record.assignments)
    return {
        "issue_id": record.issue_id,
        "status": record.status.value,
        "priority": record.priority.value if record.priority else None,
        "category": record.category,
        "community": record.location.community,
        "lead": None if lead is None else {"agency": lead.agency, "agency_name": lead.agency_name,
                                           "agency_name_en": lead.agency_name_en},
        "agencies": record.agencies(),
        "escalation_level": record.escalation_level.value,
        "reopen_count": record.reopen_count,
        "next_deadline": utc_moment(upcoming.due) if upcoming else None,
        "next_deadline_kind": upcoming.kind.value if upcoming else None,
        "next_deadline_agency": upcoming.agency if upcoming and work else None,
        "overdue": overdue,
        # Routing was not sure (held in needs_triage, or dispatched and flagged): the
        # desk's triage queue shows its suggestions until the desk decides, with the
        # report's own words (the desk chose a category for a report it could not read)
        # and where it is (a lamp "at the east gate" is the street's or the estate's).
        # The board draws none of this: its poll sends BOARD_FIELDS only.
        "triage": None if not (triage := getattr(record, "triage", None)) or not triage.pending
        else {"held": triage.held, "reason": triage.reason, "urgent": triage.urgent,
              "suggestions": [s.model_dump(mode="json") for s in triage.suggestions],
              "description": record.description, "address": record.location.address},
        "received_at": utc_moment(record.received_at),
        "updated_at": utc_moment(record.updated_at),
    }

"""intake's pure part: turn a validated submission into a record and its event."""

from __future__ import annotations

from datetime import datetime

from shared.contracts import IssueReceived, SubmitIssue
from shared.issue import IssueRecord, receive


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

"""民事民评: the resident rates the outcome; unsatisfied reopens it. Pure.

When every agency has resolved its part, routing opens a rating window
(``WHISTLE_RATING_WINDOW_S``) and notify sends each reporter a signed, expiring
rating link. Then:

- satisfied closes the issue;
- unsatisfied reopens it: every agency gets its part back with fresh deadlines,
  the issue goes up one escalation level (the supervisor there is told; at the
  district already, reminded), and the desk sees the reason on the timeline;
- no answer within the window closes it as resolved-without-rating.

Each resolution is a *cycle* (``reopen_count``). A rating token names its
cycle and the reporter's own issue, so it cannot rate another issue, an earlier
cycle, or the same cycle twice.

A resident who cannot open a link (no phone or email, or their channel failed) is
called back or visited by the desk (电话回访), which records their answer on their
behalf (:func:`desk_grant`, then :func:`rate` with ``on_behalf``): the same effects
and rules as the resident's own rating, within the window, once a cycle, and the
timeline says the desk recorded it, who and how.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.routing.rules import RuleSet
from shared.auth import FeedbackGrant
from shared.contracts import (
    ClosedReason,
    Event,
    IssueClosed,
    IssueRated,
    IssueReopened,
    IssueResolved,
    IssueStatus,
    Rating,
    RatingMethod,
)
from shared.errors import InvalidTransition
from shared.issue import (
    Deadline,
    IssueRecord,
    RatingRecord,
    masked_comment,
    part_level,
    pending_deadlines,
)


def await_rating(record: IssueRecord, resolved: IssueResolved,
                 window: timedelta) -> IssueRecord:
    """Open the rating window once the issue is resolved (idempotent)."""
    if record.status is not IssueStatus.resolved or record.feedback_due is not None:
        return record
    new = record.copy_to_change()
    new.feedback_due = resolved.occurred_at + window
    new.step(resolved.occurred_at, "routing", "awaiting_rating",
             f"the resident is asked to rate; closes unrated at {new.feedback_due.isoformat()}")
    return new


@dataclass(frozen=True)
class OnBehalf:
    """The desk records a resident's answer for them: which staff member, and how it was
    obtained (a call, a visit, at the desk)."""

    staff_id: str
    method: RatingMethod


def desk_grant(own: IssueRecord, work: IssueRecord) -> FeedbackGrant:
    """What the desk may rate for the resident of ``own`` (their own report): the issue
    that carries it (``work``: itself, or the open issue it was merged into, which a
    merged neighbour rates as their own link would), in its current cycle."""
    if own.merged_into is not None and own.merged_into != work.issue_id:
        raise InvalidTransition(f"issue {own.issue_id} is handled as {own.merged_into}")
    return FeedbackGrant(reporter_issue_id=own.issue_id, issue_id=work.issue_id,
                         cycle=work.reopen_count)


def rate(record: IssueRecord, grant: FeedbackGrant, rating: Rating, comment: str | None,
         rules: RuleSet, now: datetime, names: Iterable[str | None] = (),
         on_behalf: OnBehalf | None = None) -> tuple[IssueRecord, list[Event]]:
    """Record the rating; satisfied closes, unsatisfied reopens.

    ``comment`` is kept (rating, timeline, events) masked: phone numbers and email
    addresses as in the logs, and ``names`` (the rater's own) as well. The desk reads
    it so; the agencies' view leaves it out (``shared.authz.agency_view``).

    ``on_behalf``: the desk records it for the resident. Their link would have expired
    with the window, so the desk's answer is refused after it too.
    """
    comment = masked_comment(comment, names)
    if grant.issue_id != record.issue_id:
        raise InvalidTransition("this rating token is for another issue")
    if grant.reporter_issue_id not in (record.issue_id, *record.reporters):
        # Split off by the desk (merging.leave) after the link was sent: it is a job of its
        # own now, and its resident no longer answers for this one.
        raise InvalidTransition(f"{grant.reporter_issue_id} was split from issue "
                                f"{record.issue_id}; it no longer rates it")
    if any(r.reporter_issue_id == grant.reporter_issue_id and r.cycle == grant.cycle
           for r in record.ratings):
        raise InvalidTransition(f"issue {record.issue_id} has already been rated")
    if grant.cycle != record.reopen_count or record.status is not IssueStatus.resolved:
        raise InvalidTransition(
            f"issue {record.issue_id} is not waiting for this rating (it is {record.status.value})")
    if on_behalf is not None and record.feedback_due is not None and now > record.feedback_due:
        raise InvalidTransition(f"issue {record.issue_id}'s rating window closed at "
                                f"{record.feedback_due.isoformat()}")
    new = record.copy_to_change()
    recorded = ({"recorded_by": on_behalf.staff_id, "method": on_behalf.method}
                if on_behalf else {})
    new.ratings.append(RatingRecord(reporter_issue_id=grant.reporter_issue_id, cycle=grant.cycle,
                                    rating=rating, comment=comment, at=now, **recorded))
    new.feedback_due = None
    rated = IssueRated(trace_id=record.trace_id, issue_id=record.issue_id, occurred_at=now,
                       rating=rating, comment=comment,
                       reporter_issue_id=grant.reporter_issue_id, cycle=grant.cycle, **recorded)
    if on_behalf is not None:
        # Its own step, so the "rated" and "reopened" steps read as they always have.
        new.step(now, "routing", "rating_recorded",
                 f"by the desk ({on_behalf.staff_id}) for the reporter of "
                 f"{grant.reporter_issue_id}, {on_behalf.method.value}: {rating.value}")
    if rating is Rating.satisfied:
        new.step(now, "routing", "rated", "the resident is satisfied" +
                 (f": {comment}" if comment else ""))
        closed, closed_event = close(new, ClosedReason.satisfied, now, rated)
        return closed, [rated, closed_event]
    reopened, event = reopen(new, comment or "", rules, now, rated)
    return reopened, [rated, event]


def reopen(record: IssueRecord, reason: str, rules: RuleSet, now: datetime,
           cause: IssueRated) -> tuple[IssueRecord, IssueReopened]:
    """Back to every agency with fresh deadlines, one escalation level up; at the top
    level (the district) nothing goes up, and the district keeps following it. What
    each agency claimed done this cycle stays on its assignment
    (``Assignment.earlier_resolutions``)."""
    new = record.copy_to_change()
    window = rules.window(new.priority)
    new.reopen_count += 1
    new.escalation_level = new.escalation_level.next()
    # Every part is now followed from here: the next miss goes one above it, not back to
    # a level the issue already passed (shared.issue.part_level).
    new.reopened_level = new.escalation_level
    went_up = new.escalation_level is not record.escalation_level
    new.status = IssueStatus.dispatched
    for a, was in zip(new.assignments, record.assignments, strict=True):
        a.back_to_work(record.reopen_count, now, now + window.acknowledge, now + window.resolve)
        if part_level(new, a) is not part_level(record, was):
            a.level_since = now  # the reopen, not a miss of its own, took this part up
    new.step(now, "routing", "reopened",
             f"the resident is not satisfied: {reason or '(no comment)'}; back to "
             f"{', '.join(new.agencies())}, "
             f"{'escalated to' if went_up else 'still with'} {new.escalation_level.value}")
    # A reopen always leaves the community (it goes at least to the street office), so
    # there is a supervisor at its level to tell, as a missed deadline tells one.
    supervisor = rules.supervisor(new.escalation_level)
    event = cause.caused(IssueReopened, occurred_at=now, reason=reason,
                         level=new.escalation_level, escalated=went_up, cycle=new.reopen_count,
                         assignments=[a.summary() for a in new.assignments],
                         supervisor=supervisor.name, supervisor_en=supervisor.name_en,
                         supervisor_language=supervisor.language)
    return new, event


def close(record: IssueRecord, reason: ClosedReason, now: datetime,
          cause: Event | None = None) -> tuple[IssueRecord, IssueClosed]:
    new = record.copy_to_change()
    new.status, new.closed_reason, new.closed_at, new.feedback_due = (
        IssueStatus.closed, reason, now, None)
    new.step(now, "routing", "closed", "closed: " + (
        "the resident is satisfied" if reason is ClosedReason.satisfied
        else "no rating within the window (resolved without rating)"))
    fields = {"occurred_at": now, "reason": reason}
    event = (cause.caused(IssueClosed, **fields) if cause else
             IssueClosed(trace_id=record.trace_id, issue_id=record.issue_id, **fields))
    return new, event


def close_unrated(record: IssueRecord, deadline: Deadline,
                  now: datetime) -> tuple[IssueRecord, list[Event]]:
    """The rating window passed: closed as resolved-without-rating (if still waiting)."""
    if deadline.due > now or not any(d.same_as(deadline) for d in pending_deadlines(record)):
        return record, []
    new, event = close(record, ClosedReason.no_rating, now)
    return new, [event]


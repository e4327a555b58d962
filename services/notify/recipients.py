"""Who is told about an issue, in what order, and how people and levels are named. Pure.

共性问题统筹: when neighbours report the same problem, routing merges their reports
into one open issue (the *primary*). Each merged report keeps its own reference and
its own resident, and the primary lists them in ``reporters``. Every update about the
primary then goes to every one of those residents, each in their own language, and is
recorded under their own report, so the desk sees what each resident was told.

A merged report's own events stop there: its updates come from the primary. Only the
messages about the report itself ("received", "merged") are still sent for it.

Supervisors (the street office, the district) are told when an issue is escalated to
them (三级吹哨), by a missed deadline or by a resident's 不满意 (民事民评 reopens it one
level up); they are not residents. Each reads Chinese unless the rules file gives it
``language: en``; the escalation or reopen event carries that choice.

Usage::

    for reporter in recipients_for(record, "dispatched"):
        for kind, count in ordering_waits(record, "dispatched", reporter):
            if not deliveries.settled(reporter, kind, count): ...  # defer the event
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from shared.contracts import (
    ClosedReason,
    DeadlineKind,
    EscalationLevel,
    IssueEscalated,
    IssueReopened,
    IssueStatus,
    Language,
    Rating,
)
from shared.issue import IssueRecord, RatingRecord, Stored, TimelineEntry

OWN_KINDS = frozenset({"received", "merged"})
"""Messages about a resident's own report: never forwarded, sent even once it is merged."""

# Events reach notify in publishing order, but a message can still overtake the one
# before it while that one is on the wire (a slow gateway) or waiting itself. A
# resident should read "received" before "dispatched" before "reported in": a
# message waits for its predecessor while a live worker is sending it, briefly for
# one not begun, and never for ever (delivery.ordering_wait). The rating request is
# sent right after "resolved" by the same handler, so it waits only when that
# resident's "resolved" is still being sent by another worker.
PREDECESSOR = {"merged": "received", "dispatched": "received", "acknowledged": "dispatched",
               "rerouted": "dispatched",
               "part_resolved": "dispatched", "resolved": "dispatched",
               "rating_request": "resolved"}

# The issue's own resident has heard of every step so far, so the record says how
# many of each earlier message must have reached them, across resolution cycles:
# e.g. "resolved" waits for one "acknowledged" per 报到 (an agency may resolve a
# second after reporting in), and a reopened issue's "acknowledged" for "reopened".
# The names are counters of _so_far.
AFTER = {
    "merged": (("received", "one"),),
    "dispatched": (("received", "one"),),
    "acknowledged": (("dispatched", "one"), ("reopened", "reopens")),
    "part_resolved": (("dispatched", "one"), ("acknowledged", "acks")),
    "resolved": (("dispatched", "one"), ("acknowledged", "acks"), ("part_resolved", "parts")),
    "rating_request": (("resolved", "cycles"),),
    "reopened": (("rating_request", "reopens"),),
    "rerouted": (("dispatched", "one"),),
    "closed": (("rating_request", "cycles"),),
}

SUPERVISOR_LANGUAGE = "zh"
"""Street offices and districts work in Chinese unless the rules file says otherwise
(``IssueEscalated.supervisor_language`` defaults to it)."""

RESIDENT, SUPERVISOR = "resident", "supervisor"
"""The audiences a delivery record can have."""

# (zh, en): how a resident or a supervisor reads each escalation level and deadline.
LEVEL_NAMES = {
    EscalationLevel.community: ("社区", "the community"),
    EscalationLevel.street: ("街道", "the street office"),
    EscalationLevel.district: ("区", "the district"),
}
DEADLINE_NAMES = {
    DeadlineKind.acknowledge: ("报到", "report in"),
    DeadlineKind.resolve: ("办结", "resolve"),
}
# Why an issue was closed, as its reader reads it (民事民评).
CLOSED_REASONS = {
    "rated_by_reader": ("您已确认满意", "you confirmed you are satisfied"),
    ClosedReason.satisfied: ("反映同一问题的居民已确认满意",
                             "a neighbour who reported the same problem confirmed they are satisfied"),
    ClosedReason.no_rating: ("评价期已过，按已办结处理",
                             "the rating period has ended, so it is closed as resolved"),
}
NO_COMMENT = ("未填写", "none given")
# A rating comment is its author's words: the other reporters of a merged issue learn
# that it was reopened, not what their neighbour wrote (it can name a flat or a person).
NOT_PASSED_ON = ("其他居民的意见，不在此转述", "another resident's, not passed on here")
YOU_WERE, A_RESIDENT_WAS = ("您", "You were"), ("居民", "A resident was")


class AgencyPart(Stored):
    """An assignment as a message names it."""

    agency: str
    agency_name: str
    agency_name_en: str


class IssueToAddress(Stored):
    """What a message about a resident's own report ("received", "merged":
    :data:`OWN_KINDS`) reads of its record (``IssueRecord``, the source of truth, under
    the same names): whose it is, in which language. It goes to that resident alone,
    who waits for nothing the timeline counts (:func:`ordering_waits`), so the
    timeline, the ratings and the assignments are skipped when it is read: made into
    Python objects, they were most of what reading the record cost notify.
    """

    issue_id: str
    status: IssueStatus = IssueStatus.received
    language: Language
    merged_into: str | None = None
    reporters: list[str] = Field(default_factory=list)
    reopen_count: int = 0


class IssueToOrder(IssueToAddress):
    """:class:`IssueToAddress`, and what the timeline says its reporters heard of and
    the ratings (for the messages in their usual order, to every reporter). The rest
    of the record (its location, routing, every assignment's deadlines and history...)
    is skipped when it is read."""

    ratings: list[RatingRecord] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)


class IssueToTell(IssueToOrder):
    """:class:`IssueToOrder` and the agencies' parts: what telling residents about an
    issue reads of its record for every kind of message."""

    assignments: list[AgencyPart] = Field(default_factory=list)


VIEWS: dict[str, type[IssueToAddress]] = {
    **dict.fromkeys(OWN_KINDS, IssueToAddress),
    **dict.fromkeys(("dispatched", "acknowledged", "rerouted", "reopened", "closed",
                     "table_convened", "table_decision"), IssueToOrder),
}
"""The kinds that need less of the record than :class:`IssueToTell`; the others (e.g.
"part_resolved", which names the agencies still at work) read it."""


def view_for(kind: str) -> type[IssueToAddress]:
    """What notify reads of an issue's record to tell its reporters a ``kind`` message."""
    return VIEWS.get(kind, IssueToTell)


Record = IssueRecord | IssueToAddress
"""A whole record (as an event's handler read it), or what notify reads of one."""


def is_merged(record: Record) -> bool:
    """A neighbour's report folded into an open issue, which now carries its updates."""
    return record.merged_into is not None or record.status is IssueStatus.merged


def recipients_for(record: Record, kind: str) -> list[str]:
    """The reports whose residents get a ``kind`` message about ``record``: issue ids.

    The issue's own resident first, then every merged reporter (no repeats). A
    merged report gets only the messages about itself; nothing else is sent for it.
    """
    if kind in OWN_KINDS:
        return [record.issue_id]
    if is_merged(record):
        return []
    return list(dict.fromkeys([record.issue_id, *record.reporters]))


def ordering_waits(record: Record, kind: str, reporter: str) -> list[tuple[str, int]]:
    """What must already have reached ``reporter`` before this message: (kind, count) pairs.

    The issue's own resident: every earlier message the record's steps imply (see
    :data:`AFTER`), e.g. "resolved" after each 报到's "acknowledged" and every
    "part_resolved" (one per agency but the last, per cycle). A merged reporter first
    reads that their report was merged, then the primary's updates in their usual order.
    """
    if reporter == record.issue_id:
        after = AFTER.get(kind, ())
        # "one" is 1 for the issue's own resident: no need to count the timeline (which
        # the messages about their own report do not read: IssueToAddress).
        counts = _so_far(record) if any(c != "one" for _, c in after) else {"one": 1}
        return [(before, counts[counter]) for before, counter in after if counts[counter]]
    waits = [] if kind in OWN_KINDS else [("merged", 1)]
    joined = _joined_at(record, reporter)
    if joined is not None:
        # A merged reporter is told of the primary's steps from the moment they joined
        # (a step before it, they may or may not have heard of): wait only for those
        # after. Waiting for a "dispatched" they never got held every later message for
        # the whole grace, and let "resolved" overtake "reported in".
        counts = _so_far(record, since=joined)
        return waits + [(before, counts[counter]) for before, counter in AFTER.get(kind, ())
                        if counts[counter]]
    # A record without the join's step: only the last message before.
    if kind in PREDECESSOR:
        parts = max(len(record.assignments) - 1, 0) if kind == "resolved" else 0
        waits.append(("part_resolved", parts) if parts else (PREDECESSOR[kind], 1))
    return waits


def _joined_at(record: Record, reporter: str) -> datetime | None:
    """When ``reporter``'s report last joined the issue (its ``reporter_joined`` step,
    whose detail starts with the report's id: ``services.routing.merging.join``)."""
    for entry in reversed(record.timeline):
        if entry.step == "reporter_joined" and entry.detail.split(" ", 1)[0] == reporter:
            return entry.at
    return None


def _so_far(record: Record, since: datetime | None = None) -> dict[str, int]:
    """How many of each step a reporter has been told about (the issue's timeline): the
    issue's own resident, every step; a merged reporter, the steps ``since`` they joined."""
    steps = [e for e in record.timeline if since is None or e.at > since]
    agency_steps = [e.step for e in steps if e.service == "agency"]
    if since is None:
        one, reopens = 1, getattr(record, "reopen_count", 0)
        cycles = reopens + 1
    else:
        routing_steps = [e.step for e in steps if e.service == "routing"]
        one, reopens = int("dispatched" in routing_steps), routing_steps.count("reopened")
        cycles = agency_steps.count("resolved")
    return {"one": one, "reopens": reopens, "cycles": cycles,
            "acks": agency_steps.count("acknowledged"),
            # every agency's part but the last of each cycle is told as "part_resolved"
            "parts": max(agency_steps.count("assignment_resolved")
                         - agency_steps.count("resolved"), 0)}


def in_language(language: str, zh: str, en: str) -> str:
    """The English name for English readers; Chinese for everyone else."""
    return en if language == "en" else zh


def level_name(level: EscalationLevel, language: str) -> str:
    return in_language(language, *LEVEL_NAMES[EscalationLevel(level)])


def escalated_wording(event: IssueEscalated) -> str | None:
    """How the reporters are told of a miss: "escalated" itself (None), or, when the
    agency's own misses whistle it to the street office while another agency's took the
    issue to the district, ``escalated_part`` (the street office presses it, the issue
    stays with the district): "escalated to the street office" told residents who knew
    the district followed it up that it went down."""
    return "escalated_part" if event.stays_above() else None


def escalated_values(event: IssueEscalated, language: str) -> dict[str, str]:
    """The values of either wording of "escalated", in ``language``."""
    return {"issue_id": event.issue_id,
            "agency": in_language(language, event.agency.agency_name,
                                  event.agency.agency_name_en),
            "level": level_name(event.level, language),
            "supervisor": in_language(language, event.supervisor, event.supervisor_en),
            "issue_level": level_name(event.issue_level or event.level, language)}


def reopen_supervision(level: EscalationLevel, escalated: bool, language: str) -> str:
    """Who follows a reopened issue up, as the "reopened" message ends: escalated to
    ``level``, or, at the top level already, that level still (nothing went up)."""
    zh, en = LEVEL_NAMES[EscalationLevel(level)]
    if escalated:
        return in_language(language, f"并提级到{zh}督办", f"it has been escalated to {en}")
    return in_language(language, f"仍由{zh}督办", f"{en} keeps following it up")


def if_unsatisfied(level: EscalationLevel, language: str) -> str:
    """What the rating request says becomes of an issue at ``level`` if the resident is
    not satisfied: back to the agencies, one level up; at the top level (the district)
    nothing goes higher (``services.routing.feedback.reopen``), and it says so."""
    current = EscalationLevel(level)
    if current.next() is not current:
        return in_language(language, "我们会重新交办、提级督办",
                           "it goes back to the agencies and is escalated")
    zh, en = LEVEL_NAMES[current]
    return in_language(language, f"我们会重新交办，仍由{zh}督办",
                       f"it goes back to the agencies, and {en} keeps following it up")


def deadline_name(deadline: DeadlineKind, language: str) -> str:
    return in_language(language, *DEADLINE_NAMES[DeadlineKind(deadline)])


def closed_reason_text(record: Record, reason: ClosedReason, reader: str,
                       language: str) -> str:
    """Why the issue was closed, for the resident of report ``reader``: "you" rated it
    satisfied, a neighbour did, or nobody rated it in time."""
    reason = ClosedReason(reason)
    cycle = getattr(record, "reopen_count", 0)
    rated = any(r.reporter_issue_id == reader and r.cycle == cycle
                and r.rating is Rating.satisfied for r in getattr(record, "ratings", []))
    key = "rated_by_reader" if reason is ClosedReason.satisfied and rated else reason
    return in_language(language, *CLOSED_REASONS[key])


def reopen_comment(record: Record, comment: str | None, cycle: int, reader: str,
                   language: str) -> str:
    """The comment a "reopened" message quotes to the resident of report ``reader``: the
    rater's own words only to the rater (:func:`reopened_by`)."""
    if reader != reopened_by(record, cycle):
        return in_language(language, *NOT_PASSED_ON)
    return comment_or_none(comment, language)


def reopen_who(record: Record, cycle: int, reader: str, language: str) -> str:
    """Who was not satisfied, as the "reopened" message to ``reader`` says it: "you" to
    the rater (who read that "a resident" was not satisfied with their own rating),
    "a resident" to the other reporters of a merged issue."""
    return in_language(language, *(YOU_WERE if reader == reopened_by(record, cycle)
                                   else A_RESIDENT_WAS))


def reopened_by(record: Record, cycle: int) -> str:
    """The report whose resident's unsatisfied rating (of the cycle before ``cycle``)
    reopened the issue; without that rating on the record, the issue's own."""
    raters = [r.reporter_issue_id for r in getattr(record, "ratings", [])
              if r.cycle == cycle - 1 and r.rating is Rating.unsatisfied]
    return raters[-1] if raters else record.issue_id


def comment_or_none(comment: str | None, language: str) -> str:
    """The resident's comment, or "none given": a template never shows a gap."""
    return (comment or "").strip() or in_language(language, *NO_COMMENT)


def supervisor_language(event: IssueEscalated | IssueReopened) -> str:
    """The language the supervisor an escalation or a reopen goes to reads (its
    ``language`` in the rules)."""
    return str(event.supervisor_language)


def supervisor_for(event: IssueEscalated | IssueReopened,
                   language: str | None = None) -> dict[str, str]:
    """The supervisor an escalation or a reopen goes to, as a delivery recipient, named in
    ``language`` (default: the supervisor's own). A reopen published before it named the
    supervisor is for the level's office, named by the level alone."""
    language = language or supervisor_language(event)
    level = EscalationLevel(event.level)
    zh, en = LEVEL_NAMES[level]
    return {"role": SUPERVISOR, "level": level.value,
            "name": in_language(language, event.supervisor or zh, event.supervisor_en or en)}


def notified_step(kind: str, status: str, channel: str, primary: str, reporter: str | None = None,
                  level: EscalationLevel | None = None, note: str = "") -> tuple[str, str]:
    """The timeline step (name, detail) for a message about ``primary``.

    ``reporter``: the report whose resident was told; ``level``: a supervisor's level
    instead; ``note``: why it failed, or why it did not go by the resident's choice.
    """
    message = f"{kind} message {status} via {channel}" + (f" ({note})" if note else "")
    if level is not None:
        return "supervisor_notified", f"supervisor ({EscalationLevel(level).value}) notified: {message}"
    if reporter is not None and reporter != primary:
        return "resident_notified", f"{message} to the reporter of {reporter}"
    return "resident_notified", message

"""Every payload on the wire, in one place, shared by producers and consumers.

Rules (see README "Contracts"):
- every model refuses unknown fields (``extra="forbid"``) so a typo is an error,
  not silently ignored data;
- validation errors never echo the input (``hide_input_in_errors``), because the
  input may carry a resident's phone number;
- events carry ``event_id``, ``trace_id`` (the same for everything about one
  issue), ``causation_id`` (the message that caused this one), ``occurred_at``
  and ``schema_version``;
- producers send ``model.model_dump(mode="json")``: kombu cannot serialise models.

Residents' names and phone numbers are *not* in any event. They stay in Redis
with the issue (see ``shared.store``) and only the notify service reads them.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StringConstraints,
)

from shared.errors import InvalidPayload, described_pattern

SCHEMA_VERSION = 1

# An issue id's shape: "WH-", the day it was received (YYYYMMDD), its number that day.
ISSUE_ID = re.compile(r"WH-\d{8}-\d{4,}")
# Control characters other than tab/newline/carriage return have no place in a
# resident's text and break terminals and logs.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]")


def _no_control_chars(value: str) -> str:
    if _CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    return value


def _no_surrogates(value: str) -> str:
    # Lone surrogates come from invalid UTF-16 escapes in JSON (e.g. "\ud800");
    # they cannot be stored or re-encoded as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def bounded_text(max_length: int, min_length: int = 1):
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length),
        AfterValidator(_no_surrogates),
        AfterValidator(_no_control_chars),
    ]


Slug = Annotated[str, StringConstraints(pattern=described_pattern(
    r"^[a-z][a-z0-9_]{1,39}$", "a code: 2 to 40 lower-case letters, digits and underscores, "
    "starting with a letter (water, street_office)"))]
IssueId = Annotated[str, StringConstraints(pattern=described_pattern(
    r"^WH-\d{8}-\d{4,}$", "an issue number: WH-, the day, a dash and at least four digits "
    "(WH-20261121-0001)"))]
# How people write a number at a desk or in a form: full-width digits from a Chinese
# input method (１３８…), the area code in brackets ((022) 2345-6789, （010）…), dots
# (138.1234.5678). Kept as digits, spaces and hyphens; anything else is still refused.
_PHONE_PUNCTUATION = str.maketrans({"(": " ", ")": " ", ".": " "})


def _plain_phone(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return " ".join(unicodedata.normalize("NFKC", value).translate(_PHONE_PUNCTUATION).split())


Phone = Annotated[
    str,
    BeforeValidator(_plain_phone),
    StringConstraints(strip_whitespace=True, pattern=described_pattern(
        r"^\+?[0-9][0-9 \-]{5,19}$", "a phone number: 6 to 20 digits, spaces and dashes, with an "
        "optional leading +")),
]


# A yes-or-no a client sends: JSON's true or false only. pydantic's lax bool took
# "yes", "on", "1" and 1 as true (``"urgent": "yes"`` labelled a report urgent); a form
# or a query string, whose values are all text, is converted where it is read
# (``shared.web.query_flags``, the pages' forms). Events keep lax bools: our own code
# writes them, and those already queued must still read.
ClientBool = StrictBool


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Strict(BaseModel):
    """Base for every wire model: unknown fields refused, input never echoed."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=False)


# --------------------------------------------------------------------------- enums


class Channel(StrEnum):
    """How the problem reached the desk."""

    desk = "desk"
    hotline = "hotline"
    app = "app"
    grid_patrol = "grid_patrol"


class Language(StrEnum):
    zh = "zh"
    en = "en"


def view_language(lang: str | None) -> str | None:
    """A resident view's ``lang`` (``GET /issues/{id}?lang=``, ``rpc.routing.resident_view``):
    ``zh``, ``en`` or unset (the report's own language). Anything else is a 422 naming
    ``lang``: a program asked, and a quiet fallback would answer another question. (A
    page falls back to its reader's language instead: a person reads it.)"""
    if lang is not None and lang not in tuple(Language):
        raise InvalidPayload("invalid request: lang", [
            {"field": "lang", "message": "must be zh or en, or unset", "type": "enum"}])
    return lang


class Priority(StrEnum):
    urgent = "urgent"
    high = "high"
    normal = "normal"
    complex = "complex"

    @property
    def rank(self) -> int:
        """Lower is more pressing; used to pick the most pressing of several rules."""
        return _PRIORITY_RANKS[self]


# Priority.rank, worked out once: routing asks it several times a report.
_PRIORITY_RANKS = {priority: n for n, priority in enumerate(Priority)}


class Sector(StrEnum):
    power = "power"
    utilities = "utilities"
    housing = "housing"
    other = "other"


class Role(StrEnum):
    lead = "lead"
    support = "support"


class IssueStatus(StrEnum):
    received = "received"
    # The classifier was not sure: the desk chooses the route (POST /issues/{id}/triage).
    needs_triage = "needs_triage"
    merged = "merged"  # a duplicate, folded into an open issue (共性问题统筹)
    dispatched = "dispatched"
    in_progress = "in_progress"
    resolved = "resolved"  # every agency finished; waiting for the resident's rating
    closed = "closed"  # rated satisfied, or no rating within the window (民事民评)


class EscalationLevel(StrEnum):
    """三级吹哨: who owns the problem now."""

    community = "community"
    street = "street"
    district = "district"

    def next(self) -> EscalationLevel:
        levels = list(EscalationLevel)
        return levels[min(levels.index(self) + 1, len(levels) - 1)]

    def is_above(self, other: EscalationLevel) -> bool:
        levels = list(EscalationLevel)
        return levels.index(self) > levels.index(EscalationLevel(other))


class DeadlineKind(StrEnum):
    acknowledge = "acknowledge"
    resolve = "resolve"
    feedback = "feedback"  # the resident's rating window after resolution


class Rating(StrEnum):
    satisfied = "satisfied"
    unsatisfied = "unsatisfied"


class RatingMethod(StrEnum):
    """How the desk obtained a rating it records on the resident's behalf (电话回访)."""

    phone = "phone"  # the desk called the resident back
    visit = "visit"  # a grid worker asked at the door
    in_person = "in_person"  # the resident came to the desk


class ClosedReason(StrEnum):
    satisfied = "satisfied"
    no_rating = "no_rating"  # resolved-without-rating: the window passed


class AssignmentStatus(StrEnum):
    assigned = "assigned"
    acknowledged = "acknowledged"
    resolved = "resolved"
    # The desk rerouted the issue and this agency is no longer involved. Such an
    # assignment leaves ``IssueRecord.assignments`` for ``IssueRecord.withdrawn``.
    withdrawn = "withdrawn"


# ------------------------------------------------------------------ request models


class Location(Strict):
    community: bounded_text(64)
    address: bounded_text(200)
    grid: bounded_text(32) | None = None
    # Numbers only: lax floats took "lon": true as 1.0, a place nobody reported.
    lat: StrictFloat | None = Field(default=None, ge=-90, le=90)
    lon: StrictFloat | None = Field(default=None, ge=-180, le=180)


class DeliveryChannelName(StrEnum):
    """How a resident wants to hear back."""

    desk = "desk"  # the desk's outbox: staff call or visit (default, always works)
    webhook = "webhook"  # mini-program / SMS gateway
    email = "email"


# A link to a photo or video of the problem (Open311's media_url): http(s) only, and
# with no user name or password before the host (``https://bob:secret@…``): Open311
# shows the link to anyone, so a password in it was published.
MediaUrl = Annotated[str, StringConstraints(
    strip_whitespace=True, max_length=2000, pattern=described_pattern(
        r"^https?://[^\s<>\"/?#@]+(?:[/?#][^\s<>\"]*)?$",
        "an http:// or https:// link, with no spaces and no user name or password"))]

Email = Annotated[str, StringConstraints(
    strip_whitespace=True, max_length=254, pattern=described_pattern(
        r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "an email address (name@example.org)"))]


class Contact(Strict):
    name: bounded_text(50) | None = None
    phone: Phone | None = None
    email: Email | None = None
    # Unset: the deployment's NOTIFY_CHANNEL decides.
    preferred_channel: DeliveryChannelName | None = None


class SubmitIssue(Strict):
    """What the community desk sends to intake (HTTP body or RPC argument)."""

    description: bounded_text(4000)
    category: Slug | None = None
    location: Location
    contact: Contact | None = None
    channel: Channel = Channel.desk
    language: Language = Language.zh
    media_url: MediaUrl | None = None


class AcknowledgeAssignment(Strict):
    note: bounded_text(2000) | None = None


class ResolveAssignment(Strict):
    note: bounded_text(2000)


def _moment_as_written(value: Any) -> Any:
    if isinstance(value, datetime | str):
        return value
    # pydantic would read a bare number as Unix time (seconds, or milliseconds past
    # 2e10): a caller's slip, an hour or a count, became a moment in 1970 or 2027.
    raise ValueError("must be an ISO 8601 moment with a zone offset, like "
                     "2026-12-08T09:00:00+08:00")


# A moment a caller sends: ISO 8601 text with its zone, never a number.
SentMoment = Annotated[AwareDatetime, BeforeValidator(_moment_as_written)]


class ConveneTable(Strict):
    """The desk convenes a table (移动办公桌 / 红色议事厅) for an issue."""

    # With a zone, like every moment a caller sends: 09:00 alone is nobody's 09:00, and a
    # task's due without one could not be compared with now (was a 500).
    meets_at: SentMoment
    place: bounded_text(200)
    agencies: list[Slug] = Field(default_factory=list, max_length=20)


class InviteToTable(Strict):
    agencies: list[Slug] = Field(min_length=1, max_length=20)


class RecordTableTask(Strict):
    agency: Slug
    description: bounded_text(1000)
    due: SentMoment


class CompleteTableTask(Strict):
    note: bounded_text(2000)


class ExplainRoute(Strict):
    text: bounded_text(4000)
    category: Slug | None = None
    community: bounded_text(64) | None = None


class ChooseRoute(Strict):
    """The desk's route for an issue: a category, and optionally other agencies.

    ``lead``/``support`` override the category's rule (unset: the rule's); ``urgent``
    labels the report (unset: the category's rule decides, but an urgent issue stays
    urgent: ``desk.reroute``). ``request_id`` makes a retried request harmless: the same
    id is applied once.
    """

    category: Slug
    lead: Slug | None = None
    support: list[Slug] | None = Field(default=None, max_length=20)
    urgent: ClientBool | None = None
    request_id: str | None = Field(default=None, min_length=8, max_length=64,
                                   pattern=described_pattern(
                                       r"^[A-Za-z0-9_.:-]+$", "letters, digits and _ . : - only"))


class TriageDecision(ChooseRoute):
    """``POST /issues/{id}/triage``: the desk routes an issue the classifier was unsure of."""

    reason: bounded_text(500) | None = None


class Reroute(ChooseRoute):
    """``POST /issues/{id}/reroute``: the desk corrects a dispatched issue's route."""

    reason: bounded_text(500)


class Feedback(Strict):
    """The resident's rating (民事民评), carrying the signed token from the rating request."""

    token: str = Field(min_length=16, max_length=2000)
    rating: Rating
    comment: bounded_text(1000) | None = None


class FeedbackForm(Strict):
    """``POST /issues/{id}/feedback`` body: the token may come in the link's query string."""

    token: str | None = Field(default=None, min_length=16, max_length=2000)
    rating: Rating
    comment: bounded_text(1000) | None = None


class RecordedRating(Strict):
    """``POST /issues/{id}/rating``: the desk records the answer of a resident it called or
    visited (电话回访), for a resident who cannot open a rating link. ``issue_id`` is the
    resident's own reference, as for their own rating."""

    rating: Rating
    comment: bounded_text(1000) | None = None
    method: RatingMethod


# The previous page's ``next_cursor``: a list goes on after that issue.
Cursor = Annotated[str, AfterValidator(lambda c: (decode_cursor(c), c)[1])]


# How far back an agency's ``?status=withdrawn`` list reaches (the agency service, and
# the workspace that says so): long enough for staff to find a case a reroute took from
# them ("where did it go?"), short enough not to become a second history.
RECENTLY_WITHDRAWN_DAYS = 30


class AssignmentQuery(Strict):
    """``GET /agencies/{agency}/assignments``'s query: a mistyped parameter (``?state=all``)
    is refused, not read as the default list. The status's values are the agency's own
    (``services.agency``). ``limit`` and ``cursor`` page the lists read across Redis and
    the archive (every status but ``open``, which is every open assignment at once)."""

    status: str = "open"
    limit: int = Field(default=500, ge=1, le=500)
    cursor: Cursor | None = None


class IssueFilter(Strict):
    status: IssueStatus | None = None
    # Issues the desk still has to look at: held in needs_triage, or dispatched urgently
    # on a best guess and flagged (``IssueRecord.triage``). From a query string: ``true``
    # or ``false``, converted by ``shared.web.query_flags``.
    triage: ClientBool | None = None
    agency: Slug | None = None
    community: bounded_text(64) | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: Cursor | None = None


def encode_cursor(received_at: datetime, issue_id: str) -> str:
    """An opaque position in the newest-first list: after this issue."""
    import base64

    raw = f"{received_at.astimezone(UTC).isoformat()}|{issue_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """:func:`encode_cursor`'s position; ValueError for anything else."""
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, issue_id = raw.split("|")
        received_at = datetime.fromisoformat(moment)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor this list gave out (use next_cursor as it is)") from None
    if received_at.tzinfo is None or not ISSUE_ID.fullmatch(issue_id):
        raise ValueError("not a cursor this list gave out (use next_cursor as it is)")
    return received_at, issue_id


class BoardFilter(Strict):
    """The desk's live board (``rpc.intake.board``): open issues, most pressing first.

    ``status`` unset means every open status (not merged, not closed)."""

    status: IssueStatus | None = None
    priority: Priority | None = None
    agency: Slug | None = None
    community: bounded_text(64) | None = None
    # A desk token scoped to communities sees only theirs (shared.authz).
    communities: list[bounded_text(64)] | None = Field(default=None, max_length=100)
    # Only issues waiting for the desk's triage decision (held or flagged).
    triage: ClientBool = False
    limit: int = Field(default=200, ge=1, le=500)


# ------------------------------------------------------------------------ events

E = TypeVar("E", bound="Event")


def _with_zone(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError("must be a moment with its zone offset, like 2026-12-08T01:00:00Z "
                         "or 2026-12-08T09:00:00+08:00, not a naive one")
    return value


# Every moment an event carries. A naive one is nobody's moment: notify's ordering check
# (now minus occurred_at) raised TypeError on it, so the event was retried up to
# WHISTLE_MAX_ATTEMPTS and then dead-lettered as a crash; a naive deadline went out to the
# resident read as UTC, whatever zone its writer meant. Refused on receipt instead, the
# field named: such a message is dead-lettered at once (shared.messaging).
EventMoment = Annotated[datetime, AfterValidator(_with_zone)]


class Event(Strict):
    """Envelope fields every event carries."""

    event_type: ClassVar[str]

    event_id: str = Field(default_factory=new_id, min_length=8, max_length=64)
    trace_id: str = Field(min_length=8, max_length=64)
    causation_id: str | None = Field(default=None, max_length=64)
    occurred_at: EventMoment = Field(default_factory=utcnow)
    schema_version: Literal[1] = SCHEMA_VERSION
    issue_id: IssueId

    def caused(self, event_cls: type[E], **fields: Any) -> E:
        """Build the next event in this issue's chain, keeping trace and causation."""
        return event_cls(trace_id=self.trace_id, causation_id=self.event_id,
                         issue_id=self.issue_id, **fields)


class IssueReceived(Event):
    event_type: ClassVar[str] = "issue.received"

    # False when the desk split a wrong merge: route it on its own.
    allow_merge: bool = True
    description: bounded_text(4000)
    category: Slug | None = None
    location: Location
    channel: Channel
    language: Language
    has_contact: bool


class AssignmentSummary(Strict):
    agency: Slug
    agency_name: str
    agency_name_en: str
    sector: Sector
    role: Role
    acknowledge_by: EventMoment
    resolve_by: EventMoment


class IssueDispatched(Event):
    event_type: ClassVar[str] = "issue.dispatched"

    category: Slug
    priority: Priority
    assignments: list[AssignmentSummary] = Field(min_length=1)


class AssignmentCreated(Event):
    event_type: ClassVar[str] = "assignment.created"

    category: Slug
    priority: Priority
    assignment: AssignmentSummary


class AssignmentAcknowledged(Event):
    event_type: ClassVar[str] = "assignment.acknowledged"

    agency: Slug
    agency_name: str
    agency_name_en: str
    staff_id: str = Field(min_length=1, max_length=64)
    on_time: bool
    # The 报到's note, if any (internal to the desk and agencies). Absent in events
    # committed before it was carried: those read as no note. Left out of the body when
    # there is none, so a service still running the code from before (extra="forbid")
    # takes every 报到 without a note during a rolling upgrade.
    note: bounded_text(2000) | None = Field(None, exclude_if=lambda note: note is None)


class AssignmentResolved(Event):
    event_type: ClassVar[str] = "assignment.resolved"

    agency: Slug
    agency_name: str
    agency_name_en: str
    staff_id: str = Field(min_length=1, max_length=64)
    note: bounded_text(2000)
    # Agencies whose part is still open after this one: empty means the issue is done.
    remaining_agencies: list[Slug] = Field(default_factory=list)


class IssueResolved(Event):
    event_type: ClassVar[str] = "issue.resolved"

    agencies: list[str] = Field(min_length=1)


class AgencyRef(Strict):
    agency: Slug
    agency_name: str
    agency_name_en: str


class IssueMerged(Event):
    """This issue (a neighbour's report) was folded into an open one."""

    event_type: ClassVar[str] = "issue.merged"

    into_issue_id: IssueId
    category: Slug


class IssueEscalated(Event):
    """A deadline passed: the issue goes up one level (三级吹哨)."""

    event_type: ClassVar[str] = "issue.escalated"

    agency: AgencyRef
    deadline: DeadlineKind
    missed: EventMoment
    level: EscalationLevel
    supervisor: str
    supervisor_en: str
    # The language the supervisor reads its notice in (the rules file says); events
    # published before it existed were for Chinese-speaking supervisors.
    supervisor_language: Language = Language.zh
    # Another miss by an agency already at the top level (the district: whistled up by
    # its misses, or a reopen took the issue there): the supervisor there is reminded,
    # but nothing went up, so the reporters are not told "escalated" again. Events from
    # before it was carried were each a step up.
    reminder: bool = False
    # The issue's level after this miss (the highest any agency's misses, or a reopen,
    # took it). Above ``level`` when this agency's own misses whistle it to the street
    # office while another's took the issue to the district: the street whistles it, but
    # the issue did not go down. None in events from before it was carried (read as
    # ``level``: see :meth:`stays_above`).
    issue_level: EscalationLevel | None = None

    def stays_above(self) -> bool:
        """The issue is followed at a level above the one this miss went to."""
        return (self.issue_level or self.level).is_above(self.level)


class TableConvened(Event):
    """The desk convened a table session (问题在桌面解决)."""

    event_type: ClassVar[str] = "table.convened"

    meets_at: EventMoment
    place: bounded_text(200)
    agencies: list[AgencyRef] = Field(min_length=1)


class TableCheckedIn(Event):
    event_type: ClassVar[str] = "table.checked_in"

    agency: AgencyRef
    staff_id: str = Field(min_length=1, max_length=64)


class TableTaskRecorded(Event):
    """A decision at the table: who does what, by when."""

    event_type: ClassVar[str] = "table.task_recorded"

    task_id: str = Field(min_length=1, max_length=16)
    agency: AgencyRef
    description: bounded_text(1000)
    due: EventMoment


class TableTaskDone(Event):
    """A table task is done. ``agency`` is always the task's agency. ``closed_by``:
    ``agency`` (it marked it done) or ``desk`` (the desk closed it for the agency, e.g.
    verified on site; ``staff_id`` names the desk staff). Both fields have defaults, so
    events journalled before they existed still read as the agency's own."""

    event_type: ClassVar[str] = "table.task_done"

    task_id: str = Field(min_length=1, max_length=16)
    agency: AgencyRef
    note: bounded_text(2000)
    closed_by: Literal["agency", "desk"] = "agency"
    staff_id: str | None = Field(default=None, max_length=64)


class IssueRated(Event):
    """A reporter rated the outcome of one resolution cycle."""

    event_type: ClassVar[str] = "issue.rated"

    rating: Rating
    comment: bounded_text(1000) | None = None
    reporter_issue_id: IssueId
    cycle: int = Field(ge=0)
    # Set when the desk recorded the rating on the resident's behalf: who, and how.
    recorded_by: str | None = Field(default=None, max_length=64)
    method: RatingMethod | None = None


class IssueReopened(Event):
    """Unsatisfied: back to its agencies with fresh deadlines, one level up."""

    event_type: ClassVar[str] = "issue.reopened"

    reason: str = Field(max_length=1000)
    level: EscalationLevel
    # False when the issue was at the top level (the district) already: nothing went up,
    # and the residents are told the district keeps following it, not "escalated".
    # Events from before it was carried each claimed a step up.
    escalated: bool = True
    cycle: int = Field(ge=1)
    assignments: list[AssignmentSummary] = Field(min_length=1)
    # The supervisor at ``level`` (the rules file's), told of the reopen as at a miss:
    # escalated to it, or (``escalated`` false) reminded. Events from before they were
    # carried name none: the notice names the level alone, in Chinese.
    supervisor: str | None = Field(default=None, min_length=1)
    supervisor_en: str | None = Field(default=None, min_length=1)
    supervisor_language: Language = Language.zh


class AssignmentWithdrawn(Event):
    """The desk rerouted the issue: this agency is no longer involved, its part closed."""

    event_type: ClassVar[str] = "assignment.withdrawn"

    agency: AgencyRef
    staff_id: str = Field(min_length=1, max_length=64)
    reason: bounded_text(500)


class IssueRerouted(Event):
    """The desk changed a dispatched issue's category and agencies (told to the resident
    once). Agencies withdrawn and added each have their own event as well."""

    event_type: ClassVar[str] = "issue.rerouted"

    category: Slug
    previous_category: Slug
    priority: Priority
    staff_id: str = Field(min_length=1, max_length=64)
    reason: bounded_text(500)
    withdrawn: list[AgencyRef] = Field(default_factory=list)
    added: list[AssignmentSummary] = Field(default_factory=list)
    # Every agency involved now (lead first), for the resident's message.
    assignments: list[AssignmentSummary] = Field(min_length=1)
    # Whether any agency left, came or changed role: what the resident is told of. A
    # change of category or urgency alone is the desk's and the agencies' business.
    agencies_changed: bool = True


class RouteCorrected(Event):
    """The desk decided a route (a triage decision or a reroute): a labelled example.

    Committed with the decision (the outbox), so a kept correction is never lost
    between the change and its record; routing keeps it for retraining. The text is
    not carried: the consumer reads it from the issue and masks personal data.
    """

    event_type: ClassVar[str] = "route.corrected"

    source: Literal["triage", "reroute"]
    category: Slug
    previous_category: Slug | None = None  # what routing had chosen (None: it was held)
    urgent: bool
    support: list[Slug] = Field(default_factory=list)
    staff_id: str = Field(min_length=1, max_length=64)
    reason: bounded_text(500) | None = None


class IssueClosed(Event):
    event_type: ClassVar[str] = "issue.closed"

    reason: ClosedReason


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (IssueReceived, IssueDispatched, AssignmentCreated, AssignmentAcknowledged,
                AssignmentResolved, IssueResolved, IssueMerged, IssueEscalated, TableConvened,
                TableCheckedIn, TableTaskRecorded, TableTaskDone, IssueRated, IssueReopened,
                IssueClosed, AssignmentWithdrawn, IssueRerouted, RouteCorrected)
}

"""The issue aggregate: its stored shape and its state machine. Pure: no I/O.

An issue moves ``received -> dispatched -> in_progress -> resolved``. Each of its
assignments moves ``assigned -> acknowledged (报到) -> resolved``. The issue is
resolved when every assignment is resolved (及时结单).

When routing is not sure where a report goes, the issue waits for the desk:
``received -> needs_triage -> dispatched`` (the desk's triage decision). The desk can
also correct a dispatched or in-progress issue's route (:func:`reroute`): agencies
no longer involved have their assignment ``withdrawn`` (kept in
``IssueRecord.withdrawn``, out of their workspace), new ones are assigned.

Every function here takes the current record and returns a new one, or raises
:class:`~shared.errors.InvalidTransition`. Services persist the result through
``shared.store.IssueStore.apply``, which makes the read-modify-write atomic and
idempotent per event id.
"""

from __future__ import annotations

import bisect
import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import chain
from operator import attrgetter, is_
from types import UnionType
from typing import Any, Self, Union, get_args, get_origin

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.contracts import (
    AssignmentStatus,
    AssignmentSummary,
    Channel,
    ClosedReason,
    DeadlineKind,
    EscalationLevel,
    IssueStatus,
    Language,
    Location,
    Priority,
    Rating,
    RatingMethod,
    Role,
    Sector,
)
from shared.errors import Forbidden, InvalidTransition
from shared.jsoncodec import utc_moment

# Every moment a record keeps (created, deadlines, each step's ``at``...) has its zone: a
# naive one is nobody's moment (compared with an aware one it raises TypeError; shown,
# it is read in whatever zone the reader guesses), so new code that writes one is
# refused, the field named. Checked in pydantic's core, at no cost on a record's reads.
StoredMoment = AwareDatetime


class Stored(BaseModel):
    """A record, or a part of one, as the store keeps it (JSON in Redis and PostgreSQL).

    Records stored by an older release may hold naive moments: before ``ConveneTable``
    required a zone (2275766), a table's ``meets_at`` was kept as the desk typed it,
    without one. Every moment Whistle writes is UTC (``contracts.utcnow``, and the
    store's and the archive's JSON), so such a stored text is read as UTC, and the
    record is readable as ever; it is refused only as a ``datetime`` handed over by
    code. Done where a read fails, so that the reads of every other record pay
    nothing (a validator on each moment doubled the cost of reading a record).
    """

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as error:
            naive = _naive_texts(error)
            if not naive:
                raise
            data = _as_utc(orjson.loads(json_data), naive)
            return super().model_validate_json(orjson.dumps(data), **kwargs)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """As :meth:`model_validate_json`, for a record's JSON already decoded (the pages
        read a record an RPC answer carried)."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as error:
            naive = _naive_texts(error)
            if not naive or not isinstance(obj, dict):
                raise
            return super().model_validate(_as_utc(copy.deepcopy(obj), naive), **kwargs)

    def copy_to_change(self) -> Self:
        """A deep copy for a transition to change: dumped and validated afresh.

        ``model_copy(deep=True)`` copies value by value in Python (datetimes and enums
        included) and was the costliest step of routing's transition; this is about
        four times faster and shares nothing with the original either.
        """
        return self.model_validate(self.model_dump())

    def refuse_naive_moments(self) -> None:
        """Raise pydantic's ``ValidationError`` (``timezone_aware``, the field's place
        named, as at construction) if a moment assigned after this was built is naive.

        Construction and :meth:`copy_to_change` refuse one; an attribute assigned in
        between is not checked, and the store's JSON would keep it without a zone, read
        back later as UTC. The store calls this before it writes a record. Not pydantic's
        ``validate_assignment``: it doubled the cost of routing's transitions (every
        assignment validated, the record's after-validators rerun), where this walk
        reads each moment once, in a few microseconds for a record with a long timeline.
        """
        place = None if _all_aware(self) else _naive_place(self)
        if place is not None:
            loc, value = place
            raise ValidationError.from_exception_data(type(self).__name__, [
                {"type": "timezone_aware", "loc": loc, "input": value}])


@dataclass(frozen=True)
class _Moments:
    """Where a kind of stored part keeps moments: fields holding one (or ``None``), a
    mapping of them (a table's check-ins), a part, or a list of parts."""

    moments: tuple[str, ...]
    moment_maps: tuple[str, ...]
    parts: tuple[str, ...]
    part_lists: tuple[str, ...]
    # Its moments, as a tuple, read in C; for a part with no inner part, all of them.
    read: Callable[[Any], tuple[Any, ...]] | None = None
    flat: bool = False


_MOMENTS: dict[type, _Moments] = {}
_ZONE = attrgetter("tzinfo")
_NO_ZONE = partial(is_, None)


def _moments_of(cls: type[Stored]) -> _Moments:
    """Read once from the class's fields: a moment in a shape not listed here raises, so
    that a new field of that shape is not left unchecked in silence."""
    found: dict[str, list[str]] = {"moments": [], "moment_maps": [], "parts": [],
                                   "part_lists": []}
    for name, field in cls.model_fields.items():
        kind = _field_kind(field.annotation)
        if kind is not None:
            found[kind].append(name)
    names = found["moments"]
    # attrgetter of one name gives the value, not a tuple: the name twice gives one.
    read = attrgetter(*names, *names[:2 - len(names)]) if names else None
    plan = _Moments(**{kind: tuple(names) for kind, names in found.items()}, read=read,
                    flat=not (found["moment_maps"] or found["parts"] or found["part_lists"]))
    _MOMENTS[cls] = plan
    return plan


def _field_kind(annotation: Any) -> str | None:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (UnionType, Union) and len(args) == 1:
        annotation, args = args[0], list(get_args(args[0]))  # X | None: X
    origin = get_origin(annotation)
    if annotation is StoredMoment:
        return "moments"
    if isinstance(annotation, type) and issubclass(annotation, Stored):
        return "parts"
    if origin is list and len(args) == 1 and isinstance(args[0], type) and issubclass(
            args[0], Stored):
        return "part_lists"
    if origin is dict and args[1:] == [StoredMoment]:
        return "moment_maps"
    if "AwareDatetime" in repr(annotation):
        raise TypeError(f"refuse_naive_moments does not know this shape: {annotation!r}")
    return None


def _all_aware(part: Stored) -> bool:
    """True if no moment in ``part`` is naive: each read once, in C where it can be (a
    record's timeline, its longest list, in one ``map``)."""
    moments: list[Any] = []
    _gather(part, moments)
    # filter: unset ones (None); is_, not ==: a zone's == with None costs a call each.
    return not any(map(_NO_ZONE, map(_ZONE, filter(None, moments))))


def _gather(part: Stored, moments: list[Any]) -> None:
    plan = _MOMENTS.get(type(part)) or _moments_of(type(part))
    if plan.read is not None:
        moments += plan.read(part)
    if plan.flat:
        return
    for name in plan.moment_maps:
        moments += getattr(part, name).values()
    for name in plan.parts:
        inner = getattr(part, name)
        if inner is not None:
            _gather(inner, moments)
    for name in plan.part_lists:
        items = getattr(part, name)
        if not items:
            continue
        inner_plan = _MOMENTS.get(type(items[0])) or _moments_of(type(items[0]))
        if inner_plan.flat and inner_plan.read is not None:
            moments += chain.from_iterable(map(inner_plan.read, items))
        else:
            for inner in items:
                _gather(inner, moments)


def _naive_place(part: Stored) -> tuple[tuple[int | str, ...], datetime] | None:
    """Where ``part`` (or a part within it) holds a naive moment, and that moment: the
    slow road, taken once :func:`_all_aware` found one."""
    plan = _MOMENTS.get(type(part)) or _moments_of(type(part))
    for name in plan.moments:
        moment = getattr(part, name)
        if moment is not None and moment.utcoffset() is None:
            return (name,), moment
    for name in plan.moment_maps:
        for key, moment in getattr(part, name).items():
            if moment.utcoffset() is None:
                return (name, key), moment
    for name in plan.parts:
        inner = getattr(part, name)
        found = None if inner is None else _naive_place(inner)
        if found is not None:
            return (name, *found[0]), found[1]
    for name in plan.part_lists:
        for index, inner in enumerate(getattr(part, name)):
            found = _naive_place(inner)
            if found is not None:
                return (name, index, *found[0]), found[1]
    return None


def _naive_texts(error: ValidationError) -> list[tuple[int | str, ...]]:
    """Where ``error`` is about stored naive moments only (text without a zone: an older
    release's); empty if anything else is wrong, or a naive ``datetime`` came from code."""
    places = []
    for problem in error.errors():
        if problem["type"] != "timezone_aware" or not isinstance(problem["input"], str):
            return []
        places.append(problem["loc"])
    return places


def _as_utc(data: Any, places: list[tuple[int | str, ...]]) -> Any:
    """``data`` (decoded JSON) with the naive moment text at each of ``places`` read as
    UTC, the zone every moment in Whistle is stored in."""
    for place in places:
        *path, last = place
        parent = data
        for key in path:
            parent = parent[key]
        parent[last] = parent[last] + "+00:00"
    return data


class TimelineEntry(Stored):
    at: StoredMoment
    service: str
    step: str
    detail: str = ""
    agency: str | None = None


class EarlierResolution(Stored):
    """What an agency claimed done in a cycle the resident then rejected (民事民评): kept
    when the issue reopens, so the desk and the agency see what was said the first time."""

    cycle: int  # the issue's ``reopen_count`` when this resolution was made
    note: str | None = None
    resolved_by: str | None = None
    resolved_at: StoredMoment | None = None


class Assignment(Stored):
    agency: str
    agency_name: str
    agency_name_en: str
    sector: Sector
    role: Role
    status: AssignmentStatus = AssignmentStatus.assigned
    assigned_at: StoredMoment
    acknowledge_by: StoredMoment
    resolve_by: StoredMoment
    acknowledged_at: StoredMoment | None = None
    acknowledged_by: str | None = None
    acknowledged_on_time: bool | None = None
    acknowledge_note: str | None = None  # the 报到's optional note (internal, as resolution_note)
    resolved_at: StoredMoment | None = None
    resolved_by: str | None = None
    resolution_note: str | None = None
    # Set when a deadline passed with the work not done; each triggers one escalation.
    acknowledge_overdue: bool = False
    resolve_overdue: bool = False
    missed_deadlines: int = 0
    # The level this agency's misses have whistled its part up to (三级吹哨): absent from
    # records stored before it was kept, where its misses count it (:func:`part_level`).
    level: EscalationLevel | None = None
    # Since when its part is followed at the level it is at now (:func:`part_level`): the
    # miss that whistled it there, or the reopen that did. Absent from records stored
    # before it was kept, and while the part was never whistled.
    level_since: StoredMoment | None = None
    withdrawn_at: StoredMoment | None = None
    withdrawn_by: str | None = None
    # Resolutions of earlier cycles, oldest first: absent from records stored before it.
    earlier_resolutions: list[EarlierResolution] = Field(default_factory=list)

    def back_to_work(self, cycle: int, now: datetime, acknowledge_by: datetime,
                     resolve_by: datetime) -> None:
        """The resident reopened the issue (民事民评): the part is ``assigned`` again with
        fresh deadlines, and the resolution of ``cycle`` (the one rejected) is kept in
        ``earlier_resolutions`` rather than lost."""
        if self.resolved_at is not None or self.resolution_note is not None:
            self.earlier_resolutions.append(EarlierResolution(
                cycle=cycle, note=self.resolution_note, resolved_by=self.resolved_by,
                resolved_at=self.resolved_at))
        self.status = AssignmentStatus.assigned
        self.assigned_at = now
        self.acknowledge_by, self.resolve_by = acknowledge_by, resolve_by
        self.acknowledged_at = self.acknowledged_by = self.acknowledged_on_time = None
        self.acknowledge_note = None
        self.resolved_at = self.resolved_by = self.resolution_note = None
        self.acknowledge_overdue = self.resolve_overdue = False

    def summary(self) -> AssignmentSummary:
        return AssignmentSummary(
            agency=self.agency, agency_name=self.agency_name,
            agency_name_en=self.agency_name_en, sector=self.sector,
            role=self.role, acknowledge_by=self.acknowledge_by, resolve_by=self.resolve_by,
        )


class TableTask(Stored):
    task_id: str
    agency: str
    description: str
    due: StoredMoment
    status: str = "open"  # "open" | "done"
    recorded_at: StoredMoment
    done_at: StoredMoment | None = None
    note: str | None = None
    closed_by: str | None = None  # who marked it done: its agency, or "desk"
    closed_by_staff: str | None = None  # the staff id of whoever marked it done


class TableSession(Stored):
    """问题在桌面解决: every agency involved at one table until it is done (事不完，人不撤)."""

    meets_at: StoredMoment
    place: str
    convened_at: StoredMoment
    invited: list[str]
    checked_in: dict[str, StoredMoment] = Field(default_factory=dict)
    tasks: list[TableTask] = Field(default_factory=list)

    def open_tasks(self) -> list[TableTask]:
        return [t for t in self.tasks if t.status == "open"]


class RatingRecord(Stored):
    reporter_issue_id: str
    cycle: int
    rating: Rating
    comment: str | None = None
    at: StoredMoment
    # The desk recorded it on the resident's behalf (电话回访): its staff id, and how.
    recorded_by: str | None = None
    method: RatingMethod | None = None


class Routing(Stored):
    """Why routing decided what it did: shown on the issue and by ``route explain``."""

    rule: str
    keywords: list[str] = Field(default_factory=list)
    category_source: str  # "given" | "forced" | "model" | "keywords" | "fallback" | "desk"
    model_version: str | None = None
    confidence: float | None = None  # the classifier's probability of the category


class Suggestion(Stored):
    category: str
    probability: float


class TriageState(Stored):
    """The classifier was not sure of this report: the desk decides (or has decided).

    ``held``: the issue waited in ``needs_triage`` with no agency. Otherwise it looked
    urgent and was dispatched at once to the best guess, and is only flagged.
    ``pending`` until the desk decides (a triage decision or a reroute).
    """

    pending: bool = True
    held: bool
    suggestions: list[Suggestion] = Field(default_factory=list)
    reason: str
    urgent: bool = False
    flagged_at: StoredMoment
    decided_at: StoredMoment | None = None
    decided_by: str | None = None
    decided_category: str | None = None


class IssueRecord(Stored):
    issue_id: str
    trace_id: str
    status: IssueStatus = IssueStatus.received
    description: str
    category: str | None = None
    priority: Priority | None = None
    location: Location
    channel: Channel
    language: Language
    received_at: StoredMoment
    updated_at: StoredMoment
    media_url: str | None = None  # a photo of the problem, as the reporter linked it
    routing: Routing | None = None
    triage: TriageState | None = None
    escalation_level: EscalationLevel = EscalationLevel.community
    # Duplicates (共性问题统筹): a merged report points at the open issue it joined;
    # that issue lists every report folded into it, so all reporters get updates.
    merged_into: str | None = None
    reporters: list[str] = Field(default_factory=list)
    table: TableSession | None = None
    # 民事民评: each resolution is a cycle; an unsatisfied rating reopens the next one.
    reopen_count: int = 0
    # The level the latest reopen left the issue at: every agency's next miss goes up
    # from it. Absent before a reopen, and from records reopened before it was kept.
    reopened_level: EscalationLevel | None = None
    feedback_due: StoredMoment | None = None
    ratings: list[RatingRecord] = Field(default_factory=list)
    closed_reason: ClosedReason | None = None
    closed_at: StoredMoment | None = None
    assignments: list[Assignment] = Field(default_factory=list)
    # Parts the desk took away by a reroute (status withdrawn): history, not work.
    withdrawn: list[Assignment] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _withdrawn_agencies_off_the_table(self) -> Self:
        """A reroute takes the agencies it withdraws off the table, their check-in too
        (:func:`reroute`); a record rerouted before it did so still lists them (in Redis
        and in the archive). They are taken off as the record is read, so that no reader
        (the desk's and the agencies' views, the pages, the agency's workspace) shows a
        withdrawn agency as invited, and the record's next change stores it so. Only an
        agency with no part left: one a later reroute brought back keeps its seat. Read,
        not rewritten in place at start: nothing to race routing's writes, nothing to
        redo after a crash, and the archive's records are read the same way."""
        table = self.table
        if table is None or not self.withdrawn:
            return self
        gone = {a.agency for a in self.withdrawn}.difference(self.agencies())
        if gone.intersection(table.invited) or gone.intersection(table.checked_in):
            table.invited = [agency for agency in table.invited if agency not in gone]
            table.checked_in = {agency: at for agency, at in table.checked_in.items()
                                if agency not in gone}
        return self

    def assignment_for(self, agency: str) -> Assignment:
        for assignment in self.assignments:
            if assignment.agency == agency:
                return assignment
        raise Forbidden(f"agency {agency!r} has no assignment on issue {self.issue_id}")

    def agencies(self) -> list[str]:
        return [a.agency for a in self.assignments]

    def step(self, at: datetime, service: str, step: str, detail: str = "",
             agency: str | None = None) -> None:
        # Kept in time order: a step can be recorded after a later one (e.g. the
        # agency's delivery note arrives after a fast 报到).
        bisect.insort(self.timeline, TimelineEntry(at=at, service=service, step=step,
                                                   detail=detail, agency=agency),
                      key=lambda entry: entry.at)
        self.updated_at = max(self.updated_at, at)


def merged_group(record: IssueRecord, parent: IssueRecord | None) -> set[str]:
    """The reports of ``record``'s merged group: itself, those folded into it, and, when
    it was folded into ``parent`` (its ``merged_into``), that issue and every other
    report folded into it. Each has its own resident; the group shares its agencies'
    notes, so a text about one can name any of them. Pure."""
    group = {record.issue_id, *record.reporters}
    if parent is not None:
        group.update((parent.issue_id, *parent.reporters))
    return group


def part_level(record: IssueRecord, assignment: Assignment) -> EscalationLevel:
    """The level ``assignment``'s part is followed at (三级吹哨 is per agency): where its
    own misses whistled it, and at least where the latest reopen left the issue (an agency
    seated after it too). An assignment stored before its ``level`` was kept is counted
    by its misses. The issue's ``escalation_level`` is the highest of its parts'."""
    own = (assignment.level if assignment.level is not None
           else _level_after(assignment.missed_deadlines))
    return higher_level(own, record.reopened_level or EscalationLevel.community)


def higher_level(a: EscalationLevel, b: EscalationLevel) -> EscalationLevel:
    return max(a, b, key=list(EscalationLevel).index)


def _level_after(missed: int) -> EscalationLevel:
    """Where an agency's ``missed`` deadlines have whistled it: none, the community; the
    first, the street office; the next and every later one, the district."""
    level = EscalationLevel.community
    for _ in range(missed):
        level = level.next()
    return level


@dataclass(frozen=True)
class Deadline:
    issue_id: str
    agency: str
    kind: DeadlineKind
    due: datetime

    def same_as(self, other: Deadline) -> bool:
        """Same deadline, allowing for the sorted set's float scores (sub-ms rounding)."""
        return (self.member == other.member
                and abs((self.due - other.due).total_seconds()) < 0.001)

    @property
    def member(self) -> str:
        """The sorted-set member; the score is ``due``."""
        return f"{self.issue_id}|{self.agency}|{self.kind.value}"

    @property
    def escalation_id(self) -> str:
        return f"deadline:{self.member}:{int(self.due.timestamp() * 1000)}"

    @classmethod
    def from_member(cls, member: str, score: float) -> Deadline:
        issue_id, agency, kind = member.split("|")
        return cls(issue_id, agency, DeadlineKind(kind), datetime.fromtimestamp(score, UTC))


def pending_deadlines(record: IssueRecord) -> list[Deadline]:
    """The deadlines that should be watched, derived from the record's state."""
    return [Deadline(record.issue_id, agency, kind, due)
            for agency, kind, due in _pending(record)]


def watched_deadlines(record: IssueRecord) -> dict[str, float]:
    """:func:`pending_deadlines` as the deadline watch keeps them: each one's sorted-set
    member and due time (epoch seconds). The store works this out for the record
    before and after every apply: without a :class:`Deadline` built for each."""
    prefix = f"{record.issue_id}|"
    return {f"{prefix}{agency}|{kind.value}": due.timestamp()
            for agency, kind, due in _pending(record)}


def _pending(record: IssueRecord) -> Iterable[tuple[str, DeadlineKind, datetime]]:
    for a in record.assignments:
        if a.status is AssignmentStatus.assigned:
            yield a.agency, DeadlineKind.acknowledge, a.acknowledge_by
        if a.status is not AssignmentStatus.resolved:
            yield a.agency, DeadlineKind.resolve, a.resolve_by
    if record.status is IssueStatus.resolved and record.feedback_due is not None:
        yield NO_AGENCY, DeadlineKind.feedback, record.feedback_due


NO_AGENCY = "-"  # the agency slot of an issue-wide deadline (the rating window)


def receive(issue_id: str, trace_id: str, description: str, category: str | None,
            location: Location, channel: Channel, language: Language,
            now: datetime, media_url: str | None = None) -> IssueRecord:
    """A new issue as the desk accepted it (社区接单)."""
    record = IssueRecord(
        issue_id=issue_id, trace_id=trace_id, description=description, category=category,
        location=location, channel=channel, language=language, received_at=now, updated_at=now,
        media_url=media_url,
    )
    record.step(now, "intake", "received", f"accepted via {channel.value}")
    return record


def hold_for_triage(record: IssueRecord, routing: Routing, triage: TriageState,
                    now: datetime) -> IssueRecord:
    """Routing is not sure: the issue waits for the desk (``needs_triage``), no agency yet."""
    if record.status is not IssueStatus.received:
        raise InvalidTransition(f"issue {record.issue_id} is already {record.status.value}")
    new = record.copy_to_change()
    new.routing, new.triage, new.status = routing, triage.model_copy(), IssueStatus.needs_triage
    shown = ", ".join(f"{s.category} {s.probability:.0%}" for s in triage.suggestions) or "none"
    new.step(now, "routing", "needs_triage", f"{triage.reason}; suggestions: {shown}")
    return new


def settle_triage(record: IssueRecord, staff_id: str, category: str,
                  now: datetime, reason: str | None = None) -> IssueRecord:
    """The desk decided a report routing was unsure of (it was held or flagged), and
    why, when it said (a reroute that settles a flag says why on its own step)."""
    if record.triage is None or not record.triage.pending:
        raise InvalidTransition(f"issue {record.issue_id} is not waiting for triage")
    new = record.copy_to_change()
    assert new.triage is not None
    new.triage.pending = False
    new.triage.decided_at, new.triage.decided_by = now, staff_id
    new.triage.decided_category = category
    new.step(now, "routing", "triaged", f"{staff_id} chose category {category}"
             + (f"; why: {reason}" if reason else ""))
    return new


def dispatch(record: IssueRecord, category: str, priority: Priority, routing: Routing,
             assignments: list[Assignment], now: datetime, *,
             fresh: bool = False) -> IssueRecord:
    """Attach the routing decision (精准派单). Only a freshly received issue, or one
    that waited for the desk's triage, can be routed.

    ``fresh``: ``assignments`` were built for this dispatch and nothing else holds
    them, so the record takes them as they are instead of copying each."""
    if record.status not in (IssueStatus.received, IssueStatus.needs_triage):
        raise InvalidTransition(f"issue {record.issue_id} is already {record.status.value}")
    if not assignments or sum(a.role is Role.lead for a in assignments) != 1:
        raise ValueError("a dispatch needs exactly one lead assignment")
    new = record.copy_to_change()
    new.category, new.priority, new.routing = category, priority, routing
    new.assignments = list(assignments) if fresh else [a.model_copy() for a in assignments]
    new.status = IssueStatus.dispatched
    names = ", ".join(f"{a.agency_name} ({a.role.value})" for a in assignments)
    new.step(now, "routing", "dispatched",
             f"category {category}, priority {priority.value}, rule {routing.rule}: {names}")
    return new


@dataclass(frozen=True)
class Rerouted:
    """What a reroute changed: the new record, the parts withdrawn and the parts added."""

    record: IssueRecord
    withdrawn: list[Assignment]
    added: list[Assignment]


REROUTABLE = (IssueStatus.dispatched, IssueStatus.in_progress)


def reroute(record: IssueRecord, category: str, priority: Priority, routing: Routing,
            planned: list[Assignment], staff_id: str, reason: str,
            now: datetime) -> Rerouted | None:
    """The desk corrects the route of a dispatched or in-progress issue.

    ``planned`` is the whole new route (exactly one lead), with fresh deadlines. An
    agency in both keeps its assignment, its 报到 and its deadlines (its role follows
    the new route); an agency no longer in it is withdrawn; a new one is assigned.
    ``None`` when the route is already exactly that (a repeated request changes
    nothing). Refused when the new route would leave no part to do, or would withdraw
    an agency with open table tasks (事不完，人不撤).
    """
    if record.status not in REROUTABLE:
        raise InvalidTransition(
            f"issue {record.issue_id} is {record.status.value}; only a dispatched or "
            "in-progress issue can be rerouted")
    if sum(a.role is Role.lead for a in planned) != 1:
        raise ValueError("a route needs exactly one lead assignment")
    wanted = {a.agency: a for a in planned}
    current = {a.agency: a for a in record.assignments}
    same_roles = all(current[a].role is wanted[a].role for a in current.keys() & wanted.keys())
    if (category == record.category and priority is record.priority
            and wanted.keys() == current.keys() and same_roles):
        return None
    leaving = [a for a in record.assignments if a.agency not in wanted]
    if record.table is not None:
        blocked = [t for t in record.table.open_tasks() if t.agency in {a.agency for a in leaving}]
        if blocked:
            names = ", ".join(f"{t.task_id} ({t.agency})" for t in blocked)
            raise InvalidTransition(f"issue {record.issue_id} has open table tasks for "
                                    f"agencies the new route drops: {names}; 事不完，人不撤")
    new = record.copy_to_change()
    kept, withdrawn, added = [], [], []
    for assignment in new.assignments:
        if assignment.agency in wanted:
            assignment.role = wanted[assignment.agency].role
            kept.append(assignment)
        else:
            assignment.status = AssignmentStatus.withdrawn
            assignment.withdrawn_at, assignment.withdrawn_by = now, staff_id
            withdrawn.append(assignment)
    for plan in planned:
        if plan.agency not in current:
            added.append(plan.model_copy())
    if all(a.status is AssignmentStatus.resolved for a in [*kept, *added]):
        # Nobody resolves an issue but its agencies (the desk has no such action): the way
        # out is an agency with work left, or the part still open resolved by its agency.
        raise InvalidTransition(f"the new route of issue {record.issue_id} leaves no part to "
                                "do: every agency it keeps has resolved its part; keep one "
                                "with work left, or ask the agency whose part is open to "
                                "resolve it")
    # Lead first, then supports, in the order the route lists them.
    order = {agency: i for i, agency in enumerate(wanted)}
    new.assignments = sorted([*kept, *added], key=lambda a: order[a.agency])
    new.withdrawn = [*new.withdrawn, *withdrawn]
    if new.table is not None:  # a withdrawn agency leaves the table too (事不完 is checked above)
        gone = {a.agency for a in withdrawn}
        new.table.invited = [agency for agency in new.table.invited if agency not in gone]
        # ...and its check-in with it: "checked in" named an agency no longer at the table,
        # and one brought back later is invited afresh and checks in again.
        new.table.checked_in = {agency: at for agency, at in new.table.checked_in.items()
                                if agency not in gone}
    previous, previous_priority = new.category, new.priority
    roles_before = {a.agency: a.role for a in record.assignments}
    new.category, new.priority, new.routing = category, priority, routing
    started = any(a.status is not AssignmentStatus.assigned for a in new.assignments)
    new.status = IssueStatus.in_progress if started else IssueStatus.dispatched
    changes = [f"category {previous} -> {category}" if previous != category
               else f"category {category}"]
    if previous_priority is not priority:
        changes.append(f"priority {previous_priority.value if previous_priority else None} "
                       f"-> {priority.value}")
    if withdrawn:
        changes.append("withdrawn: " + ", ".join(a.agency_name for a in withdrawn))
    if added:
        changes.append("added: " + ", ".join(f"{a.agency_name} ({a.role.value})" for a in added))
    if roles := [a for a in new.assignments
                 if a.agency in roles_before and a.role is not roles_before[a.agency]]:
        changes.append("now: " + ", ".join(f"{a.agency_name} ({a.role.value})" for a in roles))
    new.step(now, "routing", "rerouted", f"by {staff_id}: {'; '.join(changes)}; why: {reason}")
    return Rerouted(new, withdrawn, added)


def acknowledge(record: IssueRecord, agency: str, staff_id: str, now: datetime,
                note: str | None = None) -> IssueRecord:
    """An agency reports in (部门报到), with an optional note kept on its assignment."""
    new = record.copy_to_change()
    assignment = new.assignment_for(agency)
    if assignment.status is not AssignmentStatus.assigned:
        raise InvalidTransition(
            f"{agency} has already {assignment.status.value} issue {record.issue_id}")
    assignment.status = AssignmentStatus.acknowledged
    assignment.acknowledged_at, assignment.acknowledged_by = now, staff_id
    assignment.acknowledge_note = note
    # A deadline moved forward by escalation does not make a late 报到 on time.
    assignment.acknowledged_on_time = (not assignment.acknowledge_overdue
                                       and now <= assignment.acknowledge_by)
    if new.status is IssueStatus.dispatched:
        new.status = IssueStatus.in_progress
    late = "" if assignment.acknowledged_on_time else " (after its deadline)"
    new.step(now, "agency", "acknowledged",
             f"{assignment.agency_name} ({staff_id}) reported in{late}"
             + (f": {note}" if note else ""), agency=agency)
    return new


def resolve(record: IssueRecord, agency: str, staff_id: str, note: str,
            now: datetime) -> IssueRecord:
    """An agency finishes its part. The issue resolves when every part is done."""
    new = record.copy_to_change()
    assignment = new.assignment_for(agency)
    if assignment.status is AssignmentStatus.assigned:
        raise InvalidTransition(
            f"{agency} must acknowledge issue {record.issue_id} before resolving it")
    if assignment.status is AssignmentStatus.resolved:
        raise InvalidTransition(f"{agency} has already resolved issue {record.issue_id}")
    _check_table_done(record, agency)
    assignment.status = AssignmentStatus.resolved
    assignment.resolved_at, assignment.resolved_by = now, staff_id
    assignment.resolution_note = note
    new.step(now, "agency", "assignment_resolved",
             f"{assignment.agency_name} ({staff_id}) resolved its part: {note}", agency=agency)
    if all(a.status is AssignmentStatus.resolved for a in new.assignments):
        new.status = IssueStatus.resolved
        new.step(now, "agency", "resolved", "every agency has finished its part")
    return new


def _check_table_done(record: IssueRecord, agency: str) -> None:
    """事不完，人不撤: no one leaves the table, and the issue does not close, with tasks open."""
    if record.table is None:
        return
    open_tasks = record.table.open_tasks()
    own = [t for t in open_tasks if t.agency == agency]
    last_part = all(a.status is AssignmentStatus.resolved
                    for a in record.assignments if a.agency != agency)
    blocking = own or (open_tasks if last_part else [])
    if blocking:
        names = ", ".join(f"{t.task_id} ({t.agency})" for t in blocking)
        raise InvalidTransition(
            f"issue {record.issue_id} has open table tasks: {names}; 事不完，人不撤")


RATING_STEPS = frozenset({"rated", "reopened"})
"""Timeline steps whose detail quotes the resident's rating comment (``routing.feedback``)."""


def masked_comment(comment: str | None, names: Iterable[str | None] = ()) -> str | None:
    """A resident's rating comment as it is stored and shown to anyone but its author:
    phone numbers, email addresses and tokens masked as in the logs
    (``shared.privacy.scrub``), and ``names`` (the resident's own) masked too."""
    from shared.privacy import scrub

    return scrub(comment, frozenset(n for n in names if n)) if comment else comment


def mask_comments(view: dict[str, Any], contact: dict[str, Any] | None) -> dict[str, Any]:
    """``view`` (a dumped record) with its ratings' comments and the timeline steps that
    quote them masked (:func:`masked_comment`): comments are masked when rated, and this
    masks those stored before that, for the desk's views."""
    names = [(contact or {}).get("name")]
    for rating in view.get("ratings", []):
        rating["comment"] = masked_comment(rating.get("comment"), names)
    for entry in view.get("timeline", []):
        if entry.get("step") in RATING_STEPS:
            entry["detail"] = masked_comment(entry.get("detail"), names)
    return view


# What a rating step says around the comment it quotes (``routing.feedback``): the
# comment is cut by the step's shape, not by searching for its text, so a comment stored
# differently from its quote (masked at another time) cannot survive, and text that
# merely equals a comment is left alone. ``.*`` is greedy: a comment that itself holds
# "; back to" cannot hide the real tail, whose agency slugs hold no ";".
_RATING_QUOTE = {
    "rated": re.compile(r"^(the resident is (?:not )?satisfied)(?:: .*)?$", re.S),
    "reopened": re.compile(r"^(the resident is not satisfied): .*(; back to [^;]*)$", re.S),
}


def without_comments(view: dict[str, Any]) -> dict[str, Any]:
    """``view``'s timeline with the residents' rating comments cut out of the steps that
    quote them ("the resident is not satisfied: …; back to …"): for the agency view.
    A rating step of any other shape keeps only its step name: never a comment."""
    for entry in view.get("timeline", []):
        step = entry.get("step")
        if step in RATING_STEPS:
            shape = _RATING_QUOTE.get(step)
            found = shape.match(entry.get("detail") or "") if shape else None
            entry["detail"] = "".join(found.groups()) if found else step
    return view


def public_view(record: IssueRecord, contact: dict[str, Any] | None) -> dict[str, Any]:
    """The issue as the desk sees it over HTTP/RPC: contact masked, and the ratings'
    comments (:func:`mask_comments`)."""
    from shared.privacy import mask_email, mask_name, mask_phone

    view = mask_comments(record.model_dump(mode="json"), contact)
    contact = contact or {}
    view["contact"] = {
        "name": mask_name(contact.get("name")),
        "phone": mask_phone(contact.get("phone")),
        "email": mask_email(contact.get("email")),
        "preferred_channel": contact.get("preferred_channel"),
    }
    return view


TRIAGE_LISTED = {"pending", "held", "suggestions", "reason", "urgent"}


def list_entry(record: IssueRecord) -> dict[str, Any]:
    """The issue as one line of ``GET /issues``."""
    return {
        "issue_id": record.issue_id,
        "status": record.status.value,
        "category": record.category,
        "priority": record.priority.value if record.priority else None,
        "community": record.location.community,
        "agencies": record.agencies(),
        "received_at": utc_moment(record.received_at),
        "updated_at": utc_moment(record.updated_at),
        # For the desk's triage queue: what routing suggests, and whether it is waiting.
        "triage": (record.triage.model_dump(mode="json", include=TRIAGE_LISTED)
                   if record.triage is not None else None),
    }

"""Who is told what: merged reporters, supervisors, ordering and naming. No broker, no Redis.

The pure rules (``services.notify.recipients``) first, then the notify service's
handlers on fakes of the store and the delivery records (``worker_factory``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from nameko.testing.services import worker_factory

from services.notify.channels import OutgoingMessage
from services.notify.delivery import (
    SLOT_RECHECK_S,
    Deliveries,
    DeliveryFailed,
    Outcome,
    _parsed,
    message_id,
)
from services.notify.recipients import (
    AFTER,
    RESIDENT,
    SUPERVISOR,
    AgencyPart,
    IssueToAddress,
    IssueToOrder,
    IssueToTell,
    _so_far,
    closed_reason_text,
    comment_or_none,
    deadline_name,
    escalated_values,
    escalated_wording,
    in_language,
    is_merged,
    level_name,
    notified_step,
    ordering_waits,
    recipients_for,
    reopen_comment,
    supervisor_for,
    supervisor_language,
    view_for,
)
from services.notify.service import NotifyService
from services.notify.templates import Templates
from shared import config as cfg
from shared.auth import verify_feedback_token
from shared.config import check_attempts
from shared.contracts import (
    AgencyRef,
    AssignmentAcknowledged,
    AssignmentResolved,
    AssignmentSummary,
    Channel,
    ClosedReason,
    DeadlineKind,
    EscalationLevel,
    IssueClosed,
    IssueDispatched,
    IssueEscalated,
    IssueMerged,
    IssueReceived,
    IssueReopened,
    IssueRerouted,
    IssueResolved,
    IssueStatus,
    Language,
    Location,
    Priority,
    Rating,
    Role,
    Sector,
    TableConvened,
    TableTaskRecorded,
)
from shared.errors import NotFound
from shared.issue import Assignment, IssueRecord, RatingRecord, receive
from shared.messaging import RETRY, Deferred, backoff, plan_failure

NOW = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
PLACE = Location(community="缤泰社区", address="丽德花园5号楼")
PRIMARY, NEIGHBOUR, LATE = "WH-20261121-0001", "WH-20261121-0002", "WH-20261121-0003"
HOUSING = AgencyRef(agency="housing", agency_name="区房管局", agency_name_en="Housing bureau")
POWER = AgencyRef(agency="power", agency_name="供电公司", agency_name_en="Power company")


def issue(issue_id: str, language: str = "zh", **fields) -> IssueRecord:
    record = receive(issue_id, f"trace-{PRIMARY}", "楼道灯不亮", None, PLACE, Channel.desk,
                     Language(language), NOW)
    return record.model_copy(update=fields)


def assignment(agency: AgencyRef, role: Role = Role.lead) -> Assignment:
    return Assignment(agency=agency.agency, agency_name=agency.agency_name,
                      agency_name_en=agency.agency_name_en, sector=Sector.housing, role=role,
                      assigned_at=NOW, acknowledge_by=NOW + timedelta(hours=2),
                      resolve_by=NOW + timedelta(hours=24))


def primary_with_neighbour(**fields) -> IssueRecord:
    return issue(PRIMARY, reporters=[NEIGHBOUR], **fields)


def merged_neighbour(language: str = "zh") -> IssueRecord:
    return issue(NEIGHBOUR, language, status=IssueStatus.merged, merged_into=PRIMARY)


# ---------------------------------------------------------------- what notify reads


def test_what_notify_reads_is_the_records_own_fields_under_their_names():
    # A field renamed in the record and not here would read as its default: silently.
    for view, whole in ((IssueToTell, IssueRecord), (AgencyPart, Assignment)):
        for name, part in view.model_fields.items():
            assert name in whole.model_fields, name
            if name != "assignments":  # AgencyPart: a part of Assignment, checked too
                assert part.annotation == whole.model_fields[name].annotation, name


def test_an_issue_read_for_notify_has_what_the_record_says():
    record = primary_with_neighbour(assignments=[assignment(HOUSING), assignment(POWER)],
                                    reopen_count=1)

    told = IssueToTell.model_validate_json(record.model_dump_json())

    assert told.model_dump() == {
        **record.model_dump(include=set(IssueToTell.model_fields) - {"assignments"}),
        "assignments": [AgencyPart.model_validate(a.model_dump()).model_dump()
                        for a in record.assignments]}


# ------------------------------------------------------------------- recipients_for


def test_an_issue_without_merged_reports_tells_its_own_resident():
    assert recipients_for(issue(PRIMARY), "dispatched") == [PRIMARY]


def test_every_merged_reporter_is_told_after_the_issues_own_resident():
    record = issue(PRIMARY, reporters=[NEIGHBOUR, LATE, NEIGHBOUR, PRIMARY])

    assert recipients_for(record, "acknowledged") == [PRIMARY, NEIGHBOUR, LATE]


@pytest.mark.parametrize("kind", ["received", "merged"])
def test_messages_about_a_report_itself_go_to_its_resident_only(kind):
    assert recipients_for(primary_with_neighbour(), kind) == [PRIMARY]
    assert recipients_for(merged_neighbour(), kind) == [NEIGHBOUR]


@pytest.mark.parametrize("kind", ["dispatched", "acknowledged", "escalated", "table_convened",
                                  "table_decision", "part_resolved", "resolved"])
def test_a_merged_report_gets_its_updates_from_the_primary_not_its_own_events(kind):
    assert recipients_for(merged_neighbour(), kind) == []


@pytest.mark.parametrize("fields", [{"merged_into": PRIMARY}, {"status": IssueStatus.merged},
                                    {"status": IssueStatus.merged, "merged_into": PRIMARY}])
def test_merged_means_pointing_at_a_primary_or_in_status_merged(fields):
    assert is_merged(issue(NEIGHBOUR, **fields))
    assert not is_merged(primary_with_neighbour())


# ------------------------------------------------------------------- ordering_waits


@pytest.mark.parametrize(("kind", "waits"), [
    ("received", []),
    ("merged", [("received", 1)]),
    ("dispatched", [("received", 1)]),
    ("acknowledged", [("dispatched", 1)]),
    ("part_resolved", [("dispatched", 1)]),
    ("resolved", [("dispatched", 1)]),
    ("escalated", []),
    ("table_convened", []),
    ("rating_request", [("resolved", 1)]),
    ("reopened", []),
    ("closed", [("rating_request", 1)]),
])
def test_the_issues_own_resident_reads_messages_in_the_usual_order(kind, waits):
    assert ordering_waits(issue(PRIMARY), kind, PRIMARY) == waits


def with_steps(record: IssueRecord, *steps: str) -> IssueRecord:
    new = record.model_copy(deep=True)
    for step in steps:
        new.step(NOW, "agency", step)
    return new


def test_resolved_follows_every_acknowledged_and_part_resolved():
    record = with_steps(
        issue(PRIMARY, assignments=[assignment(HOUSING), assignment(POWER, Role.support)]),
        "acknowledged", "acknowledged", "assignment_resolved", "assignment_resolved", "resolved")

    assert ordering_waits(record, "resolved", PRIMARY) == \
        [("dispatched", 1), ("acknowledged", 2), ("part_resolved", 1)]
    assert ordering_waits(record, "part_resolved", PRIMARY) == \
        [("dispatched", 1), ("acknowledged", 2)]


def test_a_reopened_issues_messages_wait_for_this_cycles_predecessors():
    """Cycle 2: the agency reports in and resolves again, right after the reopening."""
    record = with_steps(issue(PRIMARY, assignments=[assignment(HOUSING)], reopen_count=1),
                        "acknowledged", "assignment_resolved", "resolved",
                        "acknowledged", "assignment_resolved", "resolved")

    assert ordering_waits(record, "acknowledged", PRIMARY) == [("dispatched", 1), ("reopened", 1)]
    assert ordering_waits(record, "resolved", PRIMARY) == [("dispatched", 1), ("acknowledged", 2)]
    assert ordering_waits(record, "rating_request", PRIMARY) == [("resolved", 2)]
    assert ordering_waits(record, "reopened", PRIMARY) == [("rating_request", 1)]
    assert ordering_waits(record, "closed", PRIMARY) == [("rating_request", 2)]


def test_a_merged_reporter_waits_only_for_the_last_message_before():
    record = primary_with_neighbour(assignments=[assignment(HOUSING), assignment(POWER)])

    assert ordering_waits(record, "resolved", NEIGHBOUR) == [("merged", 1), ("part_resolved", 1)]


@pytest.mark.parametrize(("kind", "waits"), [
    ("dispatched", [("merged", 1), ("received", 1)]),
    ("acknowledged", [("merged", 1), ("dispatched", 1)]),
    ("escalated", [("merged", 1)]),
    ("table_decision", [("merged", 1)]),
    ("rating_request", [("merged", 1), ("resolved", 1)]),
])
def test_a_merged_reporter_first_reads_that_the_report_was_merged(kind, waits):
    assert ordering_waits(primary_with_neighbour(), kind, NEIGHBOUR) == waits


def steps_at(record: IssueRecord, *steps: tuple[int, str, str]) -> IssueRecord:
    """``record`` with (minutes after NOW, service, step) added; a join names NEIGHBOUR."""
    new = record.model_copy(deep=True)
    for minutes, service, step in steps:
        detail = f"{NEIGHBOUR} reported the same problem" if step == "reporter_joined" else ""
        new.step(NOW + timedelta(minutes=minutes), service, step, detail)
    return new


def test_a_reporter_who_joined_after_the_dispatch_waits_for_no_dispatched_message():
    """They were never told "dispatched": waiting for it held their "reported in" and
    "resolved" for the whole grace, and "resolved" once overtook "reported in"."""
    record = steps_at(primary_with_neighbour(assignments=[assignment(HOUSING)]),
                      (1, "routing", "dispatched"), (2, "routing", "reporter_joined"),
                      (3, "agency", "acknowledged"), (4, "agency", "assignment_resolved"),
                      (4, "agency", "resolved"))

    assert ordering_waits(record, "acknowledged", NEIGHBOUR) == [("merged", 1)]
    assert ordering_waits(record, "resolved", NEIGHBOUR) == [("merged", 1), ("acknowledged", 1)]
    assert ordering_waits(record, "rating_request", NEIGHBOUR) == [("merged", 1), ("resolved", 1)]
    # the issue's own resident still waits for every step
    assert ordering_waits(record, "resolved", PRIMARY) == [("dispatched", 1), ("acknowledged", 1)]


def test_a_reporter_who_joined_before_the_dispatch_waits_for_it():
    record = steps_at(primary_with_neighbour(assignments=[assignment(HOUSING)]),
                      (1, "routing", "reporter_joined"), (2, "routing", "dispatched"),
                      (3, "agency", "acknowledged"))

    assert ordering_waits(record, "acknowledged", NEIGHBOUR) == [("merged", 1), ("dispatched", 1)]


def test_a_reporter_who_joined_after_the_first_report_in_waits_only_for_the_later_ones():
    record = steps_at(
        primary_with_neighbour(assignments=[assignment(HOUSING), assignment(POWER, Role.support)]),
        (1, "routing", "dispatched"), (2, "agency", "acknowledged"),
        (3, "routing", "reporter_joined"), (4, "agency", "acknowledged"),
        (5, "agency", "assignment_resolved"), (6, "agency", "assignment_resolved"),
        (6, "agency", "resolved"))

    assert ordering_waits(record, "resolved", NEIGHBOUR) == \
        [("merged", 1), ("acknowledged", 1), ("part_resolved", 1)]


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize(("level", "zh", "en"), [
    (EscalationLevel.street, "街道", "the street office"),
    (EscalationLevel.district, "区", "the district"),
    ("street", "街道", "the street office"),
])
def test_level_names(level, zh, en):
    assert level_name(level, "zh") == zh
    assert level_name(level, "en") == en


@pytest.mark.parametrize(("deadline", "zh", "en"), [
    (DeadlineKind.acknowledge, "报到", "report in"),
    (DeadlineKind.resolve, "办结", "resolve"),
])
def test_deadline_names(deadline, zh, en):
    assert deadline_name(deadline, "zh") == zh
    assert deadline_name(deadline, "en") == en


@pytest.mark.parametrize("language", ["fr", "", "zh"])
def test_anything_but_english_reads_chinese(language):
    assert in_language(language, "街道", "the street office") == "街道"
    assert level_name(EscalationLevel.district, language) == "区"


def rated(reporter: str, rating: Rating = Rating.satisfied, cycle: int = 0) -> RatingRecord:
    return RatingRecord(reporter_issue_id=reporter, cycle=cycle, rating=rating, at=NOW)


@pytest.mark.parametrize(("reader", "language", "expected"), [
    (PRIMARY, "zh", "您已确认满意"),
    (PRIMARY, "en", "you confirmed you are satisfied"),
    (NEIGHBOUR, "zh", "反映同一问题的居民已确认满意"),
    (NEIGHBOUR, "en", "a neighbour who reported the same problem confirmed they are satisfied"),
])
def test_closed_as_satisfied_says_who_was_satisfied(reader, language, expected):
    record = primary_with_neighbour(ratings=[rated(PRIMARY)])

    assert closed_reason_text(record, ClosedReason.satisfied, reader, language) == expected


def test_closed_as_satisfied_counts_only_this_cycles_rating():
    record = primary_with_neighbour(reopen_count=1, ratings=[rated(PRIMARY, cycle=0),
                                                             rated(NEIGHBOUR, cycle=1)])

    assert closed_reason_text(record, "satisfied", NEIGHBOUR, "zh") == "您已确认满意"
    assert closed_reason_text(record, "satisfied", PRIMARY, "zh") == "反映同一问题的居民已确认满意"


@pytest.mark.parametrize(("language", "expected"), [
    ("zh", "评价期已过，按已办结处理"),
    ("en", "the rating period has ended, so it is closed as resolved"),
])
def test_closed_without_rating(language, expected):
    record = primary_with_neighbour()

    assert closed_reason_text(record, ClosedReason.no_rating, PRIMARY, language) == expected


@pytest.mark.parametrize(("comment", "language", "expected"), [
    ("  没修好 ", "zh", "没修好"), ("", "zh", "未填写"), (None, "en", "none given"),
    ("   ", "en", "none given"),
])
def test_an_empty_comment_reads_as_none_given(comment, language, expected):
    assert comment_or_none(comment, language) == expected


def escalation(**fields) -> IssueEscalated:
    values = {"trace_id": f"trace-{PRIMARY}", "issue_id": PRIMARY, "agency": HOUSING,
              "deadline": DeadlineKind.acknowledge, "missed": NOW,
              "level": EscalationLevel.street, "supervisor": "缤泰街道办事处",
              "supervisor_en": "Bintai Street Office", **fields}
    return IssueEscalated(**values)


def test_the_supervisor_is_a_recipient_by_role_level_and_office():
    assert supervisor_for(escalation()) == {"role": "supervisor", "level": "street",
                                           "name": "缤泰街道办事处"}
    assert supervisor_for(escalation(level=EscalationLevel.district), "en")["name"] == \
        "Bintai Street Office"


def test_a_supervisor_is_named_in_its_own_language_unless_told_otherwise():
    english = escalation(supervisor_language=Language.en)
    assert supervisor_language(escalation()) == "zh"
    assert supervisor_language(english) == "en"
    assert supervisor_for(english)["name"] == "Bintai Street Office"
    assert supervisor_for(english, "zh")["name"] == "缤泰街道办事处"


def test_a_part_whistled_below_the_issues_level_is_told_as_staying_with_it():
    """The housing bureau's first miss goes to the street office while another agency's
    two took the issue to the district: the residents, told that the district follows it
    up, must not read "escalated to the street office" as if it went down."""
    below = escalation(issue_level=EscalationLevel.district)
    assert escalated_wording(below) == "escalated_part"
    assert escalated_values(below, "en")["level"] == "the street office"
    assert escalated_values(below, "en")["issue_level"] == "the district"
    assert escalated_values(below, "zh")["issue_level"] == "区"
    # A miss that took the issue up, and one from before the issue's level was carried.
    assert escalated_wording(escalation(issue_level=EscalationLevel.street)) is None
    assert escalated_wording(escalation()) is None
    top = escalation(level=EscalationLevel.district, issue_level=EscalationLevel.district)
    assert escalated_wording(top) is None


def test_an_escalation_published_before_supervisor_languages_still_validates():
    payload = escalation().model_dump(mode="json")
    del payload["supervisor_language"]
    assert IssueEscalated.model_validate(payload).supervisor_language is Language.zh


# ---------------------------------------------------------------------- the timeline


def test_timeline_step_for_the_issues_own_resident_is_unchanged():
    assert notified_step("dispatched", "sent", "desk", PRIMARY, reporter=PRIMARY) == \
        ("resident_notified", "dispatched message sent via desk")


def test_timeline_step_names_a_merged_reporter():
    assert notified_step("dispatched", "sent", "desk", PRIMARY, reporter=NEIGHBOUR) == \
        ("resident_notified", f"dispatched message sent via desk to the reporter of {NEIGHBOUR}")


def test_timeline_step_says_why_it_failed_or_went_to_the_desk():
    assert notified_step("closed", "failed", "webhook", PRIMARY, note="HTTP 500") == \
        ("resident_notified", "closed message failed via webhook (HTTP 500)")
    assert notified_step("closed", "sent", "desk", PRIMARY, reporter=NEIGHBOUR,
                         note="preferred email not configured; sent to desk")[1] == (
        "closed message sent via desk (preferred email not configured; sent to desk) "
        f"to the reporter of {NEIGHBOUR}")


def test_timeline_step_for_a_supervisor_names_the_level():
    step, detail = notified_step("escalation_notice", "sent", "desk", PRIMARY,
                                 reporter=PRIMARY, level="district")

    assert step == "supervisor_notified"
    assert detail.startswith("supervisor (district) notified")


# ----------------------------------------------------------------------- message ids


def test_message_id_for_the_events_own_issue_is_what_it_always_was():
    legacy = hashlib.sha256(b"event-1:dispatched").hexdigest()[:24]

    assert message_id("event-1", "dispatched") == legacy
    assert message_id("event-1", "dispatched", None) == legacy


def test_message_id_differs_per_reporter_and_is_deterministic():
    ids = {message_id("event-1", "dispatched", r) for r in (None, NEIGHBOUR, LATE)}

    assert len(ids) == 3
    assert message_id("event-1", "dispatched", NEIGHBOUR) == \
        message_id("event-1", "dispatched", NEIGHBOUR)


# --------------------------------------------------- the service, on fakes (no broker)


class FakeStore:
    """``IssueStore``'s reads, its idempotent ``apply`` and notes, in memory."""

    def __init__(self, *records: IssueRecord, contacts: dict | None = None):
        self.records = {r.issue_id: r for r in records}
        self.contacts = contacts or {}
        self.notifications: dict[str, dict[str, str]] = {}
        self.applied: set[tuple[str, str]] = set()

    def get(self, issue_id):
        if issue_id not in self.records:
            raise NotFound(f"no issue {issue_id}")
        return self.records[issue_id]

    def contact(self, issue_id):
        return dict(self.contacts.get(issue_id, {}))

    def view_with_contact_and_notifications(self, issue_id, view):
        # Records read ahead with the issue (none unless a test puts some here); the
        # ordering checks they do not settle ask FakeDeliveries.settled.
        return (view.model_validate(self.get(issue_id).model_dump()), self.contact(issue_id),
                dict(self.notifications.get(issue_id, {})))

    def apply(self, issue_id, event_id, change, service):
        if (issue_id, event_id) not in self.applied:
            self.applied.add((issue_id, event_id))
            self.records[issue_id], _ = change(self.get(issue_id))

    def add_note(self, issue_id, note_id, entry):
        """Notes kept on the record's timeline, as ``get_with_notes`` shows them."""
        if (issue_id, note_id) in self.applied:
            return False
        self.applied.add((issue_id, note_id))
        record = self.get(issue_id).model_copy(deep=True)
        record.step(entry.at, entry.service, entry.step, entry.detail, entry.agency)
        self.records[issue_id] = record
        return True


@dataclass
class FakeDeliveries:
    """Sends once per notification id; ``failing`` issue ids fail like a refusing webhook."""

    sent: list[tuple[OutgoingMessage, str]] = field(default_factory=list)
    waits: list[tuple[str, str, int]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def deliver_once(self, message: OutgoingMessage, audience: str = RESIDENT,
                     note_for=None, event_id: str | None = None) -> Outcome:
        if message.issue_id in self.failing:
            return Outcome(False, "queued", "webhook", "HTTP 503")
        if any(m.notification_id == message.notification_id for m, _ in self.sent):
            return Outcome(False, "sent", "desk")
        self.sent.append((message, audience))
        return Outcome(True, "sent", "desk")

    def await_settled(self, issue_id, kind, count, within_s, poll_s):
        self.waits.append((issue_id, kind, count))
        return True

    def why_wait(self, issue_id, kind, count, since, grace_s):
        """Asked only when the look did not see them settle: they are not sent yet."""
        return f"{kind} is not sent yet"

    def to(self, issue_id: str) -> list[OutgoingMessage]:
        return [m for m, audience in self.sent if m.issue_id == issue_id and audience == RESIDENT]


@pytest.fixture(autouse=True)
def ordering_always_checked(monkeypatch):
    """These events carry fixed past times: keep them inside the ordering grace."""
    import services.notify.service as notify_service

    monkeypatch.setattr(notify_service, "ORDERING_GRACE_S", float("inf"))


@dataclass
class FakeMessenger:
    templates: Templates = field(default_factory=Templates.load)
    deliveries: FakeDeliveries = field(default_factory=FakeDeliveries)


@pytest.fixture
def store():
    return FakeStore(primary_with_neighbour(), merged_neighbour("en"),
                     contacts={PRIMARY: {"phone": "13812345678"}, NEIGHBOUR: {"name": "Tom"}})


@pytest.fixture
def messenger():
    return FakeMessenger()


CONFIG = {cfg.SECRET: "unit-test-secret-of-at-least-32-characters", cfg.PUBLIC_URL: "https://whistle.example/",
          cfg.RATING_WINDOW_S: 30 * 24 * 3600}


@pytest.fixture
def notify(store, messenger):
    return worker_factory(NotifyService, store=store, messenger=messenger, config=CONFIG)


def event_about(event_cls, issue_id=PRIMARY, **fields):
    return event_cls(trace_id=f"trace-{PRIMARY}", issue_id=issue_id, **fields)


def dispatched() -> IssueDispatched:
    summary = AssignmentSummary(agency="housing", agency_name="区房管局",
                                agency_name_en="Housing bureau", sector=Sector.housing,
                                role=Role.lead, acknowledge_by=NOW, resolve_by=NOW)
    return event_about(IssueDispatched, category="stair_light", priority=Priority.normal,
                       assignments=[summary])


def test_every_reporter_is_told_in_their_own_language_under_their_own_report(notify, messenger):
    event = dispatched()

    notify.on_issue_dispatched(event)

    [own] = messenger.deliveries.to(PRIMARY)
    [neighbour] = messenger.deliveries.to(NEIGHBOUR)
    assert own.language == "zh" and "已派给区房管局" in own.text
    assert own.recipient == {"phone": "13812345678"}
    assert own.notification_id == message_id(event.event_id, "dispatched")
    assert neighbour.language == "en" and "sent to Housing bureau" in neighbour.text
    assert PRIMARY in neighbour.text  # the case being handled
    assert neighbour.recipient == {"name": "Tom"}
    assert neighbour.notification_id == message_id(event.event_id, "dispatched", NEIGHBOUR)


def test_ordering_waits_are_per_reporter(notify, messenger):
    notify.on_issue_dispatched(dispatched())

    assert messenger.deliveries.waits == [(PRIMARY, "received", 1), (NEIGHBOUR, "merged", 1),
                                          (NEIGHBOUR, "received", 1)]


def test_a_wait_the_records_read_with_the_issue_settle_asks_nothing_more(
        notify, messenger, store):
    # "received" is already recorded sent when the issue is read: the resident's own
    # ordering check needs no further read; the merged neighbour's still does.
    store.notifications[PRIMARY] = {"n-1": json.dumps({
        "kind": "received", "audience": "resident", "status": "sent", "attempts": 1})}

    notify.on_issue_dispatched(dispatched())

    assert messenger.deliveries.waits == [(NEIGHBOUR, "merged", 1), (NEIGHBOUR, "received", 1)]
    assert len(messenger.deliveries.sent) == 2


@pytest.mark.parametrize(("records", "settled"), [
    ([], False),
    ([("received", "sent", 1)], True),
    ([("received", "failed", 3)], True),                   # given up on: settled
    ([("received", "queued", 1)], True),                   # failing, retried with backoff
    ([("received", "queued", 0)], False),                  # not tried yet
    ([("dispatched", "sent", 1)], False),                  # another kind
    ([("received", "sent", 1), ("received", "queued", 0)], True),
])
def test_settled_in_reads_the_records_as_stored(records, settled):
    raw = {f"n-{i}": json.dumps({"kind": kind, "status": status, "attempts": attempts,
                                 "audience": "resident"})
           for i, (kind, status, attempts) in enumerate(records)}
    assert Deliveries.settled_in(raw, "received", 1) is settled


def test_each_message_is_on_the_primarys_timeline(notify, store):
    notify.on_issue_dispatched(dispatched())

    details = [s.detail for s in store.get(PRIMARY).timeline if s.step == "resident_notified"]
    assert details == ["dispatched message sent via desk",
                       f"dispatched message sent via desk to the reporter of {NEIGHBOUR}"]


def test_a_redelivered_event_tells_nobody_twice(notify, messenger, store):
    event = dispatched()

    notify.on_issue_dispatched(event)
    notify.on_issue_dispatched(event)

    assert len(messenger.deliveries.sent) == 2
    assert [s.step for s in store.get(PRIMARY).timeline].count("resident_notified") == 2


def test_the_merged_reporter_is_told_which_issue_carries_the_report(notify, messenger, store):
    notify.on_issue_merged(event_about(IssueMerged, NEIGHBOUR, into_issue_id=PRIMARY,
                                       category="stair_light"))

    [message] = [m for m, _ in messenger.deliveries.sent]
    assert (message.issue_id, message.kind, message.language) == (NEIGHBOUR, "merged", "en")
    assert f"Your report {NEIGHBOUR}" in message.text and f"report {PRIMARY}" in message.text
    assert store.get(NEIGHBOUR).timeline[-1].step == "resident_notified"


def test_a_merged_reports_own_received_is_still_sent(notify, messenger):
    notify.on_issue_received(event_about(
        IssueReceived, NEIGHBOUR, description="楼道灯不亮", location=PLACE, channel="desk",
        language="en", has_contact=True))

    assert [m.kind for m in messenger.deliveries.to(NEIGHBOUR)] == ["received"]


def test_other_events_about_a_merged_report_are_not_sent(notify, messenger):
    notify.on_assignment_acknowledged(event_about(
        AssignmentAcknowledged, NEIGHBOUR, agency="housing", agency_name="区房管局",
        agency_name_en="Housing bureau", staff_id="h-1", on_time=True))
    notify.on_issue_escalated(escalation(issue_id=NEIGHBOUR))

    assert messenger.deliveries.sent == []


def test_escalation_tells_the_supervisor_then_every_reporter(notify, messenger, store):
    event = escalation(level=EscalationLevel.district, deadline=DeadlineKind.resolve)

    notify.on_issue_escalated(event)

    [(notice, audience), *residents] = messenger.deliveries.sent
    assert audience == SUPERVISOR
    assert (notice.issue_id, notice.kind, notice.language) == (PRIMARY, "escalation_notice", "zh")
    assert notice.recipient == {"role": "supervisor", "level": "district",
                                "name": "缤泰街道办事处"}
    assert "区房管局未在 2026-11-21 10:00 前办结，现提级到区一级督办" in notice.text
    assert [(m.issue_id, m.kind, a) for m, a in residents] == \
        [(PRIMARY, "escalated", RESIDENT), (NEIGHBOUR, "escalated", RESIDENT)]
    assert "提级到区一级，由缤泰街道办事处督办" in residents[0][0].text
    assert "escalated to the district: Bintai Street Office" in residents[1][0].text
    steps = [(s.step, s.detail) for s in store.get(PRIMARY).timeline if s.service == "notify"]
    assert steps[0] == ("supervisor_notified",
                        "supervisor (district) notified: escalation_notice message sent via desk")
    assert [s for s, _ in steps] == ["supervisor_notified", "resident_notified",
                                     "resident_notified"]


def test_an_english_speaking_supervisor_gets_the_english_notice(notify, messenger):
    notify.on_issue_escalated(escalation(level=EscalationLevel.district,
                                         deadline=DeadlineKind.resolve,
                                         supervisor_language=Language.en))

    [notice] = [m for m, audience in messenger.deliveries.sent if audience == SUPERVISOR]
    assert (notice.kind, notice.language, notice.recipient["name"]) == \
        ("escalation_notice", "en", "Bintai Street Office")
    assert notice.text == (
        f"[Whistle] Escalated to the district: on issue {PRIMARY}, Housing bureau was due to "
        "resolve by 2026-11-21 10:00 and has not. Please follow it up with the agencies "
        "concerned.")
    # The residents still read their own languages.
    assert [m.language for m, a in messenger.deliveries.sent if a == RESIDENT] == ["zh", "en"]


def test_table_messages_name_place_agencies_task_and_due(notify, messenger):
    notify.on_table_convened(event_about(TableConvened, meets_at=NOW, place="红色议事厅",
                                         agencies=[HOUSING, POWER]))
    notify.on_table_task_recorded(event_about(TableTaskRecorded, task_id="t1", agency=POWER,
                                              description="检查楼道线路", due=NOW))

    convened, decided = [m.text for m in messenger.deliveries.to(PRIMARY)]
    assert "在红色议事厅召集区房管局、供电公司" in convened
    assert "由供电公司负责“检查楼道线路”，2026-11-21 10:00 前完成" in decided
    neighbour = [m.text for m in messenger.deliveries.to(NEIGHBOUR)]
    assert "called Housing bureau, Power company to meet at 红色议事厅" in neighbour[0]
    assert 'Power company will take care of "检查楼道线路"' in neighbour[1]


def test_a_failed_delivery_still_tells_the_others_then_retries_the_event(notify, messenger):
    messenger.deliveries.failing = {PRIMARY}

    with pytest.raises(DeliveryFailed, match=f"dispatched message for {PRIMARY}"):
        notify.on_issue_dispatched(dispatched())

    assert [m.kind for m in messenger.deliveries.to(NEIGHBOUR)] == ["dispatched"]


def test_a_message_given_up_on_does_not_retry_the_event(notify, messenger):
    messenger.deliveries.deliver_once = lambda message, audience=RESIDENT, note_for=None, \
        event_id=None: Outcome(True, "failed", "webhook", "HTTP 500")

    notify.on_issue_dispatched(dispatched())  # does not raise


# ------------------------------------------------------------- 民事民评: rate, reopen, close


def resolved() -> IssueResolved:
    return event_about(IssueResolved, agencies=["housing"], occurred_at=NOW)


def test_resolved_then_each_reporter_gets_their_own_rating_link(notify, messenger, store):
    event = resolved()

    notify.on_issue_resolved(event)

    own = messenger.deliveries.to(PRIMARY)
    neighbour = messenger.deliveries.to(NEIGHBOUR)
    assert [m.kind for m in own] == [m.kind for m in neighbour] == ["resolved", "rating_request"]
    for reader, message in [(PRIMARY, own[1]), (NEIGHBOUR, neighbour[1])]:
        link = f"https://whistle.example/issues/{reader}/feedback?token="
        # What is recorded, shown and logged holds the link without its token; only the
        # channel, at delivery, puts it back.
        assert f"{link}[redacted]" in message.text and "eyJ" not in message.text
        assert "eyJ" not in repr(message)
        token = message.delivered_text().split("token=")[1].split()[0]
        grant = verify_feedback_token(token, CONFIG[cfg.SECRET], reader)
        assert (grant.reporter_issue_id, grant.issue_id, grant.cycle) == (reader, PRIMARY, 0)
    # The rating window after the event, shown in Beijing time.
    assert "2026-12-21 10:00 前有效" in own[1].text
    assert "valid until 2026-12-21 10:00" in neighbour[1].text
    assert own[1].notification_id == message_id(event.event_id, "rating_request")
    assert own[1].subject == f"【吹哨报到】请您评价处理结果 {PRIMARY}"
    assert (NEIGHBOUR, "resolved", 1) in messenger.deliveries.waits


def test_a_retried_rating_request_carries_the_same_link(notify, messenger):
    event = resolved()
    notify.on_issue_resolved(event)
    first = messenger.deliveries.to(PRIMARY)[1].delivered_text()
    messenger.deliveries.sent.clear()

    notify.on_issue_resolved(event)

    assert messenger.deliveries.to(PRIMARY)[1].delivered_text() == first


def test_each_resolution_cycle_has_its_own_token_and_message(notify, messenger, store):
    store.records[PRIMARY] = store.get(PRIMARY).model_copy(update={"reopen_count": 2})

    notify.on_issue_resolved(resolved())

    text = messenger.deliveries.to(PRIMARY)[1].delivered_text()
    token = text.split("token=")[1].split()[0]
    assert verify_feedback_token(token, CONFIG[cfg.SECRET], PRIMARY).cycle == 2


def test_a_refused_resolved_message_does_not_hold_back_the_other_messages(notify, messenger):
    messenger.deliveries.failing = {PRIMARY}

    with pytest.raises(DeliveryFailed, match=f"resolved message for {PRIMARY}"):
        notify.on_issue_resolved(resolved())

    assert [m.kind for m in messenger.deliveries.to(NEIGHBOUR)] == ["resolved", "rating_request"]


class RefusedThenPutOff(FakeDeliveries):
    """The resident's webhook refuses "resolved"; "rating_request", or the neighbour's
    message, is then put off (no free slot, or waiting its turn) by ``Deferred``."""

    def deliver_once(self, message: OutgoingMessage, audience: str = RESIDENT,
                     note_for=None, event_id: str | None = None) -> Outcome:
        if message.issue_id == PRIMARY and message.kind == "resolved":
            return Outcome(False, "queued", "webhook", "HTTP 503")
        raise Deferred(SLOT_RECHECK_S, f"message {message.notification_id} waits for a "
                                       "free slot")


def test_a_message_put_off_after_another_was_refused_keeps_the_events_retry_backoff(
        notify, messenger):
    """Deferred after a refusal in the same event used to win: the event came back from
    the delay queue in half a second, sent the refused "resolved" again at once instead
    of after its backoff, and spent no attempt. The refusal wins now: the event is
    retried with backoff, its attempt counted; the put-off message comes back with it."""
    messenger.deliveries = RefusedThenPutOff()

    with pytest.raises(DeliveryFailed, match=f"resolved message for {PRIMARY}") as refused:
        notify.on_issue_resolved(resolved())

    plan = plan_failure(refused.value, attempts=1, waits=0, max_attempts=5, retry_delay_s=1.0)
    assert (plan.action, plan.attempts, plan.delay_s) == (RETRY, 2, backoff(1.0, 2))


def test_a_message_put_off_with_nothing_refused_before_it_is_still_deferred(notify, messenger):
    messenger.deliveries = RefusedThenPutOff()

    with pytest.raises(Deferred):
        notify.on_issue_dispatched(dispatched())


def reopened(reason: str) -> IssueReopened:
    summary = AssignmentSummary(agency="housing", agency_name="区房管局",
                                agency_name_en="Housing bureau", sector=Sector.housing,
                                role=Role.lead, acknowledge_by=NOW, resolve_by=NOW)
    return event_about(IssueReopened, reason=reason, level=EscalationLevel.street, cycle=1,
                       assignments=[summary])


def test_reopened_tells_every_reporter_why_and_by_when(notify, messenger):
    notify.on_issue_reopened(reopened(""))

    [own] = messenger.deliveries.to(PRIMARY)
    [neighbour] = messenger.deliveries.to(NEIGHBOUR)
    assert "不满意（意见：未填写），现已重新交办区房管局，须在 2026-11-21 10:00 前重新报到" in own.text
    assert "back with Housing bureau" in neighbour.text


@pytest.mark.parametrize("rater", [PRIMARY, NEIGHBOUR])
def test_a_reopened_message_quotes_the_comment_to_its_author_only(notify, messenger, store,
                                                                  rater):
    store.records[PRIMARY] = store.get(PRIMARY).model_copy(
        update={"ratings": [rated(rater, Rating.unsatisfied, cycle=0)]})

    notify.on_issue_reopened(reopened("还在漏，3号楼201"))

    [own] = messenger.deliveries.to(PRIMARY)
    [neighbour] = messenger.deliveries.to(NEIGHBOUR)
    author, other = (own, neighbour) if rater == PRIMARY else (neighbour, own)
    assert "还在漏，3号楼201" in author.text
    assert "还在漏" not in other.text and "3号楼201" not in other.text
    assert ("不在此转述" in other.text) or ("not passed on here" in other.text)
    # The rater read that "a resident" was not satisfied with their own rating.
    assert "】您对问题" in author.text or "You were not satisfied" in author.text
    assert "】居民对问题" in other.text or "A resident was not satisfied" in other.text


def test_without_the_rating_on_record_only_the_issues_own_resident_reads_the_comment():
    record = primary_with_neighbour()

    assert reopen_comment(record, "没修好", 1, PRIMARY, "zh") == "没修好"
    assert reopen_comment(record, "没修好", 1, NEIGHBOUR, "en") == \
        "another resident's, not passed on here"
    assert reopen_comment(record, "", 1, PRIMARY, "en") == "none given"


def test_closed_tells_every_reporter_why(notify, messenger, store):
    store.records[PRIMARY] = store.get(PRIMARY).model_copy(
        update={"ratings": [rated(NEIGHBOUR)]})

    notify.on_issue_closed(event_about(IssueClosed, reason=ClosedReason.satisfied))

    [own] = messenger.deliveries.to(PRIMARY)
    [neighbour] = messenger.deliveries.to(NEIGHBOUR)
    assert "已办结归档：反映同一问题的居民已确认满意。" in own.text
    assert "is now closed: you confirmed you are satisfied." in neighbour.text


def test_recipient_is_the_contact_without_the_channel_choice(notify, messenger, store):
    store.contacts[PRIMARY] = {"name": "孙建国", "email": "sun@example.org",
                               "preferred_channel": "email"}

    notify.on_issue_closed(event_about(IssueClosed, reason=ClosedReason.no_rating))

    [own] = messenger.deliveries.to(PRIMARY)
    assert own.recipient == {"name": "孙建国", "email": "sun@example.org"}
    assert own.preferred_channel == "email"
    assert messenger.deliveries.to(NEIGHBOUR)[0].preferred_channel is None


@pytest.mark.parametrize(("notify_attempts", "event_attempts"), [(5, 5), (6, 5), (0, 5)])
def test_notify_must_give_up_before_the_event_is_dead_lettered(notify_attempts, event_attempts):
    config = {cfg.NOTIFY_MAX_ATTEMPTS: notify_attempts, cfg.MAX_ATTEMPTS: event_attempts}

    with pytest.raises(cfg.ConfigurationError, match="NOTIFY_MAX_ATTEMPTS"):
        check_attempts(config)


def test_default_attempts_are_accepted():
    assert check_attempts({}) == cfg.DEFAULTS[cfg.NOTIFY_MAX_ATTEMPTS] == 4
    assert check_attempts({cfg.NOTIFY_MAX_ATTEMPTS: "2", cfg.MAX_ATTEMPTS: "3"}) == 2


def test_a_message_whose_predecessor_stays_unsettled_is_deferred_after_a_short_look(
        notify, messenger):
    import services.notify.service as notify_service

    class Unsettled(FakeDeliveries):
        looks: list[float] = []

        def await_settled(self, issue_id, kind, count, within_s, poll_s):
            self.waits.append((issue_id, kind, count))
            self.looks.append(within_s)
            return False

    messenger.deliveries = Unsettled()
    with pytest.raises(Deferred) as deferred:
        notify.on_issue_dispatched(dispatched())
    assert deferred.value.delay_s < 1 and "received" in str(deferred.value)
    assert messenger.deliveries.sent == []
    # Looked for a short, bounded while before giving the worker up (the look itself,
    # woken by the awaited delivery, is tests/integration/test_notify_ordering_wait.py).
    assert messenger.deliveries.looks == [notify_service.ORDERING_LOOK_S]
    assert 0 < notify_service.ORDERING_LOOK_S < 1


def test_past_the_grace_a_message_still_waits_for_one_being_sent_without_a_look(
        notify, messenger, monkeypatch):
    """A slow channel: the awaited message is in flight after ORDERING_GRACE_S. The
    event goes round the delay queue (the worker is free for others), no look held."""
    import services.notify.service as notify_service

    monkeypatch.setattr(notify_service, "ORDERING_GRACE_S", 3.0)

    class InFlight(FakeDeliveries):
        asked: list[tuple] = []

        def await_settled(self, issue_id, kind, count, within_s, poll_s):
            raise AssertionError("no look past the grace: it would hold the worker")

        def why_wait(self, issue_id, kind, count, since, grace_s):
            self.asked.append((issue_id, kind, count, grace_s))
            return f"{kind} is being sent"

    messenger.deliveries = InFlight()
    late = dispatched().model_copy(
        update={"occurred_at": datetime.now(UTC) - timedelta(seconds=10)})
    with pytest.raises(Deferred) as deferred:
        notify.on_issue_dispatched(late)
    assert deferred.value.delay_s == notify_service.ORDERING_SLOW_RECHECK_S
    assert "received is being sent" in str(deferred.value)
    assert messenger.deliveries.sent == []
    assert messenger.deliveries.asked == [(PRIMARY, "received", 1, 3.0)]


def test_a_message_goes_when_nothing_it_waits_for_is_in_flight_or_coming(notify, messenger):
    class GivenUp(FakeDeliveries):
        def await_settled(self, issue_id, kind, count, within_s, poll_s):
            return False

        def why_wait(self, issue_id, kind, count, since, grace_s):
            return None  # e.g. its sender died and the lease lapsed

    messenger.deliveries = GivenUp()
    notify.on_issue_dispatched(dispatched())
    assert [m.kind for m in messenger.deliveries.to(PRIMARY)] == ["dispatched"]


def test_a_predecessor_settling_during_the_short_look_is_not_deferred(notify, messenger):
    class SettlesDuringTheLook(FakeDeliveries):
        def settled(self, issue_id, kind, count):
            return False  # not yet when the event's issue was read

        def await_settled(self, issue_id, kind, count, within_s, poll_s):
            self.waits.append((issue_id, kind, count))
            return True

    messenger.deliveries = SettlesDuringTheLook()
    notify.on_issue_dispatched(dispatched())
    assert [m.kind for m in messenger.deliveries.to(PRIMARY)] == ["dispatched"]


# ------------------------------------- what each kind reads of the record (view_for)


class WholeRecordStore(FakeStore):
    """Reads the whole record whatever view is asked for: the long way round."""

    def view_with_contact_and_notifications(self, issue_id, view):
        return super().view_with_contact_and_notifications(issue_id, IssueRecord)


def record_with_everything(store_cls) -> FakeStore:
    """A primary with a joined neighbour and a late reporter (no join step), two
    agencies, a reopened cycle with a rating, and 报到, parts and steps on the timeline."""
    primary = issue(PRIMARY, reporters=[NEIGHBOUR, LATE], reopen_count=1,
                    assignments=[assignment(HOUSING), assignment(POWER, Role.support)],
                    ratings=[rated(NEIGHBOUR, Rating.unsatisfied, cycle=0)])
    for minutes, service, step in ((1, "routing", "dispatched"),
                                   (2, "routing", "reporter_joined"),
                                   (3, "agency", "acknowledged"),
                                   (4, "agency", "assignment_resolved"),
                                   (5, "agency", "resolved"), (6, "routing", "reopened"),
                                   (7, "agency", "acknowledged")):
        detail = f"{NEIGHBOUR} reported the same problem" if step == "reporter_joined" else ""
        primary.step(NOW + timedelta(minutes=minutes), service, step, detail)
    return store_cls(primary, merged_neighbour("en"),
                     issue(LATE, "en", status=IssueStatus.merged, merged_into=PRIMARY),
                     contacts={PRIMARY: {"phone": "13812345678"}, NEIGHBOUR: {"name": "Tom"}})


def every_kind_of_event():
    """(handler, event) for every message told through ``_tell`` with the record read."""
    summary = AssignmentSummary(agency="power", agency_name="供电公司",
                                agency_name_en="Power company", sector=Sector.housing,
                                role=Role.support, acknowledge_by=NOW, resolve_by=NOW)
    return [
        ("on_issue_received", event_about(
            IssueReceived, description="楼道灯不亮", location=PLACE, channel="desk",
            language="zh", has_contact=True)),
        ("on_issue_received", event_about(
            IssueReceived, NEIGHBOUR, description="楼道灯不亮", location=PLACE,
            channel="desk", language="en", has_contact=True)),
        ("on_issue_merged", event_about(IssueMerged, NEIGHBOUR, into_issue_id=PRIMARY,
                                        category="stair_light")),
        ("on_issue_dispatched", dispatched()),
        ("on_issue_dispatched", event_about(
            IssueDispatched, category="stair_light", priority=Priority.normal,
            assignments=[*dispatched().assignments, summary])),
        ("on_assignment_acknowledged", event_about(
            AssignmentAcknowledged, agency="housing", agency_name="区房管局",
            agency_name_en="Housing bureau", staff_id="h-1", on_time=True)),
        ("on_table_convened", event_about(TableConvened, meets_at=NOW, place="红色议事厅",
                                          agencies=[HOUSING, POWER])),
        ("on_table_task_recorded", event_about(TableTaskRecorded, task_id="t1", agency=POWER,
                                               description="检查楼道线路", due=NOW)),
        ("on_assignment_resolved", event_about(
            AssignmentResolved, agency="housing", agency_name="区房管局",
            agency_name_en="Housing bureau", staff_id="h-1", note="修好了",
            remaining_agencies=["power"])),
        ("on_issue_resolved", resolved()),
        ("on_issue_escalated", escalation()),
        ("on_issue_reopened", reopened("还在漏")),
        ("on_issue_rerouted", event_about(
            IssueRerouted, category="stair_light", previous_category="water",
            priority=Priority.normal, staff_id="d-1", reason="错派",
            assignments=[*dispatched().assignments, summary])),
        ("on_issue_closed", event_about(IssueClosed, reason=ClosedReason.satisfied)),
        ("on_issue_closed", event_about(IssueClosed, reason=ClosedReason.no_rating)),
    ]


@pytest.mark.parametrize(("handler", "event"), every_kind_of_event())
def test_what_each_kind_reads_of_the_record_tells_what_the_whole_record_tells(handler, event):
    # The lean views (view_for) must send the very messages, in the same order, after
    # the same ordering checks, as reading the whole record does.
    told = []
    for store_cls in (FakeStore, WholeRecordStore):
        messenger = FakeMessenger()
        notify = worker_factory(NotifyService, store=record_with_everything(store_cls),
                                messenger=messenger, config=CONFIG)
        getattr(notify, handler)(event)
        told.append((messenger.deliveries.sent, messenger.deliveries.waits))

    (lean_sent, lean_waits), (whole_sent, whole_waits) = told
    assert lean_sent and lean_sent == whole_sent
    assert [m.text for m, _ in lean_sent] == [m.text for m, _ in whole_sent]
    assert lean_waits == whole_waits


def test_every_kind_told_with_the_record_read_has_a_view():
    kinds = {"received", "merged", "dispatched", "acknowledged", "table_convened",
             "table_decision", "part_resolved", "reopened", "rerouted", "closed"}
    for kind in kinds:
        assert issubclass(IssueToTell, view_for(kind)), kind
    assert view_for("received") is view_for("merged") is IssueToAddress
    assert view_for("part_resolved") is IssueToTell  # it names the agencies still at work
    assert view_for("an unknown kind") is IssueToTell


def test_the_lean_views_are_the_records_own_fields_too():
    for view in (IssueToAddress, IssueToOrder):
        for name, part in view.model_fields.items():
            assert part.annotation == IssueRecord.model_fields[name].annotation, name


@pytest.mark.parametrize("kind", sorted(AFTER))
def test_the_own_residents_waits_without_the_timeline_counted_are_the_same(kind):
    # "one" is 1 for the issue's own resident: ordering_waits does not count the
    # timeline for the kinds that wait only for one message.
    record = record_with_everything(FakeStore).get(PRIMARY)
    counts = _so_far(record)
    expected = [(before, counts[counter]) for before, counter in AFTER[kind] if counts[counter]]

    assert ordering_waits(record, kind, PRIMARY) == expected


@pytest.mark.parametrize("records", [
    [{"kind": "received", "status": "sent", "attempts": 1}],  # before supervisors were told
    [{"kind": "received", "status": "sent", "attempts": 1, "audience": "supervisor"}],
    [{"kind": "received", "status": "queued", "attempts": 1, "audience": "supervisor"},
     {"kind": "received", "status": "queued", "attempts": 0}],
    [{"kind": "received", "status": "failed", "attempts": 4, "audience": "resident",
      "created_at": "2026-11-21T02:00:00+00:00", "sent_at": None}],
])
def test_settled_in_reads_the_records_as_their_history_does(records):
    # The long way: the records as history_of reads them (audience filled in, moments
    # respelled), then the same rule.
    raw = {f"n-{i}": json.dumps(r) for i, r in enumerate(records)}
    mine = [r for r in _parsed(raw) if r["kind"] == "received" and r["audience"] == RESIDENT]
    for count in (1, 2):
        settled = (sum(r["status"] in ("sent", "failed") for r in mine) >= count
                   or any(r["status"] == "queued" and r["attempts"] for r in mine))
        assert Deliveries.settled_in(raw, "received", count) is settled


@pytest.mark.parametrize(("level", "language", "expected"), [
    ("community", "zh", "我们会重新交办、提级督办"),
    ("street", "en", "it goes back to the agencies and is escalated"),
    ("district", "zh", "我们会重新交办，仍由区督办"),
    ("district", "en", "it goes back to the agencies, and the district keeps following it up"),
])
def test_what_the_rating_request_promises_if_unsatisfied(level, language, expected):
    from services.notify.recipients import if_unsatisfied

    assert if_unsatisfied(level, language) == expected

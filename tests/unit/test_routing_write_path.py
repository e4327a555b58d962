"""Routing's write path, made cheaper: each shortcut gives what the long way gave."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

from services.routing import desk
from services.routing.domain import route_issue
from services.routing.rules import load_rules
from shared.contracts import (
    AssignmentAcknowledged,
    Channel,
    IssueReceived,
    Language,
    Location,
    Priority,
)
from shared.issue import (
    IssueRecord,
    Suggestion,
    TriageState,
    pending_deadlines,
    receive,
    watched_deadlines,
)
from shared.jsoncodec import dumps
from shared.messaging import BoundEventBus, envelope
from shared.store import stored_json

NOW = datetime(2026, 11, 21, 9, 30, 0, 120000, tzinfo=UTC)
SHIPPED = load_rules()


def dispatched(description: str = "楼道里有根电线耷拉下来，还有股煤气味") -> IssueRecord:
    record = receive("WH-20261121-0001", "t" * 32, description, None,
                     Location(community="丽德", address="3号楼 #1", lat=39.90421, lon=116.4074),
                     Channel.app, Language.zh, NOW, media_url="https://example.org/p.jpg")
    decision = route_issue(description, None, SHIPPED, NOW)
    return desk.first_route(record, decision, SHIPPED, NOW)


def test_a_stored_record_is_written_as_pydantic_writes_it():
    record = dispatched()
    record.triage = TriageState(held=False, reason="not sure ‘quoted’ \u2028 \x1f",
                                flagged_at=datetime(2026, 11, 21, 17, 30, tzinfo=timezone(
                                    timedelta(hours=8))),
                                suggestions=[Suggestion(category="gas_leak", probability=1e-05),
                                             Suggestion(category="power_cut", probability=0.1 + 0.2)])
    record.step(NOW.replace(microsecond=0), "agency", "acknowledged", "中文 😀 \"q\" \\ /")
    record.feedback_due = datetime(2026, 12, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert stored_json(record) == record.model_dump_json()
    assert IssueRecord.model_validate_json(stored_json(record)) == record


def test_watched_deadlines_are_the_pending_deadlines_members_and_times():
    record = dispatched()
    assert len(record.assignments) > 1
    assert watched_deadlines(record) == {d.member: d.due.timestamp()
                                         for d in pending_deadlines(record)}


def test_a_staged_entry_holds_the_envelope_of_the_event():
    record = dispatched()
    received = IssueReceived(trace_id="t" * 32, issue_id=record.issue_id, occurred_at=NOW,
                             description=record.description, location=record.location,
                             channel=Channel.app, language=Language.zh, has_contact=True)
    events = [desk.dispatched_event(record, NOW, received), received,
              AssignmentAcknowledged(trace_id="t" * 32, issue_id=record.issue_id,
                                     agency="power", agency_name="供电", agency_name_en="Power",
                                     staff_id="s1", on_time=True)]
    bus = BoundEventBus(None, SimpleNamespace(call_id_stack=["routing.route_issue.1"],
                                              service_name="routing"))
    staged = bus.stage(*events)
    for event in events:
        expected = envelope(event, "routing", ["routing.route_issue.1"])
        entry = json.loads(staged[event.event_id])
        expected["staged_at"] = entry["staged_at"]
        assert staged[event.event_id] == dumps(expected)
    assert "note" not in json.loads(staged[events[2].event_id])["body"]


def test_priority_ranks_go_from_the_most_pressing():
    assert [p.rank for p in Priority] == [0, 1, 2, 3]
    assert dispatched().priority is Priority.urgent

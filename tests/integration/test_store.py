"""The issue store (shared.store) against the real Redis: applies, indexes, notes, journal."""

import json
from datetime import timedelta

import pytest

from shared.contracts import AssignmentStatus, IssueDispatched, IssueReceived, Role
from shared.errors import NotFound
from shared.issue import IssueRecord, Stored, TimelineEntry, acknowledge, resolve
from shared.messaging import envelope
from shared.store import IssueStore, StreamEntry, run_script
from tests.unit.test_issue_state import ISSUE_ID as ISSUE
from tests.unit.test_issue_state import T0 as NOW
from tests.unit.test_issue_state import dispatched, received


@pytest.fixture
def store(redis_client, redis_prefix):
    return IssueStore(redis_client, redis_prefix)


def stage(*events) -> dict[str, str]:
    """Outbox entries as a worker of routing stages them (``BoundEventBus.stage``)."""
    return {e.event_id: json.dumps(envelope(e, "routing", ["routing.route_issue.abc"]))
            for e in events}


def created(store) -> IssueRecord:
    record = received()
    event = IssueReceived(trace_id=record.trace_id, issue_id=ISSUE, occurred_at=NOW,
                          description=record.description, location=record.location,
                          channel=record.channel, language=record.language, has_contact=True)
    store.create(record, {"phone": "13812345678"}, "intake", stage(event))
    return record


def routed(_record: IssueRecord):
    new = dispatched(("housing", Role.lead), ("power", Role.support))
    event = IssueDispatched(trace_id=new.trace_id, issue_id=ISSUE, occurred_at=NOW,
                            category=new.category, priority=new.priority,
                            assignments=[a.summary() for a in new.assignments])
    return new, stage(event)


def members(client, key) -> set[str]:
    return client.smembers(key)


def test_an_apply_happens_once_per_event_and_writes_outbox_and_journal_together(
        store, redis_client):
    created(store)

    first = store.apply(ISSUE, "evt-1", routed, "routing")
    again = store.apply(ISSUE, "evt-1", routed, "routing")

    assert first.changed and not again.changed
    assert len(redis_client.hgetall(store.keys.outbox("routing"))) == 1
    journal = store.journal(ISSUE)
    assert [e["event_type"] for e in journal] == ["issue.received", "issue.dispatched"]
    assert journal[1]["call_id"] == "routing.route_issue.abc"  # who produced it
    assert journal[1]["issue_id"] == ISSUE and journal[1]["recorded_at"]


def test_an_apply_still_works_after_redis_forgot_its_scripts(store, redis_client):
    created(store)
    redis_client.script_flush()  # as after a Redis restart

    assert store.apply(ISSUE, "evt-1", routed, "routing").changed
    assert store.get(ISSUE).status.value == "dispatched"


def test_a_submissions_writes_still_work_after_redis_forgot_its_scripts(store, redis_client):
    redis_client.script_flush()  # as after a Redis restart

    assert store.next_issue_id("20261121") == "WH-20261121-0001"
    created(store)
    assert store.get(ISSUE).status.value == "received"


def test_notifys_read_still_works_after_redis_forgot_its_scripts(store, redis_client):
    created(store)
    redis_client.script_flush()  # as after a Redis restart

    record, _contact, notifications = store.view_with_contact_and_notifications(
        ISSUE, IssueRecord)
    assert record.issue_id == ISSUE and notifications == {}


def test_run_script_passes_its_options_on(redis_client, redis_prefix):
    from redis.client import NEVER_DECODE

    script = redis_client.register_script("return ARGV[1]")
    assert run_script(script, [], ["水"]) == "水"
    assert run_script(script, [], ["水"], **{NEVER_DECODE: True}) == "水".encode()


def test_run_script_answers_as_redis_pys_script_call_does(redis_client, redis_prefix):
    # run_script is Script.__call__ without its per-call work: the same answers, with
    # keys and arguments or without either.
    script = redis_client.register_script(
        "return {KEYS[1] or '', ARGV[1] or '', #KEYS, #ARGV}")
    key = f"{redis_prefix}:k"
    for keys, args in (([key], ["a", 2]), ([], ["a", 2.5]), ([key], []), ([], [])):
        assert run_script(script, keys, args) == script(keys=keys, args=args)
    assert run_script(script, [key]) == [key, "", 1, 0]


def test_run_script_loads_a_script_redis_does_not_know(redis_client, redis_prefix):
    # A script text of this test's own has never been loaded: Redis answers NOSCRIPT,
    # as for every script after a restart.
    script = redis_client.register_script(f"return '{redis_prefix}'")
    assert redis_client.script_exists(script.sha) == [False]

    assert run_script(script, []) == redis_prefix
    assert redis_client.script_exists(script.sha) == [True]


def test_a_change_that_lands_between_read_and_write_is_not_lost(store, redis_client):
    # Two workers change the issue at once: the write made from the older read is
    # refused, and its change is worked out again on the record the other one wrote.
    created(store)
    store.apply(ISSUE, "evt-1", routed, "routing")
    other = IssueStore(redis_client, store.keys.prefix)
    seen_by_power = []

    def power_reports_in(record):
        seen_by_power.append(record.assignment_for("housing").status.value)
        if len(seen_by_power) == 1:  # meanwhile, housing reports in through another worker
            other.apply(ISSUE, "evt-2",
                        lambda r: (acknowledge(r, "housing", "staff-2", NOW), {}), "agency")
        return acknowledge(record, "power", "staff-1", NOW), {}

    applied = store.apply(ISSUE, "evt-3", power_reports_in, "agency")

    assert applied.changed and seen_by_power == ["assigned", "acknowledged"]
    final = store.get(ISSUE)
    assert {a.agency: a.status.value for a in final.assignments} == {
        "housing": "acknowledged", "power": "acknowledged"}
    assert redis_client.smembers(store.keys.applied(ISSUE)) == {"evt-1", "evt-2", "evt-3"}


def test_the_same_event_applied_meanwhile_is_not_applied_twice(store, redis_client):
    created(store)
    other = IssueStore(redis_client, store.keys.prefix)
    calls = []

    def route_once_more(record):
        calls.append(record.status.value)
        if len(calls) == 1:  # a redelivered copy of the event is applied meanwhile
            other.apply(ISSUE, "evt-1", routed, "routing")
        return routed(record)

    applied = store.apply(ISSUE, "evt-1", route_once_more, "routing")

    assert not applied.changed and applied.record.status.value == "dispatched"
    assert calls == ["received"]
    assert [e["event_type"] for e in store.journal(ISSUE)] == ["issue.received",
                                                               "issue.dispatched"]


def test_a_claim_reads_the_record_and_an_apply_from_a_stale_read_starts_again(
        store, redis_client):
    created(store)
    owner, read = store.claim_buckets_and_read([store.keys.dedupe("stair_light", "c:addr:1")],
                                               ISSUE, 60, event_id="evt-1")
    assert owner == ISSUE and not read.seen
    assert read.raw == redis_client.get(store.keys.issue(ISSUE))

    IssueStore(redis_client, store.keys.prefix).apply(ISSUE, "evt-0", routed, "routing")
    seen = []

    def note_status(record):
        seen.append(record.status.value)
        return record, {}

    assert store.apply(ISSUE, "evt-1", note_status, "routing", read=read).changed
    assert seen == ["received", "dispatched"]  # the stale read was refused, then re-read


def test_an_existing_issue_is_never_overwritten_by_a_create(store, redis_client):
    created(store)
    before = redis_client.get(store.keys.issue(ISSUE))
    record = received()

    assert not store.create(record, {"phone": "13900000000"}, "intake", {})

    assert redis_client.get(store.keys.issue(ISSUE)) == before
    assert redis_client.hgetall(store.keys.contact(ISSUE)) == {"phone": "13812345678"}
    assert len(store.journal(ISSUE)) == 1


def test_a_submission_audit_entry_is_written_with_the_issue_and_only_if_it_is(
        store, redis_client, redis_prefix):
    audit = StreamEntry(f"{redis_prefix}:audit", {"action": "issue.submit", "status": "201",
                                                  "issue_id": ISSUE}, 100)
    assert store.create(received(), {}, "intake", {}, audit)
    assert not store.create(received(), {}, "intake", {}, audit)  # the id was taken

    entries = redis_client.xrange(audit.stream)
    assert [fields for _, fields in entries] == [audit.fields]


def test_a_lost_day_counter_is_moved_past_the_ids_in_use(store, redis_client):
    day = "20261121"
    for _ in range(3):
        issue_id = store.next_issue_id(day)
        store.create(received().model_copy(update={"issue_id": issue_id}), {}, "intake", {})
    redis_client.delete(store.keys.sequence(day))  # lost, as with a Redis restart

    taken = store.next_issue_id(day)
    assert taken == f"WH-{day}-0001"
    assert not store.create(received().model_copy(update={"issue_id": taken}), {}, "intake", {})
    assert store.resync_sequence(day, NOW.timestamp()) == 3
    assert store.next_issue_id(day) == f"WH-{day}-0004"


def test_indexes_follow_the_change_and_only_what_moved_is_written(store, redis_client):
    created(store)
    keys = store.keys
    assert members(redis_client, keys.by_status("received")) == {ISSUE}

    store.apply(ISSUE, "evt-1", routed, "routing")
    assert members(redis_client, keys.by_status("received")) == set()
    assert members(redis_client, keys.by_status("dispatched")) == {ISSUE}
    assert members(redis_client, keys.open_for_agency("power")) == {ISSUE}
    watched = dict(redis_client.zrange(keys.deadlines, 0, -1, withscores=True))
    assert set(watched) == {f"{ISSUE}|{agency}|{kind}" for agency in ("housing", "power")
                            for kind in ("acknowledge", "resolve")}

    store.apply(ISSUE, "evt-2", lambda r: (acknowledge(r, "power", "staff-1", NOW), {}), "agency")
    store.apply(ISSUE, "evt-3", lambda r: (resolve(r, "power", "staff-1", "修好了", NOW), {}),
                "agency")
    assert members(redis_client, keys.open_for_agency("power")) == set()
    assert members(redis_client, keys.by_agency("power")) == {ISSUE}  # still its issue
    assert members(redis_client, keys.open_for_agency("housing")) == {ISSUE}
    watched = {m for m, _ in redis_client.zrange(keys.deadlines, 0, -1, withscores=True)}
    assert watched == {f"{ISSUE}|housing|acknowledge", f"{ISSUE}|housing|resolve"}


def test_index_sets_name_every_set_a_record_belongs_in(store):
    record, _ = routed(received())
    keys = store.keys
    assert store.index_sets(record) == {
        keys.by_status("dispatched"), keys.by_community("和平里社区"),
        keys.by_agency("housing"), keys.open_for_agency("housing"),
        keys.by_agency("power"), keys.open_for_agency("power")}



def test_an_agency_a_reroute_took_a_part_from_is_indexed_as_withdrawn_until_given_back(store):
    record, _ = routed(received())
    keys = store.keys
    away = record.model_copy(deep=True)
    part = away.assignments.pop()  # power, withdrawn by a reroute
    part.status = AssignmentStatus.withdrawn
    away.withdrawn = [part]
    assert keys.withdrawn_from_agency("power") in store.index_sets(away)
    assert keys.by_agency("power") not in store.index_sets(away)
    back = away.model_copy(deep=True)
    back.assignments.append(record.assignments[-1])
    assert keys.withdrawn_from_agency("power") not in store.index_sets(back)


def test_a_note_is_written_once_and_read_in_time_order_with_the_steps(store):
    created(store)
    later = TimelineEntry(at=NOW + timedelta(seconds=5), service="notify",
                          step="resident_notified", detail="received message sent via desk")
    earlier = TimelineEntry(at=NOW + timedelta(seconds=1), service="agency",
                            step="assignment_delivered", detail="housing received it")

    assert store.add_note(ISSUE, "n-2", later) is True
    assert store.add_note(ISSUE, "n-1", earlier) is True
    assert store.add_note(ISSUE, "n-1", later) is False  # once per note id

    steps = [e.step for e in store.get_with_notes(ISSUE).timeline]
    assert steps == ["received", "assignment_delivered", "resident_notified"]
    assert [e.step for e in store.get(ISSUE).timeline] == ["received"]  # state only


def test_several_notes_go_in_one_call_and_each_is_written_once(store):
    created(store)
    entry = TimelineEntry(at=NOW, service="agency", step="assignment_delivered")
    assert store.add_note(ISSUE, "d-1:power", entry) is True

    fresh = store.add_notes(ISSUE, {"d-1:power": entry, "d-1:water": entry,
                                    "d-1:gas": entry})

    assert fresh == {"d-1:power": False, "d-1:water": True, "d-1:gas": True}
    steps = [e.step for e in store.get_with_notes(ISSUE).timeline]
    assert steps == ["received", *["assignment_delivered"] * 3]


def test_a_note_for_an_unknown_issue_is_refused_and_leaves_nothing(store, redis_client):
    entry = TimelineEntry(at=NOW, service="agency", step="assignment_delivered")
    with pytest.raises(NotFound):
        store.add_note("WH-20261121-0999", "n-1", entry)
    assert not redis_client.exists(store.keys.notes("WH-20261121-0999"))


def test_record_contact_and_delivery_records_come_together(store, redis_client):
    created(store)
    redis_client.hset(store.keys.notifications(ISSUE), "n-1", '{"kind": "received"}')

    record, contact, notifications = store.get_with_contact_and_notifications(ISSUE)

    assert record.issue_id == ISSUE and contact == {"phone": "13812345678"}
    assert notifications == {"n-1": '{"kind": "received"}'}
    with pytest.raises(NotFound):
        store.get_with_contact_and_notifications("not-an-id")


class Assigned(Stored):
    """A view of the record: two of its fields, the rest ignored."""

    issue_id: str
    assignments: list[dict]


def test_a_view_of_the_record_comes_with_the_contact_and_records_decoded(store, redis_client):
    created(store)
    store.apply(ISSUE, "evt-1", routed, "routing")
    redis_client.hset(store.keys.contact(ISSUE), "name", "孙建国")
    redis_client.hset(store.keys.notifications(ISSUE), "n-1", '{"text": "您反映的问题已受理"}')

    view, contact, notifications = store.view_with_contact_and_notifications(ISSUE, Assigned)

    assert isinstance(view, Assigned) and view.issue_id == ISSUE
    assert [a["agency"] for a in view.assignments] == ["housing", "power"]
    assert contact == {"phone": "13812345678", "name": "孙建国"}
    assert notifications == {"n-1": '{"text": "您反映的问题已受理"}'}
    with pytest.raises(NotFound):
        store.view_with_contact_and_notifications("WH-20261121-0999", Assigned)


def test_a_view_is_read_on_a_redis_that_never_saw_the_script(
        store, redis_client, redis_prefix):
    created(store)

    class Fresh(IssueStore):  # a script text of its own: not loaded on this Redis yet
        _RECORD_CONTACT_NOTIFICATIONS = (IssueStore._RECORD_CONTACT_NOTIFICATIONS
                                         + f"-- {redis_prefix}\n")

    view, contact, _ = Fresh(redis_client, redis_prefix).view_with_contact_and_notifications(
        ISSUE, Assigned)

    assert view.issue_id == ISSUE and contact == {"phone": "13812345678"}


def test_buckets_are_claimed_once_and_taken_over_from_a_closed_owner_only_once(store):
    keys = [store.keys.dedupe("stair_light", "c:addr:1"), store.keys.dedupe("stair_light", "c:grid:2")]

    assert store.claim_buckets(keys, "WH-A", 60) == "WH-A"
    assert store.claim_buckets(keys, "WH-B", 60) == "WH-A"  # A owns them
    # A closed: B and C both try to take over from it; the second learns B won.
    assert store.claim_buckets(keys, "WH-B", 60, replacing="WH-A") == "WH-B"
    assert store.claim_buckets(keys, "WH-C", 60, replacing="WH-A") == "WH-B"


def test_a_record_holding_a_naive_moment_is_refused_and_nothing_is_written(
        store, redis_client):
    """A naive moment assigned after a record was built passed construction's check and
    was written as it was, no zone, then read back as UTC whoever meant what. The write
    path refuses it, naming the field, and writes nothing: not the record, not its outbox."""
    from datetime import datetime

    from pydantic import ValidationError

    naive = datetime(2026, 11, 21, 9, 0)
    record = received()
    record.updated_at = naive
    with pytest.raises(ValidationError, match=r"updated_at\n.*timezone"):
        store.create(record, {}, "intake", {})
    assert redis_client.keys(f"{store.keys.issue(ISSUE)}*") == []

    created(store)
    before = redis_client.get(store.keys.issue(ISSUE))

    def late_and_naive(current: IssueRecord):
        new, outbox = routed(current)
        new.assignments[1].acknowledge_by = naive
        return new, outbox

    with pytest.raises(ValidationError, match=r"assignments\.1\.acknowledge_by\n.*timezone"):
        store.apply(ISSUE, "e-naive", late_and_naive, "routing")
    assert redis_client.get(store.keys.issue(ISSUE)) == before
    assert not redis_client.sismember(store.keys.applied(ISSUE), "e-naive")

    note = TimelineEntry(at=NOW, service="agency", step="assignment_delivered")
    note.at = naive
    with pytest.raises(ValidationError, match=r"\bat\n.*timezone"):
        store.add_note(ISSUE, "n-1", note)
    assert redis_client.get(store.keys.issue(ISSUE)) == before

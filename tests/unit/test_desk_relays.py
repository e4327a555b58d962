"""The desk's relay list (待转告): which outbox entries a desk sees, what each shows, who
may mark one relayed, and how a relay is recorded. Pure parts only (the services are
tests/integration/test_desk_relay.py and tests/e2e/test_pages.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notify.relays import (
    MOOT_CLOSED,
    MOOT_NOT_AWAITED,
    MOOT_NOTE,
    MOOT_RATED,
    MOOT_REOPENED,
    MOOT_WINDOW,
    RATING_REQUEST,
    MarkRelayed,
    RelayTarget,
    audience_of,
    moot_relay_note,
    pending_relays,
    rating_request_moot,
    relay_item,
    relay_note,
    relayed_record,
)
from services.routing import feedback, merging
from services.web import views
from shared.auth import FeedbackGrant, Principal, Role, issue_token, verify_token
from shared.authz import in_communities, may_relay
from shared.contracts import (
    Channel,
    IssueReceived,
    IssueResolved,
    Language,
    Rating,
    RatingMethod,
)
from shared.errors import Forbidden, InvalidPayload, Unauthorized
from shared.guard import NOT_AN_ISSUE_ID, Guard, _Audit
from shared.issue import IssueRecord, acknowledge, receive, resolve
from shared.jsoncodec import utc_moment
from shared.web import validate
from tests.unit.test_web_views import rendered

SECRET = "s" * 32
PHONE, NAME = "13812345678", "孙建国"


def entry(nid: str, issue_id: str, kind: str = "received", **extra) -> dict:
    return {"notification_id": nid, "issue_id": issue_id, "kind": kind, "language": "zh",
            "text": f"您反映的问题已受理，编号 {issue_id}。进度：http://x/resident/{issue_id}"
                    "?token=[redacted]",
            "recipient": {"name": NAME, "phone": PHONE}, "at": "2026-12-07T02:00:00Z",
            **extra}


def desk(communities=None):
    return verify_token(issue_token("desk", "d-1", SECRET, communities=communities), SECRET)


def test_the_list_is_oldest_first_each_once_without_the_relayed_and_only_what_is_visible():
    # The outbox is newest first; a message pushed twice (a redelivery) is one entry.
    outbox = [entry("c" * 24, "WH-20261207-0003"), entry("b" * 24, "WH-20261207-0002"),
              entry("a" * 24, "WH-20261207-0001"), entry("a" * 24, "WH-20261207-0001"),
              entry("d" * 24, "WH-20261207-0004")]
    inside = {"WH-20261207-0001", "WH-20261207-0003", "WH-20261207-0004"}
    items = pending_relays(outbox, relayed={"d" * 24}, visible=inside.__contains__)
    assert [i["notification_id"] for i in items] == ["a" * 24, "c" * 24]


def test_an_item_shows_the_resident_in_full_and_a_supervisor_apart_without_a_resident():
    item = relay_item(entry("a" * 24, "WH-20261207-0001"))
    assert item["resident"] == {"name": NAME, "phone": PHONE, "email": None}
    assert item["audience"] == "resident" and "office" not in item
    assert "[redacted]" in item["text"]
    notice = relay_item(entry("b" * 24, "WH-20261207-0001", "escalation_notice",
                              recipient={"role": "supervisor", "level": "street",
                                         "name": "缤泰街道办事处"}))
    assert notice["audience"] == "supervisor" and "resident" not in notice
    assert notice["office"] == {"level": "street", "name": "缤泰街道办事处"}


def test_an_entrys_audience_is_its_own_else_read_from_its_recipient():
    assert audience_of({"audience": "supervisor", "recipient": {}}) == "supervisor"
    assert audience_of({"recipient": {"role": "supervisor"}}) == "supervisor"
    assert audience_of({"recipient": {"phone": PHONE}}) == "resident"
    assert audience_of({}) == "resident"


def test_a_desk_relays_only_in_its_communities_and_an_unknown_community_is_none_of_them():
    may_relay(desk(), "a" * 24, "缤泰社区")
    may_relay(desk(), "a" * 24, None)  # unscoped: may hear the 404
    may_relay(desk(["缤泰社区"]), "a" * 24, "缤泰社區")  # folded: the same community
    refusals = []
    for community in ("和平里社区", None, ""):
        with pytest.raises(Forbidden) as refused:
            may_relay(desk(["缤泰社区"]), "a" * 24, community)
        refusals.append(refused.value.message)
    assert len(set(refusals)) == 1  # elsewhere or nowhere: the same words
    with pytest.raises(Forbidden):
        may_relay(verify_token(issue_token("power", "p-1", SECRET), SECRET), "a" * 24, "缤泰社区")
    with pytest.raises(Unauthorized):
        may_relay(Principal(Role.anonymous), "a" * 24, "缤泰社区")
    assert not in_communities(desk(["缤泰社区"]), "")


def test_a_relays_payload_and_target_are_validated_naming_the_field():
    assert validate(MarkRelayed, {}).note is None
    assert validate(MarkRelayed, {"note": "  已电话告知 "}).note == "已电话告知"
    for payload, field in (({"note": "x" * 301}, "note"), ({"text": "x"}, "text"),
                           ({"note": 7}, "note")):
        with pytest.raises(InvalidPayload) as refused:
            validate(MarkRelayed, payload)
        assert [f["field"] for f in refused.value.errors] == [field]
    for bad in ("nope", 7, None, "A" * 24, "a" * 25):
        with pytest.raises(InvalidPayload) as refused:
            validate(RelayTarget, {"notification_id": bad})
        assert [f["field"] for f in refused.value.errors] == ["notification_id"]


def test_a_relay_is_recorded_with_who_and_when_and_its_note_says_the_kind_only():
    record = {"notification_id": "a" * 24, "status": "sent", "channel": "desk"}
    relay = {"relayed_by": "d-1", "relayed_at": "2026-12-07T03:00:00Z", "note": "已告知"}
    assert relayed_record(record, relay) == {**record, "relayed_by": "d-1",
                                             "relayed_at": "2026-12-07T03:00:00Z",
                                             "relay_note": "已告知"}
    assert relayed_record(relayed_record(record, relay), relay) == relayed_record(record, relay)
    assert relay_note("received", "resident") == "社区已转告居民：received"
    assert relay_note("escalation_notice", "supervisor") == "社区已转告督办：escalation_notice"


def test_the_cards_dial_the_phone_and_redact_links():
    t = views.Translator("zh")
    [card] = views.relay_cards([relay_item(entry("a" * 24, "WH-20261207-0001",
                                                 recipient={"name": NAME,
                                                            "phone": "138 1234-5678"}))],
                               "Asia/Shanghai", t)
    assert card["tel"] == "tel:13812345678" and card["resident"]["phone"] == "138 1234-5678"
    [message] = card["messages"]
    assert message["kind_label"] == "受理" and message["at"].startswith("2026-12-07 10:00")
    assert card["also"] == []
    [office] = views.relay_cards([relay_item(entry("b" * 24, "WH-20261207-0001",
                                                   recipient={"role": "supervisor"}))],
                                 "Asia/Shanghai", t)
    assert office["tel"] is None


def test_one_card_for_each_person_and_issue_so_one_call_relays_all_they_have_waiting():
    """A resident whose issue moved on before the desk called had received, dispatched,
    reported in... waiting: a card (and a call) for each."""
    t = views.Translator("zh")
    resident = {"name": NAME, "phone": PHONE}
    neighbour = {"name": "李四", "phone": "13933334444"}
    items = [relay_item(entry(nid * 24, issue, recipient=whom)) for nid, issue, whom in (
        ("a", "WH-20261207-0001", resident), ("b", "WH-20261207-0002", resident),
        ("c", "WH-20261207-0001", resident), ("d", "WH-20261207-0001", neighbour),
        ("e", "WH-20261207-0001", {"role": "supervisor", "name": "街道办"}),
        ("f", "WH-20261207-0001", resident))]
    cards = views.relay_cards(items, "Asia/Shanghai", t)
    assert [(c["notification_id"][0], c["also"]) for c in cards] == [
        ("a", ["c" * 24, "f" * 24]), ("b", []), ("d", []), ("e", [])]
    many = [relay_item(entry(f"{n:024x}", "WH-20261207-0001", recipient=resident))
            for n in range(views.RELAY_CARD_MESSAGES + 1)]
    full, rest = views.relay_cards(many, "Asia/Shanghai", t)
    assert len(full["messages"]) == views.RELAY_CARD_MESSAGES and len(rest["messages"]) == 1


def test_a_relay_read_is_audited_naming_every_issue_shown_and_no_phone():
    guard = Guard()
    guard._who_verified = {}
    audit = _Audit(desk(), "relay.read", None)
    audit.issue_ids = ("WH-20261207-0001", PHONE, "WH-20261207-0002")
    fields = guard._entry_fields(audit, 200)
    assert fields["issue_ids"] == f"WH-20261207-0001,{NOT_AN_ISSUE_ID},WH-20261207-0002"
    assert "issue_id" not in fields and PHONE not in str(fields)


@pytest.mark.parametrize("lang, said", [("zh", "最早的 200 条"), ("en", "oldest 200")])
def test_a_full_relay_list_says_more_wait_behind_it(lang, said):
    """notify lists the oldest ``RELAY_LIST_LIMIT`` messages waiting: the page says more
    wait behind a full list, and nothing of the kind below it."""
    from tests.unit.test_web_views import rendered

    full = rendered("relay.html", lang, cards=[], more=200)
    assert 'id="relay-more"' in full and said in full
    assert 'id="relay-more"' not in rendered("relay.html", lang, cards=[], more=0)


# ------------------------------------------- a rating request nobody can answer any more

WIRE, NEIGHBOUR = "WH-20261205-0001", "WH-20261205-0002"  # dispatched_wire's, a neighbour
T0 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
RESOLVED_AT = T0 + timedelta(hours=1)
WINDOW = timedelta(days=7)


def awaiting_wire() -> tuple[dict, dict]:
    """(the flying wire, its neighbour's report merged into it), as intake shows them: the
    wire resolved by power, its rating window open; built by the code that builds them."""
    from tests.unit.test_web_views import dispatched_wire

    wire = dispatched_wire(T0)
    neighbour = receive(NEIGHBOUR, "trace-neighbour-0002", "楼道口电线耷拉下来了", None,
                        wire.location, Channel.desk, Language.zh, T0 + timedelta(minutes=5))
    neighbour, _ = merging.fold(neighbour, wire, "flying_wire", IssueReceived(
        trace_id=neighbour.trace_id, issue_id=NEIGHBOUR, occurred_at=neighbour.received_at,
        description=neighbour.description, location=neighbour.location,
        channel=neighbour.channel, language=neighbour.language, has_contact=True),
        T0 + timedelta(minutes=5))
    wire = merging.join(wire, NEIGHBOUR, T0 + timedelta(minutes=5))
    wire = acknowledge(wire, "power", "p-1", T0 + timedelta(minutes=10))
    wire = resolve(wire, "power", "p-1", "已剪除飞线", RESOLVED_AT)
    wire = feedback.await_rating(wire, IssueResolved(
        trace_id=wire.trace_id, issue_id=WIRE, occurred_at=RESOLVED_AT, agencies=["power"]),
        WINDOW)
    return wire.model_dump(mode="json"), neighbour.model_dump(mode="json")


def rated(wire: dict, reporter: str, rating: Rating, at: datetime) -> dict:
    """``wire`` once ``reporter`` answered (the desk's call-back, as on the issue page)."""
    from services.routing.rules import load_rules

    record = IssueRecord.model_validate(wire)
    new, _ = feedback.rate(record, FeedbackGrant(reporter_issue_id=reporter, issue_id=WIRE,
                                                 cycle=record.reopen_count),
                           rating, None, load_rules(), at,
                           on_behalf=feedback.OnBehalf("d-1", RatingMethod.phone))
    return new.model_dump(mode="json")


def request_to(issue_id: str, at: datetime = RESOLVED_AT + timedelta(seconds=1)) -> dict:
    return relay_item(entry(f"{issue_id[-1]:0>24}", issue_id, kind=RATING_REQUEST,
                            at=utc_moment(at)))


def test_a_rating_request_is_to_ask_while_its_issue_waits_for_that_residents_rating():
    wire, neighbour = awaiting_wire()
    now = RESOLVED_AT + timedelta(hours=1)
    assert rating_request_moot(request_to(WIRE), wire, wire, now) is None
    assert rating_request_moot(request_to(NEIGHBOUR), neighbour, wire, now) is None
    # Any other message is to say, whatever the issue's state.
    for kind in ("received", "resolved", "closed"):
        assert rating_request_moot(relay_item(entry("a" * 24, WIRE, kind=kind)),
                                   wire, wire, now) is None


def test_once_the_neighbours_answer_closed_it_neither_request_can_be_answered():
    """The tester's case: both reporters were asked through the desk; the desk recorded the
    neighbour's 满意 (its call-back), the issue closed, and the first reporter's card still
    said to ask whether they were satisfied, an answer nothing could record any more."""
    wire, neighbour = awaiting_wire()
    answered = RESOLVED_AT + timedelta(hours=2)
    closed = rated(wire, NEIGHBOUR, Rating.satisfied, answered)
    assert closed["status"] == "closed"
    now = answered + timedelta(minutes=1)
    assert rating_request_moot(request_to(WIRE), closed, closed, now) == MOOT_CLOSED
    assert rating_request_moot(request_to(NEIGHBOUR), neighbour, closed, now) == MOOT_RATED


def test_a_request_of_an_earlier_cycle_is_moot_and_the_next_one_is_asked():
    """The first reporter's 不满意 reopened it: the neighbour's request of that cycle is no
    longer answerable (they are asked again once it is resolved again), nor theirs."""
    wire, neighbour = awaiting_wire()
    answered = RESOLVED_AT + timedelta(hours=2)
    reopened = rated(wire, WIRE, Rating.unsatisfied, answered)
    now = answered + timedelta(minutes=1)
    assert rating_request_moot(request_to(NEIGHBOUR), neighbour, reopened, now) == MOOT_REOPENED
    assert rating_request_moot(request_to(WIRE), reopened, reopened, now) == MOOT_RATED
    # Resolved again: the new requests are to ask; the first cycle's stay moot.
    again_at = answered + timedelta(hours=1)
    record = resolve(acknowledge(IssueRecord.model_validate(reopened), "power", "p-1",
                                 again_at), "power", "p-1", "重新架线", again_at)
    record = feedback.await_rating(record, IssueResolved(
        trace_id=record.trace_id, issue_id=WIRE, occurred_at=again_at, agencies=["power"]),
        WINDOW)
    second = record.model_dump(mode="json")
    later = again_at + timedelta(seconds=1)
    assert rating_request_moot(request_to(NEIGHBOUR, later), neighbour, second, now) is None
    assert rating_request_moot(request_to(WIRE, later), second, second, now) is None
    assert rating_request_moot(request_to(NEIGHBOUR), neighbour, second, now) == MOOT_REOPENED


def test_a_request_past_its_window_or_of_a_report_split_off_cannot_be_answered():
    wire, neighbour = awaiting_wire()
    past = datetime.fromisoformat(wire["feedback_due"]) + timedelta(seconds=1)
    assert rating_request_moot(request_to(WIRE), wire, wire, past) == MOOT_WINDOW
    split = {**neighbour, "status": "dispatched", "merged_into": None}
    assert rating_request_moot(request_to(NEIGHBOUR), split, split,
                               RESOLVED_AT) == MOOT_NOT_AWAITED


def test_a_moot_request_stays_on_its_card_said_to_need_no_asking_and_leaves_with_it():
    t = views.Translator("zh")
    wire = "WH-20261207-0001"
    items = [relay_item(entry(nid * 24, wire, kind=kind)) for nid, kind in (
        ("a", "resolved"), ("b", RATING_REQUEST), ("c", "closed"))]
    [card] = views.relay_cards(items, "Asia/Shanghai", t, {"b" * 24: MOOT_CLOSED})
    assert [m["notification_id"][0] for m in card["messages"]] == ["a", "b", "c"]
    assert [m["moot"] for m in card["messages"]] == [None, MOOT_CLOSED, None]
    assert card["messages"][1]["moot_label"] == "不必再问：问题已结案，评价已无法登记。"
    assert (card["also"], card["moot"], card["to_say"]) == (["b" * 24, "c" * 24], ["b" * 24], 2)
    page = rendered("relay.html", "zh", cards=[card], more=0)
    moot = page[page.index(f'id="m-{"b" * 24}"'):]
    assert moot.startswith(f'id="m-{"b" * 24}" class="relay-moot" data-moot="closed"')
    assert "不必再问：问题已结案" in moot[:moot.index("</li>")]
    assert f'<input type="hidden" name="moot" value="{"b" * 24}">' in page
    assert "已转告（2 条）" in page  # the two to say
    # A card of moot requests only: nothing to say, the button takes it off the list.
    [alone] = views.relay_cards(items[1:2], "Asia/Shanghai", t, {"b" * 24: MOOT_RATED})
    assert alone["to_say"] == 0
    assert "移出待转告（无需再转告）" in rendered("relay.html", "zh", cards=[alone], more=0)
    assert "Take off the list" in rendered("relay.html", "en", cards=[alone], more=0)


def test_a_moot_requests_relay_says_it_was_not_asked_with_the_desks_note_after():
    assert moot_relay_note(None) == MOOT_NOTE == "评价邀请未问：评价已无法登记"
    assert moot_relay_note("已电话告知结案") == f"{MOOT_NOTE}；已电话告知结案"
    assert len(moot_relay_note("很" * 300)) == 300
    assert validate(MarkRelayed, {"note": moot_relay_note("很" * 300)}).note.startswith(MOOT_NOTE)

"""The desk's hand on routing, pure: first route, triage, the reroute plan, corrections."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.routing import desk
from services.routing.classifier import Classification
from services.routing.corrections import (
    Correction,
    corpus_lang,
    correction_from,
    latest_per_issue,
    load_corrections,
    to_corpus,
    write_jsonl,
)
from services.routing.domain import route_issue
from services.routing.rules import load_rules
from shared.contracts import (
    AssignmentCreated,
    AssignmentStatus,
    AssignmentWithdrawn,
    Channel,
    IssueDispatched,
    IssueRerouted,
    IssueStatus,
    Language,
    Location,
    Priority,
    Reroute,
    RouteCorrected,
    TriageDecision,
)
from shared.errors import InvalidPayload, InvalidTransition
from shared.issue import IssueRecord, acknowledge, pending_deadlines, receive, resolve

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def received(text: str) -> IssueRecord:
    return receive("WH-20261205-0001", "trace-0123456789abcdef", text, None,
                   Location(community="缤泰社区", address="丽德花园9号楼"), Channel.app,
                   Language.zh, T0)


def routed(text: str, rules, classification: Classification | None = None) -> IssueRecord:
    decision = route_issue(text, None, rules, T0, classification)
    return desk.first_route(received(text), decision, rules, T0)


UNSURE = Classification(top=[("street_light", 0.45), ("rubbish", 0.4), ("noise", 0.1),
                             ("tree", 0.05)], confident=False, model_version="m1")


# ----------------------------------------------------------------- first route


def test_a_sure_report_is_dispatched_with_how_sure_routing_was(rules):
    record = routed("楼上漏水，天花板滴水", rules)
    assert record.status is IssueStatus.dispatched and record.triage is None
    assert record.routing.model_version == "keywords" and record.routing.confidence == 1.0


def test_an_unsure_report_is_held_with_three_suggestions(rules):
    record = routed("东门那边又不行了", rules, UNSURE)
    assert record.status is IssueStatus.needs_triage
    assert record.assignments == [] and pending_deadlines(record) == []
    assert [(s.category, s.probability) for s in record.triage.suggestions] == [
        ("street_light", 0.45), ("rubbish", 0.4), ("noise", 0.1)]
    assert record.triage.held and record.triage.pending
    assert "street_light 45%" in record.timeline[-1].detail


def test_an_urgent_unsure_report_is_dispatched_and_flagged(rules):
    urgent = Classification(top=[("gas_leak", 0.5), ("sewage_blocked", 0.4)], urgent=True,
                            urgent_reasons=["rotten eggs"], confident=False, model_version="m1")
    record = routed("一股臭鸡蛋味", rules, urgent)
    assert record.status is IssueStatus.dispatched and record.priority is Priority.urgent
    assert record.triage.pending and not record.triage.held and record.triage.urgent
    assert record.timeline[-1].step == "flagged_for_triage"


# ---------------------------------------------------------------------- triage


def test_the_desk_routes_a_held_report_and_it_is_dispatched_normally(rules):
    record = routed("东门那边又不行了", rules, UNSURE)
    body = TriageDecision(category="rubbish", reason="垃圾")
    change = desk.triage(record, body, body.reason, "desk-wang", rules, LATER)
    new = change.record
    assert new.status is IssueStatus.dispatched and new.category == "rubbish"
    assert [(a.agency, a.role.value) for a in new.assignments] == [
        ("sanitation", "lead"), ("property_manager", "support")]
    assert new.assignments[0].acknowledge_by == LATER + timedelta(days=3)
    assert (new.triage.pending, new.triage.decided_by, new.triage.decided_category) == (
        False, "desk-wang", "rubbish")
    # who, what and why, on the issue's own timeline (not only in the corrections)
    triaged = next(e for e in new.timeline if e.step == "triaged")
    assert triaged.detail == "desk-wang chose category rubbish; why: 垃圾"
    event, corrected = change.events
    assert isinstance(event, IssueDispatched) and len(event.assignments) == 2
    assert isinstance(corrected, RouteCorrected)
    assert (corrected.source, corrected.category, corrected.previous_category,
            corrected.support, corrected.staff_id) == (
        "triage", "rubbish", None, ["property_manager"], "desk-wang")
    assert change.route.support == ["property_manager"] and not change.route.urgent


def test_the_desk_can_override_lead_and_support_and_say_urgent(rules):
    record = routed("东门那边又不行了", rules, UNSURE)
    body = TriageDecision(category="tree", lead="urban_management", support=["landscaping"],
                          urgent=True)
    new = desk.triage(record, body, None, "desk-wang", rules, LATER).record
    assert [(a.agency, a.role.value) for a in new.assignments] == [
        ("urban_management", "lead"), ("landscaping", "support")]
    assert new.priority is Priority.urgent


@pytest.mark.parametrize(("body", "field"), [
    ({"category": "dragons"}, "category"),
    ({"category": "tree", "lead": "police"}, "lead"),
    ({"category": "tree", "support": ["power", "fire_brigade"]}, "support"),
    ({"category": "tree", "lead": "power", "support": ["power"]}, "support"),
])
def test_a_bad_choice_names_the_field(rules, body, field):
    record = routed("东门那边又不行了", rules, UNSURE)
    with pytest.raises(InvalidPayload) as refused:
        desk.triage(record, TriageDecision(**body), None, "desk-wang", rules, LATER)
    assert refused.value.errors[0]["field"] == field


def test_a_support_naming_the_rules_lead_is_refused_as_when_the_lead_is_named(rules):
    """pipe_leak's rule leads with water: ``support: ["water"]`` with no lead kept water
    leading and dropped the rule's property manager in silence, where the same route with
    ``lead: "water"`` was a 422 naming support."""
    record = routed("东门那边又不行了", rules, UNSURE)
    with pytest.raises(InvalidPayload) as refused:
        desk.triage(record, TriageDecision(category="pipe_leak", support=["water"]), None,
                    "desk-wang", rules, LATER)
    [error] = refused.value.errors
    assert error["field"] == "support"
    assert error["message"] == ("'water' is the lead (category pipe_leak's rule); it cannot "
                                "also support: name another lead, or leave it out")

def test_only_a_report_waiting_for_triage_can_be_triaged(rules):
    record = routed("楼上漏水", rules)
    with pytest.raises(InvalidTransition, match="not waiting for triage"):
        desk.triage(record, TriageDecision(category="pipe_leak"), None, "d", rules, LATER)


# --------------------------------------------------------------------- reroute


def reroute(record, rules, **body):
    body.setdefault("reason", "the desk looked again")
    return desk.reroute(record, Reroute(**body), body["reason"], "desk-wang", rules, LATER)


def test_the_reroute_plan_withdraws_who_leaves_adds_who_joins_keeps_who_stays(rules):
    record = routed("楼上漏水，天花板滴水", rules)  # water leads, property manager supports
    record = acknowledge(record, "property_manager", "pm-1", T0 + timedelta(minutes=5))
    change = reroute(record, rules, category="sewage_blocked", support=["property_manager"])
    new = change.record
    assert [(a.agency, a.role.value, a.status.value) for a in new.assignments] == [
        ("drainage", "lead", "assigned"), ("property_manager", "support", "acknowledged")]
    assert [(a.agency, a.status, a.withdrawn_by) for a in new.withdrawn] == [
        ("water", AssignmentStatus.withdrawn, "desk-wang")]
    # the one who stays keeps its 报到 and deadlines; the newcomer gets fresh ones
    kept = new.assignment_for("property_manager")
    assert kept.acknowledged_by == "pm-1" and kept.resolve_by == record.assignments[1].resolve_by
    assert new.assignment_for("drainage").acknowledge_by == LATER + timedelta(days=3)
    assert new.status is IssueStatus.in_progress
    assert {d.agency for d in pending_deadlines(new)} == {"drainage", "property_manager"}
    rerouted, withdrawn, created, corrected = change.events
    assert (corrected.source, corrected.previous_category, corrected.category) == (
        "reroute", "pipe_leak", "sewage_blocked")
    assert isinstance(rerouted, IssueRerouted) and rerouted.previous_category == "pipe_leak"
    assert [a.agency for a in rerouted.assignments] == ["drainage", "property_manager"]
    assert rerouted.agencies_changed  # the resident is told
    assert isinstance(withdrawn, AssignmentWithdrawn) and withdrawn.agency.agency == "water"
    assert isinstance(created, AssignmentCreated) and created.assignment.agency == "drainage"
    assert withdrawn.causation_id == created.causation_id == rerouted.event_id
    step = new.timeline[-1]
    assert step.step == "rerouted" and "desk-wang" in step.detail
    assert "pipe_leak -> sewage_blocked" in step.detail and "the desk looked again" in step.detail


def test_a_role_can_change_without_anyone_leaving(rules):
    record = routed("楼上漏水，天花板滴水", rules)
    change = reroute(record, rules, category="pipe_leak", lead="property_manager",
                     support=["water"])
    assert [(a.agency, a.role.value) for a in change.record.assignments] == [
        ("property_manager", "lead"), ("water", "support")]
    assert change.record.withdrawn == []
    assert change.events[0].agencies_changed  # another agency leads: the resident is told


def test_the_same_route_again_changes_nothing(rules):
    record = routed("楼上漏水，天花板滴水", rules)
    assert reroute(record, rules, category="pipe_leak") is None


def test_a_reroute_settles_a_triage_flag(rules):
    urgent = Classification(top=[("gas_leak", 0.5), ("sewage_blocked", 0.4)], urgent=True,
                            confident=False, model_version="m1")
    record = routed("一股臭鸡蛋味", rules, urgent)
    change = reroute(record, rules, category="sewage_blocked", urgent=False)
    assert change.record.triage.pending is False
    assert change.record.priority is Priority.normal


def test_agreeing_with_a_flagged_route_keeps_it_urgent_and_tells_no_one(rules):
    urgent = Classification(top=[("gas_leak", 0.5)], urgent=True, confident=False,
                            model_version="m1")
    record = routed("一股臭鸡蛋味", rules, urgent)
    change = desk.triage(record, TriageDecision(category="gas_leak"), None, "d", rules, LATER)
    (corrected,) = change.events  # nobody is told again; the decision is still an example
    assert isinstance(corrected, RouteCorrected) and corrected.urgent
    assert change.record.priority is Priority.urgent
    assert change.record.triage.pending is False


WET_WIRING = Classification(top=[("pipe_leak", 0.97)], urgent=True, confident=True,
                            urgent_reasons=["water on wiring"], model_version="m1")


def test_a_reroute_that_says_nothing_of_urgency_keeps_an_urgent_issue_urgent(rules):
    # The model called a leak onto a socket urgent; the desk only adds the power company.
    record = routed("楼上漏水，水顺着墙流，插座都湿了", rules, WET_WIRING)
    assert record.priority is Priority.urgent
    change = reroute(record, rules, category="pipe_leak",
                     support=["property_manager", "power"])
    new = change.record
    assert new.priority is Priority.urgent
    # the newcomer gets urgent deadlines (2 hours to report in), not a leak's 24 hours
    assert new.assignment_for("power").acknowledge_by == LATER + timedelta(hours=2)
    assert change.events[-1].urgent  # kept as an urgent example for retraining
    assert "priority" not in new.timeline[-1].detail


def test_only_the_desks_own_word_lowers_an_urgent_issue_and_the_timeline_says_so(rules):
    record = routed("楼上漏水，水顺着墙流，插座都湿了", rules, WET_WIRING)
    change = reroute(record, rules, category="pipe_leak", urgent=False,
                     reason="插座没有通电")
    assert change.record.priority is Priority.high and not change.events[-1].urgent
    assert "priority urgent -> high" in change.record.timeline[-1].detail


def test_a_change_of_urgency_alone_withdraws_nobody(rules):
    # The power company was added by an earlier reroute; the desk's page then lowers the
    # urgency only (its form has no support field): the same category, no agency named.
    record = routed("楼上漏水，水顺着墙流，插座都湿了", rules, WET_WIRING)
    record = reroute(record, rules, category="pipe_leak",
                     support=["property_manager", "power"]).record
    change = reroute(record, rules, category="pipe_leak", urgent=False, reason="已断电")
    assert [a.agency for a in change.record.assignments] == [
        "water", "property_manager", "power"]
    assert change.record.withdrawn == [] and change.record.priority is Priority.high
    assert change.events[-1].support == ["property_manager", "power"]
    # the same agencies in the same roles: nothing for the resident to hear of
    assert isinstance(change.events[0], IssueRerouted) and not change.events[0].agencies_changed
    # Another category with no agency named still takes that category's rule.
    moved = reroute(record, rules, category="sewage_blocked").record
    assert [a.agency for a in moved.assignments] == ["drainage"]


def test_the_timeline_names_an_agency_whose_role_changed(rules):
    record = routed("楼上漏水，天花板滴水", rules)
    change = reroute(record, rules, category="pipe_leak", lead="property_manager",
                     support=["water"])
    detail = change.record.timeline[-1].detail
    assert "now: 物业公司 (lead), 自来水公司 (support)" in detail


def test_agreeing_with_a_flagged_route_keeps_the_supports_other_rules_brought_in(rules):
    # Two rules matched, the urgent one at 50%: dispatched to the power company, with the
    # stairwell light's property manager in support, and flagged.
    text = "楼道灯不亮，灯旁边还有一根飞线垂下来"
    decision = route_issue(text, None, rules, T0, threshold=0.6)
    record = desk.first_route(received(text), decision, rules, T0)
    assert record.triage.pending and record.category == "flying_wire"
    assert [a.agency for a in record.assignments] == ["power", "property_manager"]
    change = desk.triage(record, TriageDecision(category="flying_wire"), None, "d", rules,
                         LATER)
    assert [a.agency for a in change.record.assignments] == ["power", "property_manager"]
    assert change.record.withdrawn == [] and not change.record.triage.pending
    (corrected,) = change.events  # nobody withdrawn, nobody told
    assert corrected.support == ["property_manager"] and corrected.urgent


def test_only_a_dispatched_or_in_progress_issue_can_be_rerouted(rules):
    held = routed("东门那边又不行了", rules, UNSURE)
    with pytest.raises(InvalidTransition, match="needs_triage"):
        reroute(held, rules, category="tree")


def test_a_reroute_that_leaves_nothing_to_do_is_refused(rules):
    record = routed("楼上漏水，天花板滴水", rules)
    for agency in ("water", "property_manager"):
        record = acknowledge(record, agency, "s", T0)
    record = resolve(record, "property_manager", "s", "修好了", T0)
    with pytest.raises(InvalidTransition, match="leaves no part to do") as refused:
        reroute(record, rules, category="lift_broken")
    # the desk has no way to resolve an issue: the message used to tell it to
    assert "resolve the issue instead" not in str(refused.value)
    assert "keep one with work left" in str(refused.value)


# ------------------------------------------------------------------ corrections


def correction(issue_id="WH-20261205-0001", category="rubbish", at=T0, **extra):
    fields = dict(correction_id=f"{issue_id}:{int(at.timestamp() * 1000)}", issue_id=issue_id,
                  source="reroute", text="垃圾成堆没人清", language=Language.zh,
                  channel=Channel.app, category=category, urgent=False,
                  support=["property_manager"], by="desk-wang", at=at)
    return Correction(**{**fields, **extra})


def test_a_correction_is_a_corpus_example():
    example = to_corpus(correction())
    assert example.model_dump() == {
        "id": "c20261205_0001", "text": "垃圾成堆没人清", "lang": "zh", "category": "rubbish",
        "urgent": False, "support": ["property_manager"], "channel": "miniprogram"}


@pytest.mark.parametrize(("text", "language", "lang"), [
    ("楼道灯不亮", Language.zh, "zh"),
    ("這裡的電燈壞了，樓道很黑", Language.zh, "zh-Hant"),
    ("The lift has broken down again", Language.en, "en-GB"),
    ("The elevator is out and the trash is piling up", Language.en, "en-US"),
    ("楼下的 street light 不亮了, please check", Language.zh, "mixed"),
    # as corpus/README.md labels its own reports: one traditional character is zh-Hant,
    # one English word in Chinese is mixed; capitals (a brand, a plate) are not English
    ("電梯壞了", Language.zh, "zh-Hant"),
    ("水龍頭打開沒水，整棟樓都沒有", Language.zh, "zh-Hant"),
    ("整栋楼blackout了，电梯停了", Language.zh, "mixed"),
    ("电梯 broken 了", Language.en, "mixed"),
    ("一辆黑色SUV停了两天了", Language.zh, "zh"),
])
def test_the_corpus_language_is_guessed_from_the_text(text, language, lang):
    assert corpus_lang(text, language) == lang


def test_the_export_keeps_the_desks_latest_word_per_report(tmp_path):
    first = correction(category="noise")
    second = correction(category="rubbish", at=T0 + timedelta(minutes=5))
    other = correction(issue_id="WH-20261205-0002", category="tree")
    latest = latest_per_issue([second, other, first])
    assert [(c.issue_id, c.category) for c in latest] == [
        ("WH-20261205-0001", "rubbish"), ("WH-20261205-0002", "tree")]
    out = io.StringIO()
    assert write_jsonl([to_corpus(c) for c in latest], out) == 2
    (tmp_path / "2026-12-05.jsonl").write_text(out.getvalue(), encoding="utf-8")
    folded = load_corrections(tmp_path)
    assert [e["category"] for e in folded] == ["rubbish", "tree"]
    assert json.loads(out.getvalue().splitlines()[0])["text"] == "垃圾成堆没人清"


def test_a_malformed_corrections_file_names_its_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": "c1", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_corrections(tmp_path)


def test_a_route_corrected_event_becomes_a_masked_correction(rules):
    record = routed("楼上漏水，电话13812345678找孙大爷", rules)
    change = reroute(record, rules, category="sewage_blocked")
    event = change.events[-1]
    kept = correction_from(event, change.record, {"name": "孙大爷", "phone": "13812345678"})
    assert kept.correction_id == f"{record.issue_id}:{event.event_id}"
    assert "13812345678" not in kept.text and "孙大爷" not in kept.text
    assert (kept.category, kept.previous_category, kept.by, kept.at) == (
        "sewage_blocked", "pipe_leak", "desk-wang", LATER)


def test_a_reason_that_quotes_the_resident_is_kept_masked(rules):
    """`whistle routing corrections` lists the reason: the desk may have quoted the
    resident there, and the listing is an operator's."""
    record = routed("楼上漏水，天花板滴水", rules)
    change = reroute(record, rules, category="sewage_blocked",
                     reason="孙大爷 13812345678 说是下水道堵了")
    kept = correction_from(change.events[-1], change.record,
                           {"name": "孙大爷", "phone": "13812345678"})
    assert kept.reason == "孙** 138****5678 说是下水道堵了"


def test_an_agency_rerouted_away_lists_the_part_recently_withdrawn_and_not_its_work(rules):
    """Issue 15: what ``?status=withdrawn`` shows the agency a reroute took a part from
    (services.agency.domain), and for how long; given back, the part is work again."""
    from services.agency.domain import RECENTLY_WITHDRAWN, recently_withdrawn, withdrawn_view

    record = routed("楼上漏水，天花板滴水", rules)  # water leads, property manager supports
    record.location.address = "丽德花园9号楼2单元501"
    away = reroute(record, rules, category="sewage_blocked", support=["property_manager"]).record
    assert recently_withdrawn(away, "water", LATER)
    assert recently_withdrawn(away, "water", LATER + RECENTLY_WITHDRAWN)
    assert not recently_withdrawn(away, "water", LATER + RECENTLY_WITHDRAWN + timedelta(seconds=1))
    assert not recently_withdrawn(away, "drainage", LATER)  # its work, not withdrawn
    view = withdrawn_view(away, "water")
    assert (view["status"], view["withdrawn_by"], view["now_with"]) == (
        "withdrawn", "desk-wang", ["drainage", "property_manager"])
    assert view["location"]["address"] == "丽德花园9号楼"
    assert not {"acknowledge_by", "resolve_by", "overdue", "table"} & view.keys()
    back = desk.reroute(away, Reroute(category="pipe_leak", reason="还是水管漏"), "还是水管漏",
                        "desk-li", rules, LATER + timedelta(hours=1)).record
    assert not recently_withdrawn(back, "water", LATER + timedelta(hours=1))
    assert recently_withdrawn(back, "drainage", LATER + timedelta(hours=1))
    with pytest.raises(ValueError):
        withdrawn_view(back, "water")


def test_the_withdrawn_list_joins_hot_and_archived_issues_latest_first_for_30_days(rules):
    """``?status=withdrawn`` reads the hot issues and the archived ones: each once (Redis's
    record when an issue being archived is in both), the withdrawals of the last
    RECENTLY_WITHDRAWN_DAYS only, the latest first."""
    from services.agency.domain import (
        RECENTLY_WITHDRAWN,
        recently_withdrawn_records,
        withdrawn_since,
    )

    def taken_from_water(issue_id: str, at: datetime) -> IssueRecord:
        record = routed("楼上漏水，天花板滴水", rules)  # water leads
        record.issue_id = issue_id
        return desk.reroute(record, Reroute(category="sewage_blocked", reason="下水道"),
                            "下水道", "desk-wang", rules, at).record

    now = LATER + RECENTLY_WITHDRAWN + timedelta(minutes=30)
    too_old = taken_from_water("WH-20261205-0001", LATER)
    archived = taken_from_water("WH-20261205-0002", LATER + timedelta(hours=1))
    hot = taken_from_water("WH-20261205-0003", LATER + timedelta(hours=2))
    # Being archived: in both stores, given back meanwhile in Redis (work again).
    both = taken_from_water("WH-20261205-0004", LATER + timedelta(hours=3))
    given_back = desk.reroute(both, Reroute(category="pipe_leak", reason="还是水管漏"),
                              "还是水管漏", "desk-li", rules, now).record
    listed = recently_withdrawn_records([hot, given_back], [too_old, archived, both],
                                        "water", now)
    assert [r.issue_id for r in listed] == ["WH-20261205-0003", "WH-20261205-0002"]
    assert recently_withdrawn_records([], [archived, hot], "water", now) == [hot, archived]
    assert recently_withdrawn_records([hot], [hot], "water", now) == [hot]  # once
    assert recently_withdrawn_records([hot], [archived], "drainage", now) == []  # its work
    assert withdrawn_since(now) == now - RECENTLY_WITHDRAWN


def test_a_change_of_lead_alone_withdraws_nobody(rules):
    # The desk's page has no support field: on a cracked balcony leaking onto wiring it
    # names the property manager as lead, same category. The power company, there for the
    # wet wiring (another rule's), and the others stay, the old lead now in support;
    # before, the rule's supports replaced them and the power company was withdrawn.
    record = routed("阳台开裂了，下雨往楼下渗水，电线都泡水了", rules)
    assert [(a.agency, a.role.value) for a in record.assignments] == [
        ("housing_admin", "lead"), ("property_manager", "support"), ("power", "support"),
        ("water", "support")]
    change = reroute(record, rules, category="structural_crack", lead="property_manager",
                     reason="商品房，物业先牵头")
    assert [(a.agency, a.role.value) for a in change.record.assignments] == [
        ("property_manager", "lead"), ("housing_admin", "support"), ("power", "support"),
        ("water", "support")]
    assert change.record.withdrawn == []
    assert change.events[0].agencies_changed  # another agency leads: the resident is told
    assert change.events[-1].support == ["housing_admin", "power", "water"]

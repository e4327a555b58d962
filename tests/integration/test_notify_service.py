"""notify on the real broker and Redis: merged reporters, supervisors, table sessions.

Issues are stored directly and events published raw to ``whistle.events``, so only
the notify service runs: what it tells whom is all that is under test here.
"""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from kombu import Producer

from services.notify.service import NotifyService
from services.routing import merging
from shared import config as cfg
from shared.auth import issue_resident_token
from shared.contracts import (
    AgencyRef,
    AssignmentSummary,
    Channel,
    DeadlineKind,
    EscalationLevel,
    Event,
    IssueDispatched,
    IssueEscalated,
    IssueMerged,
    IssueReceived,
    IssueReopened,
    IssueResolved,
    IssueStatus,
    Language,
    Location,
    Priority,
    Role,
    Sector,
    TableConvened,
)
from shared.issue import receive
from shared.topology import EVENTS_EXCHANGE
from tests.integration import test_delivery
from tests.support.auth import DESK

# The store and broker fixtures (and the poll) are test_delivery's: same setup, one place.
amqp, store, wait_until = test_delivery.amqp, test_delivery.store, test_delivery.wait_until

pytestmark = pytest.mark.integration

PLACE = Location(community="缤泰社区", address="丽德花园3号楼")
PRIMARY, NEIGHBOUR = "WH-20261121-0201", "WH-20261121-0202"
WATER = AgencyRef(agency="water", agency_name="自来水公司", agency_name_en="Water company")
HOUSING = AgencyRef(agency="housing", agency_name="区房管局", agency_name_en="Housing bureau")


@pytest.fixture
def notify(runner_factory, whistle_config, store, amqp):
    """A burst pipe reported twice: the neighbour's report (in English) merged into the first."""
    now = datetime.now(UTC)
    for issue_id, language, contact, fields in [
        (PRIMARY, Language.zh, {"name": "孙建国", "phone": "13812345678"},
         {"reporters": [NEIGHBOUR]}),
        (NEIGHBOUR, Language.en, {"phone": "13700001111"},
         {"status": IssueStatus.merged, "merged_into": PRIMARY}),
    ]:
        record = receive(issue_id, f"trace-{PRIMARY}", "楼上水管爆了，水一直往下流", None, PLACE,
                         Channel.hotline, language, now).model_copy(update=fields)
        store.create(record, contact, "test", {})
    runner_factory(whistle_config, NotifyService).start()
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"


def publish(amqp, *events: Event):
    producer = Producer(amqp.channel())
    for event in events:
        producer.publish(event.model_dump(mode="json"), exchange=EVENTS_EXCHANGE,
                         routing_key=event.event_type, delivery_mode=2)


def about(event_cls, issue_id=PRIMARY, **fields):
    return event_cls(trace_id=f"trace-{PRIMARY}", issue_id=issue_id, **fields)


def received(issue_id, language):
    return about(IssueReceived, issue_id, description="楼上水管爆了", location=PLACE,
                 channel="hotline", language=language, has_contact=True)


def told(base, issue_id) -> list[dict]:
    """What GET /issues/{id}/notifications shows the desk."""
    response = requests.get(f"{base}/issues/{issue_id}/notifications", headers=DESK, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["notifications"]


def kinds(base, issue_id) -> list[str]:
    return [n["kind"] for n in told(base, issue_id)]


def settle():
    time.sleep(1.0)  # let every redelivery be handled


def test_every_reporter_gets_the_primarys_updates_under_their_own_report(notify, amqp, store):
    summary = AssignmentSummary(agency="water", agency_name="自来水公司",
                                agency_name_en="Water company", sector=Sector.utilities,
                                role=Role.lead, acknowledge_by=datetime.now(UTC),
                                resolve_by=datetime.now(UTC) + timedelta(hours=24))
    dispatched = about(IssueDispatched, category="water_leak", priority=Priority.high,
                       assignments=[summary])
    merged = about(IssueMerged, NEIGHBOUR, into_issue_id=PRIMARY, category="water_leak")
    publish(amqp, received(PRIMARY, "zh"), received(NEIGHBOUR, "en"), merged,
            dispatched, dispatched)

    wait_until(lambda: kinds(notify, NEIGHBOUR) == ["received", "merged", "dispatched"])
    wait_until(lambda: kinds(notify, PRIMARY) == ["received", "dispatched"])
    settle()

    own, neighbour = told(notify, PRIMARY), told(notify, NEIGHBOUR)
    assert [n["kind"] for n in own] == ["received", "dispatched"]
    assert [n["kind"] for n in neighbour] == ["received", "merged", "dispatched"]
    assert all(n["status"] == "sent" and n["audience"] == "resident" for n in own + neighbour)
    # One agency has it all: no "由自来水公司牵头" and no "各单位" about a single one; the
    # record is still a "dispatched" message.
    assert "已派给自来水公司办理，须在" in own[1]["text"] and "牵头" not in own[1]["text"]
    assert own[1]["recipient"] == {"name": "孙**", "phone": "138****5678", "email": None}
    merged_text = neighbour[1]["text"]
    assert f"Your report {NEIGHBOUR}" in merged_text and f"report {PRIMARY}" in merged_text
    assert neighbour[2]["issue_id"] == NEIGHBOUR and neighbour[2]["language"] == "en"
    assert f"Your report {PRIMARY} has been sent to Water company, which must report in by" \
        in neighbour[2]["text"]
    assert neighbour[2]["recipient"] == {"name": None, "phone": "137****1111", "email": None}
    outbox = [json.loads(e) for e in store.redis.lrange(store.keys.desk_outbox, 0, -1)]
    assert len(outbox) == 5 == len({e["notification_id"] for e in outbox})
    assert {e["recipient"]["phone"] for e in outbox if e["issue_id"] == NEIGHBOUR} == \
        {"13700001111"}
    details = [s.detail for s in store.get_with_notes(PRIMARY).timeline if s.step == "resident_notified"]
    assert sorted(details) == ["dispatched message sent via desk",
                               f"dispatched message sent via desk to the reporter of {NEIGHBOUR}",
                               "received message sent via desk"]


def test_escalation_tells_the_supervisor_once_and_every_reporter_once(notify, amqp, store):
    escalated = about(IssueEscalated, agency=WATER, deadline=DeadlineKind.acknowledge,
                      missed=datetime(2026, 11, 21, 2, 0, tzinfo=UTC),
                      level=EscalationLevel.street, supervisor="缤泰街道办事处",
                      supervisor_en="Bintai Street Office")
    publish(amqp, escalated, escalated)

    wait_until(lambda: len(told(notify, PRIMARY)) == 2 and kinds(notify, NEIGHBOUR))
    settle()

    own = told(notify, PRIMARY)
    [notice] = [n for n in own if n["audience"] == "supervisor"]
    assert notice["kind"] == "escalation_notice" and notice["language"] == "zh"
    assert notice["recipient"] == {"role": "supervisor", "level": "street",
                                   "name": "缤泰街道办事处"}
    assert "自来水公司未在 2026-11-21 10:00 前报到，现提级到街道一级督办" in notice["text"]
    [resident] = [n for n in own if n["audience"] == "resident"]
    assert resident["kind"] == "escalated"
    assert "提级到街道一级，由缤泰街道办事处督办" in resident["text"]
    [neighbour] = told(notify, NEIGHBOUR)
    assert (neighbour["kind"], neighbour["audience"]) == ("escalated", "resident")
    assert "escalated to the street office: Bintai Street Office" in neighbour["text"]
    steps = [s.step for s in store.get_with_notes(PRIMARY).timeline if s.service == "notify"]
    assert sorted(steps) == ["resident_notified", "resident_notified", "supervisor_notified"]
    assert any(s.detail.startswith("supervisor (street) notified")
               for s in store.get_with_notes(PRIMARY).timeline)


def test_a_reminder_at_the_top_level_goes_to_the_district_alone(notify, amqp, store):
    """Another miss by an agency already whistled up to the district: the district is
    reminded, and the residents, told once that the district follows it up, are not told
    "escalated to the district" again at every window."""
    escalated = about(IssueEscalated, agency=WATER, deadline=DeadlineKind.acknowledge,
                      missed=datetime(2026, 11, 21, 6, 0, tzinfo=UTC),
                      level=EscalationLevel.district, supervisor="区政府",
                      supervisor_en="District government", reminder=True)
    publish(amqp, escalated, escalated)

    [notice] = wait_until(lambda: told(notify, PRIMARY))
    settle()
    assert told(notify, PRIMARY) == [notice]
    assert (notice["kind"], notice["audience"]) == ("escalation_notice", "supervisor")
    assert notice["recipient"] == {"role": "supervisor", "level": "district", "name": "区政府"}
    assert "自来水公司未在 2026-11-21 14:00 前报到" in notice["text"]
    # Nothing went up: the district is reminded, not told it was escalated to again.
    assert "再次超时，仍由区一级督办" in notice["text"]
    assert "提级" not in notice["text"]
    assert told(notify, NEIGHBOUR) == []
    steps = [s.step for s in store.get_with_notes(PRIMARY).timeline if s.service == "notify"]
    assert steps == ["supervisor_notified"]


def test_a_part_whistled_to_the_street_while_the_issue_is_at_the_district(notify, amqp,
                                                                          store):
    """Another agency's misses took the issue to the district; the water company's first
    miss goes to the street office, which must whistle it. The street office is told so;
    the residents, told once that the district follows it up, read "提级到街道一级" as if
    the issue went down: they are told the street presses the agency and the issue stays
    with the district."""
    escalated = about(IssueEscalated, agency=WATER, deadline=DeadlineKind.acknowledge,
                      missed=datetime(2026, 11, 21, 2, 0, tzinfo=UTC),
                      level=EscalationLevel.street, supervisor="缤泰街道办事处",
                      supervisor_en="Bintai Street Office",
                      issue_level=EscalationLevel.district)
    publish(amqp, escalated)

    wait_until(lambda: len(told(notify, PRIMARY)) == 2 and kinds(notify, NEIGHBOUR))
    settle()
    own = told(notify, PRIMARY)
    [notice] = [n for n in own if n["audience"] == "supervisor"]
    assert notice["recipient"]["level"] == "street"
    assert "现提级到街道一级督办" in notice["text"]
    [resident] = [n for n in own if n["audience"] == "resident"]
    assert resident["kind"] == "escalated"
    assert "现由街道一级的缤泰街道办事处督促其办理；您的问题仍由区一级督办" in resident["text"]
    assert "提级" not in resident["text"]
    [neighbour] = told(notify, NEIGHBOUR)
    assert "the street office (Bintai Street Office) is now pressing it to act. Your report " \
        "stays with the district" in neighbour["text"]
    assert "escalated" not in neighbour["text"]


def test_a_reopen_tells_its_supervisor_once_under_redelivery(notify, amqp, store):
    """不满意 reopened the issue to the street office: the street office is told once
    however often the event comes, beside every reporter's "reopened"; a reopen from a
    routing that did not name the supervisor yet reaches the level's office all the same."""
    summary = AssignmentSummary(agency="water", agency_name="自来水公司",
                                agency_name_en="Water company", sector=Sector.utilities,
                                role=Role.lead,
                                acknowledge_by=datetime(2026, 11, 22, 2, 0, tzinfo=UTC),
                                resolve_by=datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
    reopened = about(IssueReopened, reason="还在漏，找了孙建国 13812345678", cycle=1,
                     level=EscalationLevel.street, assignments=[summary],
                     supervisor="缤泰街道办事处", supervisor_en="Bintai Street Office")
    publish(amqp, reopened, reopened)
    wait_until(lambda: len(told(notify, PRIMARY)) == 2 and kinds(notify, NEIGHBOUR))
    settle()

    own = told(notify, PRIMARY)
    [notice] = [n for n in own if n["audience"] == "supervisor"]
    assert (notice["kind"], notice["language"]) == ("reopen_notice", "zh")
    assert notice["recipient"] == {"role": "supervisor", "level": "street",
                                   "name": "缤泰街道办事处"}
    assert notice["text"] == (
        f"【吹哨报到·督办提醒】缤泰社区的问题（编号 {PRIMARY}）：居民对处理结果不满意，已重新交办"
        "自来水公司，须在 2026-11-22 10:00 前重新报到，现已提级到街道一级督办，请跟进协调处理。")
    assert [n["kind"] for n in own if n["audience"] == "resident"] == ["reopened"]
    assert kinds(notify, NEIGHBOUR) == ["reopened"]
    steps = [s.step for s in store.get_with_notes(PRIMARY).timeline if s.service == "notify"]
    assert sorted(steps) == ["resident_notified", "resident_notified", "supervisor_notified"]

    # An earlier routing's event: no supervisor named; the district's office by its level.
    earlier = about(IssueReopened, reason="", cycle=2, level=EscalationLevel.district,
                    assignments=[summary]).model_dump(
        mode="json", exclude={"supervisor", "supervisor_en", "supervisor_language"})
    Producer(amqp.channel()).publish(earlier, exchange=EVENTS_EXCHANGE,
                                     routing_key=IssueReopened.event_type, delivery_mode=2)
    wait_until(lambda: len([n for n in told(notify, PRIMARY)
                            if n["audience"] == "supervisor"]) == 2)
    [_, district] = [n for n in told(notify, PRIMARY) if n["audience"] == "supervisor"]
    assert district["recipient"] == {"role": "supervisor", "level": "district", "name": "区"}
    assert "现已提级到区一级督办" in district["text"]


def test_table_session_names_place_and_agencies_to_every_reporter(notify, amqp):
    convened = about(TableConvened, meets_at=datetime(2026, 11, 22, 6, 0, tzinfo=UTC),
                     place="红色议事厅", agencies=[WATER, HOUSING])
    publish(amqp, convened, convened)

    [own] = wait_until(lambda: told(notify, PRIMARY))
    [neighbour] = wait_until(lambda: told(notify, NEIGHBOUR))
    settle()

    assert len(told(notify, PRIMARY)) == len(told(notify, NEIGHBOUR)) == 1
    assert "2026-11-22 14:00 在红色议事厅召集自来水公司、区房管局" in own["text"]
    assert "called Water company, Housing bureau to meet at 红色议事厅" in neighbour["text"]


def test_events_about_a_merged_report_itself_are_not_sent(notify, amqp):
    convened = about(TableConvened, NEIGHBOUR, meets_at=datetime.now(UTC), place="红色议事厅",
                     agencies=[WATER])
    publish(amqp, convened, received(NEIGHBOUR, "en"))

    wait_until(lambda: kinds(notify, NEIGHBOUR) == ["received"])
    settle()

    assert kinds(notify, NEIGHBOUR) == ["received"]
    assert kinds(notify, PRIMARY) == []


def test_the_desks_copy_of_a_rating_request_asks_whether_they_are_satisfied(notify, amqp,
                                                                             store,
                                                                             whistle_config):
    """Residents whose messages the desk relays (no webhook here: the desk outbox) hear
    them read out: their copy of "received" and of the rating request carries no link,
    and the rating request asks whether they are satisfied, for the desk to record."""
    summary = AssignmentSummary(agency="water", agency_name="自来水公司",
                                agency_name_en="Water company", sector=Sector.utilities,
                                role=Role.lead, acknowledge_by=datetime.now(UTC),
                                resolve_by=datetime.now(UTC) + timedelta(hours=24))
    publish(amqp, received(PRIMARY, "zh"), received(NEIGHBOUR, "en"),
            about(IssueMerged, NEIGHBOUR, into_issue_id=PRIMARY, category="water_leak"),
            about(IssueDispatched, category="water_leak", priority=Priority.high,
                  assignments=[summary]),
            about(IssueResolved, agencies=["water"]))
    wait_until(lambda: "rating_request" in kinds(notify, PRIMARY)
               and "rating_request" in kinds(notify, NEIGHBOUR), timeout=20)
    outbox = [json.loads(e) for e in store.redis.lrange(store.keys.desk_outbox, 0, -1)]
    relayed = {(e["issue_id"], e["kind"]): e["text"] for e in outbox}
    records = {(n["issue_id"], n["kind"]): n["text"]
               for issue_id in (PRIMARY, NEIGHBOUR) for n in told(notify, issue_id)}
    for key in ((PRIMARY, "rating_request"), (NEIGHBOUR, "rating_request"),
                (PRIMARY, "received"), (NEIGHBOUR, "received")):
        assert "http" not in relayed[key] and "token" not in relayed[key], relayed[key]
        assert records[key] == relayed[key]  # the desk's page shows what it relays
    assert "满意吗" in relayed[PRIMARY, "rating_request"]
    assert "代居民评价" in relayed[PRIMARY, "rating_request"]
    assert "Are you satisfied" in relayed[NEIGHBOUR, "rating_request"]
    assert f"report {PRIMARY}" in relayed[NEIGHBOUR, "rating_request"]
    # The resident's own list of messages showed them the desk's copy, which ends with
    # an instruction to the desk's staff: they see what was said to them, without it.
    for issue_id, instruction, theirs in ((PRIMARY, "代居民评价", "满意吗"),
                                          (NEIGHBOUR, "Record the resident's rating",
                                           "Are you satisfied")):
        token = issue_resident_token(issue_id, whistle_config[cfg.SECRET])
        mine = requests.get(f"{notify}/issues/{issue_id}/notifications",
                            headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert mine.status_code == 200, mine.text
        assert mine.headers["Cache-Control"] == "no-store"  # read with their link
        [asked] = [n["text"] for n in mine.json()["notifications"]
                   if n["kind"] == "rating_request"]
        assert instruction not in asked and "社区：" not in asked and "Desk:" not in asked
        assert theirs in asked


def test_a_report_split_from_a_wrong_merge_is_not_received_twice(notify, amqp, store):
    """The desk split the neighbour's report from a wrong merge: routing takes it in again
    (``IssueReceived`` with ``allow_merge=False``) and dispatches it. The resident was told
    "received, we will dispatch it soon" a second time, after "dispatched to ...": they
    had their progress link from the first; the dispatch says what happens now."""
    merged = about(IssueMerged, NEIGHBOUR, into_issue_id=PRIMARY, category="water_leak")
    publish(amqp, received(NEIGHBOUR, "en"), merged)
    wait_until(lambda: kinds(notify, NEIGHBOUR) == ["received", "merged"])
    split: list = []

    def unfold(record):
        new, again = merging.unfold(record, True, datetime.now(UTC))
        split.append(again)
        return new.model_copy(update={"status": IssueStatus.dispatched}), {}

    store.apply(NEIGHBOUR, None, unfold, "routing")
    summary = AssignmentSummary(agency="water", agency_name="自来水公司",
                                agency_name_en="Water company", sector=Sector.utilities,
                                role=Role.lead, acknowledge_by=datetime.now(UTC),
                                resolve_by=datetime.now(UTC) + timedelta(hours=24))
    publish(amqp, split[0], about(IssueDispatched, NEIGHBOUR, category="water_leak",
                                  priority=Priority.normal, assignments=[summary]))
    wait_until(lambda: "dispatched" in kinds(notify, NEIGHBOUR))
    settle()

    assert kinds(notify, NEIGHBOUR) == ["received", "merged", "dispatched"]


def test_a_rating_request_at_the_district_does_not_promise_an_escalation(notify, amqp, store):
    """An issue the district follows already: "not satisfied" sends it back to the
    agencies and nothing goes higher (routing.feedback.reopen), so neither the resident's
    request nor the desk's copy may promise "提级督办" / "is escalated"."""
    now = datetime.now(UTC)
    zh_id, en_id = "WH-20261121-0211", "WH-20261121-0212"
    for issue_id, language in ((zh_id, Language.zh), (en_id, Language.en)):
        record = receive(issue_id, f"trace-{issue_id}", "电梯坏了一个星期", None, PLACE,
                         Channel.hotline, language, now).model_copy(
            update={"escalation_level": EscalationLevel.district})
        store.create(record, {"phone": "13812345678"}, "test", {})
    publish(amqp, about(IssueResolved, zh_id, agencies=["water"]),
            about(IssueResolved, en_id, agencies=["water"]))

    wait_until(lambda: "rating_request" in kinds(notify, zh_id)
               and "rating_request" in kinds(notify, en_id), timeout=20)
    [zh] = [n["text"] for n in told(notify, zh_id) if n["kind"] == "rating_request"]
    [en] = [n["text"] for n in told(notify, en_id) if n["kind"] == "rating_request"]
    assert "不满意的，我们会重新交办，仍由区督办" in zh and "提级" not in zh
    assert "the district keeps following it up" in en and "escalated" not in en

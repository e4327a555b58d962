"""The desk's hand on routing, on the real broker and Redis: triage, reroute, corrections."""

from __future__ import annotations

import json

import pytest
import requests
from click.testing import CliRunner

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.corrections import load_corrections
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_token
from tests.support.auth import DESK
from tests.support.waiting import wait_for
from whistle.cli import cli

pytestmark = pytest.mark.integration

PLACE = {"community": "缤泰社区", "address": "丽德花园9号楼"}


@pytest.fixture
def base(runner_factory, whistle_config):
    # Keywords classify (no model here); below 60% the desk triages: a report that
    # names two problems equally is "not sure".
    whistle_config[cfg.TRIAGE_THRESHOLD] = "0.6"
    whistle_config[cfg.ROUTING_MODEL] = "keywords"  # what these reports match is known
    runner_factory(whistle_config, IntakeService, RoutingService, AgencyService,
                   NotifyService).start()
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"


def auth(config, agency, staff="s-1"):
    return {"Authorization": f"Bearer {issue_token(agency, staff, config[cfg.SECRET])}"}


def submit(base, description, **extra):
    response = requests.post(f"{base}/issues", headers=DESK, timeout=5, json={
        "description": description, "location": PLACE,
        "contact": {"name": "孙大爷", "phone": "13812345678"}, **extra})
    assert response.status_code == 201, response.text
    return response.json()["issue_id"]


def issue(base, issue_id):
    return requests.get(f"{base}/issues/{issue_id}", headers=DESK, timeout=5).json()


def settled(base, issue_id, status):
    return wait_for(lambda: issue(base, issue_id), lambda i: i["status"] == status)


def told(base, issue_id, kind):
    history = requests.get(f"{base}/issues/{issue_id}/notifications", headers=DESK, timeout=5).json()
    return [n for n in history["notifications"] if n["kind"] == kind]


def workspace(base, config, agency):
    answer = requests.get(f"{base}/agencies/{agency}/assignments",
                          headers=auth(config, agency), timeout=5).json()
    return [a["issue_id"] for a in answer["assignments"]]


def events(base, issue_id, event_type):
    journal = requests.get(f"{base}/issues/{issue_id}/events", headers=DESK, timeout=5).json()["events"]
    return [e for e in journal if e["event_type"] == event_type]


def export(config, tmp_path, monkeypatch):
    monkeypatch.setenv(cfg.REDIS_URL, config[cfg.REDIS_URL])
    monkeypatch.setenv(cfg.KEY_PREFIX, config[cfg.KEY_PREFIX])
    path = tmp_path / "corrections" / "2026-12-05.jsonl"
    result = CliRunner().invoke(cli, ["routing", "corrections", "--export", str(path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_an_unsure_report_waits_in_triage_and_the_desk_routes_it(
        base, whistle_config, tmp_path, monkeypatch):
    issue_id = submit(base, "东门的路灯不亮好几天了，旁边垃圾成堆没人清")
    held = settled(base, issue_id, "needs_triage")
    assert held["assignments"] == [] and held["triage"]["pending"] is True
    assert [s["category"] for s in held["triage"]["suggestions"]] == ["street_light", "rubbish"]
    assert "needs_triage" in [e["step"] for e in held["timeline"]]

    queue = requests.get(f"{base}/issues", headers=DESK, params={"status": "needs_triage"}, timeout=5).json()
    (listed,) = [i for i in queue["issues"] if i["issue_id"] == issue_id]
    assert listed["triage"]["held"] is True
    assert [s["category"] for s in listed["triage"]["suggestions"]] == ["street_light", "rubbish"]
    flagged = requests.get(f"{base}/issues", headers=DESK, params={"triage": "true"}, timeout=5).json()
    assert issue_id in [i["issue_id"] for i in flagged["issues"]]

    # Only the desk decides; an agency cannot, nor can anyone without a token.
    url = f"{base}/issues/{issue_id}/triage"
    choice = {"category": "rubbish", "reason": "垃圾是主要问题，路灯另报"}
    assert requests.post(url, json=choice, headers=auth(whistle_config, "sanitation"),
                         timeout=5).status_code == 403
    assert requests.post(url, json=choice, timeout=5).status_code == 401
    assert requests.post(url, json={"category": "dragons"},
                         headers=auth(whistle_config, "desk"), timeout=5).status_code == 422

    routed = requests.post(url, json=choice, headers=auth(whistle_config, "desk", "desk-wang"),
                           timeout=5)
    assert routed.status_code == 200, routed.text
    assert routed.json()["status"] == "dispatched"
    assert "contact" not in routed.json()
    assert [(a["agency"], a["role"]) for a in routed.json()["assignments"]] == [
        ("sanitation", "lead"), ("property_manager", "support")]
    # dispatched normally: the agencies get their 派单, the resident hears once
    wait_for(lambda: workspace(base, whistle_config, "sanitation"), lambda ids: issue_id in ids)
    wait_for(lambda: told(base, issue_id, "dispatched"), lambda sent: len(sent) == 1)
    after = issue(base, issue_id)
    assert after["triage"]["pending"] is False and after["triage"]["decided_by"] == "desk-wang"
    assert after["routing"]["category_source"] == "desk"
    queue = requests.get(f"{base}/issues", headers=DESK, params={"triage": "true"}, timeout=5).json()
    assert issue_id not in [i["issue_id"] for i in queue["issues"]]
    # Decided once: again is a conflict, not a second dispatch.
    again = requests.post(url, json=choice, headers=auth(whistle_config, "desk"), timeout=5)
    assert again.status_code == 409
    assert len(events(base, issue_id, "issue.dispatched")) == 1

    # Kept from route.corrected, committed with the decision: shortly in the export.
    (example,) = wait_for(lambda: [e for e in export(whistle_config, tmp_path, monkeypatch)
                                   if e["text"].startswith("东门的路灯")], len)
    assert example == {"id": "c" + issue_id[3:].replace("-", "_"), "lang": "zh",
                       "text": "东门的路灯不亮好几天了，旁边垃圾成堆没人清",
                       "category": "rubbish", "urgent": False,
                       "support": ["property_manager"], "channel": "desk"}
    assert load_corrections(tmp_path / "corrections") == [example]


def test_a_reroute_withdraws_one_agency_adds_another_and_tells_the_resident_once(
        base, whistle_config, tmp_path, monkeypatch):
    issue_id = submit(base, "楼上漏水，卫生间地漏往上冒水，13812345678 孙大爷家")
    first = settled(base, issue_id, "dispatched")
    assert [(a["agency"], a["role"]) for a in first["assignments"]] == [
        ("water", "lead"), ("property_manager", "support")]
    wait_for(lambda: workspace(base, whistle_config, "water"), lambda ids: issue_id in ids)
    wait_for(lambda: told(base, issue_id, "dispatched"), lambda sent: len(sent) == 1)
    # the property manager has already reported in: it keeps its 报到
    assert requests.post(f"{base}/agencies/property_manager/assignments/{issue_id}/acknowledge",
                         headers=auth(whistle_config, "property_manager"), timeout=5).ok

    url = f"{base}/issues/{issue_id}/reroute"
    change = {"category": "sewage_blocked", "support": ["property_manager"],
              "reason": "是下水道返水，不是水管漏", "request_id": "reroute-0001"}
    assert requests.post(url, json=change, headers=auth(whistle_config, "water"),
                         timeout=5).status_code == 403
    missing_reason = {k: v for k, v in change.items() if k != "reason"}
    refused = requests.post(url, json=missing_reason, headers=auth(whistle_config, "desk"),
                            timeout=5)
    assert refused.status_code == 422 and "reason" in refused.text

    desk = auth(whistle_config, "desk", "desk-wang")
    answer = requests.post(url, json=change, headers=desk, timeout=5)
    assert answer.status_code == 200, answer.text
    rerouted = answer.json()
    assert rerouted["category"] == "sewage_blocked" and rerouted["status"] == "in_progress"
    assert [(a["agency"], a["role"], a["status"]) for a in rerouted["assignments"]] == [
        ("drainage", "lead", "assigned"), ("property_manager", "support", "acknowledged")]
    assert [(a["agency"], a["status"], a["withdrawn_by"]) for a in rerouted["withdrawn"]] == [
        ("water", "withdrawn", "desk-wang")]

    # Redelivered (same request id) or repeated (same route): nothing more happens.
    assert requests.post(url, json=change, headers=desk, timeout=5).status_code == 200
    assert requests.post(url, json={**change, "request_id": "reroute-0002"}, headers=desk,
                         timeout=5).status_code == 200

    # The water utility's workspace drops it, the drainage company's gains it.
    wait_for(lambda: workspace(base, whistle_config, "drainage"), lambda ids: issue_id in ids)
    assert issue_id not in workspace(base, whistle_config, "water")
    gone = requests.post(f"{base}/agencies/water/assignments/{issue_id}/acknowledge",
                         headers=auth(whistle_config, "water"), timeout=5)
    assert gone.status_code == 403
    # ... though it may still read the issue it had a part in ("has or had")
    had = requests.get(f"{base}/issues/{issue_id}", headers=auth(whistle_config, "water"),
                       timeout=5)
    assert had.status_code == 200, had.text
    assert [a["agency"] for a in had.json()["withdrawn"]] == ["water"]

    # Told once; the timeline says who changed what and why; each agency was told.
    wait_for(lambda: told(base, issue_id, "rerouted"), lambda sent: len(sent) == 1)
    (message,) = told(base, issue_id, "rerouted")
    assert "排水公司" in message["text"] and "物业公司" in message["text"]
    timeline = wait_for(lambda: issue(base, issue_id)["timeline"], lambda steps: {
        "assignment_withdrawn", "rerouted"} <= {e["step"] for e in steps} and sum(
            e["step"] == "assignment_delivered" and e["agency"] == "drainage" for e in steps))
    (step,) = [e for e in timeline if e["step"] == "rerouted"]
    assert "desk-wang" in step["detail"] and "pipe_leak -> sewage_blocked" in step["detail"]
    assert "是下水道返水" in step["detail"] and "withdrawn: 自来水公司" in step["detail"]
    assert [e["agency"] for e in timeline if e["step"] == "assignment_withdrawn"] == ["water"]
    assert len(events(base, issue_id, "issue.rerouted")) == 1
    assert [e["agency"]["agency"] for e in events(base, issue_id, "assignment.withdrawn")] == [
        "water"]
    assert [e["assignment"]["agency"] for e in events(base, issue_id, "assignment.created")] == [
        "drainage"]

    # Kept as a labelled example, the resident's phone and name masked.
    (example,) = wait_for(lambda: [e for e in export(whistle_config, tmp_path, monkeypatch)
                                   if e["category"] == "sewage_blocked"], len)
    assert example["support"] == ["property_manager"] and example["urgent"] is False
    assert "13812345678" not in example["text"] and "孙大爷" not in example["text"]
    assert example["text"].startswith("楼上漏水，卫生间地漏往上冒水")

    # A change of urgency alone keeps the agencies, and the resident hears nothing of it
    # ("passed to the right agencies: 排水公司 now leads" again would misstate it).
    acks = len(told(base, issue_id, "acknowledged"))
    raised = requests.post(url, json={"category": "sewage_blocked", "urgent": True,
                                      "reason": "污水已经漫进屋里"}, headers=desk, timeout=5)
    assert raised.status_code == 200 and raised.json()["priority"] == "urgent", raised.text
    assert requests.post(f"{base}/agencies/drainage/assignments/{issue_id}/acknowledge",
                         headers=auth(whistle_config, "drainage"), timeout=5).ok
    # notify takes events in publishing order: this 报到's message comes after the reroute's
    wait_for(lambda: told(base, issue_id, "acknowledged"), lambda sent: len(sent) == acks + 1)
    assert len(told(base, issue_id, "rerouted")) == 1
    assert len(events(base, issue_id, "issue.rerouted")) == 2


def test_a_reroute_seats_the_agency_it_adds_at_the_table_and_unseats_the_one_it_drops(
        base, whistle_config):
    """The leak's table sits (the water utility has checked in); the desk reroutes it to
    the drainage company. The drainage company is at the table at once, as an invitation
    seats an agency: its workspace shows the table, it checks in and is given a task, the
    journal has the table announced again with everyone at it, and the resident is told
    who sits at it. The water utility leaves it, check-in and all. Redelivered, nothing
    more happens."""
    from datetime import UTC, datetime, timedelta

    issue_id = submit(base, "楼上漏水，卫生间地漏往上冒水",
                      location={**PLACE, "address": "丽德花园9号楼3单元301"})
    settled(base, issue_id, "dispatched")
    desk = auth(whistle_config, "desk", "desk-wang")
    table = f"{base}/issues/{issue_id}/table"
    meets_at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    assert requests.post(table, headers=desk, timeout=5, json={
        "meets_at": meets_at, "place": "红色议事厅"}).status_code == 201
    assert requests.post(f"{table}/check-in", headers=auth(whistle_config, "water"),
                         timeout=5).status_code == 200
    wait_for(lambda: told(base, issue_id, "table_convened"), lambda sent: len(sent) == 1)

    change = {"category": "sewage_blocked", "support": ["property_manager"],
              "reason": "是下水道返水，不是水管漏", "request_id": "reroute-table-1"}
    answer = requests.post(f"{base}/issues/{issue_id}/reroute", json=change, headers=desk,
                           timeout=5)
    assert answer.status_code == 200, answer.text
    seated = answer.json()["table"]
    assert seated["invited"] == ["property_manager", "drainage"]
    assert seated["checked_in"] == {}

    def drainage_card():
        answer = requests.get(f"{base}/agencies/drainage/assignments",
                              headers=auth(whistle_config, "drainage"), timeout=5).json()
        return [a for a in answer["assignments"] if a["issue_id"] == issue_id]

    (card,) = wait_for(drainage_card, len)
    assert card["table"]["place"] == "红色议事厅" and card["table"]["checked_in"] is False
    assert requests.post(f"{table}/check-in", headers=auth(whistle_config, "drainage"),
                         timeout=5).status_code == 200
    due = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    tasked = requests.post(f"{table}/tasks", headers=desk, timeout=5, json={
        "agency": "drainage", "description": "疏通主管道", "due": due})
    assert tasked.status_code == 201, tasked.text
    assert requests.post(f"{table}/check-in", headers=auth(whistle_config, "water"),
                         timeout=5).status_code == 403

    # Redelivered: the same request applies once; nobody is seated or told twice.
    assert requests.post(f"{base}/issues/{issue_id}/reroute", json=change, headers=desk,
                         timeout=5).status_code == 200
    wait_for(lambda: told(base, issue_id, "table_convened"), lambda sent: len(sent) == 2)
    wait_for(lambda: told(base, issue_id, "rerouted"), lambda sent: len(sent) == 1)
    (_, again) = told(base, issue_id, "table_convened")
    assert "排水公司" in again["text"] and "自来水公司" not in again["text"]
    announced = events(base, issue_id, "table.convened")
    assert [[a["agency"] for a in e["agencies"]] for e in announced] == [
        ["water", "property_manager"], ["property_manager", "drainage"]]
    (rerouted,) = events(base, issue_id, "issue.rerouted")
    assert announced[1]["causation_id"] == rerouted["event_id"]
    timeline = issue(base, issue_id)["timeline"]
    assert [(e["agency"], e["detail"]) for e in timeline if e["step"] == "table_invited"] == [
        ("drainage", "排水公司 invited by the desk")]


def withdrawn_list(base, headers, agency, **params):
    return requests.get(f"{base}/agencies/{agency}/assignments", headers=headers, timeout=5,
                        params={"status": "withdrawn", **params})


def test_an_agency_finds_what_a_reroute_took_from_it_in_its_withdrawn_list_only(
        base, whistle_config):
    """Issue 15: an agency still reads an issue it had a part in; ``?status=withdrawn``
    is where it finds one a reroute took away (read-only, apart from its work); another
    agency cannot list it, the desk can, and given back it is work again."""
    issue_id = submit(base, "楼上漏水，卫生间地漏往上冒水",
                      location={**PLACE, "address": "丽德花园9号楼2单元501"})
    settled(base, issue_id, "dispatched")
    water, drainage = auth(whistle_config, "water"), auth(whistle_config, "drainage")
    assert withdrawn_list(base, water, "water").json()["assignments"] == []
    url = f"{base}/issues/{issue_id}/reroute"
    desk = auth(whistle_config, "desk", "desk-wang")
    assert requests.post(url, headers=desk, timeout=5, json={
        "category": "sewage_blocked", "support": ["property_manager"],
        "reason": "是下水道返水，不是水管漏"}).status_code == 200

    listed = withdrawn_list(base, water, "water")
    assert listed.status_code == 200, listed.text
    assert listed.json()["status"] == "withdrawn" and listed.json()["next_cursor"] is None
    (part,) = listed.json()["assignments"]
    assert (part["issue_id"], part["status"], part["withdrawn_by"], part["now_with"]) == (
        issue_id, "withdrawn", "desk-wang", ["drainage", "property_manager"])
    assert part["location"]["address"] == "丽德花园9号楼"  # no longer goes there: no flat
    assert "resolve_by" not in part and "acknowledge_by" not in part  # nothing is due
    assert "漏水" in part["description"] and "13812345678" not in listed.text
    assert issue_id not in workspace(base, whistle_config, "water")  # not its work
    everything = requests.get(f"{base}/agencies/water/assignments", headers=water,
                              params={"status": "all"}, timeout=5).json()["assignments"]
    assert issue_id not in [a["issue_id"] for a in everything]

    # Another agency cannot list it (its own withdrawn list has nothing); the desk can.
    assert withdrawn_list(base, drainage, "water").status_code == 403
    assert withdrawn_list(base, drainage, "drainage").json()["assignments"] == []
    by_desk = withdrawn_list(base, DESK, "water").json()["assignments"]
    assert [a["issue_id"] for a in by_desk] == [issue_id]
    elsewhere = {"Authorization": "Bearer " + issue_token(
        "desk", "d-2", whistle_config[cfg.SECRET], communities=["和平里社区"])}
    assert withdrawn_list(base, elsewhere, "water").json()["assignments"] == []
    assert withdrawn_list(base, water, "water", cursor="x").status_code == 422

    # The same over RPC, with the same refusal of another agency.
    from nameko.standalone.rpc import ClusterRpcProxy

    from shared.errors import Forbidden

    water_token = issue_token("water", "w-1", whistle_config[cfg.SECRET])
    drainage_token = issue_token("drainage", "d-1", whistle_config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        assert [a["issue_id"] for a in rpc.agency.list_assignments(
            water_token, "water", "withdrawn")] == [issue_id]
        with pytest.raises(Forbidden):
            rpc.agency.list_assignments(drainage_token, "water", "withdrawn")

    # Given back by a later reroute, it is work again, and no longer "withdrawn".
    assert requests.post(url, headers=desk, timeout=5, json={
        "category": "pipe_leak", "reason": "还是水管漏"}).status_code == 200
    assert issue_id in workspace(base, whistle_config, "water")
    assert withdrawn_list(base, water, "water").json()["assignments"] == []
    assert [a["issue_id"] for a in withdrawn_list(base, drainage, "drainage").json()[
        "assignments"]] == [issue_id]


def test_an_urgent_unsure_report_is_dispatched_at_once_and_flagged(base, whistle_config):
    # A cable down (urgent) and a tree, equally: not sure, but it cannot wait.
    issue_id = submit(base, "楼顶的电线断了，树倒了压在上面")
    dispatched = settled(base, issue_id, "dispatched")
    assert dispatched["priority"] == "urgent"
    assert dispatched["assignments"][0]["agency"] == "power"
    assert dispatched["triage"]["pending"] is True and dispatched["triage"]["held"] is False
    queue = requests.get(f"{base}/issues", headers=DESK, params={"triage": "true"}, timeout=5).json()
    assert issue_id in [i["issue_id"] for i in queue["issues"]]

    # The desk agrees: the flag is settled, the agencies stay, nobody is told again.
    answer = requests.post(f"{base}/issues/{issue_id}/triage", timeout=5,
                           headers=auth(whistle_config, "desk", "desk-li"),
                           json={"category": "flying_wire", "support": ["landscaping"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["triage"]["pending"] is False
    assert answer.json()["priority"] == "urgent"
    assert events(base, issue_id, "issue.rerouted") == []


def test_only_the_desk_explains_and_only_in_its_communities(base, whistle_config):
    url = f"{base}/routing/explain"
    text = {"text": "没有停电，就是楼道灯不亮"}
    assert requests.post(url, json=text, timeout=5).status_code == 401
    assert requests.post(url, json=text, headers=auth(whistle_config, "power"),
                         timeout=5).status_code == 403
    explained = requests.post(url, json=text, headers=auth(whistle_config, "desk"), timeout=5)
    assert explained.status_code == 200, explained.text
    answer = explained.json()
    assert answer["category"] == "stairwell_light"
    assert answer["negated"] == [{"category": "power_cut", "keyword": "停电", "negated_by": "没有"}]
    assert answer["classifier"]["threshold"] == 0.6
    assert answer["triage"]["would_triage"] is False
    # "And as this category?" with a category the rules do not know: said, not ignored.
    unknown = requests.post(url, json={**text, "category": "stairwell_lamp"},
                            headers=auth(whistle_config, "desk"), timeout=5)
    assert unknown.status_code == 422, unknown.text
    assert [f["field"] for f in unknown.json()["error"]["fields"]] == ["category"]
    chosen = requests.post(url, json={**text, "category": "street_light"},
                           headers=auth(whistle_config, "desk"), timeout=5).json()
    assert (chosen["category"], chosen["category_source"]) == ("street_light", "given")
    # The fallback is a category the rules know: it lets routing decide, as on submission.
    fallback = requests.post(url, json={**text, "category": "general"},
                             headers=auth(whistle_config, "desk"), timeout=5)
    assert fallback.status_code == 200 and fallback.json()["category"] == "stairwell_light"

    # A desk scoped to another community cannot triage or reroute here.
    issue_id = submit(base, "楼上漏水，天花板滴水")
    settled(base, issue_id, "dispatched")
    elsewhere = {"Authorization": "Bearer " + issue_token(
        "desk", "desk-zhao", whistle_config[cfg.SECRET], communities=["和平里社区"])}
    refused = requests.post(f"{base}/issues/{issue_id}/reroute", headers=elsewhere, timeout=5,
                            json={"category": "sewage_blocked", "reason": "看错了"})
    assert refused.status_code == 403
    assert issue(base, issue_id)["category"] == "pipe_leak"


def test_the_desk_reroutes_over_rpc_too(base, whistle_config):
    from nameko.standalone.rpc import ClusterRpcProxy

    from shared.errors import Forbidden

    issue_id = submit(base, "楼道灯不亮，黑乎乎的")
    settled(base, issue_id, "dispatched")
    desk = issue_token("desk", "desk-wang", whistle_config[cfg.SECRET])
    power = issue_token("power", "p-1", whistle_config[cfg.SECRET])
    body = {"category": "street_light", "reason": "是小区路灯，不在楼里"}
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        with pytest.raises(Forbidden):
            rpc.routing.reroute_issue(power, issue_id, body)
        answer = rpc.routing.reroute_issue(desk, issue_id, body)
    assert [a["agency"] for a in answer["assignments"]] == ["urban_management"]
    assert sorted(a["agency"] for a in answer["withdrawn"]) == ["power", "property_manager"]
    wait_for(lambda: told(base, issue_id, "rerouted"), lambda sent: len(sent) == 1)


def test_the_corrections_listing_masks_a_reason_that_quotes_the_resident(
        base, whistle_config, monkeypatch):
    issue_id = submit(base, "楼上漏水，卫生间地漏往上冒水")
    settled(base, issue_id, "dispatched")
    change = {"category": "sewage_blocked", "request_id": "reroute-0003",
              "reason": "孙大爷 13812345678 说是下水道返水"}
    assert requests.post(f"{base}/issues/{issue_id}/reroute", json=change,
                         headers=auth(whistle_config, "desk"), timeout=5).ok
    monkeypatch.setenv(cfg.REDIS_URL, whistle_config[cfg.REDIS_URL])
    monkeypatch.setenv(cfg.KEY_PREFIX, whistle_config[cfg.KEY_PREFIX])

    def listing():
        result = CliRunner().invoke(cli, ["routing", "corrections"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def rows():  # the listing's own lines (the services in this process log beside it)
        return [line for line in listing().splitlines() if " UTC  " in line]

    (shown,) = wait_for(rows, lambda lines: any(issue_id in line for line in lines))
    assert shown.endswith("(孙** 138****5678 说是下水道返水)")
    assert "13812345678" not in shown and "孙大爷" not in shown


def test_a_rerouted_issue_takes_the_duplicates_of_its_new_category_not_its_old(
        base, whistle_config):
    """Rerouted from pipe_leak to heating, the issue kept the pipe_leak duplicate buckets:
    a neighbour's pipe leak at that flat merged into the heating issue (no water company
    on it), and a neighbour's heating report opened a second heating issue beside it."""
    first = submit(base, "楼上漏水，天花板一直滴水", category="pipe_leak")
    settled(base, first, "dispatched")
    rerouted = requests.post(f"{base}/issues/{first}/reroute", timeout=5,
                             headers=auth(whistle_config, "desk"),
                             json={"category": "heating", "reason": "是暖气片漏水"})
    assert rerouted.status_code == 200, rerouted.text

    heating = submit(base, "暖气片漏水了", category="heating")
    joined = wait_for(lambda: issue(base, heating), lambda i: i["status"] != "received")
    assert (joined["status"], joined["merged_into"]) == ("merged", first)
    leak = submit(base, "楼上漏水，天花板一直滴水", category="pipe_leak")
    own = wait_for(lambda: issue(base, leak), lambda i: i["status"] != "received")
    assert (own["status"], own["merged_into"]) == ("dispatched", None)
    assert issue(base, first)["reporters"] == [heating]


def test_an_issue_rerouted_before_the_table_let_go_of_withdrawn_agencies_reads_without_them(
        base, whistle_config, redis_client):
    """A release before session 24 kept a withdrawn agency invited to the table, checked
    in and all. Stored so in Redis, the issue reads without it (the desk's JSON), its
    check-in there is refused, the desk may invite it again, and the record that change
    stores no longer lists the other withdrawn agency either."""
    issue_id = submit(base, "楼上漏水，卫生间地漏往上冒水")
    settled(base, issue_id, "dispatched")
    desk = auth(whistle_config, "desk", "desk-wang")
    convened = requests.post(f"{base}/issues/{issue_id}/table", headers=desk, timeout=5, json={
        "meets_at": "2030-12-01T09:00:00+08:00", "place": "居委会", "agencies": ["power"]})
    assert convened.status_code == 201, convened.text
    assert requests.post(f"{base}/issues/{issue_id}/table/check-in",
                         headers=auth(whistle_config, "power"), timeout=5).ok
    rerouted = requests.post(f"{base}/issues/{issue_id}/reroute", headers=desk, timeout=5, json={
        "category": "pipe_leak", "lead": "water", "support": [], "reason": "只是水管"})
    assert rerouted.status_code == 200, rerouted.text
    assert {a["agency"] for a in rerouted.json()["withdrawn"]} == {"power", "property_manager"}

    # As the old release stored it: both withdrawn agencies still at the table.
    key = f"{whistle_config[cfg.KEY_PREFIX]}:issue:{issue_id}"
    stored = json.loads(redis_client.get(key))
    stored["table"]["invited"] = ["water", "property_manager", "power"]
    stored["table"]["checked_in"] = {"power": stored["table"]["convened_at"]}
    redis_client.set(key, json.dumps(stored, ensure_ascii=False))

    table = issue(base, issue_id)["table"]
    assert (table["invited"], table["checked_in"]) == (["water"], {})
    again = requests.post(f"{base}/issues/{issue_id}/table/check-in",
                          headers=auth(whistle_config, "power"), timeout=5)
    assert again.status_code == 403, again.text
    invited = requests.post(f"{base}/issues/{issue_id}/table/agencies", headers=desk,
                            timeout=5, json={"agencies": ["power"]})
    assert invited.status_code == 200, invited.text
    assert invited.json()["table"]["invited"] == ["water", "power"]
    written = json.loads(redis_client.get(key))["table"]
    assert (written["invited"], written["checked_in"]) == (["water", "power"], {})

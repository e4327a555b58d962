"""民事民评 meets 三级吹哨 on the real broker and Redis: a reopen tells the supervisor.

A resident rated a resolved issue 不满意; routing reopened it one level up and the
resident read "escalated to the street office", but the street office was never told:
no supervisor notice, nothing on the desk's relay page (待转告), while a missed deadline
tells the supervisor at once. Now a reopen that went up a level tells the supervisor at
the new level, once, in its own language; one that stayed at the district reminds it,
as another miss at the district does.
"""

from __future__ import annotations

import pytest
import requests
import yaml
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.rules import SHIPPED_RULES
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_feedback_token, issue_token
from tests.support.auth import DESK
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

NAME, PHONE, COMMENT = "孙大爷", "13812345678", "线还耷拉着，楼下李阿姨也说不安全"
FLYING_WIRE = {
    "description": "楼道口有根电线耷拉下来，不知道有没有电",
    "location": {"community": "缤泰社区", "address": "丽德花园6号楼"},
    "contact": {"name": NAME, "phone": PHONE},
}


@pytest.fixture
def base(runner_factory, whistle_config, tmp_path):
    """The whole chain, with the shipped rules but a district that reads English."""
    rules = yaml.safe_load(SHIPPED_RULES.read_text(encoding="utf-8"))
    rules["supervisors"]["district"]["language"] = "en"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    whistle_config[cfg.RULES_FILE] = str(path)
    runner_factory(whistle_config, IntakeService, RoutingService, AgencyService,
                   NotifyService).start()
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"


def issue(base, issue_id):
    return requests.get(f"{base}/issues/{issue_id}", headers=DESK, timeout=5).json()


def told(base, issue_id):
    response = requests.get(f"{base}/issues/{issue_id}/notifications", headers=DESK, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["notifications"]


def supervisors(base, issue_id):
    return [n for n in told(base, issue_id) if n["audience"] == "supervisor"]


def resolve_and_rate_unsatisfied(base, config, issue_id, cycle):
    """The power company reports in and resolves; the resident says 不满意."""
    power = {"Authorization": f"Bearer {issue_token('power', 'p-1', config[cfg.SECRET])}"}
    for step, body in (("acknowledge", None), ("resolve", {"note": "已处理"})):
        done = requests.post(f"{base}/agencies/power/assignments/{issue_id}/{step}",
                             headers=power, json=body, timeout=5)
        assert done.status_code == 200, done.text
    wait_for(lambda: issue(base, issue_id)["feedback_due"], bool)
    rated = requests.post(f"{base}/issues/{issue_id}/feedback", timeout=5, json={
        "rating": "unsatisfied", "comment": COMMENT,
        "token": issue_feedback_token(issue_id, issue_id, cycle, config[cfg.SECRET],
                                      ttl_s=3600)})
    assert rated.status_code == 200 and rated.json()["status"] == "dispatched", rated.text


def test_a_reopen_tells_the_supervisor_at_its_new_level_once(base, whistle_config):
    made = requests.post(f"{base}/issues", headers=DESK, json=FLYING_WIRE, timeout=5)
    assert made.status_code == 201, made.text
    issue_id = made.json()["issue_id"]
    wait_for(lambda: issue(base, issue_id)["status"], lambda s: s == "dispatched")

    # First 不满意: community -> street. The street office is told, in Chinese.
    resolve_and_rate_unsatisfied(base, whistle_config, issue_id, 0)
    wait_for(lambda: told(base, issue_id), lambda ns: {"reopened", "reopen_notice"}
             <= {n["kind"] for n in ns}, timeout=10)
    [street] = supervisors(base, issue_id)
    assert (street["kind"], street["language"], street["status"]) == ("reopen_notice", "zh",
                                                                    "sent")
    assert street["recipient"] == {"role": "supervisor", "level": "street", "name": "街道办事处"}
    text = street["text"]
    for needed in (issue_id, "缤泰社区", "供电公司", "居民对处理结果不满意", "已提级到街道一级督办"):
        assert needed in text, (needed, text)
    # What the escalation notice never carries, the reopen notice does not either.
    for never in (NAME, PHONE, "138", COMMENT, "李阿姨"):
        assert never not in text, (never, text)
    # The resident is told as before, in order, and only once each.
    resident = [n["kind"] for n in told(base, issue_id) if n["audience"] == "resident"]
    assert resident == ["received", "dispatched", "acknowledged", "resolved",
                        "rating_request", "reopened"]
    timeline = issue(base, issue_id)["timeline"]
    assert [e["detail"] for e in timeline if e["step"] == "supervisor_notified"] == [
        "supervisor (street) notified: reopen_notice message sent via desk"]

    # The desk passes it on: it is on the relay page's list, with its office.
    desk = issue_token("desk", "d-1", whistle_config[cfg.SECRET], communities=["缤泰社区"])
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        relays = [r for r in rpc.notify.desk_relays(desk) if r["audience"] == "supervisor"]
    assert [(r["notification_id"], r["kind"], r["office"]) for r in relays] == [
        (street["notification_id"], "reopen_notice", {"level": "street", "name": "街道办事处"})]
    assert "resident" not in relays[0]

    # Second 不满意: street -> district, which reads English.
    resolve_and_rate_unsatisfied(base, whistle_config, issue_id, 1)
    district = wait_for(lambda: supervisors(base, issue_id), lambda ns: len(ns) == 2,
                        timeout=10)[1]
    assert (district["kind"], district["language"]) == ("reopen_notice", "en")
    assert district["recipient"] == {"role": "supervisor", "level": "district",
                                     "name": "District government"}
    for needed in (issue_id, "缤泰社区", "Power company", "not satisfied",
                   "Escalated to the district"):
        assert needed in district["text"], (needed, district["text"])

    # Third 不满意: at the district already, nothing goes up; the district is reminded,
    # as at another miss there, and not told it was escalated to again.
    resolve_and_rate_unsatisfied(base, whistle_config, issue_id, 2)
    reminder = wait_for(lambda: supervisors(base, issue_id), lambda ns: len(ns) == 3,
                        timeout=10)[2]
    assert reminder["recipient"]["level"] == "district" and reminder["language"] == "en"
    assert "stays with the district" in reminder["text"]
    assert "escalated" not in reminder["text"].lower()
    resident = [n["text"] for n in told(base, issue_id) if n["kind"] == "reopened"]
    assert len(resident) == 3 and "仍由区督办" in resident[2]
    assert len(supervisors(base, issue_id)) == 3  # once each, nothing more came

"""民事民评 end to end: resolve -> rating request -> unsatisfied -> reopened and escalated
-> resolved -> satisfied -> closed, with every message and the timeline asserted."""

import json
import re

import pytest
import requests

from shared import config as cfg
from shared.auth import issue_token
from tests.e2e.test_whole_chain import poll
from tests.integration import test_notify_channels
from tests.support.auth import DESK

gateway = test_notify_channels.gateway  # the resident's phone: a real webhook receiver
pytestmark = pytest.mark.e2e

TOKEN_IN_LINK = re.compile(r"/issues/(WH-\d{8}-\d{4,})/feedback\?token=([\w\-.]+)")


def messages(base, issue_id):
    return requests.get(f"{base}/issues/{issue_id}/notifications", headers=DESK).json()["notifications"]


def rating_link(base, phone, issue_id, nth):
    """The nth rating link, as the resident's phone received it (the webhook), after the
    desk saw the same message with the link's token redacted."""
    told = poll(lambda: messages(base, issue_id),
                lambda n: sum(m["kind"] == "rating_request" for m in n) >= nth)
    shown = [m["text"] for m in told if m["kind"] == "rating_request"][nth - 1]
    assert "feedback?token=[redacted]" in shown and "eyJ" not in shown, shown
    received = poll(lambda: [json.loads(r.body)["text"] for r in phone.requests
                             if json.loads(r.body)["kind"] == "rating_request"],
                    lambda texts: len(texts) >= nth)
    match = TOKEN_IN_LINK.search(received[nth - 1])
    assert match, received[nth - 1]
    return match.group(1), match.group(2)


def fix_it(base, env, issue_id, note):
    auth = {"Authorization": f"Bearer {issue_token('power', 'pw-3', env[cfg.SECRET])}"}
    url = f"{base}/agencies/power/assignments/{issue_id}"
    assert requests.post(f"{url}/acknowledge", headers=auth).status_code == 200
    assert requests.post(f"{url}/resolve", headers=auth, json={"note": note}).status_code == 200


def test_unsatisfied_resident_reopens_then_closes_when_satisfied(
        whistle_processes, whistle_env, gateway):
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    whistle_env[cfg.NOTIFY_WEBHOOK_URL] = gateway.url  # the resident's phone (SMS gateway)
    base = whistle_processes().url
    issue_id = requests.post(f"{base}/issues", headers=DESK, json={
        "description": "单元门口有根电线垂下来，不知道有没有电，孩子们天天从这里过",
        "location": {"community": "缤泰社区", "address": "丽德花园8号楼"},
        "contact": {"name": "周阿姨", "phone": "13611112222",
                    "preferred_channel": "webhook"}}).json()["issue_id"]
    poll(lambda: requests.get(f"{base}/issues/{issue_id}", headers=DESK).json()["status"],
         lambda s: s == "dispatched")
    fix_it(base, whistle_env, issue_id, "已临时固定电线")

    reporter, token = rating_link(base, gateway, issue_id, 1)
    assert reporter == issue_id
    unhappy = requests.post(f"{base}/issues/{issue_id}/feedback?token={token}",
                            json={"rating": "unsatisfied", "comment": "只是绑起来了，没有入管"})
    assert unhappy.status_code == 200, unhappy.text
    assert unhappy.json() == {"issue_id": issue_id, "status": "dispatched",
                              "escalation_level": "street", "escalated": True,
                              "reopen_count": 1}
    again = requests.post(f"{base}/issues/{issue_id}/feedback",
                          json={"token": token, "rating": "satisfied"})
    assert again.status_code == 409  # the same link cannot rate twice

    issue = requests.get(f"{base}/issues/{issue_id}", headers=DESK).json()
    assert issue["assignments"][0]["status"] == "assigned"
    reopened = [e for e in issue["timeline"] if e["step"] == "reopened"]
    assert "只是绑起来了，没有入管" in reopened[0]["detail"]  # the desk sees why

    fix_it(base, whistle_env, issue_id, "电线已穿管入槽，彻底处理")
    _, token2 = rating_link(base, gateway, issue_id, 2)
    assert token2 != token
    other = requests.post(f"{base}/issues/WH-20990101-0001/feedback",
                          json={"token": token2, "rating": "satisfied"})
    assert other.status_code == 403  # not a token for that issue
    happy = requests.post(f"{base}/issues/{issue_id}/feedback",
                          json={"token": token2, "rating": "satisfied", "comment": "满意"})
    assert happy.status_code == 200 and happy.json()["status"] == "closed"

    told = poll(lambda: messages(base, issue_id),
                lambda n: n[-1]["kind"] == "closed" and all(m["status"] == "sent" for m in n))
    assert [m["kind"] for m in told if m["audience"] == "resident"] == [
        "received", "dispatched", "acknowledged", "resolved", "rating_request",
        "reopened", "acknowledged", "resolved", "rating_request", "closed"]
    # The reopen took it to the street office, which is told (once), as at a missed deadline.
    assert [(m["kind"], m["recipient"]["level"]) for m in told
            if m["audience"] == "supervisor"] == [("reopen_notice", "street")]
    assert all(m["status"] == "sent" for m in told)
    final = requests.get(f"{base}/issues/{issue_id}", headers=DESK).json()
    assert (final["status"], final["closed_reason"]) == ("closed", "satisfied")
    steps = [e["step"] for e in final["timeline"] if e["service"] != "notify"]
    expected_order = ["received", "dispatched", "acknowledged", "resolved", "awaiting_rating",
                      "rated", "closed"]
    positions = [steps.index(s) for s in expected_order[:5]]
    assert positions == sorted(positions)
    assert steps.index("reopened") > steps.index("awaiting_rating")
    assert steps[-1] == "closed"
    assert [r["rating"] for r in final["ratings"]] == ["unsatisfied", "satisfied"]


def test_no_rating_within_the_window_closes_the_issue(whistle_processes, whistle_env):
    whistle_env[cfg.RATING_WINDOW_S] = "2"
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    base = whistle_processes().url
    issue_id = requests.post(f"{base}/issues", headers=DESK, json={
        "description": "路口有根电线掉下来了", "location": {"community": "缤泰社区",
                                                   "address": "丽德花园南门"}}).json()["issue_id"]
    poll(lambda: requests.get(f"{base}/issues/{issue_id}", headers=DESK).json()["status"],
         lambda s: s == "dispatched")
    fix_it(base, whistle_env, issue_id, "已处理")
    final = poll(lambda: requests.get(f"{base}/issues/{issue_id}", headers=DESK).json(),
                 lambda i: i["status"] == "closed", timeout=15)
    assert final["closed_reason"] == "no_rating"
    assert poll(lambda: messages(base, issue_id), lambda n: n[-1]["kind"] == "closed")

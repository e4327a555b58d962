"""End to end: ``whistle up`` as a real process, driven over HTTP and RPC only."""

import json
import time

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from shared import config as cfg
from shared.auth import issue_token
from tests.support.auth import DESK

pytestmark = pytest.mark.e2e

BALCONY = {
    "description": "我家阳台开裂了，下雨就往楼下渗水，楼下邻居家的电线都泡水了，怕出事。",
    "location": {"community": "缤泰社区", "address": "丽德花园7号楼2单元502", "grid": "7-2"},
    "contact": {"name": "李秀英", "phone": "139 8765 4321"},
    "channel": "grid_patrol",
}


def poll(fetch, until, timeout=20.0):
    deadline = time.monotonic() + timeout
    value = fetch()
    while not until(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; last value: {value}")
        time.sleep(0.1)
        value = fetch()
    return value


def bearer(env, agency, staff):
    return {"Authorization": f"Bearer {issue_token(agency, staff, env[cfg.SECRET])}"}


def test_multi_agency_issue_from_desk_to_resolution(whistle_processes, whistle_env):
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    app = whistle_processes()
    base = app.url

    # 居民点单 / 社区接单
    receipt = requests.post(f"{base}/issues", headers=DESK, json=BALCONY, timeout=5)
    assert receipt.status_code == 201, receipt.text
    issue_id = receipt.json()["issue_id"]
    assert receipt.headers["Location"] == f"/issues/{issue_id}"

    # 精准派单: one lead, several supports, each with deadlines
    issue = poll(lambda: requests.get(f"{base}/issues/{issue_id}", headers=DESK).json(),
                 lambda i: i["status"] == "dispatched")
    # The receipt spells its time as the record does (one format across the API).
    assert receipt.json()["received_at"] == issue["received_at"]
    roles = {a["agency"]: a["role"] for a in issue["assignments"]}
    assert roles["housing_admin"] == "lead"
    assert roles["power"] == "support"
    assert list(roles.values()).count("lead") == 1
    assert all(a["acknowledge_by"] < a["resolve_by"] for a in issue["assignments"])
    assert issue["contact"] == {"name": "李**", "phone": "139****4321", "email": None,
                                "preferred_channel": None}

    # Agency staff see it in their own list, and only with their own token.
    power = bearer(whistle_env, "power", "pw-11")
    housing = bearer(whistle_env, "housing_admin", "ha-02")
    listed = requests.get(f"{base}/agencies/power/assignments?status=open", headers=power).json()
    assert [a["issue_id"] for a in listed["assignments"]] == [issue_id]
    forbidden = requests.post(f"{base}/agencies/power/assignments/{issue_id}/acknowledge",
                              headers=housing, timeout=5)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    unauthenticated = requests.post(f"{base}/agencies/power/assignments/{issue_id}/acknowledge")
    assert unauthenticated.status_code == 401

    # Resolving before reporting in is refused, clearly.
    early = requests.post(f"{base}/agencies/power/assignments/{issue_id}/resolve",
                          headers=power, json={"note": "done"}, timeout=5)
    assert early.status_code == 409
    assert "acknowledge" in early.json()["error"]["message"]

    # 部门报到 and resolve: two agencies over HTTP, the rest over RPC.
    for agency, auth in (("power", power), ("housing_admin", housing)):
        url = f"{base}/agencies/{agency}/assignments/{issue_id}"
        assert requests.post(f"{url}/acknowledge", headers=auth).status_code == 200
        again = requests.post(f"{url}/acknowledge", headers=auth)
        assert again.status_code == 409
        done = requests.post(f"{url}/resolve", headers=auth, json={"note": "现场已处理"})
        assert done.status_code == 200, done.text
    others = [a for a in roles if a not in ("power", "housing_admin")]
    with ClusterRpcProxy({"AMQP_URI": whistle_env[cfg.AMQP_URI]}, timeout=10) as rpc:
        for agency in others:
            token = issue_token(agency, f"{agency}-1", whistle_env[cfg.SECRET])
            rpc.agency.acknowledge(token, agency, issue_id)
            rpc.agency.resolve(token, agency, issue_id, {"note": "已配合处理"})

    # 及时结单, and the resident heard about every step.
    final = poll(lambda: requests.get(f"{base}/issues/{issue_id}", headers=DESK).json(),
                 lambda i: i["status"] == "resolved")
    n_agencies = len(roles)
    expected_kinds = (["received", "dispatched"] + ["acknowledged"] * n_agencies
                      + ["part_resolved"] * (n_agencies - 1) + ["resolved", "rating_request"])
    told = poll(lambda: requests.get(f"{base}/issues/{issue_id}/notifications", headers=DESK).json()
                ["notifications"], lambda n: len(n) >= len(expected_kinds))
    assert sorted(n["kind"] for n in told) == sorted(expected_kinds)
    assert [n["kind"] for n in told][:2] == ["received", "dispatched"]
    assert [n["kind"] for n in told][-2:] == ["resolved", "rating_request"]
    assert all(n["status"] == "sent" and n["channel"] == "desk" for n in told)
    assert issue_id in told[0]["text"]
    assert "房管所" in next(n["text"] for n in told if n["kind"] == "dispatched")

    # The timeline has every step, with its service, in order.
    final = poll(lambda: requests.get(f"{base}/issues/{issue_id}", headers=DESK).json(),
                 lambda i: sum(e["step"] == "resident_notified" for e in i["timeline"])
                 == len(expected_kinds))
    steps = [(e["service"], e["step"]) for e in final["timeline"]]
    assert steps[0] == ("intake", "received")
    assert ("routing", "dispatched") in steps
    assert steps.count(("agency", "assignment_delivered")) == n_agencies
    assert steps.count(("agency", "acknowledged")) == n_agencies
    assert steps.count(("agency", "assignment_resolved")) == n_agencies
    assert ("agency", "resolved") in steps
    assert steps.index(("intake", "received")) < steps.index(("routing", "dispatched")) \
        < steps.index(("agency", "resolved"))
    times = [e["at"] for e in final["timeline"]]
    assert times == sorted(times)

    # The desk's list filters work, and the resident's phone never reached the logs.
    assert issue_id in [i["issue_id"] for i in requests.get(
        f"{base}/issues", headers=DESK, params={"status": "resolved", "agency": "power"}).json()["issues"]]
    assert requests.get(f"{base}/issues", headers=DESK, params={"status": "nope"}).status_code == 422
    log = app.log()
    assert "13987654321" not in log and "139 8765 4321" not in log and "李秀英" not in log


def test_bad_submission_is_refused_with_named_fields_and_nothing_stored(whistle_processes,
                                                                       redis_client,
                                                                       redis_prefix):
    base = whistle_processes("intake").url
    bad = requests.post(f"{base}/issues", headers=DESK, json={
        "description": "", "location": {"community": "缤泰社区"}, "contact": {"phone": "12"},
        "channel": "pigeon", "extra": 1}, timeout=5)
    assert bad.status_code == 422
    fields = {f["field"] for f in bad.json()["error"]["fields"]}
    assert fields == {"description", "location.address", "contact.phone", "channel", "extra"}
    not_json = requests.post(f"{base}/issues", data="{nope", timeout=5,
                             headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert "Traceback" not in not_json.text
    assert json.loads(not_json.text)["error"]["code"] == "malformed_body"
    assert list(redis_client.scan_iter(f"{redis_prefix}:issue*")) == []

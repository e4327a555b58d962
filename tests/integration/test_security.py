"""Nobody reads or changes what is not theirs, against a running Whistle (real RabbitMQ and
Redis): every endpoint x every identity, revocation, refresh, the audit log, rate limits,
and a body over the limit."""

from __future__ import annotations

import importlib
import json
import logging
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.service import RESEND_COOLDOWN_S, NotifyService
from services.routing.service import RoutingService
from shared import config as cfg
from shared import web
from shared.auth import issue_feedback_token, issue_resident_token, issue_token
from shared.errors import Forbidden, Unauthorized
from shared.guard import audit_entries
from shared.web import MAX_BODY_BYTES
from tests.conftest import free_port
from tests.integration import test_notify_channels
from tests.support.auth import staff_headers
from tests.support.chain import resolve_over_http

gateway = test_notify_channels.gateway  # the resident's phone: a real webhook receiver
pytestmark = pytest.mark.integration

WHISTLE = str(Path(sys.executable).with_name("whistle"))
# the `whistle` script imports the first checkout on the path: this one, not the one the
# virtualenv was installed from
CHECKOUT = str(Path(__file__).resolve().parents[2])
PHONE, NAME = "13700009999", "赵大爷"
FLYING_WIRE = {"description": "小区里有根电线耷拉下来了，不知道有没有电",
               "location": {"community": "缤泰社区", "address": "丽德花园9号楼"},
               "contact": {"name": NAME, "phone": PHONE, "preferred_channel": "webhook"}}
OTHER_REPORT = {"description": "楼上漏水，卫生间天花板一直在滴水",
                "location": {"community": "和平里社区", "address": "2号楼1单元201"}}


def wait_for(fetch, done, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"gave up waiting; last: {value!r}"
        time.sleep(0.05)


@pytest.fixture
def whistle(runner_factory, whistle_config, gateway):
    whistle_config.update({cfg.NOTIFY_WEBHOOK_URL: gateway.url})
    runner_factory(whistle_config, IntakeService, RoutingService, AgencyService,
                   NotifyService).start()
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}", whistle_config


def submit(base, body, headers):
    response = requests.post(f"{base}/issues", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["issue_id"]


def dispatched_wire(base, secret):
    """The desk's and power's headers, and a flying-wire issue dispatched to power."""
    desk = staff_headers("desk", "d-1", secret)
    issue_id = submit(base, FLYING_WIRE, desk)
    wait_for(lambda: status_of(base, issue_id, desk), lambda s: s == "dispatched")
    return desk, staff_headers("power", "p-1", secret), issue_id


def resolved_wire(base, secret):
    """:func:`dispatched_wire`, reported in and resolved by power: waiting for its rating."""
    desk, power, issue_id = dispatched_wire(base, secret)
    resolve_over_http(base, "power", power, issue_id, desk, "已处理")
    return desk, power, issue_id


def status_of(base, issue_id, desk):
    return requests.get(f"{base}/issues/{issue_id}", headers=desk, timeout=10).json()["status"]


# ------------------------------------------------------------------ the table

IDENTITIES = ("anonymous", "desk", "assigned agency", "another agency",
              "formerly assigned agency", "resident, own link", "resident, other issue's link")


def row(*statuses):
    assert len(statuses) == len(IDENTITIES)
    return dict(zip(IDENTITIES, statuses, strict=True))


def test_every_endpoint_and_every_identity(whistle, gateway):
    """One table: for each endpoint, in order, what each identity gets.

    The formerly assigned agency is one invited to the table that has finished its part
    (a reroute's withdrawn agency is covered by ``shared.authz``'s unit table). Residents
    use their rating links, as residents really do: they read their own issue with it.
    """
    base, config = whistle
    secret = config[cfg.SECRET]
    desk = staff_headers("desk", "d-1", secret)
    issue_id = submit(base, FLYING_WIRE, desk)
    other_id = submit(base, OTHER_REPORT, desk)
    wait_for(lambda: status_of(base, issue_id, desk), lambda s: s == "dispatched")
    # The formerly assigned agency: invited to the table, then done with its part.
    convened = requests.post(f"{base}/issues/{issue_id}/table", headers=desk, json={
        "meets_at": "2030-12-01T09:00:00+08:00", "place": "红色议事厅",
        "agencies": ["urban_management"]})
    assert convened.status_code == 201, convened.text
    former = staff_headers("urban_management", "um-1", secret)
    for step, body in (("acknowledge", None), ("resolve", {"note": "已清理"})):
        done = requests.post(f"{base}/agencies/urban_management/assignments/{issue_id}/{step}",
                             headers=former, json=body)
        assert done.status_code == 200, done.text

    headers = {
        "anonymous": {},
        "desk": desk,
        "assigned agency": staff_headers("power", "p-1", secret),
        "another agency": staff_headers("water", "w-1", secret),
        "formerly assigned agency": former,
        "resident, own link": {"Authorization": "Bearer " + issue_feedback_token(
            issue_id, issue_id, 0, secret, ttl_s=3600)},
        "resident, other issue's link": {"Authorization": "Bearer " + issue_feedback_token(
            other_id, other_id, 0, secret, ttl_s=3600)},
    }
    agency_url = f"{base}/agencies/power/assignments/{issue_id}"
    # A resident's progress link carries its token as ``?token=``: authorization decides
    # (403), never the list's filter validation; with a Bearer token it is no filter.
    link = "?token=" + issue_resident_token(issue_id, secret)
    explain = {"text": "有煤气味"}
    # (method, path, body, expected): in this order, since the writes move the issue on.
    table = [
        ("GET", "/health", None, row(200, 200, 200, 200, 200, 200, 200)),
        ("GET", f"/issues/{issue_id}", None, row(401, 200, 200, 403, 200, 200, 403)),
        ("GET", "/issues", None, row(401, 200, 200, 200, 200, 403, 403)),
        ("GET", f"/issues/{issue_id}/events", None, row(401, 200, 403, 403, 403, 403, 403)),
        ("GET", f"/issues/{issue_id}/notifications", None,
         row(401, 200, 403, 403, 403, 200, 403)),
        ("GET", "/issues" + link, None, row(403, 200, 200, 200, 200, 403, 403)),
        ("GET", "/stats", None, row(401, 200, 403, 403, 403, 403, 403)),
        ("GET", "/stats" + link, None, row(403, 200, 403, 403, 403, 403, 403)),
        ("GET", "/agencies/power/assignments", None, row(401, 200, 200, 403, 403, 403, 403)),
        ("POST", "/routing/explain", explain, row(401, 200, 403, 403, 403, 403, 403)),
        ("POST", "/issues", OTHER_REPORT, row(201, 201, 201, 201, 201, 201, 201)),
        # Bad bodies: whoever may not make the write gets 401/403 all the same, before the
        # body is read; a caller who may gets the 400/422. (A string is sent as it is.)
        ("POST", f"/issues/{issue_id}/feedback", {"rating": "bogus"},
         row(401, 403, 403, 403, 403, 422, 403)),
        ("POST", f"/issues/{issue_id}/feedback", "{",  # anonymous: its body may hold a link
         row(400, 403, 403, 403, 403, 400, 403)),
        ("POST", f"/agencies/water/assignments/{issue_id}/acknowledge", {"note": 5},
         row(401, 403, 403, 403, 403, 403, 403)),  # water has no part in this issue
        ("POST", f"/agencies/water/assignments/{issue_id}/resolve", "{",
         row(401, 403, 403, 403, 403, 403, 403)),
        ("POST", f"{agency_url[len(base):]}/acknowledge", {"note": 5},
         row(401, 403, 422, 403, 403, 403, 403)),
        ("POST", f"/issues/{issue_id}/triage", "{", row(401, 400, 403, 403, 403, 403, 403)),
        ("POST", f"/issues/{issue_id}/reroute", {"category": 5},
         row(401, 422, 403, 403, 403, 403, 403)),
        ("POST", f"/issues/{issue_id}/table/agencies", "{",
         row(401, 400, 400, 403, 400, 403, 403)),  # water has no part in it
        ("POST", f"/issues/{issue_id}/table", {"meets_at": "2030-12-02T09:00:00+08:00",
                                               "place": "居委会", "agencies": []},
         row(401, 409, 403, 403, 403, 403, 403)),  # the desk may; a table already sits
        # Power (the lead) and urban management were invited; the desk never sits.
        ("POST", f"/issues/{issue_id}/table/check-in", None,
         row(401, 403, 200, 403, 200, 403, 403)),
        ("POST", f"/issues/{issue_id}/table/tasks", "{",
         row(401, 400, 400, 403, 400, 403, 403)),
        ("POST", f"/issues/{issue_id}/table/tasks/T9/done", "{",
         row(401, 400, 400, 403, 400, 403, 403)),
        ("POST", f"/issues/{issue_id}/split", None, row(401, 409, 403, 403, 403, 403, 403)),
        ("POST", f"/issues/{issue_id}/table/tasks/T9/close", {"note": "已现场核实"},
         row(401, 422, 403, 403, 403, 403, 403)),  # the desk may; there is no task T9
        ("POST", f"/issues/{issue_id}/rating-link", None,
         row(401, 409, 403, 403, 403, 403, 403)),  # nothing to rate yet
        # The desk records a resident's answer (电话回访): the desk only, body after caller.
        ("POST", f"/issues/{issue_id}/rating", {"rating": "bogus", "method": "phone"},
         row(401, 422, 403, 403, 403, 403, 403)),
        ("POST", f"/issues/{issue_id}/rating", {"rating": "satisfied", "method": "phone"},
         row(401, 409, 403, 403, 403, 403, 403)),  # nothing to rate yet
        ("POST", f"{agency_url[len(base):]}/acknowledge", None,
         row(401, 403, 200, 403, 403, 403, 403)),
        ("POST", f"{agency_url[len(base):]}/resolve", {"note": "已恢复供电"},
         row(401, 403, 200, 403, 403, 403, 403)),
        ("POST", f"/issues/{issue_id}/rating-link", None,
         row(401, 202, 403, 403, 403, 403, 403)),  # now it waits for its rating
        ("POST", f"/issues/{issue_id}/feedback", {"rating": "satisfied"},
         row(401, 403, 403, 403, 403, 200, 403)),
        ("POST", f"/issues/{issue_id}/rating", {"rating": "satisfied", "method": "visit"},
         row(401, 409, 403, 403, 403, 403, 403)),  # the resident has rated it already
        ("POST", "/auth/refresh", None, row(401, 200, 200, 200, 200, 403, 403)),
        # Open311's answer to a resource it does not have, whoever asks.
        *((method, "/open311/v2/nothing.json", None, row(*[404] * len(IDENTITIES)))
          for method in ("GET", "POST", "PUT", "PATCH", "DELETE")),
    ]
    got, expected = [], []
    for method, path, body, statuses in table:
        if path.endswith("/rating-link") and statuses["desk"] == 202:
            wait_for(lambda: status_of(base, issue_id, desk), lambda s: s == "resolved")
            wait_for(lambda: requests.get(f"{base}/issues/{issue_id}", headers=desk).json()
                     ["feedback_due"], bool)
        for identity in IDENTITIES:
            sent = ({"data": body, "headers": {**headers[identity],
                                               "Content-Type": "application/json"}}
                    if isinstance(body, str) else {"json": body, "headers": headers[identity]})
            response = requests.request(method, base + path, timeout=10, **sent)
            got.append((method, path, identity, response.status_code))
            expected.append((method, path, identity, statuses[identity]))
            assert "Traceback" not in response.text
    assert got == expected
    # Every route the services serve is in this table, or is judged for every caller by
    # the test named for it: a new endpoint without an owner fails here.
    served = served_routes(config)
    tabled = {route_of(config, method, path) for method, path, _, _ in table}
    assert served - tabled == set(ELSEWHERE), sorted(served - tabled - set(ELSEWHERE))


# Routes whose callers are judged by a test of their own (Open311 has its own identities:
# API keys, public reads), each named so that it cannot silently go away.
ELSEWHERE = {
    ("GET", "/open311/v2/discovery.<fmt>"): "test_open311:test_services_and_definitions_through_a_real_client",
    ("GET", "/open311/v2/services.<fmt>"): "test_open311:test_services_and_definitions_through_a_real_client",
    ("GET", "/open311/v2/services/<service_code>.<fmt>"):
        "test_open311:test_services_and_definitions_through_a_real_client",
    ("POST", "/open311/v2/requests.<fmt>"): "test_open311:test_post_read_and_filter_requests",
    ("GET", "/open311/v2/requests.<fmt>"):
        "test_open311:test_private_reads_show_a_client_only_its_own_requests",
    ("GET", "/open311/v2/requests/<service_request_id>.<fmt>"):
        "test_open311:test_private_reads_show_a_client_only_its_own_requests",
    ("GET", "/open311/v2/tokens/<token>.<fmt>"): "test_open311:test_post_read_and_filter_requests",
    ("GET", "/open311/v2/servicerequestupdates.<fmt>"):
        "test_open311:test_private_reads_show_a_client_only_its_own_requests",
}


def test_every_route_judged_elsewhere_names_a_test_that_exists():
    for module, name in (where.split(":") for where in ELSEWHERE.values()):
        tests = importlib.import_module(f"tests.e2e.{module}")
        assert callable(getattr(tests, name, None)), f"{module}::{name} is gone"


def url_map_of(config):
    return web._servers[config[cfg.WEB_SERVER_ADDRESS]].url_map()


def served_routes(config) -> set[tuple[str, str]]:
    """(method, rule) of every route the process's web server serves (HEAD and OPTIONS,
    which werkzeug adds to every rule, aside)."""
    return {(method, rule.rule) for rule in url_map_of(config).iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def route_of(config, method: str, path: str) -> tuple[str, str]:
    """The (method, rule) that serves ``path``."""
    rule, _ = url_map_of(config).bind("whistle").match(path.split("?")[0], method=method,
                                                        return_rule=True)
    return method, rule.rule


def test_each_identity_sees_only_its_own_view(whistle, gateway):
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, power, issue_id = dispatched_wire(base, secret)
    assert requests.post(f"{base}/agencies/power/assignments/{issue_id}/acknowledge",
                         headers=power).status_code == 200

    as_desk = requests.get(f"{base}/issues/{issue_id}", headers=desk).json()
    as_agency = requests.get(f"{base}/issues/{issue_id}", headers=power).json()
    link = issue_resident_token(issue_id, secret)
    as_resident = requests.get(f"{base}/issues/{issue_id}?token={link}").json()
    assert as_desk["contact"]["phone"] == as_agency["contact"]["phone"] == "137****9999"
    assert "trace_id" in as_desk and "trace_id" not in as_agency
    assert as_agency["assignments"][0]["yours"] is True
    assert not any(e["service"] == "notify" for e in as_agency["timeline"])
    assert set(as_resident) >= {"status_text", "progress", "agencies", "can_rate"}
    assert as_resident["contact"]["phone"] == "137****9999"
    text = json.dumps(as_resident, ensure_ascii=False)
    assert "p-1" not in text and PHONE not in text and NAME not in text
    # Lists: an agency sees only issues it has or had a part in; a scoped desk, its own.
    water = staff_headers("water", "w-1", secret)
    assert requests.get(f"{base}/issues", headers=water).json()["issues"] == []
    assert [i["issue_id"] for i in requests.get(f"{base}/issues", headers=power).json()
            ["issues"]] == [issue_id]
    elsewhere = staff_headers("desk", "d-2", secret, communities=["和平里社区"])
    assert requests.get(f"{base}/issues", headers=elsewhere).json()["issues"] == []
    assert requests.get(f"{base}/issues/{issue_id}", headers=elsewhere).status_code == 403
    assert requests.get(f"{base}/issues", headers=water,
                        params={"agency": "power"}).status_code == 403


def test_a_residents_link_reads_its_issue_in_the_language_it_asks_for(whistle):
    """``GET /issues/{id}?token=…&lang=en`` was worded in the report's language whatever
    ``lang`` said; it is worded as the resident's page (rpc.routing.resident_view) words
    it, and refuses what that refuses: a ``lang`` that is neither zh nor en, 422 naming it."""
    base, config = whistle
    desk, _power, issue_id = dispatched_wire(base, config[cfg.SECRET])
    link = issue_resident_token(issue_id, config[cfg.SECRET])

    def as_resident(*lang):
        return requests.get(f"{base}/issues/{issue_id}", timeout=10,
                            params=[("token", link), *(("lang", value) for value in lang)])

    unset, english = as_resident().json(), as_resident("en").json()
    assert unset["language"] == "zh" and unset["status_text"] == "已派给相关单位"
    assert english["language"] == "en"
    assert english["status_text"] == "sent to the responsible agencies"
    assert english["progress"][0]["text"] != unset["progress"][0]["text"]
    assert as_resident("zh").json() == unset
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        assert rpc.routing.resident_view(issue_id, link, "en") == english
    for refused in (as_resident("fr"), as_resident("en", "zh"),
                    requests.get(f"{base}/issues/{issue_id}", params={"lang": "EN"},
                                 headers=desk, timeout=10)):
        assert refused.status_code == 422, refused.text
        assert [f["field"] for f in refused.json()["error"]["fields"]] == ["lang"]
    # The desk's view is data, not words: the same in either language.
    assert (requests.get(f"{base}/issues/{issue_id}", params={"lang": "en"}, headers=desk,
                         timeout=10).json()["status"] == "dispatched")


def test_a_scoped_desk_submits_only_in_its_communities(whistle):
    """It could submit for another community, then neither read nor list what it sent."""
    base, config = whistle
    scoped = staff_headers("desk", "d-2", config[cfg.SECRET], communities=["缤泰社区"])
    elsewhere = requests.post(f"{base}/issues", headers=scoped, timeout=10, json={
        **FLYING_WIRE, "location": {"community": "和平里社区", "address": "2号楼1单元"}})
    assert elsewhere.status_code == 403, elsewhere.text
    assert [f["field"] for f in elsewhere.json()["error"]["fields"]] == ["location.community"]
    everywhere = staff_headers("desk", "d-1", config[cfg.SECRET])
    assert requests.get(f"{base}/issues", headers=everywhere, timeout=10).json()["issues"] == []
    assert submit(base, FLYING_WIRE, scoped)  # its own community: 201


def test_a_scoped_desk_lists_an_agencys_assignments_only_in_its_communities(whistle):
    """docs/http.md: a desk token naming communities reads only there. An agency's list
    (HTTP and RPC, every status) holds no other community's issue."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk = staff_headers("desk", "d-1", secret)
    here = submit(base, FLYING_WIRE, desk)
    elsewhere = submit(base, {**FLYING_WIRE, "location": {"community": "和平里社区",
                                                         "address": "2号楼1单元"}}, desk)
    for issue_id in (here, elsewhere):
        wait_for(lambda i=issue_id: status_of(base, i, desk), lambda s: s == "dispatched")
    scoped = staff_headers("desk", "d-2", secret, communities=["缤泰社区"])
    for status in ("open", "all", "assigned"):
        listed = requests.get(f"{base}/agencies/power/assignments", headers=scoped,
                              params={"status": status}, timeout=10)
        assert listed.status_code == 200, listed.text
        assert [a["issue_id"] for a in listed.json()["assignments"]] == [here], status
        assert "和平里社区" not in listed.text
    everywhere = requests.get(f"{base}/agencies/power/assignments", headers=desk,
                              params={"status": "all"}, timeout=10).json()["assignments"]
    assert {a["issue_id"] for a in everywhere} == {here, elsewhere}
    token = scoped["Authorization"].removeprefix("Bearer ")
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        assert [a["issue_id"] for a in rpc.agency.list_assignments(token, "power", "all")
                ] == [here]


def test_before_any_table_only_an_agency_on_the_issue_learns_there_is_none(whistle):
    """docs/security.md: check-in and a task done are refused (403) to the desk, a desk
    outside the issue's communities and an agency with no part in the issue, over HTTP
    and RPC alike; only an agency on the issue hears that no table sits (409). Before,
    all of them got the 409."""
    base, config = whistle
    secret = config[cfg.SECRET]
    _desk, power, issue_id = dispatched_wire(base, secret)
    callers = {
        "desk": (staff_headers("desk", "d-1", secret), 403),
        "scoped desk elsewhere": (staff_headers("desk", "d-2", secret,
                                                communities=["和平里社区"]), 403),
        "another agency": (staff_headers("water", "w-1", secret), 403),
        "assigned agency": (power, 409),
    }
    for name, (headers, status) in callers.items():
        for path, body in (("table/check-in", None), ("table/tasks/T1/done", {"note": "x"})):
            response = requests.post(f"{base}/issues/{issue_id}/{path}", headers=headers,
                                     json=body, timeout=10)
            assert (name, path, response.status_code) == (name, path, status), response.text
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        water = issue_token("water", "w-1", secret)
        with pytest.raises(Forbidden):
            rpc.routing.check_in_at_table(water, issue_id)
        with pytest.raises(Forbidden):
            rpc.routing.complete_table_task(water, issue_id, "T1", {"note": "x"})


def test_an_agencys_assignment_list_masks_the_resident_in_notes_as_its_issue_view_does(
        whistle):
    """docs/security.md: an agency reads the resident's phone and name masked in every note
    and table task. GET /issues/{id} did; its assignment list and the 报到 answer showed
    them as written. The desk still reads them as written."""
    base, config = whistle
    desk, power, issue_id = dispatched_wire(base, config[cfg.SECRET])
    note = f"已联系{NAME}，电话{PHONE}"
    acknowledged = requests.post(f"{base}/agencies/power/assignments/{issue_id}/acknowledge",
                                 headers=power, json={"note": note}, timeout=10)
    assert acknowledged.status_code == 200, acknowledged.text
    masked = "已联系赵**，电话137****9999"
    assert acknowledged.json()["acknowledge_note"] == masked
    for status in ("open", "all"):
        listed = requests.get(f"{base}/agencies/power/assignments", headers=power,
                              params={"status": status}, timeout=10).json()["assignments"]
        assert [a["acknowledge_note"] for a in listed] == [masked], status
        assert PHONE not in json.dumps(listed, ensure_ascii=False)
    as_desk = requests.get(f"{base}/agencies/power/assignments", headers=desk,
                           timeout=10).json()["assignments"]
    assert [a["acknowledge_note"] for a in as_desk] == [note]


def test_a_table_write_answers_an_agency_with_other_agencies_notes_masked(whistle):
    """The table's writes answer with every assignment: another agency's note named the
    resident as written there, where GET /issues/{id} masks it for an agency."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, power, issue_id = dispatched_wire(base, secret)
    note = f"已联系{NAME}，电话{PHONE}"
    assert requests.post(f"{base}/agencies/power/assignments/{issue_id}/acknowledge",
                         headers=power, json={"note": note}, timeout=10).status_code == 200
    convened = requests.post(f"{base}/issues/{issue_id}/table", headers=desk, timeout=10,
                             json={"meets_at": "2030-12-01T09:00:00+08:00", "place": "居委会",
                                   "agencies": ["urban_management"]})
    assert convened.status_code == 201, convened.text
    assert note in convened.text  # the desk reads notes as written
    checked_in = requests.post(f"{base}/issues/{issue_id}/table/check-in", timeout=10,
                               headers=staff_headers("urban_management", "um-1", secret))
    assert checked_in.status_code == 200, checked_in.text
    [powers] = [a for a in checked_in.json()["assignments"] if a["agency"] == "power"]
    assert powers["acknowledge_note"] == "已联系赵**，电话137****9999"
    assert PHONE not in checked_in.text and NAME not in checked_in.text


def test_the_desk_resends_a_rating_link_once_in_a_cooldown_not_again_and_again(whistle):
    """Each resend is a text to the resident's phone: five clicks were five texts. A second
    one within the cooldown is a 429 saying when, with Retry-After, and sends nothing."""
    base, config = whistle
    desk, _power, issue_id = resolved_wire(base, config[cfg.SECRET])

    def sent():
        return [n for n in requests.get(f"{base}/issues/{issue_id}/notifications",
                                        headers=desk, timeout=10).json()["notifications"]
                if n["kind"] == "rating_request"]

    # The resolution's own rating request first: arriving later, it was counted as a resend.
    wait_for(sent, lambda found: len(found) == 1)
    first = requests.post(f"{base}/issues/{issue_id}/rating-link", headers=desk, timeout=10)
    assert first.status_code == 202 and first.json()["status"] == "sent", first.text
    before = sent()
    assert len(before) == 2
    again = requests.post(f"{base}/issues/{issue_id}/rating-link", headers=desk, timeout=10)
    assert again.status_code == 429, again.text
    assert 1 <= int(again.headers["Retry-After"]) <= RESEND_COOLDOWN_S
    assert "a moment ago" in again.json()["error"]["message"]
    assert sent() == before  # nothing more reached the resident


def test_notify_says_whether_a_resent_rating_link_would_reach_the_resident(whistle):
    """The desk's page offers a resend only when it can work: a phone and the webhook
    reach the resident; a resident who gave nothing cannot be reached; only the desk of
    the issue's community may ask."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, power, issue_id = dispatched_wire(base, secret)
    no_contact = submit(base, {k: v for k, v in FLYING_WIRE.items() if k != "contact"}, desk)
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        desk_token = issue_token("desk", "d-1", secret)
        assert rpc.notify.rating_link_reach(desk_token, issue_id) == {
            "issue_id": issue_id, "channel": "webhook", "unreachable": None}
        assert rpc.notify.rating_link_reach(desk_token, no_contact) == {
            "issue_id": no_contact, "channel": None, "unreachable": "no_contact"}
        with pytest.raises(Forbidden):
            rpc.notify.rating_link_reach(issue_token("power", "p-1", secret), issue_id)
        with pytest.raises(Forbidden):
            rpc.notify.rating_link_reach(
                issue_token("desk", "d-2", secret, communities=["和平里社区"]), issue_id)


def test_without_a_webhook_or_mail_server_no_resent_link_reaches_anyone(runner_factory,
                                                                         whistle_config):
    """A deployment with neither: the resident's phone is no use for a rating link."""
    runner_factory(whistle_config, IntakeService, NotifyService).start()
    base = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"
    secret = whistle_config[cfg.SECRET]
    issue_id = submit(base, FLYING_WIRE, staff_headers("desk", "d-1", secret))
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        reach = wait_for(lambda: rpc.notify.rating_link_reach(
            issue_token("desk", "d-1", secret), issue_id), bool)
    assert reach == {"issue_id": issue_id, "channel": None, "unreachable": "no_channel"}


def test_the_desk_records_a_called_back_residents_rating_as_their_own(whistle, redis_client):
    """电话回访: the desk records the answer of a resident who cannot open a link, over
    HTTP and RPC: unsatisfied reopens one level up, satisfied closes, each once a cycle;
    the rating and timeline say the desk recorded it (who, how), the audit log has the
    staff id; agencies and a desk of other communities are refused; a bad body names
    its field."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, power, issue_id = resolved_wire(base, secret)
    url = f"{base}/issues/{issue_id}/rating"
    missing = requests.post(url, headers=desk, json={"rating": "satisfied"}, timeout=10)
    assert missing.status_code == 422, missing.text
    assert [f["field"] for f in missing.json()["error"]["fields"]] == ["method"]
    elsewhere = staff_headers("desk", "d-2", secret, communities=["和平里社区"])
    body = {"rating": "unsatisfied", "method": "phone",
            "comment": f"电话回访：电线还耷拉着，{NAME}说的，13900001111"}
    assert requests.post(url, headers=elsewhere, json=body, timeout=10).status_code == 403
    assert requests.post(url, headers=power, json=body, timeout=10).status_code == 403
    answered = requests.post(url, headers=desk, json=body, timeout=10)
    assert answered.status_code == 200, answered.text
    assert (answered.json()["status"], answered.json()["escalation_level"],
            answered.json()["reopen_count"]) == ("dispatched", "street", 1)
    again = requests.post(url, headers=desk, json=body, timeout=10)
    assert again.status_code == 409 and "not waiting" in again.text
    issue = requests.get(f"{base}/issues/{issue_id}", headers=desk, timeout=10).json()
    [rating] = issue["ratings"]
    assert (rating["recorded_by"], rating["method"], rating["reporter_issue_id"]) == (
        "d-1", "phone", issue_id)
    assert rating["comment"] == "电话回访：电线还耷拉着，赵**说的，139****1111"
    steps = [e["step"] for e in issue["timeline"]]
    assert steps[steps.index("rating_recorded") + 1] == "reopened"
    entries = audit_entries(redis_client, config[cfg.KEY_PREFIX])
    assert ("issue.record_rating", "200", "d-1", issue_id) in [
        (e["action"], e["status"], e.get("staff_id"), e.get("issue_id")) for e in entries]
    # The second cycle, over RPC: satisfied closes it.
    for step, note in (("acknowledge", None), ("resolve", {"note": "已入管"})):
        assert requests.post(f"{base}/agencies/power/assignments/{issue_id}/{step}",
                             headers=power, json=note, timeout=10).status_code == 200
    wait_for(lambda: requests.get(f"{base}/issues/{issue_id}", headers=desk).json()
             ["feedback_due"], bool)
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        with pytest.raises(Forbidden):
            rpc.routing.record_rating(issue_token("power", "p-1", secret), issue_id,
                                      {"rating": "satisfied", "method": "visit"})
        closed = rpc.routing.record_rating(issue_token("desk", "d-3", secret), issue_id,
                                           {"rating": "satisfied", "method": "visit"})
    assert closed["status"] == "closed"


def test_the_desk_records_a_merged_neighbours_rating_on_the_issue_they_joined(whistle):
    """A neighbour merged into an open issue is asked to rate it as its own reporter is;
    the desk records their answer on their own report, and it rates the issue they joined."""
    base, config = whistle
    desk, power, issue_id = dispatched_wire(base, config[cfg.SECRET])
    neighbour = submit(base, {**FLYING_WIRE, "contact": {"name": "钱阿姨"}}, desk)
    wait_for(lambda: requests.get(f"{base}/issues/{neighbour}", headers=desk).json()
             ["merged_into"], lambda into: into == issue_id)
    for step, note in (("acknowledge", None), ("resolve", {"note": "已处理"})):
        assert requests.post(f"{base}/agencies/power/assignments/{issue_id}/{step}",
                             headers=power, json=note, timeout=10).status_code == 200
    wait_for(lambda: requests.get(f"{base}/issues/{issue_id}", headers=desk).json()
             ["feedback_due"], bool)
    recorded = requests.post(f"{base}/issues/{neighbour}/rating", headers=desk, timeout=10,
                             json={"rating": "satisfied", "method": "in_person"})
    assert recorded.status_code == 200, recorded.text
    assert (recorded.json()["issue_id"], recorded.json()["status"]) == (issue_id, "closed")
    [rating] = requests.get(f"{base}/issues/{issue_id}", headers=desk).json()["ratings"]
    assert (rating["reporter_issue_id"], rating["method"]) == (neighbour, "in_person")


def test_a_rating_comment_reaches_no_agency_and_the_desk_only_masked(whistle):
    """An unsatisfied rating whose comment holds the resident's number and name: the
    assigned agency's view has no comment; the desk's view and journal have it masked."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, power, issue_id = resolved_wire(base, secret)
    comment = f"还是漏，联系我13900001111，{NAME}"
    rated = requests.post(f"{base}/issues/{issue_id}/feedback", timeout=10, json={
        "rating": "unsatisfied", "comment": comment,
        "token": issue_feedback_token(issue_id, issue_id, 0, secret, ttl_s=3600)})
    assert rated.status_code == 200 and rated.json()["status"] == "dispatched", rated.text
    as_agency = json.dumps(requests.get(f"{base}/issues/{issue_id}", headers=power,
                                        timeout=10).json(), ensure_ascii=False)
    assert not any(part in as_agency for part in ("还是漏", "13900001111", "139****1111",
                                                  NAME))  # (its contact: 赵**, as always)
    reopened = [e for e in json.loads(as_agency)["timeline"] if e["step"] == "reopened"]
    assert reopened and reopened[0]["detail"].startswith("the resident is not satisfied; back")
    masked = "还是漏，联系我139****1111，赵**"
    as_desk = requests.get(f"{base}/issues/{issue_id}", headers=desk, timeout=10).json()
    assert as_desk["ratings"][0]["comment"] == masked
    events = json.dumps(requests.get(f"{base}/issues/{issue_id}/events", headers=desk,
                                     timeout=10).json(), ensure_ascii=False)
    for shown in (json.dumps(as_desk, ensure_ascii=False), events):
        assert "13900001111" not in shown and NAME not in shown
    assert masked in json.dumps(as_desk, ensure_ascii=False)
    assert masked in events


def test_a_reopening_then_a_second_resolution_keeps_both_notes_for_desk_and_agency(whistle):
    """民事民评 sends power back to work: what it claimed done the first time stays on its
    assignment next to the second resolution, for the desk (as written) and for power (the
    agency view, masked as its notes are); the resident's own link reads neither note."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, power, issue_id = resolved_wire(base, secret)
    rated = requests.post(f"{base}/issues/{issue_id}/feedback", timeout=10, json={
        "rating": "unsatisfied",
        "token": issue_feedback_token(issue_id, issue_id, 0, secret, ttl_s=3600)})
    assert rated.status_code == 200 and rated.json()["status"] == "dispatched", rated.text
    second = f"已联系{NAME}，重新架设了线路"
    for step, body in (("acknowledge", None), ("resolve", {"note": second})):
        done = requests.post(f"{base}/agencies/power/assignments/{issue_id}/{step}",
                             headers=power, json=body, timeout=10)
        assert done.status_code == 200, done.text
    wait_for(lambda: requests.get(f"{base}/issues/{issue_id}", headers=desk).json()
             ["feedback_due"], bool)
    [as_desk] = requests.get(f"{base}/issues/{issue_id}", headers=desk,
                             timeout=10).json()["assignments"]
    assert (as_desk["resolution_note"], as_desk["resolved_by"]) == (second, "p-1")
    [earlier] = as_desk["earlier_resolutions"]
    assert (earlier["cycle"], earlier["note"], earlier["resolved_by"]) == (0, "已处理", "p-1")
    assert earlier["resolved_at"] < as_desk["resolved_at"]
    [as_agency] = requests.get(f"{base}/issues/{issue_id}", headers=power,
                               timeout=10).json()["assignments"]
    assert as_agency["resolution_note"] == "已联系赵**，重新架设了线路"
    assert [e["note"] for e in as_agency["earlier_resolutions"]] == ["已处理"]
    resident = {"Authorization": "Bearer " + issue_resident_token(issue_id, secret)}
    own_page = requests.get(f"{base}/issues/{issue_id}", headers=resident, timeout=10)
    assert own_page.status_code == 200, own_page.text
    assert "已处理" not in own_page.text and "重新架设" not in own_page.text


def test_an_agency_never_reads_the_residents_contact_in_another_agencys_note(whistle):
    """Agency staff call residents and write it down: "已联系赵大爷，电话13700009999". The
    other agencies on the issue, and one a reroute withdrew, read those notes (on the
    assignment, the timeline and the table's tasks) in the agency view, which shows the
    contact only masked: the phone and the resident's name in them were shown in full.
    They are masked there now, as a rating comment is; the desk's view is unchanged."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, power, issue_id = dispatched_wire(base, secret)
    convened = requests.post(f"{base}/issues/{issue_id}/table", headers=desk, timeout=10,
                             json={"meets_at": "2030-12-01T09:00:00+08:00", "place": "居委会",
                                   "agencies": ["urban_management"]})
    assert convened.status_code == 201, convened.text
    task = requests.post(f"{base}/issues/{issue_id}/table/tasks", headers=desk, timeout=10,
                         json={"agency": "power", "description": f"给{NAME}回电{PHONE}",
                               "due": (datetime.now(UTC) + timedelta(days=3)).isoformat()})
    assert task.status_code == 201, task.text
    note = f"已联系{NAME}，电话{PHONE}"
    done = requests.post(f"{base}/agencies/power/assignments/{issue_id}/acknowledge",
                         headers=power, json={"note": note}, timeout=10)
    assert done.status_code == 200, done.text
    other = staff_headers("urban_management", "um-1", secret)
    as_other = requests.get(f"{base}/issues/{issue_id}", headers=other, timeout=10)
    assert as_other.status_code == 200, as_other.text
    shown = json.dumps(as_other.json(), ensure_ascii=False)
    assert PHONE not in shown and NAME not in shown, shown
    assert "已联系赵**，电话137****9999" in shown and "给赵**回电137****9999" in shown
    as_desk = json.dumps(requests.get(f"{base}/issues/{issue_id}", headers=desk,
                                      timeout=10).json(), ensure_ascii=False)
    assert note in as_desk


def test_a_note_naming_a_neighbour_who_reported_the_same_problem_is_masked_too(whistle):
    """Two neighbours report one burst pipe; the second report merges into the first. An
    agency's note naming the second reporter reached the other agency in full: only the
    first reporter's name was masked."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk = staff_headers("desk", "d-1", secret)
    place = {"community": "和平里社区", "address": "5号楼2单元"}
    first = submit(base, {"description": "楼下水管爆了", "category": "pipe_leak",
                          "location": place, "contact": {"name": "钱小红"}}, desk)
    wait_for(lambda: status_of(base, first, desk), lambda s: s == "dispatched")
    second = submit(base, {"description": "水管破了在漏水", "category": "pipe_leak",
                           "location": place, "contact": {"name": "李四海"}}, desk)
    wait_for(lambda: status_of(base, second, desk), lambda s: s == "merged")
    issue = requests.get(f"{base}/issues/{first}", headers=desk, timeout=10).json()
    lead, other = (a["agency"] for a in issue["assignments"][:2])
    noted = requests.post(f"{base}/agencies/{lead}/assignments/{first}/acknowledge",
                          headers=staff_headers(lead, "x-1", secret),
                          json={"note": "已联系李四海和钱小红"}, timeout=10)
    assert noted.status_code == 200, noted.text
    shown = requests.get(f"{base}/issues/{first}", timeout=10,
                         headers=staff_headers(other, "x-2", secret)).text
    assert "李四海" not in shown and "钱小红" not in shown
    assert "已联系李**和钱**" in shown


TABLE_WRITES = (  # (path under the issue, a valid body, a body missing its required field)
    ("/table", {"meets_at": "2030-12-02T09:00:00+08:00", "place": "居委会", "agencies": []},
     {"place": "居委会"}),
    ("/table/agencies", {"agencies": ["water"]}, {}),
    ("/table/tasks", {"agency": "power", "description": "更换线路",
                      "due": "2099-12-02T09:00:00+08:00"}, {"agency": "power"}),
    ("/table/tasks/T1/done", {"note": "已更换"}, {}),
    ("/table/tasks/T1/close", {"note": "已核实"}, {}),
)


def test_a_scoped_desk_acts_only_on_its_communities_issues(whistle):
    """A desk token for 和平里社区 gets 403 on a 缤泰社区 issue's writes (HTTP and RPC) and
    changes nothing; a desk token for 缤泰社区 may."""
    base, config = whistle
    secret = config[cfg.SECRET]
    issue_id = submit(base, FLYING_WIRE, staff_headers("desk", "d-1", secret))
    wait_for(lambda: status_of(base, issue_id, staff_headers("desk", "d-1", secret)),
             lambda s: s == "dispatched")
    elsewhere = staff_headers("desk", "d-2", secret, communities=["和平里社区"])
    here = staff_headers("desk", "d-3", secret, communities=["缤泰社区"])
    refused = [(path, requests.post(f"{base}/issues/{issue_id}{path}", headers=elsewhere,
                                    json=body, timeout=10))
               for path, body in [*((p, b) for p, b, _ in TABLE_WRITES[:3]),
                                  ("/split", None), ("/triage", {"category": "flying_wire"}),
                                  ("/reroute", {"category": "flying_wire", "reason": "x"})]]
    # The same with bodies that are not JSON or not valid: still 403, never 400/422.
    refused += [(path, requests.post(f"{base}/issues/{issue_id}{path}", timeout=10,
                                     headers={**elsewhere, "Content-Type": "application/json"},
                                     data=bad))
                for path in ("/table", "/table/agencies", "/table/tasks", "/triage", "/reroute",
                             "/table/tasks/T1/close")
                for bad in ("{", '{"category": 5, "agencies": "x", "note": 7}')]
    assert [(path, r.status_code) for path, r in refused] == [
        (path, 403) for path, _ in refused]
    assert all("outside your communities" in r.json()["error"]["message"] for _, r in refused)
    elsewhere_token = elsewhere["Authorization"].removeprefix("Bearer ")
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        for call in (lambda: rpc.routing.convene_table(elsewhere_token, issue_id,
                                                       TABLE_WRITES[0][1]),
                     lambda: rpc.routing.invite_to_table(elsewhere_token, issue_id,
                                                         TABLE_WRITES[1][1]),
                     lambda: rpc.routing.record_table_task(elsewhere_token, issue_id,
                                                           TABLE_WRITES[2][1]),
                     lambda: rpc.routing.split_issue(elsewhere_token, issue_id)):
            with pytest.raises(Forbidden, match="outside your communities"):
                call()
        assert rpc.intake.get_issue(issue_id)["table"] is None
    convened = requests.post(f"{base}/issues/{issue_id}/table", headers=here,
                             json=TABLE_WRITES[0][1], timeout=10)
    assert convened.status_code == 201, convened.text
    invited = requests.post(f"{base}/issues/{issue_id}/table/agencies", headers=here,
                            json=TABLE_WRITES[1][1], timeout=10)
    assert invited.status_code == 200, invited.text
    assert "water" in invited.json()["table"]["invited"]


def test_a_board_scoped_to_no_community_shows_nothing_not_everything(whistle):
    """``board``'s ``communities`` narrows it as ``stats``' does: an empty list is no
    community. It read as unset, every community: a desk token whose communities claim
    is empty (a sign-in bridge giving a clerk with no community ``[]``) listed nothing and
    counted nothing, yet its board (``/desk``, ``/desk/board.json``) showed every issue."""
    base, config = whistle
    secret = config[cfg.SECRET]
    _desk, _power, issue_id = dispatched_wire(base, secret)
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        assert issue_id in [row["issue_id"] for row in rpc.intake.board({})["rows"]]
        assert issue_id in [row["issue_id"] for row in
                            rpc.intake.board({"communities": ["缤泰社区"]})["rows"]]
        nowhere = rpc.intake.board({"communities": []})
        assert (nowhere["rows"], nowhere["total"]) == ([], 0)
        assert rpc.intake.stats(None, [])["window"]["issues"] == 0
    no_community = staff_headers("desk", "d-0", secret, communities=[])
    listed = requests.get(f"{base}/issues", headers=no_community, timeout=10)
    assert listed.status_code == 200 and listed.json()["issues"] == [], listed.text


def test_a_scoped_desk_reaches_its_community_in_either_script_and_no_other(whistle):
    """A desk token for 缤泰社區 (traditional characters) was refused the 缤泰社区 issues it
    is for, and one for 缤泰社区 the reports written 缤泰社區: names were compared as
    written. Both sides are folded now (NFKC, case, traditional as simplified), for reads,
    writes and submissions alike; 和平里社区, in either script, stays another community."""
    base, config = whistle
    secret = config[cfg.SECRET]
    unscoped = staff_headers("desk", "d-1", secret)
    simplified_report = submit(base, FLYING_WIRE, unscoped)
    traditional = staff_headers("desk", "d-2", secret, communities=["缤泰社區"])
    simplified = staff_headers("desk", "d-3", secret, communities=["缤泰社区"])
    # Each token submits in its community written the other way (201), and reads both.
    traditional_report = submit(base, {**FLYING_WIRE, "location": {
        "community": "缤泰社區", "address": "丽德花园10号楼"}}, simplified)
    assert submit(base, FLYING_WIRE, traditional)
    for issue_id in (simplified_report, traditional_report):
        wait_for(lambda i=issue_id: status_of(base, i, unscoped), lambda s: s == "dispatched")
        for desk in (traditional, simplified):
            for path in ("", "/events", "/notifications"):
                read = requests.get(f"{base}/issues/{issue_id}{path}", headers=desk, timeout=10)
                assert read.status_code == 200, (issue_id, path, read.text)
    convened = requests.post(f"{base}/issues/{simplified_report}/table", headers=traditional,
                             json=TABLE_WRITES[0][1], timeout=10)
    assert convened.status_code == 201, convened.text
    listed = requests.get(f"{base}/issues", params={"community": "缤泰社区"},
                          headers=traditional, timeout=10)
    assert listed.status_code == 200 and simplified_report in {
        i["issue_id"] for i in listed.json()["issues"]}
    # The true negative: another community, however written, stays forbidden.
    elsewhere = submit(base, OTHER_REPORT, unscoped)
    for desk in (traditional, simplified):
        assert requests.get(f"{base}/issues/{elsewhere}", headers=desk,
                            timeout=10).status_code == 403
        for community in ("和平里社区", "和平里社區"):
            assert requests.get(f"{base}/issues", params={"community": community},
                                headers=desk, timeout=10).status_code == 403
            refused = requests.post(f"{base}/issues", headers=desk, timeout=10, json={
                **OTHER_REPORT, "location": {"community": community, "address": "2号楼"}})
            assert refused.status_code == 403, refused.text


UNKNOWN_ID = "WH-20261121-0999"
ISSUE_ROUTES = [  # every route with an issue in its path, and a body it takes
    ("GET", "{id}", None), ("GET", "{id}/events", None), ("GET", "{id}/notifications", None),
    ("POST", "{id}/table", {"meets_at": "2030-01-01T00:00:00Z", "place": "x",
                            "agencies": ["water"]}),
    ("POST", "{id}/table/agencies", {"agencies": ["water"]}),
    ("POST", "{id}/table/check-in", None),
    ("POST", "{id}/table/tasks", {"agency": "power", "description": "x",
                                  "due": "2030-01-01T00:00:00Z"}),
    ("POST", "{id}/table/tasks/T1/done", {"note": "x"}),
    ("POST", "{id}/table/tasks/T1/close", {"note": "x"}),
    ("POST", "{id}/split", None), ("POST", "{id}/triage", {"category": "flying_wire"}),
    ("POST", "{id}/reroute", {"category": "flying_wire", "reason": "x"}),
    ("POST", "{id}/rating-link", None), ("POST", "{id}/feedback", {"rating": "satisfied"}),
    ("POST", "{id}/rating", {"rating": "satisfied", "method": "phone"}),
    ("POST", "/agencies/water/assignments/{id}/acknowledge", None),
    ("POST", "/agencies/water/assignments/{id}/resolve", {"note": "x"}),
]


def test_an_unknown_issue_is_refused_as_one_the_caller_may_not_see(whistle):
    """docs/security.md: a desk outside the issue's communities, another agency and
    another issue's link learn nothing of an issue that is not theirs, its existence
    included. Ids are numbered by day; before, each got 403 for an issue that exists and
    404 for one that does not, over every issue route, so one link from a text message
    (or any agency's token) could count a district's reports."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, _power, issue_id = dispatched_wire(base, secret)
    elsewhere = submit(base, OTHER_REPORT, desk)
    callers = {
        "scoped desk elsewhere": staff_headers("desk", "d-2", secret, communities=["和平里社区"]),
        "another agency": staff_headers("water", "w-1", secret),
        "another issue's link": {
            "Authorization": f"Bearer {issue_resident_token(elsewhere, secret)}"},
    }
    for name, headers in callers.items():
        for method, path, body in ISSUE_ROUTES:
            heard = []
            for asked in (issue_id, UNKNOWN_ID):
                url = path.format(id=asked)
                response = requests.request(method, base + (url if url.startswith("/") else
                                                            f"/issues/{url}"),
                                            headers=headers, json=body, timeout=10)
                heard.append((response.status_code,
                              response.json()["error"]["message"].replace(asked, "{id}")))
            assert heard[0][0] in (401, 403), (name, path, heard)
            assert heard[1] == heard[0], (name, method, path, heard)
    # The list above is every route about one issue the services serve: a new one must
    # join it, and so be judged for an id that names no issue.
    walked = {route_of(config, method, path if path.startswith("/") else f"/issues/{path}")
              for method, path, _ in ISSUE_ROUTES}
    about_an_issue = {(method, rule) for method, rule in served_routes(config)
                      if "<issue_id>" in rule}
    assert about_an_issue - walked == set(), sorted(about_an_issue - walked)
    # Who may read every issue (the unscoped desk) or their own (a link) hears the 404.
    own_link = {"Authorization": f"Bearer {issue_resident_token(UNKNOWN_ID, secret)}"}
    for headers in (desk, own_link):
        response = requests.get(f"{base}/issues/{UNKNOWN_ID}", headers=headers, timeout=10)
        assert response.status_code == 404, response.text


def test_table_writes_check_the_caller_before_the_body(whistle):
    """A stranger with a bad body learns nothing from a 422: 401 anonymous, 403 for staff
    who may not; the desk with the same bad body gets the 422 naming the field."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk = staff_headers("desk", "d-1", secret)
    issue_id = submit(base, FLYING_WIRE, desk)
    resident = {"Authorization": "Bearer " + issue_feedback_token(
        issue_id, issue_id, 0, secret, ttl_s=3600)}
    got = {(path, who): requests.post(f"{base}/issues/{issue_id}{path}", headers=headers,
                                      json=bad, timeout=10).status_code
           for path, _, bad in TABLE_WRITES
           for who, headers in (("anonymous", {}), ("resident", resident))}
    assert got == {(path, who): {"anonymous": 401, "resident": 403}[who]
                   for path, who in got}
    water = staff_headers("water", "w-1", secret)
    for path in ("/table", "/table/tasks/T1/close"):  # desk-only: an agency is refused first
        response = requests.post(f"{base}/issues/{issue_id}{path}", headers=water,
                                 json={}, timeout=10)
        assert response.status_code == 403, (path, response.text)
    bad = requests.post(f"{base}/issues/{issue_id}/table", headers=desk,
                        json=TABLE_WRITES[0][2], timeout=10)
    assert bad.status_code == 422 and "meets_at" in bad.text, bad.text


# ------------------------------------------------------------------ tokens


def test_revoked_tokens_are_refused_everywhere_from_the_next_request(whistle, whistle_config):
    base, config = whistle
    secret = config[cfg.SECRET]
    token = issue_token("desk", "d-9", secret)
    desk = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{base}/issues", headers=desk).status_code == 200
    jti = _jti(token, secret)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, cfg.REDIS_URL: config[cfg.REDIS_URL],
           cfg.KEY_PREFIX: config[cfg.KEY_PREFIX]}
    done = subprocess.run([WHISTLE, "token", "revoke", jti], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and jti in done.stdout, done.stderr
    refused = requests.get(f"{base}/issues", headers=desk)
    assert refused.status_code == 401 and refused.json()["error"]["message"] == \
        "token has been revoked"
    with (ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc,
          pytest.raises(Unauthorized, match="revoked")):
        rpc.routing.split_issue(token, "WH-20261121-0001")
    # Every token of one staff member, at once (a lost phone):
    power = [issue_token("power", "p-7", secret) for _ in range(2)]
    done = subprocess.run([WHISTLE, "token", "revoke", "--staff", "power:p-7"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    for old in power:
        assert requests.get(f"{base}/agencies/power/assignments",
                            headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert requests.get(f"{base}/agencies/power/assignments",
                        headers=staff_headers("power", "p-8", secret)).status_code == 200


def test_a_token_issued_right_after_revoking_a_staff_member_is_good(whistle, monkeypatch):
    """A lost phone: ``whistle token revoke --staff power:p-6``, then at once a new token
    for the same person. Tokens say when they were issued in whole seconds, so one issued
    in the second of the revocation was refused for its whole life; the command now
    returns only once that second is over."""
    from click.testing import CliRunner

    from whistle.cli import cli

    base, config = whistle
    secret = config[cfg.SECRET]
    for name in (cfg.REDIS_URL, cfg.KEY_PREFIX):
        monkeypatch.setenv(name, str(config[name]))
    lost = issue_token("power", "p-6", secret)
    while time.time() % 1 > 0.2:  # early in a second: the new token is issued within it
        time.sleep(0.01)
    done = CliRunner().invoke(cli, ["token", "revoke", "--staff", "power:p-6"])
    assert done.exit_code == 0, done.output
    fresh = issue_token("power", "p-6", secret)
    listed = "/agencies/power/assignments"
    assert requests.get(f"{base}{listed}", headers={"Authorization": f"Bearer {lost}"}
                        ).status_code == 401
    assert requests.get(f"{base}{listed}", headers={"Authorization": f"Bearer {fresh}"}
                        ).status_code == 200


def test_a_refresh_gives_a_fresh_token_and_revokes_the_old_one(whistle):
    base, config = whistle
    secret = config[cfg.SECRET]
    old = issue_token("desk", "d-3", secret, communities=["缤泰社区"])
    fresh = requests.post(f"{base}/auth/refresh", headers={"Authorization": f"Bearer {old}"})
    assert fresh.status_code == 200, fresh.text
    body = fresh.json()
    assert set(body) == {"token", "jti", "expires_at"} and body["jti"] != _jti(old, secret)
    new = {"Authorization": f"Bearer {body['token']}"}
    assert requests.get(f"{base}/issues", headers=new).status_code == 200
    assert requests.get(f"{base}/issues", headers={"Authorization": f"Bearer {old}"}
                        ).status_code == 401
    # the scope travels with it
    assert requests.get(f"{base}/issues", headers=new,
                        params={"community": "和平里社区"}).status_code == 403


def test_every_write_is_audited_with_jti_and_staff_id_and_never_the_token(
        whistle, redis_client, caplog, capsys):
    base, config = whistle
    secret = config[cfg.SECRET]
    token = issue_token("desk", "d-5", secret)
    desk = {"Authorization": f"Bearer {token}"}
    issue_id = submit(base, FLYING_WIRE, desk)
    wait_for(lambda: status_of(base, issue_id, desk), lambda s: s == "dispatched")
    power_token = issue_token("power", "p-5", secret)
    power = {"Authorization": f"Bearer {power_token}"}
    caplog.set_level(logging.INFO)
    assert requests.post(f"{base}/agencies/power/assignments/{issue_id}/acknowledge",
                         headers=power).status_code == 200
    assert requests.post(f"{base}/agencies/water/assignments/{issue_id}/acknowledge",
                         headers=power).status_code == 403
    requests.get(f"{base}/issues/{issue_id}", headers=desk)  # a read: not audited

    entries = wait_for(lambda: audit_entries(redis_client, config[cfg.KEY_PREFIX]),
                       lambda e: len(e) >= 3)
    shown = [(e["action"], e["status"], e["staff_id"], e["jti"], e.get("issue_id"))
             for e in reversed(entries[:3])]
    assert shown == [
        ("issue.submit", "201", "d-5", _jti(token, secret), issue_id),
        ("assignment.acknowledge", "200", "p-5", _jti(power_token, secret), issue_id),
        ("assignment.acknowledge", "403", "p-5", _jti(power_token, secret), issue_id)]
    # A path's "issue id" is whatever the caller typed: a phone number is not recorded.
    assert requests.post(f"{base}/issues/13812345678/rating-link",
                         headers=desk).status_code == 404
    entries = wait_for(lambda: audit_entries(redis_client, config[cfg.KEY_PREFIX]),
                       lambda e: len(e) >= 4)
    assert (entries[0]["action"], entries[0]["status"], entries[0]["issue_id"]) == (
        "rating_link.resend", "404", "(not an issue id)")
    logs = capsys.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    everything = json.dumps(entries) + logs
    assert "13812345678" not in json.dumps(entries)
    assert token not in everything and power_token not in everything
    assert "eyJ" not in everything
    assert "forbidden_attempt" in logs and PHONE not in logs and NAME not in logs
    cli = subprocess.run([WHISTLE, "audit", "--json"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, cfg.REDIS_URL: config[cfg.REDIS_URL],
                              cfg.KEY_PREFIX: config[cfg.KEY_PREFIX]}, timeout=30)
    assert cli.returncode == 0 and "assignment.acknowledge" in cli.stdout


def test_a_submission_after_redis_forgot_its_scripts_is_admitted_stored_and_audited(
        whistle, redis_client):
    # The door's script, the day's counter and the create all run by EVALSHA: after a
    # Redis restart each is loaded again (shared.store.run_script), none is a 500.
    base, config = whistle
    token = issue_token("desk", "d-6", config[cfg.SECRET])
    desk = {"Authorization": f"Bearer {token}"}
    redis_client.script_flush()

    issue_id = submit(base, FLYING_WIRE, desk)

    assert requests.get(f"{base}/issues/{issue_id}", headers=desk).status_code == 200
    entries = audit_entries(redis_client, config[cfg.KEY_PREFIX])
    assert (entries[0]["action"], entries[0]["status"], entries[0]["staff_id"],
            entries[0]["issue_id"]) == ("issue.submit", "201", "d-6", issue_id)


def test_rpc_is_the_trusted_boundary_but_tokens_still_say_who_acts(whistle):
    base, config = whistle
    secret = config[cfg.SECRET]
    issue_id = submit(base, FLYING_WIRE, staff_headers("desk", "d-1", secret))
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        wait_for(lambda: rpc.intake.get_issue(issue_id)["status"], lambda s: s == "dispatched")
        with pytest.raises(Forbidden, match="not 'power'"):
            rpc.agency.acknowledge(issue_token("water", "w-1", secret), "power", issue_id)
        with pytest.raises(Unauthorized):
            rpc.agency.acknowledge("eyJhbGciOi.not-a-jwt", "power", issue_id)
        with pytest.raises(Forbidden):  # desk-only actions refuse agency staff
            rpc.routing.split_issue(issue_token("power", "p-1", secret), issue_id)
        rpc.agency.acknowledge(issue_token("power", "p-1", secret), "power", issue_id)


def _jti(token: str, secret: str) -> str:
    from shared.auth import verify_token

    return verify_token(token, secret).jti


# ------------------------------------------------------------------ limits


@pytest.fixture
def limited(runner_factory, whistle_config):
    """Two intake instances on one Redis, with small limits."""
    whistle_config.update({cfg.RATE_SUBMIT_ANONYMOUS: 3, cfg.RATE_READ: 5,
                           cfg.RATE_SUBMIT: 4, cfg.RATE_WINDOW_S: 60})
    second = dict(whistle_config, **{cfg.WEB_SERVER_ADDRESS: f"127.0.0.1:{free_port()}"})
    runner_factory(whistle_config, IntakeService).start()
    runner_factory(second, IntakeService).start()
    return [f"http://{c[cfg.WEB_SERVER_ADDRESS]}" for c in (whistle_config, second)], \
        whistle_config


def test_anonymous_submissions_are_limited_per_client_across_instances(limited,
                                                                        redis_client):
    (one, two), config = limited
    body = {**OTHER_REPORT, "channel": "app"}
    assert [requests.post(f"{url}/issues", json=body).status_code
            for url in (one, two, one)] == [201, 201, 201]
    refused = requests.post(f"{two}/issues", json=body)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    # Retry-After is what is left of this client's window: the counter's own TTL.
    [counter] = redis_client.keys(f"{config[cfg.KEY_PREFIX]}:rl:submit:*")
    left = redis_client.ttl(counter)
    assert 0 < left <= int(refused.headers["Retry-After"]) <= left + 1 <= 61
    # Another client (the desk, with its own budget) still passes, on either instance.
    desk = staff_headers("desk", "d-1", config[cfg.SECRET])
    assert requests.post(f"{one}/issues", json=body, headers=desk).status_code == 201


def test_reads_and_staff_submissions_are_limited_per_staff_member(limited):
    (one, two), config = limited
    secret = config[cfg.SECRET]
    busy = staff_headers("desk", "d-busy", secret)
    assert [requests.get(f"{url}/issues", headers=busy).status_code
            for url in (one, two, one, two, one)] == [200] * 5
    refused = requests.get(f"{two}/issues", headers=busy)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    calm = staff_headers("desk", "d-calm", secret)
    assert requests.get(f"{one}/issues", headers=calm).status_code == 200
    submitter = staff_headers("desk", "d-hotline", secret)
    assert [requests.post(f"{one}/issues", json=OTHER_REPORT, headers=submitter).status_code
            for _ in range(5)] == [201] * 4 + [429]


def test_anonymous_submission_can_be_turned_off(runner_factory, whistle_config):
    whistle_config[cfg.ANONYMOUS_SUBMIT] = "false"
    runner_factory(whistle_config, IntakeService).start()
    base = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"
    refused = requests.post(f"{base}/issues", json=OTHER_REPORT)
    assert refused.status_code == 401
    assert "anonymous submission is off" in refused.json()["error"]["message"]


def test_a_5_mb_body_gets_413_before_it_is_read_not_a_reset(runner_factory, whistle_config,
                                                            redis_client):
    runner_factory(whistle_config, IntakeService).start()
    host, port = whistle_config[cfg.WEB_SERVER_ADDRESS].split(":")
    size = 5 * 1024 * 1024
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /issues HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {size}\r\n\r\n".encode())
        sent = 0
        chunk = b"x" * 65536
        try:
            while sent < size:  # a client that keeps sending, as curl and requests do
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once it has answered: fine, if it answered
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)  # a reset here would raise ConnectionResetError
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert str(MAX_BODY_BYTES).encode() in body
    assert redis_client.zcard(f"{whistle_config[cfg.KEY_PREFIX]}:issues") == 0
    # A client that pauses mid-upload (a phone's slow uplink) and sends on after the
    # server has answered still reads the 413.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /issues HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {size}\r\n\r\n".encode())
        sock.sendall(chunk)
        time.sleep(0.5)
        try:
            for _ in range(10):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sock.recv(64).startswith(b"HTTP/1.1 413")
    # The same through an ordinary client library.
    base = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"
    response = requests.post(f"{base}/issues", data=b"x" * size,
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 413
    # And the server is fine afterwards.
    assert requests.get(f"{base}/health").status_code == 200


# ------------------------------------------------------------------ every route, every method


def test_every_route_refuses_an_expired_a_revoked_and_a_forged_token(whistle, redis_client):
    """A token that is present but bad is a 401 on every route the services serve, never
    anonymous and never the route's own 400/403/404/422: walked from the served routes
    themselves, so a new route is covered the day it is added (Open311's, whose callers are
    API keys and public readers, are judged in ``ELSEWHERE``; ``/health`` is for anyone)."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk = staff_headers("desk", "d-1", secret)
    issue_id = submit(base, FLYING_WIRE, desk)
    revoked = issue_token("desk", "d-4", secret)
    from shared.guard import revoke  # the command's own function: `whistle token revoke`
    revoke(redis_client, config[cfg.KEY_PREFIX], _jti(revoked, secret))
    bad = {
        "expired": issue_token("desk", "d-3", secret, ttl_s=1, now=time.time() - 3600),
        "revoked": revoked,
        "forged": issue_token("desk", "d-5", "not-" + secret),
        "expired link": issue_resident_token(issue_id, secret, ttl_s=1,
                                             now=time.time() - 3600),
    }
    heard = []
    for method, rule in sorted(route for route in served_routes(config) - set(ELSEWHERE)
                               if not route[1].startswith("/open311/")):
        path = _filled(rule, issue_id)
        for name, token in bad.items():
            for how in ("bearer", "query") if name == "expired link" else ("bearer",):
                response = requests.request(
                    method, base + path, timeout=10, json={},
                    headers={"Authorization": f"Bearer {token}"} if how == "bearer" else {},
                    params={"token": token} if how == "query" else None)
                assert "Traceback" not in response.text
                heard.append((method, rule, name, how, response.status_code))
    refused_otherwise = [h for h in heard if h[-1] != 401 and h[1] != "/health"]
    assert refused_otherwise == [], refused_otherwise


def _filled(rule: str, issue_id: str) -> str:
    """A served rule's path with its variables given: an agency's, a task's, an issue's."""
    def value(name: str) -> str:
        return {"agency": "power", "task_id": "T1", "task": "T1"}.get(name, issue_id)
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: value(m.group(1)), rule)


# Every RPC method, and who may call it (docs/rpc.md). Reads and operators' reloads take no
# token: the broker's credentials are the boundary. Every other method takes a token, and is
# called below with the wrong ones; a method missing here fails the test.
BROKER_ONLY = {"intake.submit_issue", "intake.get_issue", "intake.list_issues",
               "intake.list_page", "intake.get_events", "intake.stats", "intake.board",
               "notify.list_notifications", "routing.reload_rules", "routing.reload_model"}
_TABLE = {"meets_at": "2030-12-02T09:00:00+08:00", "place": "居委会", "agencies": []}
_TASK = {"agency": "power", "description": "更换线路", "due": "2099-12-02T09:00:00+08:00"}
STAFF_RPC = {  # method: (the call with a token, whether it is about one issue)
    "agency.list_assignments": (lambda rpc, t, i: rpc.agency.list_assignments(t, "power"), False),
    "agency.list_withdrawn": (lambda rpc, t, i: rpc.agency.list_withdrawn(t, "power"), False),
    "agency.acknowledge": (lambda rpc, t, i: rpc.agency.acknowledge(t, "power", i, {}), True),
    "agency.resolve": (lambda rpc, t, i: rpc.agency.resolve(t, "power", i, {"note": "x"}), True),
    "notify.resend_rating_link": (lambda rpc, t, i: rpc.notify.resend_rating_link(t, i), True),
    "notify.rating_link_reach": (lambda rpc, t, i: rpc.notify.rating_link_reach(t, i), True),
    "notify.desk_relays": (lambda rpc, t, i: rpc.notify.desk_relays(t), False),
    "notify.mark_relayed": (lambda rpc, t, i: rpc.notify.mark_relayed(t, "0" * 24, {}), False),
    "routing.explain_route": (lambda rpc, t, i: rpc.routing.explain_route(t, {"text": "x"}),
                              False),
    "routing.triage_issue": (lambda rpc, t, i: rpc.routing.triage_issue(
        t, i, {"category": "flying_wire"}), True),
    "routing.reroute_issue": (lambda rpc, t, i: rpc.routing.reroute_issue(
        t, i, {"category": "flying_wire", "reason": "x"}), True),
    "routing.convene_table": (lambda rpc, t, i: rpc.routing.convene_table(t, i, _TABLE), True),
    "routing.invite_to_table": (lambda rpc, t, i: rpc.routing.invite_to_table(
        t, i, {"agencies": ["water"]}), True),
    "routing.check_in_at_table": (lambda rpc, t, i: rpc.routing.check_in_at_table(t, i), True),
    "routing.record_table_task": (lambda rpc, t, i: rpc.routing.record_table_task(t, i, _TASK),
                                  True),
    "routing.complete_table_task": (lambda rpc, t, i: rpc.routing.complete_table_task(
        t, i, "T1", {"note": "x"}), True),
    "routing.close_table_task": (lambda rpc, t, i: rpc.routing.close_table_task(
        t, i, "T1", {"note": "x"}), True),
    "routing.split_issue": (lambda rpc, t, i: rpc.routing.split_issue(t, i), True),
    "routing.record_rating": (lambda rpc, t, i: rpc.routing.record_rating(
        t, i, {"rating": "satisfied", "method": "phone"}), True),
}
LINK_RPC = {  # the resident's link is the token
    "routing.submit_feedback": lambda rpc, t, i: rpc.routing.submit_feedback(
        i, {"token": t, "rating": "satisfied"}),
    "routing.resident_view": lambda rpc, t, i: rpc.routing.resident_view(i, t),
}


def rpc_methods() -> set[str]:
    """``service.method`` of every nameko RPC entrypoint Whistle's services declare."""
    from nameko.rpc import Rpc

    from services.web.service import WebService
    return {f"{service.name}.{name}"
            for service in (IntakeService, RoutingService, AgencyService, NotifyService,
                            WebService)
            for name, fn in vars(service).items()
            for entrypoint in getattr(fn, "nameko_entrypoints", ())
            if isinstance(entrypoint, Rpc)}


def test_every_rpc_method_is_listed_with_who_may_call_it():
    assert rpc_methods() == BROKER_ONLY | set(STAFF_RPC) | set(LINK_RPC)


def test_every_rpc_method_that_takes_a_token_refuses_the_wrong_ones(whistle, redis_client):
    """Over the broker, as over HTTP: an expired, revoked or forged token, or a resident's
    link where staff act, is ``Unauthorized``; another agency, and a desk scoped elsewhere on
    an issue, are ``Forbidden``; lists a scoped desk may read leave the issue out. Bodies are
    valid, so only who calls decides, and nothing is changed."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, _power, issue_id = dispatched_wire(base, secret)
    other_id = submit(base, OTHER_REPORT, desk)
    revoked = issue_token("desk", "d-4", secret)
    from shared.guard import revoke
    revoke(redis_client, config[cfg.KEY_PREFIX], _jti(revoked, secret))
    unauthorized = {
        "expired": issue_token("desk", "d-3", secret, ttl_s=1, now=time.time() - 3600),
        "revoked": revoked, "forged": issue_token("desk", "d-5", "not-" + secret),
        "a resident's link": issue_feedback_token(issue_id, issue_id, 0, secret, ttl_s=3600)}
    water = issue_token("water", "w-1", secret)
    elsewhere = issue_token("desk", "d-2", secret, communities=["和平里社区"])
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        before = rpc.intake.get_issue(issue_id)
        heard = []
        for method, (call, about_issue) in sorted(STAFF_RPC.items()):
            for name, token in unauthorized.items():
                heard.append((method, name, _outcome(call, rpc, token, issue_id)))
            heard.append((method, "another agency", _outcome(call, rpc, water, issue_id)))
            if about_issue:
                heard.append((method, "desk elsewhere",
                              _outcome(call, rpc, elsewhere, issue_id)))
        expected = [(method, name, "Forbidden" if name in ("another agency", "desk elsewhere")
                     else "Unauthorized") for method, name, _ in heard]
        assert heard == expected
        for method in ("agency.list_assignments", "agency.list_withdrawn",
                       "notify.desk_relays"):
            listed = json.dumps(STAFF_RPC[method][0](rpc, elsewhere, issue_id))
            assert issue_id not in listed, method
        links = {"expired link": (issue_feedback_token(issue_id, issue_id, 0, secret, ttl_s=1,
                                                       now=time.time() - 3600), "Unauthorized"),
                 "forged link": (issue_feedback_token(issue_id, issue_id, 0, "not-" + secret,
                                                      ttl_s=3600), "Unauthorized"),
                 "a staff token": (issue_token("desk", "d-1", secret), "Unauthorized"),
                 "another issue's link": (issue_feedback_token(other_id, other_id, 0, secret,
                                                               ttl_s=3600), "Forbidden")}
        heard = [(method, name, _outcome(call, rpc, token, issue_id))
                 for method, call in sorted(LINK_RPC.items())
                 for name, (token, _) in links.items()]
        assert heard == [(method, name, links[name][1]) for method, name, _ in heard]
        after = rpc.intake.get_issue(issue_id)
    assert (after["status"], after["table"], after["timeline"]) == (
        before["status"], before["table"], before["timeline"])


# Every staff method about one issue that takes a body, called with a body it refuses.
INVALID_BODIES = {
    "agency.acknowledge": lambda rpc, t, i: rpc.agency.acknowledge(t, "power", i, {"note": 7}),
    "agency.resolve": lambda rpc, t, i: rpc.agency.resolve(t, "power", i, {}),
    "routing.triage_issue": lambda rpc, t, i: rpc.routing.triage_issue(t, i, {"category": 5}),
    "routing.reroute_issue": lambda rpc, t, i: rpc.routing.reroute_issue(t, i, {}),
    "routing.convene_table": lambda rpc, t, i: rpc.routing.convene_table(
        t, i, TABLE_WRITES[0][2]),
    "routing.invite_to_table": lambda rpc, t, i: rpc.routing.invite_to_table(
        t, i, TABLE_WRITES[1][2]),
    "routing.record_table_task": lambda rpc, t, i: rpc.routing.record_table_task(
        t, i, TABLE_WRITES[2][2]),
    "routing.complete_table_task": lambda rpc, t, i: rpc.routing.complete_table_task(
        t, i, "T1", {}),
    "routing.close_table_task": lambda rpc, t, i: rpc.routing.close_table_task(t, i, "T1", {}),
    "routing.record_rating": lambda rpc, t, i: rpc.routing.record_rating(t, i, {}),
}


def test_over_rpc_who_may_not_touch_an_issue_is_refused_before_its_body(whistle):
    """As over HTTP (``_caller_then_body``): a desk scoped to other communities, and an
    agency with no part in the issue, are ``Forbidden`` whatever the body, and learn
    nothing of the issue from an ``InvalidPayload``. Over RPC they were told the body was
    wrong first. The desk that may act on it still hears what is wrong with the body."""
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, _power, issue_id = dispatched_wire(base, secret)
    assert set(INVALID_BODIES) == {method for method, (call, about_issue) in STAFF_RPC.items()
                                   if about_issue and method not in (
                                       "notify.resend_rating_link", "notify.rating_link_reach",
                                       "routing.check_in_at_table", "routing.split_issue")}
    outsiders = {"desk elsewhere": issue_token("desk", "d-2", secret,
                                               communities=["和平里社区"]),
                 "agency with no part": issue_token("water", "w-1", secret)}
    desk_token = desk["Authorization"].removeprefix("Bearer ")
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        before = rpc.intake.get_issue(issue_id)
        heard = [(method, name, _outcome(call, rpc, token, issue_id))
                 for method, call in sorted(INVALID_BODIES.items())
                 for name, token in outsiders.items()]
        assert heard == [(method, name, "Forbidden") for method, name, _ in heard]
        assert _outcome(INVALID_BODIES["routing.convene_table"], rpc, desk_token,
                        issue_id) == "InvalidPayload"
        after = rpc.intake.get_issue(issue_id)
    # Notify's steps may still come in (delivery notes); routing's and the agency's may not.
    def changes(issue):
        return (issue["status"], issue["table"], issue["assignments"],
                [s for s in issue["timeline"] if s["service"] in ("routing", "agency")])
    assert changes(after) == changes(before)


def _outcome(call, *args) -> str:
    try:
        call(*args)
    except Exception as refused:  # noqa: BLE001 - the class's name is the outcome
        return type(refused).__name__
    return "allowed"


def test_a_residents_link_read_as_json_sends_no_referrer_to_another_origin(whistle):
    """A resident's link reads the API too (``/issues/{id}?token=…``, docs/http.md), in a
    browser as readily as in the app. The pages said ``Referrer-Policy: no-referrer``; the
    API's answers said nothing, so the browser's own policy decided whether an address
    holding the token went along to another origin (a link followed from the JSON viewer,
    an extension's fetch). Every JSON answer, refusals included, now says no referrer and
    no sniffing, as the pages do."""
    base, config = whistle
    secret = config[cfg.SECRET]
    issue_id = submit(base, FLYING_WIRE, staff_headers("desk", "d-1", secret))
    link = {"token": issue_resident_token(issue_id, secret)}
    answers = [requests.get(f"{base}/issues/{issue_id}", params=link, timeout=10),
               requests.get(f"{base}/issues/{issue_id}/notifications", params=link, timeout=10),
               requests.get(f"{base}/issues/{issue_id}/events", params=link, timeout=10)]
    assert [a.status_code for a in answers] == [200, 200, 403]
    assert [(a.headers.get("Referrer-Policy"), a.headers.get("X-Content-Type-Options"))
            for a in answers] == [("no-referrer", "nosniff")] * 3

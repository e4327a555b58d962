"""A list filtered by a value outside its closed set is refused, not answered empty.

``GET /issues?agency=nobody`` answered 200 with no issues: the desk read a typo as a
quiet day. Agencies are the rules' (the rules file in force); statuses and priorities
are the contracts' enums; a community is an open set (any name a report gave), so an
unknown one is still an empty list. Against the real services (RabbitMQ, Redis,
PostgreSQL), over HTTP and RPC.
"""

from __future__ import annotations

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_token
from shared.errors import InvalidPayload
from tests.support.auth import DESK, staff_headers

pytestmark = pytest.mark.integration


@pytest.fixture
def whistle(runner_factory, whistle_config):
    runner_factory(whistle_config, IntakeService, RoutingService, AgencyService).start()
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}", whistle_config


def refused_field(response: requests.Response) -> dict:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_payload", error
    [field] = error["fields"]
    return field


def test_an_unknown_agency_or_status_on_the_http_lists_is_a_422_naming_it(whistle):
    base, _ = whistle
    field = refused_field(requests.get(f"{base}/issues", params={"agency": "nobody"},
                                       headers=DESK, timeout=5))
    assert field["field"] == "agency" and field["type"] == "unknown"
    assert field["message"].startswith("unknown agency 'nobody'; one of ")
    assert "power" in field["message"] and "water" in field["message"]
    field = refused_field(requests.get(f"{base}/issues", params={"status": "opne"},
                                       headers=DESK, timeout=5))
    assert field["field"] == "status" and "'dispatched'" in field["message"]
    # The agency's list: the agency is in the path, and a desk may list any agency's.
    field = refused_field(requests.get(f"{base}/agencies/nobody/assignments", headers=DESK,
                                       timeout=5))
    assert field["field"] == "agency" and "power" in field["message"]
    # Who may ask comes first: another agency's list is still a 403 to agency staff.
    power = staff_headers("power")
    assert requests.get(f"{base}/issues", params={"agency": "nobody"}, headers=power,
                        timeout=5).status_code == 403
    assert requests.get(f"{base}/agencies/nobody/assignments", headers=power,
                        timeout=5).status_code == 403
    # Known values still list, empty or not.
    for path, params in (("/issues", {"agency": "power"}), ("/agencies/power/assignments", {}),
                         ("/issues", {"status": "dispatched"})):
        assert requests.get(f"{base}{path}", params=params, headers=DESK,
                            timeout=5).status_code == 200, path


def test_a_community_is_an_open_set_so_an_unknown_one_lists_nothing(whistle):
    """Any community a report names is taken at submission: one with no reports yet is
    not a typo Whistle could tell apart, so it lists nothing, as it did."""
    base, _ = whistle
    listed = requests.get(f"{base}/issues", params={"community": "没有这个社区"}, headers=DESK,
                          timeout=5)
    assert listed.status_code == 200 and listed.json()["issues"] == []


def test_an_unknown_agency_on_the_rpc_lists_is_a_typed_error(whistle):
    _, config = whistle
    desk = issue_token("desk", "d-1", config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        calls = (lambda: rpc.intake.list_issues({"agency": "nobody"}),
                 lambda: rpc.intake.list_page({"agency": "nobody"}),
                 lambda: rpc.intake.board({"agency": "nobody"}),
                 lambda: rpc.agency.list_assignments(desk, "nobody"))
        for call in calls:
            with pytest.raises(InvalidPayload) as refused:
                call()
            [field] = refused.value.errors
            assert field["field"] == "agency" and "power" in field["message"]
        with pytest.raises(InvalidPayload) as refused:
            rpc.intake.board({"priority": "urgnet"})
        assert [f["field"] for f in refused.value.errors] == ["priority"]
        assert rpc.intake.board({"agency": "power"})["rows"] == []
        assert rpc.agency.list_assignments(desk, "power") == []


# -------------------------------------------------------------- yes-or-no values


def test_a_yes_or_no_is_true_or_false_on_the_query_and_a_json_boolean_in_a_body(whistle):
    """``?triage=yes`` and ``"urgent": "yes"`` were read as true by pydantic's lax bools.
    A query string is text, so ``true``/``false`` are converted where it is read; a JSON
    body takes JSON's booleans only. The pages' forms convert theirs (``_route``)."""
    base, _ = whistle
    for said in ("yes", "1", "True"):
        field = refused_field(requests.get(f"{base}/issues", params={"triage": said},
                                           headers=DESK, timeout=5))
        assert field == {"field": "triage", "type": "bool_type",
                         "message": "must be true or false"}, said
    for said in ("true", "false"):
        assert requests.get(f"{base}/issues", params={"triage": said}, headers=DESK,
                            timeout=5).status_code == 200, said
    made = requests.post(f"{base}/issues", headers=DESK, timeout=10, json={
        "description": "楼道里有根电线耷拉下来", "location": {"community": "缤泰社区",
                                                      "address": "丽德花园9号楼"}})
    assert made.status_code == 201, made.text
    issue_id = made.json()["issue_id"]
    for path in ("triage", "reroute"):
        field = refused_field(requests.post(f"{base}/issues/{issue_id}/{path}", headers=DESK,
                                            timeout=5, json={"category": "flying_wire",
                                                             "reason": "看过了",
                                                             "urgent": "yes"}))
        assert field["field"] == "urgent" and field["type"] == "bool_type", path
        assert "a JSON boolean" in field["message"], path


def test_the_pages_reroute_form_says_urgent_in_words_and_they_become_booleans():
    from services.web.service import _route

    assert _route({"category": "flying_wire", "urgent": "yes"})["urgent"] is True
    assert _route({"category": "flying_wire", "urgent": "no"})["urgent"] is False
    assert "urgent" not in _route({"category": "flying_wire", "urgent": " "})
    # anything else is routing's to refuse, named: no longer taken as true
    assert _route({"category": "flying_wire", "urgent": "on"})["urgent"] == "on"

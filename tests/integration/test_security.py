"""Nobody acts where they don't belong: agency tokens over HTTP and RPC."""

import logging
import time

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_token
from shared.errors import Forbidden, Unauthorized

pytestmark = pytest.mark.integration


@pytest.fixture
def dispatched(runner_factory, whistle_config):
    runner_factory(whistle_config, IntakeService, RoutingService, AgencyService).start()
    base = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"
    issue_id = requests.post(f"{base}/issues", json={
        "description": "小区里有根电线耷拉下来了", "location": {"community": "缤泰社区",
                                                         "address": "丽德花园9号楼"},
        "contact": {"name": "赵大爷", "phone": "13700009999"}}).json()["issue_id"]
    deadline = time.monotonic() + 10
    while requests.get(f"{base}/issues/{issue_id}").json()["status"] != "dispatched":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return base, issue_id


def tokens(secret):
    return {
        "other agency": issue_token("water", "w-1", secret),
        "expired": issue_token("power", "p-1", secret, ttl_s=60, now=time.time() - 3600),
        "forged": issue_token("power", "p-1", "not-the-secret-" * 3),
        "malformed": "eyJhbGciOi.not-a-jwt",
    }


def test_every_bad_token_is_refused_over_http_and_nothing_changes(dispatched, whistle_config):
    base, issue_id = dispatched
    url = f"{base}/agencies/power/assignments/{issue_id}/acknowledge"
    expected = {"other agency": 403, "expired": 401, "forged": 401, "malformed": 401}
    for name, token in tokens(whistle_config[cfg.SECRET]).items():
        response = requests.post(url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == expected[name], (name, response.text)
        assert response.json()["error"]["code"] in ("forbidden", "unauthorized")
    assert requests.post(url).status_code == 401
    assert requests.post(url, headers={"Authorization": "Basic Zm9vOmJhcg=="}).status_code == 401
    issue = requests.get(f"{base}/issues/{issue_id}").json()
    assert issue["assignments"][0]["status"] == "assigned"
    assert [e["step"] for e in issue["timeline"]].count("acknowledged") == 0


def test_rpc_raises_typed_errors_and_logs_the_attempt_without_personal_data(
        dispatched, whistle_config, caplog, capsys):
    base, issue_id = dispatched
    bad = tokens(whistle_config[cfg.SECRET])
    caplog.set_level(logging.WARNING)
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        with pytest.raises(Forbidden, match="not 'power'"):
            rpc.agency.acknowledge(bad["other agency"], "power", issue_id)
        for name in ("expired", "forged", "malformed"):
            with pytest.raises(Unauthorized):
                rpc.agency.resolve(bad[name], "power", issue_id, {"note": "x"})
        with pytest.raises(Forbidden):
            rpc.agency.list_assignments(bad["other agency"], "power")
        with pytest.raises(Forbidden):  # desk-only actions refuse agency staff
            rpc.routing.split_issue(issue_token("power", "p-1", whistle_config[cfg.SECRET]),
                                    issue_id)
    assert requests.get(f"{base}/issues/{issue_id}").json()["assignments"][0][
        "status"] == "assigned"
    # Our own lines are written straight to stderr; other libraries' go through logging.
    written = capsys.readouterr().err
    assert "forbidden_attempt" in written, "the refused attempt is logged"
    text = written + "\n".join(r.getMessage() for r in caplog.records)
    assert "13700009999" not in text and "赵大爷" not in text

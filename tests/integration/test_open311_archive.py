"""Open311 over the archive (real PostgreSQL): a request answers the same, by id and in
the lists, before and after its issue leaves Redis for PostgreSQL."""

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.intake.archiver import Archiver
from services.intake.open311.clients import Open311Clients
from shared import config as cfg
from shared.auth import issue_feedback_token, issue_token
from tests.support import open311_schemas as schemas
from tests.support.chain import resolve_and_rate_satisfied
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

V2 = "/open311/v2"


@pytest.fixture(params=["true", "false"], ids=["public-reads", "keyed-reads"])
def config(request, whistle_config, fresh_database_url):
    """Both read modes: keyed reads list the client's own requests from its own index."""
    return {**whistle_config, cfg.DATABASE_URL: fresh_database_url,
            cfg.OPEN311_PUBLIC_READ: request.param}


def test_an_archived_request_answers_as_it_did_when_hot(whistle, config, store, archive):
    key = Open311Clients(store.redis, config[cfg.KEY_PREFIX]).add("fixmystreet")
    made = requests.post(f"{whistle}{V2}/requests.json", timeout=10, data={
        "api_key": key, "service_code": "flying_wire", "address_string": "丽德花园北门",
        "attribute[community]": "缤泰社区", "description": "门口电线耷拉下来，孙大爷13812345678说的",
        "first_name": "大爷", "last_name": "孙", "phone": "13812345678"})
    assert made.status_code == 201, made.text
    issue_id = made.json()[0]["service_request_id"]

    def request():
        return requests.get(f"{whistle}{V2}/requests/{issue_id}.json", timeout=5,
                            params={"api_key": key}).json()[0]

    wait_until(lambda: request()["agency_responsible"] == "供电公司")
    token = issue_token("power", "p-007", config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        rpc.agency.acknowledge(token, "power", issue_id)
        rpc.agency.resolve(token, "power", issue_id, {"note": "已断电并重新架设"})
    wait_until(lambda: request()["status"] == "closed")
    rated = requests.post(f"{whistle}/issues/{issue_id}/feedback", timeout=5, params={
        "token": issue_feedback_token(issue_id, issue_id, 0, config[cfg.SECRET], 3600)},
        json={"rating": "satisfied"})
    assert rated.status_code == 200, rated.text
    wait_until(lambda: store.get(issue_id).status.value == "closed")

    def answers():
        def get(path, **params):
            response = requests.get(f"{whistle}{V2}/{path}", timeout=5,
                                    params={**params, "api_key": key})
            assert response.status_code == 200, response.text
            return response.json()
        return {"updates": get("servicerequestupdates.json"),
                "by_id": get(f"requests/{issue_id}.json"),
                "listed": get("requests.json"),
                "closed": get("requests.json", status="closed"),
                "open": get("requests.json", status="open"),
                "by_code": get("requests.json", service_code="flying_wire")}

    hot = answers()
    assert [u["status"] for u in hot["updates"]][-1] == "closed"

    assert hot["by_id"][0]["status_notes"] == "已结单：居民满意"
    assert hot["by_id"][0]["description"] == "门口电线耷拉下来，孙**138****5678说的"
    assert [r["service_request_id"] for r in hot["closed"]] == [issue_id]
    assert hot["open"] == []

    done = Archiver(store, archive, retention_s=0).run_until_idle(now_ts=9e9)
    assert done.archived == [issue_id]
    assert not store.redis.exists(store.keys.issue(issue_id))

    cold = answers()
    assert cold == hot
    schemas.validate(cold["listed"], schemas.REQUESTS)


def test_a_merged_report_keeps_its_issues_updates_once_both_are_archived(whistle, config,
                                                                         store, archive):
    """A report merged into another shows that issue's steps as its own updates
    (``…-{report id}``); read from Redis's journal of that issue only, they were lost once
    the two moved to PostgreSQL: FixMyStreet's poll of the day gave 7 updates fewer."""
    key = Open311Clients(store.redis, config[cfg.KEY_PREFIX]).add("fixmystreet")
    report = {"api_key": key, "service_code": "pipe_leak", "address_string": "和平里5号楼",
              "attribute[community]": "和平里社区", "attribute[building]": "2单元",
              "description": "楼上漏水，卫生间天花板一直在滴水"}

    def post(**extra):
        made = requests.post(f"{whistle}{V2}/requests.json", timeout=10,
                             data={**report, **extra})
        assert made.status_code == 201, made.text
        return made.json()[0]["service_request_id"]

    first = post(phone="13611112222")
    wait_until(lambda: store.get(first).status.value == "dispatched")
    second = post(phone="13633334444", description="楼上漏水，天花板滴水好几天了")
    wait_until(lambda: store.get(second).merged_into == first)
    resolve_and_rate_satisfied(whistle, config, store, first)

    def updates():
        response = requests.get(f"{whistle}{V2}/servicerequestupdates.json", timeout=5,
                                params={"api_key": key})
        assert response.status_code == 200, response.text
        return response.json()

    hot = updates()
    of_second = [u for u in hot if u["service_request_id"] == second]
    assert [u["status"] for u in of_second][-1] == "closed"
    assert any(u["update_id"].endswith(f"-{second}") for u in of_second)

    done = Archiver(store, archive, retention_s=0).run_until_idle(now_ts=9e9)
    assert sorted(done.archived) == sorted([first, second])
    assert not store.redis.exists(store.keys.issue(first))

    assert updates() == hot

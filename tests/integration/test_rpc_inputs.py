"""What an RPC client may pass, against the real services (RabbitMQ, Redis, PostgreSQL):
whatever the arguments, a typed Whistle error and services that go on answering."""

from __future__ import annotations

import time

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_resident_token, issue_token
from shared.errors import InvalidPayload, NotFound
from tests.support.auth import staff_headers

pytestmark = pytest.mark.integration

FLYING_WIRE = {"description": "小区里有根电线耷拉下来了，不知道有没有电",
               "location": {"community": "缤泰社区", "address": "丽德花园9号楼"}}


@pytest.fixture
def whistle(runner_factory, whistle_config):
    runner_factory(whistle_config, IntakeService, RoutingService, AgencyService,
                   NotifyService).start()
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}", whistle_config


def dispatched(base: str, rpc) -> str:
    response = requests.post(f"{base}/issues", json=FLYING_WIRE, headers=staff_headers(),
                             timeout=10)
    assert response.status_code == 201, response.text
    issue_id = response.json()["issue_id"]
    deadline = time.monotonic() + 15
    while rpc.intake.get_issue(issue_id)["status"] != "dispatched":
        assert time.monotonic() < deadline, "never dispatched"
        time.sleep(0.05)
    return issue_id


@pytest.mark.parametrize("issue_id", [7, None, ["WH-20261121-0001"], {"id": 1}])
def test_an_issue_id_that_is_no_string_is_not_found_and_every_service_goes_on(whistle,
                                                                               issue_id):
    base, config = whistle
    secret = config[cfg.SECRET]
    desk, power = issue_token("desk", "d-1", secret), issue_token("power", "p-1", secret)
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        calls = [
            lambda: rpc.intake.get_issue(issue_id),
            lambda: rpc.intake.get_events(issue_id),
            lambda: rpc.notify.list_notifications(issue_id),
            lambda: rpc.notify.resend_rating_link(desk, issue_id),
            lambda: rpc.notify.rating_link_reach(desk, issue_id),
            lambda: rpc.agency.acknowledge(power, "power", issue_id),
            lambda: rpc.agency.resolve(power, "power", issue_id, {"note": "修好了"}),
            lambda: rpc.routing.split_issue(desk, issue_id),
            lambda: rpc.routing.reroute_issue(desk, issue_id, {"category": "flying_wire",
                                                               "reason": "试一下"}),
        ]
        for call in calls:
            with pytest.raises(NotFound):
                call()
        # Every service still answers: the agency, routing and notify containers alike.
        issue_id = dispatched(base, rpc)
        assert rpc.agency.acknowledge(power, "power", issue_id)["status"] == "acknowledged"
        assert rpc.notify.list_notifications(issue_id) is not None
        with pytest.raises(InvalidPayload):
            rpc.routing.reroute_issue(desk, issue_id, {})


def test_arguments_beside_the_payload_are_validated_too(whistle):
    """``stats``' communities, ``list_assignments``' status and ``resident_view``'s lang
    were used as given: a TypeError or a PostgreSQL error came back as a RemoteError."""
    base, config = whistle
    secret = config[cfg.SECRET]
    power = issue_token("power", "p-1", secret)
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        issue_id = dispatched(base, rpc)
        for communities, field in ((7, "communities"), ("缤泰社区", "communities"),
                                   (["a\x00b"], "communities.0"), ([1], "communities.0")):
            with pytest.raises(InvalidPayload) as refused:
                rpc.intake.stats(None, communities)
            assert [f["field"] for f in refused.value.errors] == [field], communities
        assert rpc.intake.stats(None, ["缤泰社区"])["window"]["issues"] == 1
        for status in (["open"], {"a": 1}, 7):
            with pytest.raises(InvalidPayload, match="invalid status"):
                rpc.agency.list_assignments(power, "power", status)
        resident = issue_resident_token(issue_id, secret)
        for lang in (["en"], "fr"):
            with pytest.raises(InvalidPayload) as refused:
                rpc.routing.resident_view(issue_id, resident, lang)
            assert [f["field"] for f in refused.value.errors] == ["lang"]
        assert rpc.routing.resident_view(issue_id, resident, "en")["language"] == "en"

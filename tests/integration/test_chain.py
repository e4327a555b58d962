"""The whole chain in one process: four real containers on RabbitMQ and Redis."""

import time

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_token

pytestmark = pytest.mark.integration


def wait_until(probe, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def whistle(runner_factory, whistle_config):
    runner = runner_factory(whistle_config, IntakeService, RoutingService, AgencyService,
                            NotifyService)
    runner.start()
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"


def test_flying_wire_goes_to_power_and_resident_is_told(whistle, whistle_config):
    receipt = requests.post(f"{whistle}/issues", json={
        "description": "小区门口有根电线耷拉下来，不知道有没有电",
        "location": {"community": "缤泰社区", "address": "丽德花园北门"},
        "contact": {"name": "孙大爷", "phone": "13812345678"},
        "channel": "hotline",
    }, timeout=5)
    assert receipt.status_code == 201, receipt.text
    issue_id = receipt.json()["issue_id"]

    issue = wait_until(lambda: (i := requests.get(f"{whistle}/issues/{issue_id}").json())
                       ["status"] == "dispatched" and i)
    assert issue["priority"] == "urgent"
    assert [(a["agency"], a["role"]) for a in issue["assignments"]] == [("power", "lead")]
    assert issue["contact"]["phone"] == "138****5678"

    token = issue_token("power", "p-007", whistle_config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        open_items = rpc.agency.list_assignments(token, "power")
        assert [a["issue_id"] for a in open_items] == [issue_id]
        rpc.agency.acknowledge(token, "power", issue_id)
        done = rpc.agency.resolve(token, "power", issue_id, {"note": "已断电并重新架设"})
    assert done["issue_status"] == "resolved"

    kinds = wait_until(lambda: len(n := requests.get(
        f"{whistle}/issues/{issue_id}/notifications").json()["notifications"]) == 4 and n)
    assert [n["kind"] for n in kinds] == ["received", "dispatched", "acknowledged", "resolved"]
    assert all(n["status"] == "sent" for n in kinds)
    assert issue_id in kinds[0]["text"]

"""The agency workspace during a rolling upgrade: the web service of this release beside an
agency service of the release before it, which has no ``list_withdrawn`` (nameko answers
MethodNotFound), over the real broker. The workspace used to be a 503 page until agency
was upgraded; now it lists what the older agency can list and says what may be missing."""

from __future__ import annotations

import re

import pytest
import requests
from nameko.exceptions import MethodNotFound
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from services.web.service import WebService
from shared import config as cfg
from shared.auth import issue_token
from tests.integration.test_archive_withdrawn import taken_from_water

pytestmark = pytest.mark.integration
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class AgencyOfTheEarlierRelease(AgencyService):
    """agency as the release before ``list_withdrawn``: the same service, without it."""

    list_withdrawn = None  # no longer a method: nameko registers no entrypoint for it


@pytest.fixture
def config(whistle_config):
    return {**whistle_config, cfg.ROUTING_MODEL: "keywords"}  # what these reports match is known


def workspace(base: str, config: dict, agency: str) -> requests.Response:
    staff = requests.Session()
    form = staff.get(f"{base}/signin", timeout=5).text
    signed = staff.post(f"{base}/signin", timeout=5, allow_redirects=False, data={
        "token": issue_token(agency, "s-1", config[cfg.SECRET]),
        "csrf": CSRF.search(form).group(1)})
    assert signed.status_code == 303, signed.text
    return staff.get(f"{base}/agency", timeout=15)


@pytest.mark.parametrize("agency_service", [AgencyOfTheEarlierRelease, AgencyService],
                         ids=["earlier-agency", "this-release"])
def test_the_workspace_lists_what_agency_can_and_says_what_may_be_missing(
        runner_factory, config, agency_service):
    runner_factory(config, IntakeService, RoutingService, agency_service, NotifyService,
                   WebService).start()
    base = f"http://{config[cfg.WEB_SERVER_ADDRESS]}"
    hot = taken_from_water(base, config, "丽德花园3号楼")
    water = issue_token("water", "w-1", config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        if agency_service is AgencyOfTheEarlierRelease:  # truly without it, on the broker
            with pytest.raises(MethodNotFound):
                rpc.agency.list_withdrawn(water, "water")
        listed = rpc.agency.list_assignments(water, "water", "withdrawn")
        assert [a["issue_id"] for a in listed] == [hot]

    page = workspace(base, config, "water")
    assert page.status_code == 200, page.text[-2000:]  # was 503 beside the earlier agency
    assert f'id="w-{hot}"' in page.text  # the withdrawn issue, listed
    assert 'id="withdrawn-archive-unavailable"' not in page.text  # the archive is up
    said = 'id="withdrawn-archive-not-read"' in page.text
    assert said is (agency_service is AgencyOfTheEarlierRelease)
    if said:
        assert "系统正在升级，下面可能缺少已归档问题（结案一天以上）的撤回记录" in page.text

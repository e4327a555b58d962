"""Open311's public reads show the building, never the flat, over real HTTP, in the
address and in the description; the desk, the agency that goes there and the resident
still read the whole address and the description as written, and an agency a reroute
withdrew reads the building only."""

from xml.etree import ElementTree

import pytest
import requests

from services.intake.open311.clients import Open311Clients
from shared import config as cfg
from shared.auth import issue_feedback_token, issue_token
from tests.support import open311_schemas as schemas
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

V2 = "/open311/v2"


@pytest.fixture
def config(whistle_config, fresh_database_url):
    return {**whistle_config, cfg.DATABASE_URL: fresh_database_url}


def test_a_public_read_has_no_flat_and_the_desk_still_does(whistle, config, store):
    key = Open311Clients(store.redis, config[cfg.KEY_PREFIX]).add("fixmystreet")
    posted = requests.post(f"{whistle}{V2}/requests.json", timeout=10, data={
        "api_key": key, "service_code": "pipe_leak", "address_string": "丽德花园",
        "attribute[community]": "缤泰社区", "attribute[building]": "3号楼2单元501",
        "description": "我家501室，楼上402天天漏水，天花板一直滴水"})
    assert posted.status_code == 201, posted.text
    leak_id = posted.json()[0]["service_request_id"]
    desk = {"Authorization": "Bearer " + issue_token("desk", "d-001", config[cfg.SECRET])}
    filed = requests.post(f"{whistle}/issues", timeout=10, headers=desk, json={
        "description": "The radiator in the flat is cold", "language": "en",
        "location": {"community": "缤泰社区", "address": "Flat 5, 12 Rose Court"}})
    assert filed.status_code == 201, filed.text
    radiator_id = filed.json()["issue_id"]

    def public(path, fmt="json"):
        response = requests.get(f"{whistle}{V2}/{path}.{fmt}", timeout=5)
        assert response.status_code == 200, response.text
        return response

    wait_until(lambda: public(f"requests/{leak_id}").json()[0]["agency_responsible"])
    one = public(f"requests/{leak_id}").json()
    schemas.validate(one, schemas.REQUESTS)
    assert one[0]["address"] == "丽德花园 3号楼"
    listed = {r["service_request_id"]: r["address"] for r in public("requests").json()}
    assert listed == {leak_id: "丽德花园 3号楼", radiator_id: "12 Rose Court"}
    as_xml = ElementTree.fromstring(public("requests", fmt="xml").content)
    assert sorted(r.findtext("address") for r in as_xml.findall("request")) == [
        "12 Rose Court", "丽德花园 3号楼"]
    # The flats the resident named in the description are masked too.
    assert one[0]["description"] == "我家***，楼上***天天漏水，天花板一直滴水"
    assert [r.findtext("description") for r in as_xml.findall("request")
            if r.findtext("service_request_id") == leak_id] == [one[0]["description"]]
    for path in ("requests", f"requests/{leak_id}", "servicerequestupdates"):
        for fmt in ("json", "xml"):
            text = public(path, fmt).text
            assert "2单元501" not in text and "Flat 5" not in text, (path, fmt)
            assert "501室" not in text and "楼上402" not in text, (path, fmt)

    # Those who work from the whole address still read it.
    def address_read_by(headers):
        response = requests.get(f"{whistle}/issues/{leak_id}", timeout=5, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        return (body.get("location") or {}).get("address") or body.get("address")

    water = issue_token("water", "w-007", config[cfg.SECRET])
    resident = issue_feedback_token(leak_id, leak_id, 0, config[cfg.SECRET], 3600)
    assert address_read_by(desk) == "丽德花园 3号楼2单元501"
    assert address_read_by({"Authorization": f"Bearer {water}"}) == "丽德花园 3号楼2单元501"
    assert address_read_by({"Authorization": f"Bearer {resident}"}) == "丽德花园 3号楼2单元501"
    for reader in (desk, {"Authorization": f"Bearer {water}"},
                   {"Authorization": f"Bearer {resident}"}):
        description = requests.get(f"{whistle}/issues/{leak_id}", timeout=5,
                                   headers=reader).json()["description"]
        assert description == "我家501室，楼上402天天漏水，天花板一直滴水"

    # A reroute withdraws the water company: it no longer goes there, so the building.
    rerouted = requests.post(f"{whistle}/issues/{leak_id}/reroute", timeout=10, headers=desk,
                             json={"category": "flying_wire", "reason": "是电线，不是水管"})
    assert rerouted.status_code == 200, rerouted.text
    wait_until(lambda: "water" in {a["agency"] for a in requests.get(
        f"{whistle}/issues/{leak_id}", timeout=5, headers=desk).json()["withdrawn"]})
    assert address_read_by({"Authorization": f"Bearer {water}"}) == "丽德花园 3号楼"
    power = issue_token("power", "p-007", config[cfg.SECRET])
    assert address_read_by({"Authorization": f"Bearer {power}"}) == "丽德花园 3号楼2单元501"
    assert address_read_by(desk) == "丽德花园 3号楼2单元501"

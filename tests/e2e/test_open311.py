"""Open311 GeoReport v2 against a live Whistle (``whistle up``, real RabbitMQ and Redis).

Reads go through ``georeport``, a real Open311 client from PyPI, in JSON and XML;
posting, which that client does not do, and every error case go over raw HTTP the
way FixMyStreet sends them (form-encoded, ``attribute[...]`` fields). JSON answers
are checked against the GeoReport v2 schemas (tests/support/open311_schemas.py).
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
import redis
import requests
import xmltodict
from georeport import GeoReport

from shared import config as cfg
from shared.auth import issue_token
from shared.guard import audit_entries
from tests.e2e.conftest import WHISTLE
from tests.support import open311_schemas as schemas
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

V2 = "/open311/v2"
LEAK = {
    "service_code": "pipe_leak", "lat": "39.38", "long": "117.04",
    "address_string": "丽德花园", "attribute[community]": "缤泰社区",
    "attribute[building]": "3号楼2单元501", "attribute[grid]": "3-1",
    "first_name": "三", "last_name": "张", "phone": "13812345678",
    "email": "zhang.san@example.org",
    "description": "楼上漏水，天花板一直滴水。张三 13812345678",
    "media_url": "https://photos.example.org/leak/1.jpg",
}


def add_key(env: dict, name: str) -> str:
    done = subprocess.run([WHISTLE, "open311", "key", "add", name], env=env,
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def post(base: str, fields: dict, fmt: str = "json", **kwargs) -> requests.Response:
    return requests.post(f"{base}{V2}/requests.{fmt}", data=fields, timeout=10, **kwargs)


def assert_open311_error(response: requests.Response, status: int, *words: str) -> list:
    """An Open311 error array, in the format asked for, and nothing of Whistle's own."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text and '"error"' not in response.text
    if response.headers["Content-Type"].startswith("text/xml"):
        errors = ElementTree.fromstring(response.content).findall("error")
        body = [{"code": int(e.findtext("code")), "description": e.findtext("description")}
                for e in errors]
    else:
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        body = response.json()
    schemas.validate(body, schemas.ERRORS)
    text = " ".join(e["description"] for e in body)
    for word in words:
        assert word in text, text
    return body


@pytest.fixture
def whistle(whistle_processes, whistle_env):
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    return whistle_processes(env={cfg.OPEN311_POST_LIMIT: "100"})


def test_services_and_definitions_through_a_real_client(whistle):
    json_client = GeoReport(f"{whistle.url}{V2}")
    xml_client = GeoReport(f"{whistle.url}{V2}", output_format="xml")

    services = json_client.get_service_list()
    schemas.validate(services, schemas.SERVICES)
    codes = [s["service_code"] for s in services]
    assert {"pipe_leak", "gas_leak", "flying_wire", "not_sure"} <= set(codes)
    gas = next(s for s in services if s["service_code"] == "gas_leak")
    assert gas["service_name"] == "燃气泄漏" and gas["group"] == "utilities"
    assert gas["type"] == "realtime" and gas["metadata"] is True
    assert [s["service_code"] for s in xml_client.get_service_list()] == codes
    xml_gas = next(s for s in xml_client.get_service_list() if s["service_code"] == "gas_leak")
    assert (xml_gas["service_name"], xml_gas["metadata"]) == ("燃气泄漏", "true")

    definition = json_client.get_service_definition("pipe_leak")
    schemas.validate(definition, schemas.SERVICE_DEFINITION)
    assert [(a["code"], a["required"], a["order"]) for a in definition["attributes"]] == [
        ("community", True, 1), ("building", True, 2), ("grid", False, 3)]
    xml_definition = xml_client.get_service_definition("pipe_leak")
    attributes = xml_definition["attributes"]["attribute"]
    assert [(a["code"], a["datatype"], a["required"]) for a in attributes] == [
        ("community", "string", "true"), ("building", "string", "true"),
        ("grid", "string", "false")]

    english = requests.get(f"{whistle.url}{V2}/services.json?lang=en", timeout=5).json()
    assert next(s for s in english if s["service_code"] == "gas_leak")["service_name"] == \
        "Smell of gas"
    discovery = requests.get(f"{whistle.url}{V2}/discovery.json", timeout=5).json()
    schemas.validate(discovery, schemas.DISCOVERY)
    assert discovery["endpoints"][0]["formats"] == ["text/xml", "application/json"]
    # The endpoint URL as docs/open311.md tells FixMyStreet's operators to enter it, with
    # its trailing slash: FixMyStreet appends "services.xml" to it as it is (Open311.pm,
    # $uri->path($uri->path . $path)). Without the slash it asked for .../v2services.xml.
    endpoint = discovery["endpoints"][0]["url"]  # from WHISTLE_PUBLIC_URL (its default here)
    assert endpoint == f"http://127.0.0.1:8000{V2}/"
    path = urlsplit(endpoint).path
    assert requests.get(f"{whistle.url}{path}services.xml", timeout=5).status_code == 200
    xml = requests.get(f"{whistle.url}{V2}/discovery.xml", timeout=5)
    assert xml.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert xml.headers["Access-Control-Allow-Origin"] == "*"
    assert xml.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert ElementTree.fromstring(xml.content).findtext("endpoints/endpoint/specification") \
        == "http://wiki.open311.org/GeoReport_v2"
    assert_open311_error(requests.get(f"{whistle.url}{V2}/services/nope.json", timeout=5),
                         404, "no service")


def test_post_read_and_filter_requests(whistle, whistle_env):
    base = whistle.url
    key = add_key(whistle_env, "fixmystreet")

    # A form-encoded POST, as FixMyStreet sends it: attributes, lat/long, address_string.
    created = post(base, {**LEAK, "api_key": key})
    assert created.status_code == 201, created.text
    schemas.validate(created.json(), schemas.POST_RESPONSE)
    [receipt] = created.json()
    leak_id = receipt["service_request_id"]
    assert receipt["account_id"] is None
    assert receipt["service_notice"].startswith(f"已受理，编号 {leak_id}。管道漏水：自来水公司牵头")

    # Audited like every write: the client's name (never its key), the request, 201.
    audit = redis.Redis.from_url(whistle_env[cfg.REDIS_URL], decode_responses=True)
    entries = wait_for(lambda: audit_entries(audit, whistle_env[cfg.KEY_PREFIX]),
                       lambda found: any(e.get("issue_id") == leak_id for e in found))
    audit.close()
    [entry] = [e for e in entries if e.get("issue_id") == leak_id]
    assert {k: entry[k] for k in ("action", "status", "role", "client")} == {
        "action": "open311.request.create", "status": "201", "role": "open311_client",
        "client": "fixmystreet"}
    assert key not in str(entries)
    listed = subprocess.run([WHISTLE, "audit", "--limit", "5"], env=whistle_env, text=True,
                            capture_output=True, timeout=30, check=True).stdout
    assert "open311.request.create" in listed and "open311:fixmystreet" in listed
    assert key not in listed

    # The key in the query string, an XML answer, and the "not sure" service.
    unsure = post(base, {"service_code": "not_sure", "address_string": "和平里5号楼",
                         "attribute[community]": "和平里社区",
                         "description": "闻到一股煤气味，很浓"}, fmt="xml",
                  params={"api_key": key})
    assert unsure.status_code == 201, unsure.text
    unsure_id = ElementTree.fromstring(unsure.content).findtext("request/service_request_id")
    assert ElementTree.fromstring(unsure.content).find("request/account_id").text is None

    # A JSON body is accepted as well.
    heating = requests.post(f"{base}{V2}/requests.json", timeout=10, json={
        "api_key": key, "service_code": "heating", "lat": 39.2, "long": 117.1,
        "attribute": {"community": "缤泰社区"}, "description": "暖气不热", "lang": "en"})
    assert heating.status_code == 201, heating.text
    heating_id = heating.json()[0]["service_request_id"]

    # Routing runs as for any desk report: the leak to water, the unsure one by keywords.
    client = GeoReport(f"{base}{V2}")
    wait_for(lambda: client.get_service_requests(service_request_id=f"{leak_id},{unsure_id}"),
             lambda rs: all(r["agency_responsible"] for r in rs))

    leak = client.get_service_request(leak_id)
    schemas.validate([leak], schemas.REQUESTS)
    assert (leak["status"], leak["service_code"], leak["agency_responsible"]) == (
        "open", "pipe_leak", "自来水公司")
    assert leak["description"] == "楼上漏水，天花板一直滴水。张* 138****5678"
    assert leak["address"] == "丽德花园 3号楼"  # the building: the flat is not public
    assert (leak["lat"], leak["long"]) == (39.38, 117.04)
    assert leak["media_url"] == LEAK["media_url"]
    assert (leak["address_id"], leak["zipcode"]) == (None, None)
    assert leak["status_notes"] == "已派给自来水公司牵头办理，物业公司配合"
    assert leak["requested_datetime"].endswith("+08:00")
    assert leak["expected_datetime"] > leak["requested_datetime"]
    for private in ("13812345678", "张三", "zhang.san", "first_name", "phone", "email",
                    "2单元501"):
        assert private not in str(leak)

    unsure_view = client.get_service_request(unsure_id)
    assert unsure_view["service_code"] == "gas_leak"  # routing's keywords decided
    assert unsure_view["agency_responsible"] == "燃气公司"

    # Filters: service_code, status, dates; the id list overrides them all.
    listed = client.get_service_requests()
    schemas.validate(listed, schemas.REQUESTS)
    assert [r["service_request_id"] for r in listed] == [heating_id, unsure_id, leak_id]
    assert [r["service_request_id"] for r in client.get_service_requests(
        service_code="pipe_leak,heating")] == [heating_id, leak_id]
    assert client.get_service_requests(status="closed") == []
    assert len(client.get_service_requests(status="open,closed")) == 3
    now = datetime.now(UTC)
    assert len(client.get_service_requests(
        start_date=(now - timedelta(hours=1)).isoformat(), end_date=now.isoformat())) == 3
    assert client.get_service_requests(
        start_date=(now - timedelta(days=30)).isoformat(),
        end_date=(now - timedelta(days=29)).isoformat()) == []
    assert [r["service_request_id"] for r in client.get_service_requests(
        service_request_id=f"{leak_id},WH-20000101-0001", status="closed",
        service_code="gas_leak")] == [leak_id]
    # The other arguments are not read beside ids, so a stale one is no refusal.
    assert [r["service_request_id"] for r in client.get_service_requests(
        service_request_id=leak_id, service_code="potholes", status="pending")] == [leak_id]
    # Our own dates carry +08:00; a client that puts one into the URL as it is (the '+'
    # not percent-encoded, so it arrives as a space) still gets its window.
    since = leak["requested_datetime"]
    assert "+08:00" in since
    raw = requests.get(f"{base}{V2}/requests.json?start_date={since}", timeout=5)
    assert raw.status_code == 200, raw.text
    assert leak_id in [r["service_request_id"] for r in raw.json()]
    # "can be declared multiple times": each declaration counts, as a list would.
    both = requests.get(f"{base}{V2}/requests.json", timeout=5, params=[
        ("service_code", "pipe_leak"), ("service_code", "heating"), ("status", "open"),
        ("status", "closed")]).json()
    assert [r["service_request_id"] for r in both] == [heating_id, leak_id]
    by_ids = requests.get(f"{base}{V2}/requests.xml", timeout=5, params=[
        ("service_request_id", leak_id), ("service_request_id", unsure_id)])
    assert [r.findtext("service_request_id") for r in ElementTree.fromstring(
        by_ids.content).findall("request")] == [leak_id, unsure_id]
    page = requests.get(f"{base}{V2}/requests.json?page=2&page_size=2", timeout=5).json()
    assert [r["service_request_id"] for r in page] == [leak_id]

    # The same in XML, through the client.
    xml_client = GeoReport(f"{base}{V2}", output_format="xml")
    xml_list = xml_client.get_service_requests(service_code="pipe_leak")
    assert xml_list["service_request_id"] == leak_id  # one <request>: xmltodict gives a dict
    assert xml_list["media_url"] == LEAK["media_url"]
    assert "address_id" in xml_list and xml_list["zipcode"] is None  # <zipcode />
    xml_leak = xml_client.get_service_request(leak_id)
    assert (xml_leak["status"], xml_leak["lat"]) == ("open", "39.38")
    english = requests.get(f"{base}{V2}/requests/{heating_id}.json?lang=en", timeout=5).json()
    assert english[0]["service_name"] == "Heating not working"

    # Errors, each in Open311's shape.
    assert_open311_error(post(base, {**LEAK, "api_key": "o311_wrong"}), 403, "api_key")
    assert_open311_error(post(base, LEAK, fmt="xml"), 403, "api_key is missing")
    no_building = {k: v for k, v in LEAK.items() if k != "attribute[building]"}
    assert_open311_error(post(base, {**no_building, "api_key": key}), 400,
                         "attribute[building] is required")
    assert_open311_error(post(base, {**LEAK, "api_key": key, "service_code": "potholes"}),
                         404, "no service")
    # Every bad coordinate at once; NaN is not a number, not "out of range".
    bad_place = assert_open311_error(
        post(base, {**LEAK, "api_key": key, "lat": "999", "long": "abc"}, fmt="xml"), 400)
    assert [e["description"] for e in bad_place] == [
        "lat must be between -90 and 90 (WGS84 degrees)", "long must be a number (WGS84 degrees)"]
    assert [e["description"] for e in assert_open311_error(
        post(base, {**LEAK, "api_key": key, "lat": "nan", "long": "inf"}), 400)] == [
        "lat is not a number (NaN or infinity): it must be WGS84 degrees",
        "long is not a number (NaN or infinity): it must be WGS84 degrees"]
    # A field given twice with different values, in the query string and the body, or
    # twice in the body: named, never the first taken in silence (it filed a pipe leak
    # as a gas leak). Nothing is created.
    before = len(client.get_service_requests())
    twice = requests.post(f"{base}{V2}/requests.xml?service_code=gas_leak", timeout=10,
                          data=[*{**LEAK, "api_key": key}.items(), ("lat", "39.4")])
    assert [e["description"] for e in assert_open311_error(twice, 400)] == [
        f"{name} is given more than once, with different values: give it once"
        for name in ("service_code", "lat")]
    # The same in a JSON body's object, whose parser kept the last value in silence.
    doubled = (f'{{"api_key": "{key}", "service_code": "pipe_leak", "lat": 39.38, '
               '"long": 117.04, "attribute": {"community": "缤泰社区", "building": "3号楼"}, '
               '"service_code": "gas_leak"}')
    assert_open311_error(requests.post(
        f"{base}{V2}/requests.json", data=doubled.encode(), timeout=10,
        headers={"Content-Type": "application/json"}), 400, "service_code is given more than once")
    assert len(client.get_service_requests()) == before
    assert_open311_error(requests.get(f"{base}{V2}/requests.json", timeout=5, params=[
        ("page_size", "1"), ("page_size", "50")]), 400, "page_size is given more than once")
    assert_open311_error(requests.get(
        f"{base}{V2}/requests.json?start_date=2026-01-01T00:00:00Z"
        "&end_date=2026-06-01T00:00:00Z", timeout=5), 400, "90 days")
    assert_open311_error(requests.get(f"{base}{V2}/requests.xml?start_date=2026-01-01T00:00:00Z"
                                      "&end_date=2026-06-01T00:00:00Z", timeout=5), 400, "90")
    assert_open311_error(requests.get(f"{base}{V2}/requests/WH-20000101-0001.json", timeout=5),
                         404, "no service request")
    assert_open311_error(requests.get(f"{base}{V2}/tokens/abc.xml", timeout=5), 404, "token")
    assert_open311_error(requests.get(f"{base}{V2}/requests.html", timeout=5), 404, ".json")
    # A resource that takes other methods says which, not "no such resource": FixMyStreet
    # with "send comments" on POSTs servicerequestupdates.xml, read-only here.
    wrong = requests.delete(f"{base}{V2}/requests.json", timeout=5)
    assert assert_open311_error(wrong, 400, "takes GET, POST, not DELETE")[0]["code"] == 405
    assert wrong.headers["Allow"] == "GET, POST"
    comment = requests.post(f"{base}{V2}/servicerequestupdates.xml", timeout=5, data={
        "api_key": key, "service_request_id": leak_id, "status": "OPEN",
        "description": "still dripping", "updated_datetime": now.isoformat()})
    assert assert_open311_error(comment, 400, "takes GET, not POST")[0]["code"] == 405
    assert comment.headers["Content-Type"].startswith("text/xml")
    assert_open311_error(requests.post(f"{base}{V2}/potholes.xml", timeout=5), 404,
                         "no such resource")
    assert_open311_error(requests.post(f"{base}{V2}/requests.json", timeout=5,
                                       data="<x/>", headers={"Content-Type": "text/plain"}),
                         400, "Content-Type")
    too_big = assert_open311_error(post(base, {**LEAK, "api_key": key, "description": "长" * 30000}),
                                   400, "larger than")
    assert too_big[0]["code"] == 413
    # A resident's angle brackets and ampersands are words, not HTML: accepted, and read
    # back as sent (the XML escapes them). An HTML element is still refused.
    words = "门口贴着<No Parking>的牌子，AT&T; 的箱子也坏了"
    signed = post(base, {**LEAK, "api_key": key, "description": words}, fmt="xml")
    assert signed.status_code == 201, signed.text
    signed_id = ElementTree.fromstring(signed.content).findtext("request/service_request_id")
    back = requests.get(f"{base}{V2}/requests/{signed_id}.xml", timeout=5)
    assert ElementTree.fromstring(back.content).findtext("request/description") == words
    assert_open311_error(post(base, {**LEAK, "api_key": key, "description": "<b>漏水</b>"}),
                         400, "plain text")
    # Text XML cannot carry (U+FFFF) in one request: the XML list and updates stay
    # well-formed for everyone, that character shown as U+FFFD.
    odd = post(base, {**LEAK, "api_key": key, "description": "楼上漏水\uffff"})
    assert odd.status_code == 201, odd.text
    odd_id = odd.json()[0]["service_request_id"]
    xml_list = ElementTree.fromstring(requests.get(f"{base}{V2}/requests.xml", timeout=5).content)
    assert {r.findtext("service_request_id"): r.findtext("description")
            for r in xml_list.findall("request")}[odd_id] == "楼上漏水\ufffd"
    ElementTree.fromstring(requests.get(f"{base}{V2}/servicerequestupdates.xml", timeout=5).content)
    # No description, which the spec allows: the service's name says what the problem
    # is. A not_sure report, routed from its description alone, still needs one.
    lamp = post(base, {"api_key": key, "service_code": "street_light", "lat": "39.38",
                       "long": "117.04", "attribute[community]": "缤泰社区"}, fmt="xml")
    assert lamp.status_code == 201, lamp.text
    lamp_id = ElementTree.fromstring(lamp.content).findtext("request/service_request_id")
    [lamp_view] = requests.get(f"{base}{V2}/requests/{lamp_id}.json", timeout=5).json()
    assert (lamp_view["description"], lamp_view["service_code"]) == ("路灯不亮", "street_light")
    assert_open311_error(post(base, {"api_key": key, "service_code": "not_sure",
                                     "address_string": "5号楼",
                                     "attribute[community]": "缤泰社区"}),
                         400, "description is required")
    # The key is for Open311 alone: it is no staff token.
    as_agency = requests.get(f"{base}/agencies/water/assignments",
                             headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert as_agency.status_code == 401


def test_private_reads_show_a_client_only_its_own_requests(whistle_processes, whistle_env):
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    app = whistle_processes(env={cfg.OPEN311_PUBLIC_READ: "false",
                                 cfg.OPEN311_DEFAULT_COMMUNITY: "缤泰社区",
                                 cfg.OPEN311_POST_LIMIT: "3", cfg.RATE_READ: "15"})
    base = app.url
    alpha, beta = add_key(whistle_env, "alpha-app"), add_key(whistle_env, "beta-sms")
    fields = {"service_code": "gas_leak", "address_string": "2号楼", "description": "有煤气味"}
    made = post(base, {**fields, "api_key": alpha})
    assert made.status_code == 201, made.text
    issue_id = made.json()[0]["service_request_id"]

    mine = requests.get(f"{base}{V2}/requests.json", params={"api_key": alpha}, timeout=5)
    assert [r["service_request_id"] for r in mine.json()] == [issue_id]
    assert requests.get(f"{base}{V2}/requests.json", params={"api_key": beta},
                        timeout=5).json() == []
    assert_open311_error(requests.get(f"{base}{V2}/requests/{issue_id}.json",
                                      params={"api_key": beta}, timeout=5), 404)
    by_ids = {"service_request_id": f"{issue_id},WH-20000101-0001"}
    assert requests.get(f"{base}{V2}/requests.json", params={**by_ids, "api_key": beta},
                        timeout=5).json() == []
    assert [r["service_request_id"] for r in requests.get(
        f"{base}{V2}/requests.json", params={**by_ids, "api_key": alpha}, timeout=5).json()] \
        == [issue_id]
    assert requests.get(f"{base}{V2}/requests/{issue_id}.json", params={"api_key": alpha},
                        timeout=5).json()[0]["service_request_id"] == issue_id
    assert_open311_error(requests.get(f"{base}{V2}/requests.json", timeout=5), 403,
                         "api_key is missing")
    assert_open311_error(requests.get(f"{base}{V2}/servicerequestupdates.xml", timeout=5), 403)
    assert requests.get(f"{base}{V2}/servicerequestupdates.json", params={"api_key": beta},
                        timeout=5).json() == []
    # The service list stays public.
    assert requests.get(f"{base}{V2}/services.json", timeout=5).status_code == 200

    # Posting is limited per key (3 a minute here); another key is not held back.
    statuses = [post(base, {**fields, "api_key": alpha}).status_code for _ in range(3)]
    assert statuses == [201, 201, 400]
    limited = post(base, {**fields, "api_key": alpha})
    body = assert_open311_error(limited, 400, "too many requests")
    assert body[0]["code"] == 429 and int(limited.headers["Retry-After"]) > 0
    assert post(base, {**fields, "api_key": beta}).status_code == 201

    # A revoked key is refused at once.
    subprocess.run([WHISTLE, "open311", "key", "revoke", "beta-sms"], env=whistle_env,
                   check=True, timeout=30, capture_output=True)
    assert_open311_error(post(base, {**fields, "api_key": beta}), 403, "revoked")
    listed = subprocess.run([WHISTLE, "open311", "key", "list"], env=whistle_env, check=True,
                            timeout=30, capture_output=True, text=True).stdout
    assert "alpha-app" in listed and "beta-sms" not in listed and "o311_" not in listed

    # Reads are limited per address too (WHISTLE_RATE_READ, 15 a minute here).
    answers = [requests.get(f"{base}{V2}/requests.json", params={"api_key": alpha}, timeout=5)
               for _ in range(15)]
    assert answers[0].status_code == 200
    body = assert_open311_error(answers[-1], 400, "too many requests")
    assert body[0]["code"] == 429 and int(answers[-1].headers["Retry-After"]) > 0
    assert requests.get(f"{base}{V2}/services.json", timeout=5).status_code == 200


def test_post_resolve_then_read_the_closed_request_and_its_updates(whistle, whistle_env):
    base = whistle.url
    key = add_key(whistle_env, "fixmystreet")
    started = datetime.now(UTC) - timedelta(seconds=5)
    made = post(base, {"api_key": key, "service_code": "gas_leak", "lat": "39.1",
                       "long": "117.2", "attribute[community]": "缤泰社区",
                       "description": "楼道里煤气味很重", "first_name": "Wei",
                       "last_name": "Li", "phone": "13900001111"})
    assert made.status_code == 201, made.text
    issue_id = made.json()[0]["service_request_id"]
    client = GeoReport(f"{base}{V2}")
    wait_for(lambda: client.get_service_request(issue_id),
             lambda r: r["agency_responsible"] == "燃气公司")

    # A neighbour reports the same leak at the same place: it joins the open issue.
    again = post(base, {"api_key": key, "service_code": "gas_leak", "lat": "39.1",
                        "long": "117.2", "attribute[community]": "缤泰社区",
                        "description": "我家门口也有煤气味", "first_name": "敏",
                        "last_name": "张"})
    assert again.status_code == 201, again.text
    joined_id = again.json()[0]["service_request_id"]
    joined = wait_for(lambda: client.get_service_request(joined_id),
                      lambda r: r["status_notes"].startswith("已并入"))
    assert issue_id in joined["status_notes"] and joined["agency_responsible"] == "燃气公司"

    # The agency reports in and resolves, with its staff token, as staff do. Its note
    # names both reporters and its fitter: a public read shows none of it (an agency's
    # note is internal; the resident's own page never shows one either).
    staff = {"Authorization": f"Bearer {issue_token('gas', 'gas-07', whistle_env[cfg.SECRET])}"}
    note = "已关阀检修，李先生13900001111确认无味；已告知Wei Li和张敏"
    for step, body in (("acknowledge", {}), ("resolve", {"note": note})):
        answer = requests.post(f"{base}/agencies/gas/assignments/{issue_id}/{step}",
                               json=body, headers=staff, timeout=10)
        assert answer.status_code == 200, answer.text

    closed = wait_for(lambda: client.get_service_request(issue_id),
                      lambda r: r["status"] == "closed")
    schemas.validate([closed], schemas.REQUESTS)
    assert closed["status_notes"] == "各相关单位均已办结，等待居民评价"
    assert "已关阀检修" not in str(closed) and "1111" not in str(closed)
    assert closed["updated_datetime"] >= closed["requested_datetime"]
    assert [r["service_request_id"] for r in client.get_service_requests(status="closed")] \
        == [joined_id, issue_id]

    window = {"start_date": started.isoformat(),
              "end_date": (datetime.now(UTC) + timedelta(seconds=5)).isoformat()}
    updates = wait_for(
        lambda: requests.get(f"{base}{V2}/servicerequestupdates.json", params=window,
                             timeout=5).json(),
        lambda us: any(u["status"] == "fixed" for u in us))
    schemas.validate(updates, schemas.UPDATES)
    paged = requests.get(f"{base}{V2}/servicerequestupdates.json", timeout=5,
                         params={**window, "page": "2", "page_size": "3"}).json()
    assert paged == updates[3:6]
    mine = [u for u in updates if u["service_request_id"] == issue_id]
    assert [u["status"] for u in mine] == [
        "open", "investigating", "in_progress", "in_progress", "fixed"]
    assert mine[3]["description"] == "燃气公司已完成其负责的部分"
    assert len({u["update_id"] for u in mine}) == len(mine)
    assert all(u["updated_datetime"].endswith("+08:00") for u in mine)

    # The neighbour's report closes with it, and its updates follow the joined issue.
    assert client.get_service_request(joined_id)["status"] == "closed"
    theirs = [u for u in updates if u["service_request_id"] == joined_id]
    assert [u["status"] for u in theirs] == [
        "open", "duplicate", "in_progress", "in_progress", "fixed"]
    assert theirs[3]["description"] == "燃气公司已完成其负责的部分"
    assert client.get_service_request(joined_id)["status_notes"] == (
        f"已并入同一问题的 {issue_id} 一并处理；各相关单位均已办结，等待居民评价")
    for private in ("Wei Li", "张敏", "李先生", "1111", "已关阀检修"):
        assert private not in str(updates)
    assert len({u["update_id"] for u in updates}) == len(updates)

    # FixMyStreet reads the XML (perllib/Open311.pm: root, request_update elements).
    xml = requests.get(f"{base}{V2}/servicerequestupdates.xml", params=window, timeout=5)
    parsed = xmltodict.parse(xml.content, force_list=("request_update",))
    fixed = [u for u in parsed["service_request_updates"]["request_update"]
             if u["service_request_id"] == issue_id and u["status"] == "fixed"]
    assert fixed and fixed[0]["updated_datetime"] == mine[-1]["updated_datetime"]
    too_long = {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"}
    assert_open311_error(requests.get(f"{base}{V2}/servicerequestupdates.json",
                                      params=too_long, timeout=5), 400, "90 days")


def test_a_browsers_preflight_is_answered_for_open311_alone(whistle):
    """Anyone may send a preflight (it carries no data): each Open311 resource names
    exactly the methods it takes; Whistle's own API allows no other origin."""
    base = whistle.url

    def options(path: str, method: str | None, **headers) -> requests.Response:
        asked = {"Origin": "http://map.example.org", **headers}
        if method:
            asked["Access-Control-Request-Method"] = method
        return requests.options(f"{base}{path}", headers=asked, timeout=5)

    for path, method, methods in ((f"{V2}/requests.json", "POST", "GET, POST"),
                                  (f"{V2}/requests.xml", "GET", "GET, POST"),
                                  (f"{V2}/requests/WH-20261205-0001.json", "GET", "GET"),
                                  (f"{V2}/services/pipe_leak.xml", "GET", "GET"),
                                  (f"{V2}/servicerequestupdates.json", "GET", "GET"),
                                  (f"{V2}/discovery.json", None, "GET")):
        answer = options(path, method, **{"Access-Control-Request-Headers": "content-type"})
        assert answer.status_code == 204, (path, answer.text)
        assert answer.content == b""
        assert {k: answer.headers[k] for k in (
            "Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
            "Access-Control-Allow-Headers", "Access-Control-Max-Age")} == {
            "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "86400"}

    # A method the resource does not take, an unknown resource or format: Open311 errors.
    refused = options(f"{V2}/requests.json", "DELETE")
    body = assert_open311_error(refused, 400, "takes GET, POST, not DELETE")
    assert body[0]["code"] == 405 and refused.headers["Allow"] == "GET, POST"
    body = assert_open311_error(options(f"{V2}/discovery.xml", "POST"), 400, "takes GET")
    assert body[0]["code"] == 405
    assert_open311_error(options(f"{V2}/potholes.json", "GET"), 404, "no such resource")
    assert_open311_error(options(f"{V2}/requests.html", "GET"), 404, ".json")

    # Whistle's own API keeps to its own origin: no CORS header there, preflight or not.
    for path in ("/issues", "/health"):
        own = options(path, "POST")
        assert own.status_code != 204 and "Access-Control-Allow-Origin" not in own.headers
    assert "Access-Control-Allow-Origin" not in requests.get(f"{base}/health",
                                                             timeout=5).headers


def test_a_browser_on_another_origin_posts_json_and_reads_the_answer(whistle, whistle_env):
    """A real Chromium preflights a JSON POST from another origin (localhost vs
    127.0.0.1), then reads the 201 and a list: the path a city's web map takes."""
    from tests.support.browser import Browser  # selenium: only where this test runs

    key = add_key(whistle_env, "web-map")
    port = whistle.address.rsplit(":", 1)[1]
    browser = Browser(f"http://localhost:{port}")
    try:
        browser.open("/health")
        result = browser.driver.execute_async_script("""
            const [url, key, done] = arguments;
            (async () => {
              const posted = await fetch(url + "/requests.json", {method: "POST",
                headers: {"Content-Type": "application/json"},
                body: JSON.stringify({api_key: key, service_code: "gas_leak",
                  address_string: "2号楼", attribute: {community: "缤泰社区"},
                  description: "楼道里有煤气味"})});
              const listed = await fetch(url + "/requests.json");
              return {status: posted.status, created: await posted.json(),
                      listed: await listed.json()};
            })().then(done, e => done({error: String(e)}));
        """, f"http://127.0.0.1:{port}{V2}", key)
    finally:
        browser.quit()
    assert result.get("status") == 201, result
    issue_id = result["created"][0]["service_request_id"]
    assert issue_id in [r["service_request_id"] for r in result["listed"]]


def test_a_json_post_reports_every_problem_at_once(whistle, whistle_env):
    key = add_key(whistle_env, "json-app")
    answer = requests.post(f"{whistle.url}{V2}/requests.json", timeout=10, json={
        "service_code": 5, "lat": True, "long": [1], "description": {"x": 1}, "api_key": key})
    body = assert_open311_error(answer, 400, "long must be text or a number, not a list",
                                "description must be text or a number, not an object",
                                "no service '5'", "lat must be a number")
    assert len(body) == 4 and [e["code"] for e in body].count(404) == 1
    # The same body as XML, and a form with the same mistakes: every one, too.
    assert len(assert_open311_error(requests.post(
        f"{whistle.url}{V2}/requests.xml", timeout=10, json={
            "service_code": 5, "lat": True, "long": [1], "description": {"x": 1},
            "api_key": key}), 400)) == 4
    form = post(whistle.url, {"api_key": key, "service_code": "5", "lat": "true",
                              "long": "x"})
    assert len(assert_open311_error(form, 400, "no service", "description is required",
                                    "lat must be", "long must be")) == 4

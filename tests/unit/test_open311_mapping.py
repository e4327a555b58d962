"""Open311 GeoReport v2's pure parts: the catalog from the rules, a POST to a desk
submission, the GET filters, an issue as a request, the journal as updates, XML."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest

from services.intake.open311.catalog import NOT_SURE, build_catalog, service_code_of
from services.intake.open311.formats import Open311Error, to_xml
from services.intake.open311.mapping import (
    date_window,
    full_name,
    json_pairs,
    json_repeats,
    merged_into,
    names_of,
    oldest_first,
    parse_request_query,
    read_params,
    refuse_repeats,
    request_view,
    submission_for,
    to_submission,
    updates_from_journal,
)
from services.routing.rules import load_rules
from shared.contracts import Channel, IssueStatus, Language, Location, Priority, Role, Sector
from shared.issue import Assignment, Routing, acknowledge, dispatch, receive, reroute, resolve
from tests.support.open311_schemas import (
    REQUEST,
    SERVICE,
    SERVICE_DEFINITION,
    UPDATES,
    validate,
)

RULES = load_rules()
CATALOG = build_catalog(RULES, None)
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)


def params(**fields):
    return read_params(fields.items())


def bad_request(call) -> Open311Error:
    with pytest.raises(Open311Error) as caught:
        call()
    assert caught.value.status == 400
    return caught.value


# ------------------------------------------------------------------ catalog


def test_one_service_per_category_then_not_sure():
    assert list(CATALOG) == [r.category for r in RULES.rules] + [NOT_SURE]
    leak = CATALOG["pipe_leak"]
    view = leak.view(Language.zh)
    assert view["service_name"] == "管道漏水" and view["group"] == "utilities"
    assert view["type"] == "realtime" and view["metadata"] is True
    assert "漏水" in view["keywords"] and "pipe leak" not in view["keywords"]
    english = leak.view(Language.en)
    assert english["service_name"] == "Pipe leak or water through the ceiling"
    assert "pipe leak" in english["keywords"] and "漏水" not in english["keywords"]
    assert "自来水公司牵头办理，1天内响应，3天内办结" in view["description"]
    for service in CATALOG.values():
        validate(service.view(Language.en), SERVICE)
        validate(service.definition(Language.zh), SERVICE_DEFINITION)


def test_a_posts_notice_says_what_happens_next_also_when_the_client_was_not_sure():
    """A not_sure POST was answered with the service's description, which is advice for
    choosing it: "Received as WH-…. Choose this when unsure which agency is responsible"."""
    leak = CATALOG["pipe_leak"].notice("WH-20261121-0001", Language.zh)
    assert leak == "已受理，编号 WH-20261121-0001。管道漏水：自来水公司牵头办理，1天内响应，3天内办结"
    assert CATALOG["pipe_leak"].notice("WH-20261121-0001", Language.en).startswith(
        "Received as WH-20261121-0001. Pipe leak or water through the ceiling: Water")
    unsure = {lang: CATALOG[NOT_SURE].notice("WH-20261121-0002", lang) for lang in Language}
    assert unsure[Language.zh] == "已受理，编号 WH-20261121-0002。社区将根据描述派给相关单位办理"
    assert unsure[Language.en] == ("Received as WH-20261121-0002. The community desk routes "
                                   "it to the agencies responsible, from its description")
    assert not any("选这一项" in text or "Choose this" in text for text in unsure.values())


def test_building_where_a_housing_agency_works_grid_elsewhere():
    def codes(code):
        return {a["code"]: a["required"]
                for a in CATALOG[code].definition(Language.en)["attributes"]}

    # pipe_leak: the property manager supports; lift_broken: it leads.
    assert codes("pipe_leak") == {"community": True, "building": True, "grid": False}
    assert codes("lift_broken") == {"community": True, "building": True, "grid": False}
    assert codes("gas_leak") == {"community": True, "grid": False}
    assert codes(NOT_SURE) == {"community": True, "building": False, "grid": False}
    orders = [a["order"] for a in CATALOG["pipe_leak"].definition(Language.en)["attributes"]]
    assert orders == sorted(orders)


def test_the_docs_name_exactly_the_services_that_require_the_building():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "open311.md").read_text()
    [row] = [line for line in doc.splitlines() if line.startswith("| `building` | string | yes")]
    listed = re.findall(r"`([a-z_]+)`", row.split("With the shipped rules:")[1])
    required = [code for code, service in CATALOG.items()
                if (a := service.attribute("building")) is not None and a.required]
    assert listed == required


def test_a_default_community_makes_the_attribute_optional():
    catalog = build_catalog(RULES, "缤泰社区")
    community = catalog["gas_leak"].attribute("community")
    assert community.required is False and "缤泰社区" in community.description


def test_fallback_and_missing_categories_show_as_not_sure():
    assert service_code_of("gas_leak", CATALOG) == "gas_leak"
    assert service_code_of(RULES.fallback.category, CATALOG) == NOT_SURE
    assert service_code_of(None, CATALOG) == NOT_SURE


# ------------------------------------------------------------------ POST


def test_a_form_post_becomes_the_desks_submission():
    form = read_params([
        ("service_code", "pipe_leak"), ("lat", "39.38"), ("long", "117.04"),
        ("address_string", "丽德花园"), ("attribute[community]", "缤泰社区"),
        ("attribute[building]", "3号楼2单元501"), ("attribute[grid]", "3-1"),
        ("attribute[uprn]", "ignored: not in the definition"),
        ("first_name", "三"), ("last_name", "张"), ("phone", "13812345678"),
        ("email", "zhang@example.org"), ("description", "楼上漏水\n一直滴"),
        ("media_url", "https://example.org/p/1.jpg"), ("lang", "zh-CN"),
    ])
    submission = to_submission(form, CATALOG["pipe_leak"], None)
    assert submission.category == "pipe_leak"
    assert submission.channel is Channel.app and submission.language is Language.zh
    assert submission.location.model_dump() == {
        "community": "缤泰社区", "address": "丽德花园 3号楼2单元501", "grid": "3-1",
        "lat": 39.38, "lon": 117.04}
    assert submission.contact.name == "张三" and submission.contact.phone == "13812345678"
    assert submission.description == "楼上漏水\n一直滴"
    assert submission.media_url == "https://example.org/p/1.jpg"


def test_not_sure_has_no_category_and_coordinates_can_stand_for_the_address():
    form = params(service_code=NOT_SURE, lat="39.1", long="117.2", description="有怪味",
                  **{"attribute[community]": "和平里社区"})
    submission = to_submission(form, CATALOG[NOT_SURE], None)
    assert submission.category is None
    assert submission.location.address == "39.100000, 117.200000"
    by_id = to_submission(params(service_code=NOT_SURE, address_id="A-77", description="x",
                                 **{"attribute[community]": "c"}), CATALOG[NOT_SURE], None)
    assert by_id.location.address == "address_id A-77"


def test_the_default_community_fills_in():
    form = params(service_code="gas_leak", address_string="2号楼", description="煤气味")
    submission = to_submission(form, CATALOG["gas_leak"], "缤泰社区")
    assert submission.location.community == "缤泰社区"


def test_every_problem_is_named_by_its_open311_field():
    form = read_params([("service_code", "pipe_leak"), ("lat", "39.3"),
                        ("attribute[community][]", "a"), ("attribute[community][]", "b"),
                        ("description", "<b>漏水</b>")])
    error = bad_request(lambda: to_submission(form, CATALOG["pipe_leak"], None))
    text = " | ".join(d for _, d in error.errors)
    assert "attribute[community] takes one value" in text
    assert "attribute[building] is required" in text
    assert "lat and long must be sent together" in text
    assert "description must be plain text" in text


def test_a_description_is_refused_for_html_but_not_for_angle_brackets_or_ampersands():
    def problems(description):
        form = params(address_string="x", description=description)
        try:
            to_submission(form, CATALOG["no_water"], "c")
        except Open311Error as exc:
            return [d for _, d in exc.errors]
        return []

    for html in ("<b>漏水</b>", "</p>", '<a href="https://x">x</a>', "<SCRIPT src=x>",
                 "<br/>", "<img src=x onerror=alert(1)>", "<!-- x -->", "<!DOCTYPE html>",
                 "Tom &amp; Jerry", "&#60;script", "&#x3c;", "&pound;5"):
        assert problems(html) == ["description must be plain text: no HTML or code"], html
    # A resident's own words, as FixMyStreet forwards them: no element, no reference.
    for text in ("The sign says <No Parking> but cars park there", "AT&T; box broken",
                 "R&D; office", "水压 3<5 bar，6>2", "门口贴着<禁止停车>的牌子", "press <Enter>"):
        assert problems(text) == [], text


def test_location_and_description_are_required_and_bounded():
    missing = bad_request(lambda: to_submission(params(service_code="not_sure"),
                                                CATALOG["not_sure"], "c"))
    assert {d.split(":")[0] for _, d in missing.errors} >= {
        "description is required", "a location is required"}
    assert [d for _, d in bad_request(lambda: to_submission(
        params(service_code="gas_leak"), CATALOG["gas_leak"], "c")).errors] == [
        "a location is required: lat and long, or address_string, or address_id"]
    long_text = params(description="漏" * 4001, address_string="x")
    assert "longer than 4000" in bad_request(
        lambda: to_submission(long_text, CATALOG["gas_leak"], "c")).errors[0][1]


def test_an_address_too_long_with_its_building_names_both():
    building = CATALOG["structural_crack"]
    alone = bad_request(lambda: to_submission(
        params(description="停水", address_string="丽" * 201), CATALOG["no_water"], "c"))
    assert [d.split(":")[0] for _, d in alone.errors] == ["address_string"]
    joined = bad_request(lambda: to_submission(
        params(description="墙裂了", address_string="丽德花园",
               **{"attribute[building]": "楼" * 200}), building, "c"))
    assert [d.split(":")[0] for _, d in joined.errors] == [
        "address_string with attribute[building]"]


def test_the_desks_own_validation_speaks_open311():
    form = params(address_string="x", description="停水", lat="91", long="0", phone="abc",
                  media_url="javascript:alert(1)")
    error = bad_request(lambda: to_submission(form, CATALOG["no_water"], "c"))
    # In words, not the desk's patterns ("String should match pattern '^\\+?[0-9]…'").
    assert [d for _, d in error.errors] == [
        "lat must be between -90 and 90 (WGS84 degrees)",
        "phone must be a phone number: 6 to 20 digits, spaces and dashes, with an optional "
        "leading +",
        "media_url must be an http:// or https:// link, with no spaces and no user name or "
        "password"]
    assert not any("abc" in d for _, d in error.errors)  # never echoes the input
    email = bad_request(lambda: to_submission(params(address_string="x", email="x@y"),
                                              CATALOG["no_water"], "c"))
    assert email.errors == [(400, "email must be an email address (name@example.org)")]


def test_every_bad_coordinate_is_named_at_once_and_nan_is_not_a_number():
    # The audit: lat=999&long=abc reported long alone (lat's range was left to the
    # desk's check, which never ran without a long), and lat=nan was "less than or
    # equal to 90".
    where = {"attribute[community]": "c", "attribute[building]": "3号楼", "description": "漏水"}

    def problems(**coordinates):
        form = params(service_code="pipe_leak", **where, **coordinates)
        return [d for _, d in bad_request(lambda: submission_for(form, CATALOG, None)).errors]

    assert problems(lat="999", long="abc") == [
        "lat must be between -90 and 90 (WGS84 degrees)", "long must be a number (WGS84 degrees)"]
    assert problems(lat="nan", long="-inf") == [
        "lat is not a number (NaN or infinity): it must be WGS84 degrees",
        "long is not a number (NaN or infinity): it must be WGS84 degrees"]
    assert problems(lat="NaN", long="117") == [
        "lat is not a number (NaN or infinity): it must be WGS84 degrees"]
    assert problems(lat="39.9", long="180.5") == [
        "long must be between -180 and 180 (WGS84 degrees)"]
    assert problems(lat="abc") == ["lat must be a number (WGS84 degrees)",
                                   "lat and long must be sent together"]
    # A JSON body's NaN (Python's json reads it) is the same problem.
    form = read_params(*json_pairs({"service_code": "pipe_leak", "lat": float("nan"),
                                    "long": 117.0, **where}))
    assert [d for _, d in bad_request(lambda: submission_for(form, CATALOG, None)).errors] == [
        "lat is not a number (NaN or infinity): it must be WGS84 degrees"]
    # The edges are degrees.
    _, edge = submission_for(params(service_code="pipe_leak", lat="-90", long="180", **where),
                             CATALOG, None)
    assert (edge.location.lat, edge.location.lon) == (-90.0, 180.0)


def test_python_digit_grouping_is_no_number_here():
    # float("11_7") is 117.0 and int("1_0") is 10: a typo filed at longitude 117.
    form = params(address_string="x", lat="3_9.1", long="11_7")
    assert bad_request(lambda: to_submission(form, CATALOG["no_water"], "c")).errors == [
        (400, "lat must be a number (WGS84 degrees)"),
        (400, "long must be a number (WGS84 degrees)")]
    assert bad_request(lambda: parse_request_query(params(page_size="1_0"), CATALOG, NOW)
                       ).errors == [(400, "page_size must be a whole number")]


def test_a_field_given_twice_with_different_values_is_named_not_guessed():
    # The audit: service_code=gas_leak in the query string and pipe_leak in the body
    # filed the report as a gas leak, in silence.
    good = [("lat", "39.1"), ("long", "117.2"), ("attribute[community]", "c"),
            ("attribute[building]", "3号楼"), ("description", "漏水")]
    form = read_params([("service_code", "pipe_leak"), *good, ("service_code", "gas_leak"),
                        ("lat", "39.2"), ("api_key", "k1"), ("api_key", "k2")])
    error = bad_request(lambda: submission_for(form, CATALOG, None))
    assert error.errors == [
        (400, f"{name} is given more than once, with different values: give it once")
        for name in ("api_key", "service_code", "lat")]
    # The same value twice (a key in the body and the query string) is one value, and
    # FixMyStreet's several photos are several media_url: the first is kept.
    form = read_params([("service_code", "pipe_leak"), ("service_code", "pipe_leak "), *good,
                        ("media_url", "https://fms.example/p/1.0.jpeg"),
                        ("media_url", "https://fms.example/p/1.1.jpeg")])
    service, submission = submission_for(form, CATALOG, None)
    assert service.code == "pipe_leak"
    assert submission.media_url == "https://fms.example/p/1.0.jpeg"
    # A JSON body's object alike: its parser kept the last value in silence.
    text = ('{"service_code": "pipe_leak", "lat": 39.1, "long": 117.2, "description": "漏水",'
            ' "attribute": {"community": "c", "building": "3号楼"}, "lang": "zh",'
            ' "service_code": "gas_leak", "lat": 39.1, "lang": "en"}')
    pairs, problems = json_pairs(json.loads(text))
    form = read_params(pairs, {**json_repeats(text), **problems})
    error = bad_request(lambda: submission_for(form, CATALOG, None))
    assert error.errors == [
        (400, f"{name} is given more than once, with different values: give it once")
        for name in ("service_code", "lang")]
    assert json_repeats("not json") == {} and json_repeats('{"lat": 1, "x": {"lat": 2}}') == {}
    # A GET's single parameters alike; the spec's comma lists may be declared again.
    with pytest.raises(Open311Error) as caught:
        refuse_repeats(read_params([("start_date", "2026-11-01T00:00:00Z"), ("page", "1"),
                                    ("start_date", "2026-11-02T00:00:00Z"), ("page", "2")]))
    assert caught.value.status == 400 and [d for _, d in caught.value.errors] == [
        "start_date is given more than once, with different values: give it once",
        "page is given more than once, with different values: give it once"]
    listed = refuse_repeats(read_params([("status", "open"), ("status", "closed"),
                                         ("lang", "en"), ("lang", "en")]))
    assert listed.listed("status") == ["open", "closed"] and listed.get("lang") == "en"


def test_json_bodies_and_multivalued_attributes():
    pairs, problems = json_pairs({"service_code": "gas_leak", "lat": 39.5, "attribute": {
        "community": "c", "tags": ["a", "b"]}, "attribute[grid]": "1-1"})
    form = read_params(pairs, problems)
    assert form.attributes == {"community": ["c"], "tags": ["a", "b"], "grid": ["1-1"]}
    assert form.get("lat") == "39.5" and form.problems == {}
    with pytest.raises(Open311Error):
        json_pairs(["not", "an", "object"])
    # "attribute" that is no object is said to be so, not dropped in silence.
    for attribute in ("缤泰社区", [["community", "缤泰社区"]], 5):
        error = bad_request(lambda attribute=attribute: submission_for(read_params(*json_pairs({
            "service_code": "street_light", "lat": 39.5, "long": 117.5,
            "attribute": attribute})), CATALOG, None))
        assert [d for _, d in error.errors] == [
            'attribute must be an object of attribute codes and their values '
            '({"community": "..."})']


def test_a_known_service_needs_no_description_its_name_says_what_the_problem_is():
    # The spec: only api_key, service_code, a location and required attributes are
    # required; description is optional. It was refused with 400.
    where = {"lat": "39.1", "long": "117.2", "attribute[community]": "c"}
    _, submission = submission_for(params(service_code="street_light", **where), CATALOG, None)
    assert (submission.description, submission.category) == ("路灯不亮", "street_light")
    _, english = submission_for(params(service_code="street_light", lang="en", description=" ",
                                       **where), CATALOG, None)
    assert english.description == "Street light out"
    # not_sure is routed from its description alone: there it stays required.
    error = bad_request(lambda: submission_for(params(service_code="not_sure", **where),
                                               CATALOG, None))
    assert [d for _, d in error.errors] == ["description is required: what is the problem?"]


def test_a_json_body_reports_every_problem_at_once_each_by_its_open311_field():
    # The audit's body: each bad field was reported alone, one POST after another.
    body = {"service_code": 5, "lat": True, "long": [1], "description": {"x": 1},
            "attribute": {"community": {"y": 2}, "building": [["a"]]}, "api_key": "k"}
    form = read_params(*json_pairs(body))
    error = bad_request(lambda: submission_for(form, CATALOG, None))
    assert error.errors == [
        (400, "long must be text or a number, not a list"),
        (400, "description must be text or a number, not an object"),
        (400, "attribute[community] must be text or a number, not an object"),
        (400, "attribute[building] must be a list of text or numbers"),
        (404, "no service '5' (see services.xml)"),
        (400, "lat must be a number (WGS84 degrees)"),
    ]
    # The same problems sent as a form (where no value can be an object or a list).
    form = params(service_code="5", lat="true", long="x")
    error = bad_request(lambda: submission_for(form, CATALOG, None))
    assert [d for _, d in error.errors] == [
        "no service '5' (see services.xml)", "description is required: what is the problem?",
        "lat must be a number (WGS84 degrees)", "long must be a number (WGS84 degrees)"]


def test_an_unknown_service_alone_is_a_404_and_the_desks_checks_run_with_the_others():
    good = {"lat": "39.1", "long": "117.2", "description": "漏水",
            "attribute[community]": "c", "attribute[building]": "3号楼"}
    with pytest.raises(Open311Error) as caught:
        submission_for(params(service_code="potholes", **good), CATALOG, None)
    assert caught.value.status == 404 and len(caught.value.errors) == 1
    service, submission = submission_for(params(service_code="pipe_leak", **good), CATALOG,
                                         None)
    assert service.code == "pipe_leak" and submission.location.address == "3号楼"
    # Missing fields and the desk's own validation (phone, media_url) in one answer.
    error = bad_request(lambda: submission_for(params(
        phone="abc", media_url="javascript:x", lang="fr", lat="1"), CATALOG, None))
    assert {d.split(":")[0] for _, d in error.errors} == {
        "service_code is required (see services.xml)", "description is required",
        "lat and long must be sent together", "lang must be zh or en",
        "phone must be a phone number", "media_url must be an http"}


def test_names_in_either_order():
    assert full_name("三", "张") == "张三"
    assert full_name("Wei", "Li") == "Wei Li"
    assert full_name(None, None) is None


# ------------------------------------------------------------------ GET filters


NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_the_window_defaults_to_the_last_90_days_and_may_not_be_longer():
    assert date_window(params(), NOW) == (NOW - timedelta(days=90), NOW)
    start, end = date_window(params(start_date="2026-11-01T00:00:00+08:00"), NOW)
    assert (start.isoformat(), end) == ("2026-11-01T00:00:00+08:00", NOW)
    too_long = params(start_date="2026-01-01T00:00:00Z", end_date="2026-06-01T00:00:00Z")
    assert "90 days" in bad_request(lambda: date_window(too_long, NOW)).errors[0][1]
    naive = params(start_date="2026-11-01T00:00:00")
    assert "time zone" in bad_request(lambda: date_window(naive, NOW)).errors[0][1]


def test_an_offset_whose_plus_arrived_as_a_space_is_read_as_the_offset():
    # "start_date=2026-11-01T00:00:00+08:00" written into a URL as is: the query's '+'
    # decodes to a space. Without this the client got "must be a W3C date-time".
    for sent in ("2026-11-01T00:00:00 08:00", "2026-11-01T00:00:00 0800",
                 "2026-11-01T00:00:00.250 08:00"):
        start, _ = date_window(params(start_date=sent), NOW)
        assert start.utcoffset() == timedelta(hours=8) and start.hour == 0
    # A space anywhere else is still no date-time, nor does it stand for a time zone.
    for sent in ("2026-11-01 08:00", "2026-11-01T00:00:00 8 00", "2026 11-01T00:00:00 08:00"):
        bad_request(lambda sent=sent: date_window(params(start_date=sent), NOW))
    backwards = params(start_date="2026-11-02Z", end_date="2026-11-01T00:00:00Z")
    bad_request(lambda: date_window(backwards, NOW))


def test_a_date_outside_the_years_a_window_can_reach_is_a_400_not_an_internal_error():
    # end_date=0001-01-01T00:00:00Z: the 90 days before it (and servicerequestupdates'
    # 90 more) are before datetime's first day. It was an OverflowError, answered as
    # "internal error" (body code 500) and logged with its trace.
    for dates in ({"end_date": "0001-01-01T00:00:00Z"},
                  {"end_date": "0001-01-01T00:00:00+14:00"},
                  {"start_date": "0001-01-02T00:00:00Z", "end_date": "0001-01-03T00:00:00Z"},
                  {"start_date": "0001-01-02"},
                  {"start_date": "1969-12-31T23:59:59Z"},
                  {"end_date": "9999-12-31T23:59:59-14:00"},
                  {"start_date": "9999-06-01T00:00:00Z"}):
        error = bad_request(lambda dates=dates: date_window(params(**dates), NOW))
        assert error.errors == [(400, f"{next(iter(dates))} must be from "
                                      "1970-01-01T00:00:00Z up to 9999-01-01T00:00:00Z")]
    start, end = date_window(params(start_date="1970-01-01T00:00:00Z"), NOW)
    assert end - start == timedelta(days=90)


def test_ids_override_every_other_filter():
    query = parse_request_query(params(
        service_request_id="WH-20261121-0001, WH-20261121-0002", status="closed",
        start_date="2020-01-01T00:00:00Z", end_date="2021-01-01T00:00:00Z"), CATALOG, NOW)
    assert query.ids == ["WH-20261121-0001", "WH-20261121-0002"]
    assert query.matches({"status": "open", "service_code": "gas_leak"})
    # Not read, so not refused either: a code the service list no longer has, a status
    # of another vocabulary, dates that are no dates.
    stale = parse_request_query(params(
        service_request_id="WH-20261121-0001", service_code="potholes", status="pending",
        start_date="yesterday"), CATALOG, NOW)
    assert (stale.ids, stale.service_codes, stale.statuses) == (["WH-20261121-0001"], None,
                                                                None)


def test_codes_statuses_and_pages():
    query = parse_request_query(params(service_code="gas_leak,pipe_leak", status="open",
                                       page="2", page_size="10"), CATALOG, NOW)
    assert query.service_codes == {"gas_leak", "pipe_leak"} and query.statuses == {"open"}
    assert (query.page, query.page_size) == (2, 10)
    assert query.matches({"status": "open", "service_code": "gas_leak"})
    assert not query.matches({"status": "closed", "service_code": "gas_leak"})
    assert not query.matches({"status": "open", "service_code": "heating"})
    for bad in ({"status": "pending"}, {"service_code": "nope"}, {"page_size": "1001"},
                {"page": "0"}, {"page": "x"}):
        bad_request(lambda bad=bad: parse_request_query(params(**bad), CATALOG, NOW))


def test_a_list_filter_declared_several_times_keeps_every_value():
    # "can be declared multiple times, comma delimited": status=open&status=closed asked
    # for both, and used to get the first alone, silently; the others went unchecked.
    query = parse_request_query(read_params([
        ("status", "open"), ("status", "closed"), ("service_code", "gas_leak"),
        ("service_code", "pipe_leak,heating")]), CATALOG, NOW)
    assert query.statuses == {"open", "closed"}
    assert query.service_codes == {"gas_leak", "pipe_leak", "heating"}
    ids = parse_request_query(read_params([
        ("service_request_id", "WH-20261121-0001"),
        ("service_request_id", "WH-20261121-0002,WH-20261121-0003")]), CATALOG, NOW).ids
    assert ids == ["WH-20261121-0001", "WH-20261121-0002", "WH-20261121-0003"]
    for pairs in ([("status", "open"), ("status", "pending")],
                  [("service_code", "gas_leak"), ("service_code", "nope")]):
        bad_request(lambda pairs=pairs: parse_request_query(read_params(pairs), CATALOG, NOW))


# ------------------------------------------------------------------ views


def _assignment(agency: str, name: str, role: Role, hours: int) -> Assignment:
    return Assignment(agency=agency, agency_name=name, agency_name_en=f"{agency} co",
                      sector=Sector.utilities, role=role, assigned_at=T0,
                      acknowledge_by=T0 + timedelta(hours=1),
                      resolve_by=T0 + timedelta(hours=hours))


def _issue():
    record = receive("WH-20261121-0001", "trace-0123456789", "张三家楼上漏水，打13812345678",
                     "pipe_leak", Location(community="缤泰社区", address="3号楼", lat=39.1,
                                           lon=117.2),
                     Channel.app, Language.zh, T0, "https://example.org/1.jpg")
    return dispatch(record, "pipe_leak", Priority.high, Routing(
        rule="pipe_leak", category_source="given"), [
        _assignment("water", "自来水公司", Role.lead, 72),
        _assignment("property_manager", "物业公司", Role.support, 48)], T0)


def test_a_reminder_at_the_district_is_said_as_a_reminder_not_a_new_escalation():
    from services.routing.escalation import escalate
    from shared.issue import pending_deadlines

    record = _issue()
    for _ in range(3):  # street, district, then the district reminded
        deadline = next(d for d in pending_deadlines(record) if d.agency == "water")
        record, _ = escalate(record, deadline, load_rules(), deadline.due + timedelta(seconds=1))
    assert record.timeline[-1].detail.count(", reminded; ") == 1
    notes = {lang: request_view(record, CATALOG, lang, TZ)["status_notes"]
             for lang in (Language.zh, Language.en)}
    assert notes == {Language.zh: "再次超时，已提醒区继续督办",
                     Language.en: "A deadline passed again: the district, already following "
                                  "it up, was reminded"}


def test_a_part_whistled_below_the_issues_level_is_not_said_as_going_down():
    """The water company's two misses took the issue to the district; the property
    manager's first goes to the street office. status_notes and the update said "升级至区
    督办" / "escalated to the street office" as if the issue had moved (down, in the update)."""
    from services.routing.escalation import escalate
    from shared.issue import pending_deadlines

    record = _issue()
    for agency in ("water", "water", "property_manager"):
        deadline = min((d for d in pending_deadlines(record) if d.agency == agency),
                       key=lambda d: d.due)
        later = max(deadline.due, record.updated_at) + timedelta(seconds=1)
        record, [event] = escalate(record, deadline, load_rules(), later)
    assert (event.level.value, event.issue_level.value) == ("street", "district")
    notes = {lang: request_view(record, CATALOG, lang, TZ)["status_notes"]
             for lang in (Language.zh, Language.en)}
    assert notes == {Language.zh: "已超时，街道督促物业公司办理，仍由区督办",
                     Language.en: "A deadline passed: the street office is pressing "
                                  "property_manager co to act; the district keeps following it up"}
    journal = [{**event.model_dump(mode="json"), "event_type": "issue.escalated"}]
    [update] = updates_from_journal(record.issue_id, journal, Language.zh, TZ,
                                    T0 - timedelta(days=1), T0 + timedelta(days=30))
    assert update["description"] == "已超时，街道督促物业公司办理，仍由区督办"


def test_a_request_shows_public_fields_only():
    record = _issue()
    view = request_view(record, CATALOG, Language.zh, TZ, names_of({"name": "张三"}))
    validate(view, REQUEST)
    assert view["description"] == "张*家楼上漏水，打138****5678"
    assert view["status"] == "open"
    assert view["status_notes"] == "已派给自来水公司牵头办理，物业公司配合"
    assert view["agency_responsible"] == "自来水公司"
    assert view["requested_datetime"] == "2026-11-21T09:00:00+08:00"
    assert view["expected_datetime"] == "2026-11-24T09:00:00+08:00"
    assert (view["lat"], view["long"], view["media_url"]) == (39.1, 117.2,
                                                              "https://example.org/1.jpg")
    assert not {"phone", "email", "first_name", "last_name", "contact"} & view.keys()
    # Every field the spec lists for a request, in its order; the two Whistle lacks null.
    assert list(view) == [
        "service_request_id", "status", "status_notes", "service_name", "service_code",
        "description", "agency_responsible", "service_notice", "requested_datetime",
        "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat",
        "long", "media_url"]
    assert (view["address_id"], view["zipcode"]) == (None, None)


def test_a_photo_link_that_names_the_resident_is_not_shown_to_the_public():
    # media_url was shown as posted to anyone: a password, a phone number, an email
    # address or the reporter's name in the link went with it.
    record = _issue()
    names = names_of({"name": "张三"})
    for url in ("https://bob:s3cret@photos.example.org/1.jpg",
                "https://photos.example.org/1.jpg?phone=13812345678",
                "https://photos.example.org/1.jpg?by=zhang.san%40example.org",
                "https://photos.example.org/张三/1.jpg",
                "https://photos.example.org/%E5%BC%A0%E4%B8%89/1.jpg"):
        record.media_url = url
        assert request_view(record, CATALOG, Language.zh, TZ, names)["media_url"] is None
    for url in ("https://www.fixmystreet.com/photo/4455667.0.full.jpeg?6e1a0b2c",
                "https://photos.example.org/2026/12/07/1765100000000.jpg"):
        record.media_url = url
        assert request_view(record, CATALOG, Language.zh, TZ, names)["media_url"] == url
    # And a link with a user name or password is refused when it is posted.
    form = params(address_string="x", media_url="https://bob:s3cret@photos.example.org/1.jpg")
    assert bad_request(lambda: to_submission(form, CATALOG["no_water"], "c")).errors == [
        (400, "media_url must be an http:// or https:// link, with no spaces and no user "
              "name or password")]
    ok = params(address_string="x", media_url="https://photos.example.org/a@2x.jpg?at=@")
    assert to_submission(ok, CATALOG["no_water"], "c").media_url.endswith("?at=@")


def test_a_request_shows_the_building_never_the_flat():
    record = _issue()
    record.location = record.location.model_copy(update={"address": "丽德花园3号楼2单元501"})
    assert request_view(record, CATALOG, Language.zh, TZ)["address"] == "丽德花园3号楼"
    record.location = record.location.model_copy(
        update={"address": "Flat 5, 12 Rose Court, 张三 13812345678"})
    assert request_view(record, CATALOG, Language.en, TZ, names_of({"name": "张三"}))[
        "address"] == "12 Rose Court, 张* 138****5678"
    # Nothing but a flat: no public address at all, rather than "501室" to anyone.
    record.location = record.location.model_copy(update={"address": "501室"})
    assert request_view(record, CATALOG, Language.zh, TZ)["address"] is None


def test_a_request_shows_the_flat_the_description_names_masked_and_its_building():
    record = _issue()
    record.description = "张三家3号楼2单元501室漏水，楼上402天天漏水，电话13812345678"
    assert request_view(record, CATALOG, Language.zh, TZ, names_of({"name": "张三"}))[
        "description"] == "张*家3号楼***漏水，楼上***天天漏水，电话138****5678"
    record.description = "Flat 5 has no heating since 12 Nov; WH-20261121-0001 was the same"
    assert request_view(record, CATALOG, Language.en, TZ)["description"] == \
        "Flat *** has no heating since 12 Nov; WH-20261121-0001 was the same"


def test_a_table_task_names_no_flat_to_the_public():
    power = {"agency": "power", "agency_name": "供电公司", "agency_name_en": "Power company"}
    journal = [{"event_type": "table.task_recorded", "event_id": "t1", "agency": power,
                "description": "更换楼上402的电线，联系13812345678",
                "occurred_at": T0.isoformat()}]
    [update] = updates_from_journal("WH-20261121-0001", journal, Language.zh, TZ,
                                    T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert update["description"] == "协调会议定：供电公司负责更换楼上***的电线，联系138****5678"


def test_every_whistle_state_is_open_or_closed():
    from services.intake.open311.mapping import OPEN311_STATES

    assert OPEN311_STATES["open"] | OPEN311_STATES["closed"] | {IssueStatus.merged} == \
        set(IssueStatus)
    record = _issue()
    record.step(T0, "routing", "needs_triage", "unsure")
    assert request_view(record, CATALOG, Language.en, TZ)["status_notes"] == \
        "The community desk is choosing the responsible agency"


def test_a_resolved_request_is_closed_and_never_shows_an_agencys_note():
    record = _issue()
    later = T0 + timedelta(hours=2)
    for agency in ("water", "property_manager"):
        record = acknowledge(record, agency, "s1", later)
    record = resolve(record, "property_manager", "s1", "已进屋检查", later)
    view = request_view(record, CATALOG, Language.en, TZ)
    assert view["status"] == "open"
    assert view["status_notes"] == "property_manager co has done its part"
    assert view["expected_datetime"] == "2026-11-24T09:00:00+08:00"
    # An agency's note is internal (the resident's own page never shows one), and a
    # public read is anyone's: it named the fitter and the neighbour upstairs.
    record = resolve(record, "water", "s2", "维修工王建国已修好402李秀英家的管道，13812345678",
                     later)
    view = request_view(record, CATALOG, Language.zh, TZ)
    assert view["status"] == "closed"
    assert view["status_notes"] == "各相关单位均已办结，等待居民评价"
    assert not [word for word in ("王建国", "李秀英", "402") if word in str(view)]
    # Done: the notice promises no deadline any more ("应于…前办结" on a closed request).
    assert view["service_notice"] == "自来水公司牵头，已办结，等待居民评价"
    assert request_view(record, CATALOG, Language.en, TZ)["service_notice"] == \
        "water co led; resolved, awaiting the resident's rating"
    closed = record.model_copy(update={"status": IssueStatus.closed})
    assert request_view(closed, CATALOG, Language.zh, TZ)["service_notice"] == "自来水公司牵头，已办结"
    assert view["updated_datetime"] == "2026-11-21T11:00:00+08:00"


def test_the_journal_becomes_fixmystreet_style_updates():
    journal = [
        {"event_type": "issue.received", "event_id": "e1", "occurred_at": T0.isoformat()},
        {"event_type": "issue.dispatched", "event_id": "e2", "occurred_at": T0.isoformat(),
         "assignments": [{"agency_name": "自来水公司", "agency_name_en": "Water",
                          "role": "lead"}]},
        {"event_type": "assignment.acknowledged", "event_id": "e3",
         "occurred_at": (T0 + timedelta(hours=1)).isoformat(), "agency_name": "自来水公司",
         "agency_name_en": "Water"},
        {"event_type": "issue.escalated", "event_id": "e4", "level": "street",
         "occurred_at": (T0 + timedelta(hours=2)).isoformat()},
        {"event_type": "assignment.resolved", "event_id": "e5", "agency_name": "自来水公司",
         "agency_name_en": "Water", "note": "维修工王建国修好了，有事打13812345678",
         "occurred_at": (T0 + timedelta(hours=3)).isoformat()},
        {"event_type": "issue.resolved", "event_id": "e6",
         "occurred_at": (T0 + timedelta(hours=3)).isoformat()},
        {"event_type": "issue.resolved", "event_id": "e6",  # a redelivery: once only
         "occurred_at": (T0 + timedelta(hours=3)).isoformat()},
        {"event_type": "assignment.created", "event_id": "e7",
         "occurred_at": (T0 + timedelta(hours=3)).isoformat()},
        # Another miss at the top level: the district reminded, nothing went up. It read
        # "已超时，升级至区督办" / "A deadline passed: escalated to the district" again.
        {"event_type": "issue.escalated", "event_id": "e8", "level": "district",
         "reminder": True, "occurred_at": (T0 + timedelta(hours=4)).isoformat()},
    ]
    updates = updates_from_journal("WH-20261121-0001", journal, Language.zh, TZ,
                                   T0 - timedelta(days=1), T0 + timedelta(days=1))
    validate(updates, UPDATES)
    assert [(u["update_id"], u["status"]) for u in updates] == [
        ("e1", "open"), ("e2", "investigating"), ("e3", "in_progress"),
        ("e4", "in_progress"), ("e5", "in_progress"), ("e6", "fixed")]
    assert updates[4]["description"] == "自来水公司已完成其负责的部分"  # never its note
    assert "王建国" not in str(updates) and "5678" not in str(updates)
    assert updates[3]["description"] == "已超时，升级至街道督办"
    windowed = updates_from_journal("WH-20261121-0001", journal, Language.en, TZ,
                                    T0 + timedelta(minutes=90), T0 + timedelta(days=1))
    # The window cuts what is shown, not the status worked out before it.
    assert [(u["update_id"], u["status"]) for u in windowed] == [
        ("e4", "in_progress"), ("e5", "in_progress"), ("e6", "fixed")]


def test_updates_come_in_the_order_they_happened_across_a_change_of_offset():
    # Europe/London on 2026-10-25: 00:30Z is 01:30+01:00 and 01:15Z is 01:15+00:00.
    # Sorted as text, the later one came first.
    london = ZoneInfo("Europe/London")
    record = _issue()
    journal = [{"event_id": f"e{n}", "event_type": kind, "occurred_at": at}
               for n, (kind, at) in enumerate([
                   ("issue.dispatched", "2026-10-25T00:30:00+00:00"),
                   ("assignment.acknowledged", "2026-10-25T01:15:00+00:00")])]
    updates = updates_from_journal(record.issue_id, journal, Language.en, london,
                                   datetime(2026, 10, 25, tzinfo=UTC),
                                   datetime(2026, 10, 26, tzinfo=UTC))
    assert [u["updated_datetime"] for u in updates] == [
        "2026-10-25T01:30:00+01:00", "2026-10-25T01:15:00+00:00"]
    assert [u["status"] for u in oldest_first(list(reversed(updates)))] == [
        "investigating", "in_progress"]


def test_a_reroute_that_keeps_the_agencies_is_no_update_and_the_work_stays_in_progress():
    # The audit: the desk lowered an urgent gas leak the gas company had reported in on;
    # FixMyStreet got "已派给燃气公司牵头办理" with its status back to investigating, and the
    # request's notes said "sent to" while the agency was at work. The resident is not
    # told of such a reroute (notify), and it changes nothing they can see.
    def event(kind, event_id, minutes, **fields):
        return {"event_type": kind, "event_id": event_id,
                "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(), **fields}

    gas = [{"agency_name": "燃气公司", "agency_name_en": "Gas company", "role": "lead"}]
    journal = [event("issue.received", "e1", 0), event("issue.dispatched", "e2", 0,
                                                        assignments=gas),
               event("assignment.acknowledged", "e3", 5, agency_name="燃气公司"),
               event("issue.rerouted", "e4", 9, assignments=gas, agencies_changed=False),
               event("issue.rerouted", "e5", 10, assignments=gas),  # before the field: shown
               event("issue.rerouted", "e6", 11, assignments=gas, agencies_changed=True)]
    updates = updates_from_journal("WH-20261121-0001", journal, Language.zh, TZ,
                                   T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert [(u["update_id"], u["status"]) for u in updates] == [
        ("e1", "open"), ("e2", "investigating"), ("e3", "in_progress"),
        ("e5", "investigating"), ("e6", "investigating")]

    record = acknowledge(_issue(), "water", "s1", T0 + timedelta(minutes=5))
    rerouted = reroute(record, "pipe_leak", Priority.urgent, record.routing,
                       [a.model_copy() for a in record.assignments], "desk-01", "urgent",
                       T0 + timedelta(minutes=9)).record
    assert rerouted.timeline[-1].step == "rerouted"
    view = request_view(rerouted, CATALOG, Language.zh, TZ)
    assert (view["status"], view["status_notes"]) == ("open", "自来水公司已报到，正在处理")
    # Before anyone reported in, a reroute is still "sent to".
    fresh = reroute(_issue(), "pipe_leak", Priority.urgent, record.routing,
                    [a.model_copy() for a in record.assignments], "desk-01", "urgent",
                    T0 + timedelta(minutes=9)).record
    assert request_view(fresh, CATALOG, Language.zh, TZ)["status_notes"] == \
        "已派给自来水公司牵头办理，物业公司配合"


def test_a_table_task_the_desk_closed_says_so_and_old_events_stay_the_agencys():
    power = {"agency": "power", "agency_name": "供电公司", "agency_name_en": "Power company"}
    journal = [
        {"event_type": "table.task_done", "event_id": "t1", "agency": power, "task_id": "T1",
         "note": "已更换电线", "occurred_at": T0.isoformat()},  # before ``closed_by`` existed
        {"event_type": "table.task_done", "event_id": "t2", "agency": power, "task_id": "T2",
         "note": "verified on site", "closed_by": "desk", "staff_id": "desk-01",
         "occurred_at": T0.isoformat()},
    ]
    zh = updates_from_journal("WH-20261121-0001", journal, Language.zh, TZ,
                              T0 - timedelta(days=1), T0 + timedelta(days=1))
    en = updates_from_journal("WH-20261121-0001", journal, Language.en, TZ,
                              T0 - timedelta(days=1), T0 + timedelta(days=1))
    # Their notes (the agency's, the desk's) are internal, as an agency's resolution note.
    assert [u["description"] for u in zh] == [
        "供电公司已完成协调会任务", "社区已关闭供电公司的协调会任务"]
    assert en[1]["description"] == "The community desk closed Power company's table task"
    assert "已更换电线" not in str(zh + en) and "verified" not in str(zh + en)
    assert "desk-01" not in str(zh + en)  # the staff id is the desk's, not the resident's


def test_a_merged_report_follows_the_issue_it_joined():
    def event(kind, event_id, minutes, **fields):
        return {"event_type": kind, "event_id": event_id, "issue_id": fields.pop("issue", "WH-20261121-0002"),
                "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(), **fields}

    parent = [event("issue.received", "p1", 0, issue="WH-20261121-0001"),
              event("issue.dispatched", "p2", 1, issue="WH-20261121-0001", assignments=[
                  {"agency_name": "自来水公司", "agency_name_en": "Water", "role": "lead"}]),
              event("assignment.acknowledged", "p3", 30, issue="WH-20261121-0001",
                    agency_name="自来水公司", agency_name_en="Water"),
              event("issue.resolved", "p4", 90, issue="WH-20261121-0001")]
    child = [event("issue.received", "c1", 10),
             event("issue.merged", "c2", 11, into_issue_id="WH-20261121-0001")]
    assert merged_into(child) == "WH-20261121-0001" and merged_into(parent) is None
    updates = updates_from_journal("WH-20261121-0002", child, Language.zh, TZ,
                                   T0, T0 + timedelta(days=1), joined=parent)
    validate(updates, UPDATES)
    assert [(u["update_id"], u["status"]) for u in updates] == [
        ("c1", "open"), ("c2", "duplicate"), ("p3-WH-20261121-0002", "in_progress"),
        ("p4-WH-20261121-0002", "fixed")]
    assert {u["service_request_id"] for u in updates} == {"WH-20261121-0002"}
    split = [*child, event("issue.dispatched", "c3", 20, assignments=[])]
    assert merged_into(split) is None

    # Its request shows the open issue's progress.
    record = receive("WH-20261121-0002", "trace-0123456789", "楼上也漏水", None,
                     Location(community="缤泰社区", address="3号楼"), Channel.app,
                     Language.zh, T0)
    record.merged_into = "WH-20261121-0001"
    view = request_view(record, CATALOG, Language.zh, TZ, merged_into=_issue())
    assert view["agency_responsible"] == "自来水公司" and view["status"] == "open"
    assert view["status_notes"].startswith("已并入同一问题的 WH-20261121-0001 一并处理；已派给")


# ------------------------------------------------------------------ XML


def test_xml_follows_the_spark_convention():
    body = to_xml("service_requests", [{"service_request_id": "WH-1", "service_notice": "好",
                                        "account_id": None, "metadata": True}])
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<service_requests>')
    root = ElementTree.fromstring(body)
    request = root.find("request")
    assert request.findtext("service_notice") == "好"
    assert request.find("account_id") is not None and request.findtext("account_id") == ""
    assert request.findtext("metadata") == "true"
    nested = ElementTree.fromstring(to_xml("service_definition", {
        "service_code": "x", "attributes": [{"code": "a", "values": [{"key": "1"}]}]}))
    assert nested.find("attributes/attribute/values/value/key").text == "1"


def test_xml_stays_well_formed_whatever_the_text_holds():
    # U+FFFE, U+FFFF and C0 controls are no XML at all, escaped or not; a description
    # holding one made the whole list unreadable. They show as U+FFFD; the rest is kept.
    text = "漏水\uffff楼上\ufffe \x01\x1b\ttab\nline 😀 \ud7ff\ue000"
    body = to_xml("service_requests", [{"description": text}, {"description": "好"}])
    root = ElementTree.fromstring(body)
    assert [r.findtext("description") for r in root.findall("request")] == [
        "漏水\ufffd楼上\ufffd \ufffd\ufffd\ttab\nline 😀 \ud7ff\ue000", "好"]


# ------------------------------------------------------------------ the rules file


def test_the_service_list_follows_the_rules_file_and_survives_a_bad_edit(tmp_path):
    import os
    from types import SimpleNamespace

    from services.intake.open311.api import ServiceCatalog
    from services.routing.rules import SHIPPED_RULES

    path = tmp_path / "rules.yaml"
    text = SHIPPED_RULES.read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    provider = ServiceCatalog()
    provider.container = SimpleNamespace(config={"RULES_FILE": str(path)})
    provider.setup()
    assert "gas_leak" in provider.get()[1]

    def rewrite(new_text: str, tick: int) -> None:
        path.write_text(new_text, encoding="utf-8")
        os.utime(path, (tick, tick))  # a new mtime, however fast the test runs

    rewrite(text.replace("category: gas_leak", "category: gas_smell"), 1_900_000_000)
    changed, catalog = provider.get()
    assert "gas_smell" in catalog and "gas_leak" not in catalog
    assert changed == datetime.fromtimestamp(1_900_000_000, UTC)
    rewrite("version: 1\nrules: [oops", 1_900_000_100)
    assert "gas_smell" in provider.get()[1]  # the last good file's services


# ------------------------------------------------------------------ the archive


class ListedArchive:
    """Stands in for ``shared.archive.Archive.summaries`` (PostgreSQL's keyset listing:
    newest first, strictly before ``before``), over a list, to test the paging."""

    def __init__(self, rows):
        self.rows = sorted(rows, key=lambda r: (r["received_at"], r["issue_id"]), reverse=True)
        self.calls = 0

    def summaries(self, status, agency, community, before, limit):
        self.calls += 1
        return [r for r in self.rows if before is None
                or (r["received_at"], r["issue_id"]) < before][:limit]


def test_archived_issues_join_the_list_newest_first():
    from services.intake.open311.api import archived_received
    from services.intake.open311.mapping import newest_first

    rows = [{"issue_id": f"WH-202611{d:02d}-0001", "received_at": T0.replace(day=d)}
            for d in range(1, 21)]
    archive = ListedArchive(rows)
    start, end = T0.replace(day=5), T0.replace(day=12)
    cold = archived_received(archive, start, end, page=3)
    assert [i for i, _ in cold] == [f"WH-202611{d:02d}-0001" for d in range(12, 4, -1)]
    assert archive.calls == 3  # 12-10, 9-7, 6-4: stops once past the start
    hot = [("WH-20261111-0002", T0.replace(day=11).timestamp() + 60),
           ("WH-20261112-0001", T0.replace(day=12).timestamp())]  # being archived: in both
    ids = newest_first(hot, cold)
    assert ids[:3] == ["WH-20261112-0001", "WH-20261111-0002", "WH-20261111-0001"]
    assert len(ids) == len(set(ids)) == 9


def test_a_step_that_tells_the_public_nothing_does_not_turn_the_notes_back_to_received():
    # Seen on a running Whistle: the water utility had reported in, the table agreed a
    # task for it later than its resolve deadline (the deadline follows: deadline_agreed),
    # and the request's notes went back to "已受理，正在派给相关单位" / "Received; being
    # sent to the responsible agencies" while the agencies were at work. A report split
    # off the issue (reporter_split) did the same, on an issue already closed too.
    from services.routing import merging, table

    record = acknowledge(_issue(), "water", "s1", T0 + timedelta(minutes=5))
    record, _ = table.convene(record, T0 + timedelta(days=1), "议事厅", [], RULES,
                              T0 + timedelta(minutes=10))
    record, _ = table.record_task(record, table.DESK, "water", "更换整段立管",
                                  T0 + timedelta(days=10), RULES, T0 + timedelta(minutes=20))
    assert record.timeline[-1].step == "deadline_agreed"
    for lang, said in ((Language.zh, "已召集各相关单位协调会，桌面解决"),
                       (Language.en, "The agencies are settling it together at a "
                                     "coordination table")):
        assert request_view(record, CATALOG, lang, TZ)["status_notes"] == said

    at_work = acknowledge(_issue(), "water", "s1", T0 + timedelta(minutes=5))
    at_work.reporters = ["WH-20261121-0002"]
    split = merging.leave(at_work, "WH-20261121-0002", T0 + timedelta(minutes=30))
    assert split.timeline[-1].step == "reporter_split"
    for lang, said in ((Language.zh, "自来水公司已报到，正在处理"),
                       (Language.en, "water co has reported in and is working on it")):
        assert request_view(split, CATALOG, lang, TZ)["status_notes"] == said

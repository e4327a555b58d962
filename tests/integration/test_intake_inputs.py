"""Input limits at intake: whatever arrives, a clear JSON answer and never a half-stored issue.

A property-based test (hypothesis) throws generated bodies at the real service
over HTTP; named cases pin each limit: body size, field lengths, content type,
malformed JSON, unknown fields, control characters and invalid Unicode.
"""

import json

import pytest
import redis
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.service import IntakeService
from shared import config as cfg
from tests.support.auth import DESK

pytestmark = pytest.mark.integration

VALID = {"description": "楼道灯不亮，晚上看不见路", "location": {"community": "缤泰社区",
                                                         "address": "丽德花园3号楼"}}


@pytest.fixture
def intake(container_factory, whistle_config, redis_prefix):
    container_factory(IntakeService, whistle_config).start()
    client = redis.Redis.from_url(whistle_config[cfg.REDIS_URL], decode_responses=True)
    yield f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}", client, redis_prefix
    client.close()


def stored(client, prefix):
    return client.zcard(f"{prefix}:issues")


def assert_clean_refusal(response, status=None):
    assert 400 <= response.status_code < 500, response.text
    if status:
        assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    assert "Traceback" not in response.text and "File \"" not in response.text


@pytest.mark.parametrize(("data", "headers", "status", "code"), [
    (json.dumps({**VALID, "description": "x" * 4001}), None, 422, "invalid_payload"),
    (json.dumps({**VALID, "location": {"community": "缤" * 65, "address": "a"}}), None, 422,
     "invalid_payload"),
    ("x" * (64 * 1024 + 1), None, 413, "payload_too_large"),
    (json.dumps(VALID), {"Content-Type": "text/plain"}, 400, "malformed_body"),
    ("{\"description\": ", None, 400, "malformed_body"),
    (json.dumps({**VALID, "priority": "urgent"}), None, 422, "invalid_payload"),
    (json.dumps({**VALID, "description": "灯不亮\x07\x1b[31m"}), None, 422, "invalid_payload"),
    ('{"description": "\\ud800 灯不亮", "location": {"community": "a", "address": "b"}}', None,
     422, "invalid_payload"),
    (b"\xff\xfe\x00{", None, 400, "malformed_body"),
    ("[1, 2, 3]", None, 422, "invalid_payload"),
    (json.dumps({**VALID, "category": "flyingwire"}), None, 422, "invalid_payload"),
])
def test_each_limit_is_a_clear_4xx_and_nothing_is_stored(intake, data, headers, status, code):
    base, client, prefix = intake
    response = requests.post(f"{base}/issues", data=data if isinstance(data, bytes)
                             else data.encode("utf-8"), timeout=5,
                             headers={**DESK, **(headers or {"Content-Type": "application/json"})})
    assert_clean_refusal(response, status)
    assert response.json()["error"]["code"] == code
    assert stored(client, prefix) == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["description", "location", "community", "address", "contact", "phone",
                         "name", "channel", "language", "category", "grid", "lat", "extra"])
        | st.text(max_size=8), children, max_size=5),
    max_leaves=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.fixed_dictionaries({"description": st.text(max_size=60), "location": st.fixed_dictionaries(
        {"community": st.text(max_size=10), "address": st.text(max_size=10)})},
        optional={"contact": st.dictionaries(st.sampled_from(["name", "phone", "email"]),
                                             st.text(max_size=15)),
                  "channel": st.text(max_size=10)}).map(lambda v: json.dumps(v).encode()),
), content_type=st.sampled_from(["application/json", "application/json; charset=utf-8",
                                 "text/plain", "application/x-www-form-urlencoded"]))
def test_any_body_gets_a_json_answer_and_refusals_store_nothing(intake, body, content_type):
    base, client, prefix = intake
    before = stored(client, prefix)
    response = requests.post(f"{base}/issues", data=body, timeout=5,
                             headers={**DESK, "Content-Type": content_type})
    if response.status_code == 201:
        receipt = response.json()
        assert stored(client, prefix) == before + 1
        issue = requests.get(f"{base}/issues/{receipt['issue_id']}", headers=DESK, timeout=5).json()
        assert issue["status"] == "received"
    else:
        assert_clean_refusal(response)
        assert stored(client, prefix) == before


def test_a_lost_day_counter_never_overwrites_an_issue(intake):
    # The day's id counter can be lost (a Redis restart without the last second of
    # its log); the next submission must get a fresh id, not reuse an existing one.
    url, client, prefix = intake
    first = requests.post(f"{url}/issues", headers=DESK, json=VALID, timeout=5).json()["issue_id"]
    second = requests.post(f"{url}/issues", headers=DESK, json=VALID, timeout=5).json()["issue_id"]
    day = first.split("-")[1]
    client.delete(f"{prefix}:seq:{day}")

    third = requests.post(f"{url}/issues", headers=DESK, json={**VALID, "description": "暖气不热"},
                          timeout=5)

    assert third.status_code == 201, third.text
    assert third.json()["issue_id"] == f"WH-{day}-{int(second.split('-')[2]) + 1:04d}"
    assert json.loads(client.get(f"{prefix}:issue:{first}"))["description"] == VALID[
        "description"]
    assert stored(client, prefix) == 3


def test_the_desk_names_a_category_the_rules_know_or_none(intake):
    """A mistyped category was taken (201) and routing ignored it in silence: the desk
    thought it had decided. Now the field is named with what it may be."""
    base, client, prefix = intake
    refused = requests.post(f"{base}/issues", json={**VALID, "category": "flyingwire"},
                            headers=DESK, timeout=5)
    assert refused.status_code == 422
    [field] = refused.json()["error"]["fields"]
    assert field["field"] == "category" and "flying_wire" in field["message"]
    assert field["type"] == "unknown"  # as routing's triage and reroute name it
    for category in ("flying_wire", "general"):  # a rule's, and the fallback's
        taken = requests.post(f"{base}/issues", json={**VALID, "category": category},
                              headers=DESK, timeout=5)
        assert taken.status_code == 201, taken.text
    assert stored(client, prefix) == 2


@pytest.mark.parametrize("path", ["/issues", "/stats"])
def test_a_query_parameter_given_twice_is_refused_naming_it(intake, path):
    """``?status=open&status=closed`` was read as its first value: the desk got an answer
    to another question than the one it asked. Now it is a 422 naming the parameter; a
    resident's ``token`` is the guard's, not a filter, and is not counted."""
    base, _client, _prefix = intake
    twice = "status=dispatched&status=closed" if path == "/issues" else \
        "since=2026-11-01T00:00:00%2B08:00&since=2026-10-01T00:00:00%2B08:00"
    refused = requests.get(f"{base}{path}?{twice}", headers=DESK, timeout=5)
    assert_clean_refusal(refused, 422)
    [field] = refused.json()["error"]["fields"]
    assert field["type"] == "repeated" and field["field"] in ("status", "since")
    once = requests.get(f"{base}{path}?{twice.split('&')[0]}", headers=DESK, timeout=5)
    assert once.status_code == 200, once.text


def test_a_body_that_gives_a_key_twice_is_refused_naming_it(intake):
    """A JSON parser keeps the last value in silence: a body giving "category" twice
    filed the issue under the second. Now it is a 400 naming the key; nothing is stored."""
    base, client, prefix = intake
    body = ('{"description": "楼上漏水", "category": "pipe_leak", "category": "gas_leak", '
            '"location": {"community": "缤泰社区", "address": "丽德花园3号楼"}}')
    refused = requests.post(f"{base}/issues", data=body.encode(), timeout=5,
                            headers={**DESK, "Content-Type": "application/json"})
    assert_clean_refusal(refused, 400)
    assert '"category" more than once' in refused.json()["error"]["message"]
    assert stored(client, prefix) == 0

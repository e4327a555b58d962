"""The HTTP input layer (shared.web) against a real server: chunked bodies, JSON nested
too deeply, a body that is no object, long URLs and headers, and the ``token`` query
parameter, on Whistle's own API and on Open311."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlencode

import pytest
import requests

from services.agency.service import AgencyService
from services.intake.open311.clients import Open311Clients
from services.intake.service import IntakeService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.web import MAX_BODY_BYTES
from tests.support.auth import DESK, staff_headers

pytestmark = pytest.mark.integration

V2 = "/open311/v2"
LAMP = {"description": "楼道灯不亮", "location": {"community": "缤泰社区",
                                               "address": "丽德花园2号楼"}, "channel": "desk"}
LEAK = {"service_code": "pipe_leak", "address_string": "丽德花园",
        "attribute[community]": "缤泰社区", "attribute[building]": "3号楼2单元501",
        "description": "楼上漏水，天花板一直滴水"}
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@pytest.fixture
def whistle(runner_factory, whistle_config, redis_client):
    runner_factory(whistle_config, IntakeService, RoutingService, AgencyService).start()
    key = Open311Clients(redis_client, whistle_config[cfg.KEY_PREFIX]).add("fixmystreet")
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}", whistle_config, key


@pytest.fixture
def power_issue(whistle):
    """An issue with a power assignment: an acknowledgement's body is read only once
    the caller has a part in the issue (authorization comes first)."""
    base, _, _ = whistle
    made = requests.post(f"{base}/issues", headers=DESK, timeout=10, json={
        **LAMP, "description": "整栋楼停电了，电表箱那边也没电，邻居家都黑着"})
    assert made.status_code == 201, made.text
    issue_id = made.json()["issue_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        issue = requests.get(f"{base}/issues/{issue_id}", headers=DESK, timeout=5).json()
        if any(a["agency"] == "power" for a in issue.get("assignments", [])):
            return issue_id
        time.sleep(0.1)
    pytest.fail(f"{issue_id} was never assigned to power: {issue}")


def in_chunks(body: bytes, size: int = 1000):
    """A generator body: requests sends it with ``Transfer-Encoding: chunked``."""
    return (body[start:start + size] for start in range(0, len(body), size))


def post_chunked_raw(base: str, path: str, headers: dict[str, str], body: bytes,
                     chunk: int = 65536) -> tuple[bytes, bytes]:
    """POST ``body`` chunked over a raw socket, sending on as curl does even after the
    server has answered; returns the answer's head and body (a reset raises)."""
    host, port = base.removeprefix("http://").split(":")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for start in range(0, len(body), chunk):
                piece = body[start:start + chunk]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once it has answered: fine, if it answered
        answer = b""
        while not _complete(answer) and (data := sock.recv(65536)):
            answer += data
    head, _, rest = answer.partition(b"\r\n\r\n")
    return head, rest


def _complete(answer: bytes) -> bool:
    # eventlet reads the rest of the body and may keep the connection open: read the
    # answer up to its Content-Length, not to the end of the connection.
    head, found, rest = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").lower().split("\r\n")
    lengths = [int(line.split(":", 1)[1]) for line in lines if line.startswith("content-length:")]
    return bool(found) and bool(lengths) and len(rest) >= lengths[0]


# ------------------------------------------------------------------ chunked bodies


def test_chunked_submissions_are_read_and_accepted(whistle, redis_client, power_issue):
    base, config, key = whistle
    body = json.dumps(LAMP, ensure_ascii=False).encode()
    made = requests.post(f"{base}/issues", data=in_chunks(body, 7), timeout=10,
                         headers={**DESK, "Content-Type": JSON})
    assert made.request.headers["Transfer-Encoding"] == "chunked"
    assert made.status_code == 201, made.text
    issue = requests.get(f"{base}/issues/{made.json()['issue_id']}", headers=DESK, timeout=5)
    assert issue.json()["description"] == "楼道灯不亮"
    # Exactly at the limit is still a body, not a refusal.
    padded = body + b" " * (MAX_BODY_BYTES - len(body))
    at_limit = requests.post(f"{base}/issues", data=in_chunks(padded, 4096), timeout=10,
                             headers={**DESK, "Content-Type": JSON})
    assert at_limit.status_code == 201, at_limit.text
    # Open311's form POST, as FixMyStreet would send it chunked.
    form = urlencode({**LEAK, "api_key": key})
    posted = requests.post(f"{base}{V2}/requests.json", data=in_chunks(form.encode(), 50),
                           headers={"Content-Type": FORM}, timeout=10)
    assert posted.status_code == 201, posted.text
    assert posted.json()[0]["service_request_id"].startswith("WH-")
    # An agency's acknowledgement with a chunked body is read too (its note is optional).
    acknowledged = requests.post(
        f"{base}/agencies/power/assignments/{power_issue}/acknowledge",
        data=in_chunks(b"[1]"), headers={**staff_headers("power", "p-1"), "Content-Type": JSON},
        timeout=10)
    assert acknowledged.status_code == 422, acknowledged.text  # the body was read: no object


@pytest.mark.parametrize("size", [200 * 1024, 5 * 1024 * 1024])
def test_a_chunked_body_over_the_limit_gets_413_not_a_reset(whistle, redis_client, size):
    base, config, key = whistle
    head, body = post_chunked_raw(base, "/issues", {**DESK, "Content-Type": JSON},
                                  b'{"description": "' + b"x" * size + b'"}')
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == {
        "code": "payload_too_large", "message": f"body is larger than {MAX_BODY_BYTES} bytes"}
    # Open311: its own shape (HTTP 400, code 413), form-encoded as FixMyStreet posts.
    head, body = post_chunked_raw(base, f"{V2}/requests.json", {"Content-Type": FORM},
                                  f"api_key={key}&description=".encode() + b"x" * size)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"connection: close" in head.lower()
    assert json.loads(body) == [{"code": 413,
                                 "description": f"body is larger than {MAX_BODY_BYTES} bytes"}]
    assert redis_client.zcard(f"{config[cfg.KEY_PREFIX]}:issues") == 0
    assert requests.get(f"{base}/health", timeout=5).status_code == 200


# ------------------------------------------------------------------ JSON bodies

DEEP_OBJECTS = '{"a":' * 10_000 + "1" + "}" * 10_000  # ~60 KB: under the size limit
DEEP_ARRAYS = "[" * 30_000 + "]" * 30_000


@pytest.mark.parametrize("body", [DEEP_OBJECTS, DEEP_ARRAYS], ids=["objects", "arrays"])
def test_json_nested_too_deeply_is_a_400_at_every_entry_point(whistle, body, power_issue):
    base, config, key = whistle
    power = staff_headers("power", "p-1")
    for path, headers in (("/issues", DESK), ("/routing/explain", DESK),
                          (f"/agencies/power/assignments/{power_issue}/acknowledge", power),
                          ("/issues/WH-20000101-0001/feedback", {})):
        response = requests.post(base + path, data=body, timeout=10,
                                 headers={**headers, "Content-Type": JSON})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] == "malformed_body"
        assert "nested too deeply" in response.json()["error"]["message"], path
    posted = requests.post(f"{base}{V2}/requests.json", data=body, timeout=10,
                           params={"api_key": key}, headers={"Content-Type": JSON})
    assert posted.status_code == 400, posted.text
    assert [e["code"] for e in posted.json()] == [400]
    assert "nested too deeply" in posted.json()[0]["description"]


@pytest.mark.parametrize("body", ["[1]", "null"])
def test_a_body_that_is_no_object_says_so_without_a_class_name(whistle, body, power_issue):
    base, config, key = whistle
    for path, headers in (("/issues", DESK),
                          (f"/agencies/power/assignments/{power_issue}/acknowledge",
                           staff_headers("power", "p-1"))):
        response = requests.post(base + path, data=body, timeout=10,
                                 headers={**headers, "Content-Type": JSON})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["fields"] == [
            {"field": "(body)", "message": "body must be a JSON object", "type": "model_type"}]
        assert "Assignment" not in response.text and "SubmitIssue" not in response.text


# ------------------------------------------------------------------ URLs and headers


def test_open311_takes_its_documented_1000_ids_in_one_url(whistle):
    base, config, key = whistle
    ids = ",".join(f"WH-20261206-{n:04d}" for n in range(1, 1001))
    listed = requests.get(f"{base}{V2}/requests.json", timeout=10,
                          params={"service_request_id": ids, "api_key": key})
    assert len(listed.request.url) > 19_000
    assert listed.status_code == 200, listed.text[:300]
    assert listed.json() == []
    over = requests.get(f"{base}{V2}/requests.json", timeout=10,
                        params={"service_request_id": ids + ",WH-20261206-1001"})
    assert over.status_code == 400
    assert "at most 1000" in over.json()[0]["description"]


def test_beyond_the_url_and_header_limits_eventlet_answers_bare(whistle):
    """docs/http.md: what eventlet itself answers, before Whistle sees the request."""
    base, config, key = whistle
    too_long = requests.get(f"{base}/issues", params={"q": "x" * 40_000}, headers=DESK,
                            timeout=10)
    assert too_long.status_code == 414 and too_long.content == b""
    big_header = requests.get(f"{base}/issues", headers={**DESK, "X-Big": "x" * 70_000},
                              timeout=10)
    assert big_header.status_code == 400 and big_header.content == b""
    assert big_header.reason == "Header Line Too Long"


# ------------------------------------------------------------------ the token parameter


def test_the_token_parameter_is_no_list_or_stats_filter_and_others_are_refused(whistle):
    """A desk token with a stray ``?token=`` reads as without it; a bad filter still 422s."""
    base, config, key = whistle
    for path in ("/issues", "/stats", "/agencies/power/assignments"):
        with_link = requests.get(f"{base}{path}", params={"token": "abc"}, headers=DESK,
                                 timeout=5)
        assert with_link.status_code == 200, (path, with_link.text)
        unknown = requests.get(f"{base}{path}", params={"colour": "red"}, headers=DESK,
                               timeout=5)
        assert unknown.status_code == 422 and unknown.json()["error"]["fields"][0][
            "field"] == "colour", (path, unknown.text)



@pytest.mark.parametrize("typed", ["%00", "13812345678", "WH-20261121-0001%20"])
def test_an_issue_path_that_is_no_issue_id_is_a_404_that_does_not_repeat_it(whistle, typed):
    """Not a 500 from the archive (PostgreSQL refuses a NUL), nor a phone number read back."""
    base, config, key = whistle
    response = requests.get(f"{base}/issues/{typed}", headers=DESK, timeout=5)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["message"] == (
        "no such issue (issue ids look like WH-20261121-0001)")


@pytest.mark.parametrize(("path", "agency", "body"), [
    ("table", "desk", {"meets_at": "2030-11-22T09:00:00+08:00", "place": "红色议事厅"}),
    ("table/check-in", "power", None),
    ("table/tasks/T1/close", "desk", {"note": "已现场核实"}),
    ("table/tasks/T1/done", "power", {"note": "已更换"}),
])
def test_a_write_on_a_path_that_is_no_issue_id_is_a_404(whistle, path, agency, body):
    """The table's writes asked the archive for ``%00`` too (a 500)."""
    base, config, key = whistle
    response = requests.post(f"{base}/issues/%00/{path}", json=body, timeout=5,
                             headers=staff_headers(agency, f"{agency}-1"))
    assert response.status_code == 404, response.text


# ------------------------------------------------------------------ methods


def test_a_405_says_which_methods_the_path_takes(whistle):
    """RFC 9110: a 405 carries Allow, the methods that path does take (it had none); and
    Open311, which answers a wrong method 400 (code 405), names them the same way, also
    for a method no route takes at all (werkzeug's Allow would name its catch-all's)."""
    base, config, key = whistle
    for method, path, allowed in (("PUT", "/issues", "GET, HEAD, POST"),
                                  ("GET", "/issues/WH-20261121-0001/table/tasks", "POST"),
                                  ("DELETE", "/stats", "GET, HEAD")):
        refused = requests.request(method, f"{base}{path}", headers=DESK, timeout=5)
        assert refused.status_code == 405, (path, refused.text)
        assert refused.headers["Allow"] == allowed, path
        assert refused.json()["error"]["code"] == "method_not_allowed"
        assert refused.json()["error"]["message"] == f"this address takes only {allowed}"
    trace = requests.request("TRACE", f"{base}{V2}/requests.json", timeout=5)
    assert trace.status_code == 400 and trace.json()[0]["code"] == 405
    assert trace.headers["Allow"] == "GET, POST"
    unknown = requests.request("TRACE", f"{base}{V2}/potholes.json", timeout=5)
    assert unknown.status_code == 404 and "no such resource" in unknown.text


def test_the_open311_endpoint_url_itself_and_a_missing_slash_are_open311_answers(whistle):
    """An operator checks the endpoint URL discovery gives (``…/open311/v2/``) in a
    browser, and FixMyStreet given it without its slash asks for ``…/v2requests.xml``:
    both got werkzeug's "The requested URL was not found on the server…", the latter in
    Whistle's own JSON, where an XML client reads Open311's errors."""
    base, _, _ = whistle
    root = requests.get(f"{base}{V2}/", timeout=5)
    assert root.status_code == 404 and root.headers["Content-Type"].startswith("text/xml")
    assert "no such resource: GET /open311/v2/ (resources end in .json or .xml" in root.text
    for path in ("requests.xml", "services.xml"):
        slashless = requests.get(f"{base}{V2}{path}", timeout=5)
        assert slashless.status_code == 404, path
        assert slashless.headers["Content-Type"].startswith("text/xml"), slashless.text
        assert ("<code>404</code><description>no such resource: GET /open311/v2"
                f"{path}: the endpoint URL ends in /open311/v2/, with its trailing slash"
                in slashless.text), slashless.text
    posted = requests.post(f"{base}{V2}requests.json", data=LEAK, timeout=5)
    assert posted.status_code == 404 and posted.json()[0]["code"] == 404, posted.text
    assert "with its trailing slash" in posted.json()[0]["description"]

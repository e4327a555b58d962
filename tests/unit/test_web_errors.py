"""HTTP edges (shared.web): reading JSON bodies and turning errors into JSON responses."""

from __future__ import annotations

import json
import logging

import pytest
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from shared.contracts import SubmitIssue
from shared.errors import (
    Forbidden,
    InvalidPayload,
    InvalidTransition,
    MalformedBody,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    WhistleError,
)
from shared.web import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    error_response,
    parse_json_body,
    read_json,
    validate,
)

VALID = {
    "description": "楼道灯不亮",
    "location": {"community": "和平里社区", "address": "3号楼2单元"},
}


def request(body: bytes | str | None, content_type: str | None = "application/json",
            **kwargs) -> Request:
    if isinstance(body, str):
        body = body.encode("utf-8")
    builder = EnvironBuilder(method="POST", path="/issues", data=body,
                             content_type=content_type, **kwargs)
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


def body_of(response) -> dict:
    assert response.mimetype == "application/json"
    return json.loads(response.get_data(as_text=True))


# ------------------------------------------------------------------------ read_json


def test_read_json_returns_the_model():
    issue = read_json(request(json.dumps(VALID, ensure_ascii=False)), SubmitIssue)
    assert isinstance(issue, SubmitIssue)
    assert issue.description == "楼道灯不亮"
    assert issue.location.address == "3号楼2单元"


def test_read_json_accepts_charset_parameter():
    req = request(json.dumps(VALID), content_type="application/json; charset=utf-8")
    assert read_json(req, SubmitIssue).location.community == "和平里社区"


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "text/json", None,
])
def test_read_json_refuses_wrong_content_type(content_type):
    with pytest.raises(MalformedBody) as info:
        read_json(request(json.dumps(VALID), content_type=content_type), SubmitIssue)
    assert info.value.message == "Content-Type must be application/json"
    assert info.value.status == 400 and info.value.code == "malformed_body"


def test_read_json_refuses_body_over_64_kib():
    big = json.dumps({**VALID, "description": "x" * (MAX_BODY_BYTES + 1)})
    assert MAX_BODY_BYTES == 64 * 1024
    with pytest.raises(PayloadTooLarge) as info:
        read_json(request(big), SubmitIssue)
    assert info.value.message == "body is larger than 65536 bytes"
    assert info.value.status == 413


def test_read_json_refuses_oversized_body_without_content_length():
    big = b'{"description": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    environ = EnvironBuilder(method="POST", data=big,
                             content_type="application/json").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    req = Request(environ)
    assert req.content_length is None
    with pytest.raises(PayloadTooLarge, match="larger than 65536 bytes"):
        read_json(req, SubmitIssue)


def test_read_json_body_exactly_at_the_limit_is_read():
    body = json.dumps(VALID)
    padded = body + " " * (MAX_BODY_BYTES - len(body.encode()))
    assert len(padded.encode()) == MAX_BODY_BYTES
    assert read_json(request(padded), SubmitIssue).description == "楼道灯不亮"


@pytest.mark.parametrize("raw", [
    b'{"description": "\xff\xfe"}',
    "楼道".encode("gbk"),
    b'{"description": "\xe6\xa5"}',
])
def test_read_json_refuses_invalid_utf8(raw):
    with pytest.raises(MalformedBody) as info:
        read_json(request(raw), SubmitIssue)
    assert info.value.message == "body is not valid UTF-8"


@pytest.mark.parametrize("raw, where", [
    ('{"description": ', "line 1, column 17"),
    ("{'description': 'x'}", "line 1, column 2"),
    ('{\n  "a": 1,\n}', "line 3, column 1"),
    ("not json", "line 1, column 1"),
])
def test_read_json_refuses_malformed_json_saying_where(raw, where):
    with pytest.raises(MalformedBody) as info:
        read_json(request(raw), SubmitIssue)
    assert info.value.message == f"body is not valid JSON ({where})"


@pytest.mark.parametrize("raw", [
    '{"a":' * 10_000 + "1" + "}" * 10_000,  # past the parser's recursion: it raised, a 500
    "[" * 30_000 + "]" * 30_000,
    '{"description": ' + "[" * (MAX_JSON_DEPTH) + "]" * MAX_JSON_DEPTH + "}",  # one too deep
])
def test_read_json_refuses_json_nested_too_deeply(raw):
    with pytest.raises(MalformedBody) as info:
        read_json(request(raw), SubmitIssue)
    assert info.value.message == (
        f"body is nested too deeply: JSON deeper than {MAX_JSON_DEPTH} levels")


def test_json_nested_up_to_the_limit_is_parsed():
    deepest = '{"a": ' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}"
    assert set(parse_json_body(deepest)) == {"a"}
    with pytest.raises(InvalidPayload):  # reaches the model, which refuses the field
        read_json(request(deepest), SubmitIssue)


def test_brackets_inside_strings_do_not_make_a_body_deep():
    shallow = json.dumps({"description": "[{" * MAX_JSON_DEPTH, "tags": [[1], {"a": [2]}]})
    assert parse_json_body(shallow)["tags"] == [[1], {"a": [2]}]


@pytest.mark.parametrize("raw", ["[1]", "null", '"text"', "3"])
def test_a_body_that_is_no_object_is_named_without_the_model_class(raw):
    with pytest.raises(InvalidPayload) as info:
        read_json(request(raw), SubmitIssue)
    assert info.value.errors == [{"field": "(body)", "message": "body must be a JSON object",
                                  "type": "model_type"}]
    assert "SubmitIssue" not in json.dumps(info.value.to_json())


def test_a_field_that_is_no_object_is_named_without_the_model_class():
    with pytest.raises(InvalidPayload) as info:
        read_json(request(json.dumps({**VALID, "location": [1]})), SubmitIssue)
    assert info.value.errors == [{"field": "location", "message": "must be a JSON object",
                                  "type": "model_type"}]


def test_read_json_empty_body_is_an_empty_object():
    with pytest.raises(InvalidPayload) as info:
        read_json(request(b""), SubmitIssue)
    assert {f["field"] for f in info.value.errors} == {"description", "location"}


def test_read_json_valid_json_failing_the_model_is_invalid_payload():
    body = {**VALID, "contact": {"phone": "not-a-phone-13812345678"}, "channel": "fax"}
    with pytest.raises(InvalidPayload) as info:
        read_json(request(json.dumps(body)), SubmitIssue)
    exc = info.value
    assert exc.status == 422
    assert exc.message == "invalid request: contact.phone, channel"
    assert [f["field"] for f in exc.errors] == ["contact.phone", "channel"]
    assert "13812345678" not in json.dumps(exc.to_json())


def test_read_json_non_object_body_names_the_body():
    with pytest.raises(InvalidPayload) as info:
        read_json(request("[1, 2, 3]"), SubmitIssue)
    assert [f["field"] for f in info.value.errors] == ["(body)"]


def test_read_json_lone_surrogate_escape_is_invalid_payload():
    raw = '{"description": "\\ud800", "location": {"community": "c", "address": "a"}}'
    with pytest.raises(InvalidPayload) as info:
        read_json(request(raw), SubmitIssue)
    assert [f["field"] for f in info.value.errors] == ["description"]


def test_validate_accepts_a_model_instance_and_names_what():
    issue = SubmitIssue.model_validate(VALID)
    assert validate(SubmitIssue, issue) == issue
    with pytest.raises(InvalidPayload, match="^invalid message: location$"):
        validate(SubmitIssue, {"description": "x"}, what="message")


# ------------------------------------------------------------------- error_response


@pytest.mark.parametrize("exc, status, code", [
    (WhistleError("bad"), 400, "bad_request"),
    (MalformedBody("bad body"), 400, "malformed_body"),
    (Unauthorized("no token"), 401, "unauthorized"),
    (Forbidden("not yours"), 403, "forbidden"),
    (NotFound("no such issue"), 404, "not_found"),
    (InvalidTransition("already resolved"), 409, "invalid_transition"),
    (InvalidPayload("invalid request: x", [{"field": "x", "message": "m", "type": "t"}]),
     422, "invalid_payload"),
    (Unavailable("redis is down"), 503, "unavailable"),
])
def test_error_response_for_each_whistle_error(exc, status, code):
    response = error_response(exc)
    assert response.status_code == status
    body = body_of(response)
    assert body["error"]["code"] == code
    assert body["error"]["message"] == exc.message
    if exc.errors:
        assert body["error"]["fields"] == exc.errors
    else:
        assert "fields" not in body["error"]
    if status == 503:
        assert response.headers["Retry-After"] == "5"
    else:
        assert "Retry-After" not in response.headers


def test_error_response_keeps_chinese_readable():
    response = error_response(NotFound("找不到工单 WH-20261121-0001"))
    assert "找不到工单" in response.get_data(as_text=True)


def test_error_response_for_werkzeug_http_exceptions():
    response = error_response(WerkzeugNotFound())
    assert response.status_code == 404
    assert body_of(response)["error"]["code"] == "not_found"
    response = error_response(MethodNotAllowed(valid_methods=["GET"]))
    assert response.status_code == 405
    assert body_of(response)["error"]["code"] == "method_not_allowed"


def test_a_405_says_which_methods_the_path_takes():
    """RFC 9110: a 405 carries Allow (it had none)."""
    response = error_response(MethodNotAllowed(valid_methods=["GET", "HEAD", "POST"]))
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD, POST"
    assert body_of(response)["error"]["message"] == "this address takes only GET, HEAD, POST"


class Boom(RuntimeError):
    pass


def test_unexpected_exception_is_a_bare_500(caplog):
    secret = "redis password hunter2 at /srv/whistle/store.py line 42"
    try:
        raise Boom(secret)
    except Boom as exc:
        with caplog.at_level(logging.ERROR, logger="shared.web"):
            response = error_response(exc)
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert json.loads(text) == {"error": {"code": "internal", "message": "internal error"}}
    assert "hunter2" not in text
    assert "Traceback" not in text
    assert "Boom" not in text
    assert "store.py" not in text
    # the details go to the log instead, by type name
    assert any("Boom" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("exc", [KeyError("phone"), ValueError("13812345678"), TypeError()])
def test_other_builtin_errors_are_bare_500s(exc):
    response = error_response(exc)
    assert response.status_code == 500
    assert body_of(response) == {"error": {"code": "internal", "message": "internal error"}}


def test_each_request_is_one_structured_access_line():
    from structlog.testing import capture_logs

    from shared.web import ACCESS_LOG_FORMAT, AccessLog

    access = AccessLog()
    line = ACCESS_LOG_FORMAT % {"client_ip": "127.0.0.1", "client_port": 5,
                                "date_time": "-", "request_line": "POST /issues HTTP/1.1",
                                "status_code": "201", "body_length": "303",
                                "wall_seconds": 0.0039}
    with capture_logs() as logs:
        access.info(line)
        access.info("Traceback (most recent call last): ...")  # eventlet's other lines
        access.error("(%s) connection reset", 42)
    assert logs[0] == {"event": "http_request", "log_level": "info", "logger": "whistle.http",
                       "client": "127.0.0.1", "request": "POST /issues HTTP/1.1",
                       "status": 201, "bytes": 303, "ms": 3.9}
    assert logs[1]["event"].startswith("Traceback")
    assert logs[2] == {"event": "(42) connection reset", "log_level": "error",
                       "logger": "whistle.http"}


def test_a_request_that_does_not_fit_the_method_is_still_refused():
    from types import SimpleNamespace

    from nameko.exceptions import IncorrectSignature

    from shared.web import JsonHttpHandler

    class Service:
        def get_issue_http(self, request, issue_id):
            return issue_id

    handler = JsonHttpHandler("GET", "/issues/<issue_id>")
    handler.container = SimpleNamespace(service_cls=Service)
    handler.method_name = "get_issue_http"
    handler.check_signature(("request",), {"issue_id": "WH-20261121-0001"})
    for args, kwargs in [(("request",), {"issue": "x"}), (("request", "extra"), {"issue_id": "x"}),
                         ((), {})]:
        with pytest.raises(IncorrectSignature):
            handler.check_signature(args, kwargs)


def test_a_method_with_a_default_is_still_checked_by_its_signature():
    from types import SimpleNamespace

    from nameko.exceptions import IncorrectSignature

    from shared.web import JsonHttpHandler

    class Service:
        def list_http(self, request, page=1):
            return page

    handler = JsonHttpHandler("GET", "/list")
    handler.container = SimpleNamespace(service_cls=Service)
    handler.method_name = "list_http"
    handler.check_signature(("request",), {})
    handler.check_signature(("request",), {"page": "2"})
    with pytest.raises(IncorrectSignature):
        handler.check_signature(("request",), {"pages": "2"})


def test_json_answers_are_kept_by_no_cache_unless_they_say_otherwise():
    """The APIs' answers (a resident's issue read with the link's ``?token=`` among them)
    carried no Cache-Control: only the pages said no-store."""
    from shared.errors import NotFound
    from shared.web import error_response, json_response

    assert json_response({"issue_id": "WH-20261207-0001"}).headers["Cache-Control"] == "no-store"
    assert error_response(NotFound("no issue")).headers["Cache-Control"] == "no-store"
    assert json_response({}, headers={"Cache-Control": "no-cache"}).headers[
        "Cache-Control"] == "no-cache"

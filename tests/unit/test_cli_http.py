"""The CLI's HTTP commands (stats, trace, rating-link resend, demo): ``--url`` and
Whistle's error answers, shown in one line. HTTP is faked at ``requests.request``."""

import json

import pytest
import requests

from tests.support.cli import one_error_line, run
from whistle.web_client import base_url


def answering(monkeypatch, answers: dict[str, tuple[int, dict]]):
    """``requests.request`` answers ``answers[path]`` (status, JSON body)."""
    seen = []

    def fake(method, url, **kwargs):
        path = "/" + url.split("/", 3)[3]
        seen.append((method, url))
        status, body = answers[path]
        response = requests.Response()
        response.status_code, response._content = status, json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        return response

    monkeypatch.setattr(requests, "request", fake)
    return seen


ISSUE = {"issue_id": "WH-20261121-0001", "trace_id": "t", "status": "resolved",
         "category": "pipe_leak", "priority": "high"}
FORBIDDEN = (403, {"error": {"code": "forbidden", "message": "only community desk staff "
                                                             "can do this"}})


def test_trace_stops_with_the_services_refusal_of_the_journal(monkeypatch):
    answering(monkeypatch, {"/issues/WH-20261121-0001": (200, ISSUE),
                            "/issues/WH-20261121-0001/events": FORBIDDEN})
    result = run("trace", "WH-20261121-0001", "--url", "http://whistle.test")
    assert result.exit_code == 1
    assert one_error_line(result).startswith(
        "Error: GET /issues/WH-20261121-0001/events answered 403: only community desk staff "
        "can do this")


def test_trace_names_an_issue_that_is_not_there(monkeypatch):
    answering(monkeypatch, {"/issues/WH-20261121-0009": (404, {"error": {
        "code": "not_found", "message": "no such issue"}})})
    result = run("trace", "WH-20261121-0009", "--url", "http://whistle.test")
    assert result.exit_code == 1 and one_error_line(result) == "Error: no issue WH-20261121-0009"


def test_rating_link_resend_says_what_the_service_answered(monkeypatch):
    answering(monkeypatch, {"/issues/WH-20261121-0001/rating-link": (409, {"error": {
        "code": "conflict", "message": "no rating is awaited"}})})
    result = run("rating-link", "resend", "WH-20261121-0001", "--url", "whistle.test:80")
    assert result.exit_code == 1
    assert one_error_line(result) == ("Error: POST /issues/WH-20261121-0001/rating-link "
                                      "answered 409: no rating is awaited")


# a bare port is on this machine, as for `up --address` and WEB_SERVER_ADDRESS: `--url
# 8101` looked up a host named "8101" ("cannot reach Whistle at http://8101")
@pytest.mark.parametrize(("url", "base"), [("127.0.0.1:8000", "http://127.0.0.1:8000"),
                                           ("8101", "http://127.0.0.1:8101")])
def test_a_bare_host_and_port_is_taken_as_http(monkeypatch, url, base):
    seen = answering(monkeypatch, {"/stats": FORBIDDEN})
    result = run("stats", "--url", url)
    assert one_error_line(result).startswith("Error: GET /stats answered 403")
    assert seen[0][1].startswith(f"{base}/stats")
    assert base_url(f" {url} ") == base
    assert base_url("localhost:8000/") == "http://localhost:8000"
    assert base_url("https://whistle.example") == "https://whistle.example"


@pytest.mark.parametrize("command", [["stats"], ["trace", "WH-20261121-0001"], ["demo"],
                                     ["rating-link", "resend", "WH-20261121-0001"]])
# an unclosed IPv6 bracket was a traceback (urlsplit's ValueError), and a space in the
# host "cannot reach Whistle" (exit 1) as though it were out of reach
@pytest.mark.parametrize("url", ["ftp://whistle.example", "http://", "host:port",
                                 "http://[::1", "http://exa mple", "whistle\tlocal:8000"])
def test_every_url_option_refuses_what_is_not_an_http_address(command, url):
    result = run(*command, "--url", url)
    assert result.exit_code == 2
    assert one_error_line(result).startswith("Error: Invalid value for '--url'")


@pytest.mark.parametrize(("status", "says"), [
    (200, "Error: GET /stats answered 200: an HTML page, not Whistle's JSON: is this "
          "Whistle's address?"),
    # not Whistle's "no such issue": trace said "no issue WH-…" for any server's 404
    (404, "Error: GET /issues/WH-20261121-0001 answered 404: an HTML page, not Whistle's "
          "JSON: is this Whistle's address?"),
])
def test_another_servers_page_is_one_line_saying_so(monkeypatch, status, says):
    # --url at another server (RabbitMQ's management UI): its page came out whole
    def fake(method, url, **kwargs):
        response = requests.Response()
        response.status_code = status
        response._content = b"<!DOCTYPE html>\n<html>\n  <head><title>RabbitMQ</title></head>\n</html>"
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response

    monkeypatch.setattr(requests, "request", fake)
    command = ["stats"] if status == 200 else ["trace", "WH-20261121-0001"]
    result = run(*command, "--url", "127.0.0.1:15672")
    assert result.exit_code == 1 and one_error_line(result) == says
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_tls_to_a_plain_http_port_says_tls_failed(monkeypatch):
    # --url https:// at Whistle's plain-HTTP port: "(Operation not permitted)", the text
    # of errno 1, which is OpenSSL's error code here
    import ssl

    def fake(method, url, **kwargs):
        cause = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
        cause.reason = "WRONG_VERSION_NUMBER"
        raise requests.exceptions.SSLError(str(cause)) from cause

    monkeypatch.setattr(requests, "request", fake)
    result = run("stats", "--url", "https://127.0.0.1:8000")
    assert result.exit_code == 1 and one_error_line(result) == (
        "Error: cannot reach Whistle at https://127.0.0.1:8000 (TLS: WRONG_VERSION_NUMBER)")


def test_a_desk_token_for_other_communities_is_told_so_not_to_use_a_desk_token(monkeypatch):
    """A scoped desk token refused an issue elsewhere was told to "set WHISTLE_TOKEN to a
    desk token": it is one. The hint names its communities and what would do."""
    from shared.auth import issue_token

    scoped = issue_token("desk", "li", "s" * 32, communities=["和平里社区"])
    answering(monkeypatch, {"/issues/WH-20261121-0001": (403, {"error": {
        "code": "forbidden", "message": "issue WH-20261121-0001 is outside your communities"}})})
    result = run("trace", "WH-20261121-0001", "--url", "http://whistle.test",
                 env={"WHISTLE_TOKEN": scoped})
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "Error: GET /issues/WH-20261121-0001 answered 403: issue WH-20261121-0001 is outside "
        "your communities (WHISTLE_TOKEN is a desk token for 和平里社区 only: set it to one "
        "for the issue's community, or to an unscoped desk token)")
    agency = issue_token("power", "gd-017", "s" * 32)
    answering(monkeypatch, {"/stats": FORBIDDEN})
    result = run("stats", "--url", "http://whistle.test", env={"WHISTLE_TOKEN": agency})
    assert one_error_line(result).endswith(
        "(these commands act as the desk: set WHISTLE_TOKEN to a desk token, or "
        "WHISTLE_SECRET to the one Whistle runs with)")

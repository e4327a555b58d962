"""Both roads a log line takes end in the same JSON, with personal data masked."""

import contextlib
import json
import logging

import pytest

from shared import logging as whistle_logging
from shared.logging import configure_logging, get_logger


@pytest.fixture
def json_logging():
    previous = whistle_logging._configured_format
    configure_logging("json")
    yield
    whistle_logging._configured_format = None
    configure_logging(previous or "console")


def lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_our_own_lines_and_library_records_render_alike_and_masked(json_logging, capsys):
    get_logger("whistle.agency").bind(service="agency").info(
        "assignment_delivered", issue_id="WH-20261121-0001", note="回电 138 1234 5678",
        contact={"name": "赵大爷", "phone": "13700009999"})
    logging.getLogger("nameko.containers").warning("worker said %s", "13700009999")
    ours, library = lines(capsys.readouterr().err)
    assert ours["event"] == "assignment_delivered" and ours["logger"] == "whistle.agency"
    assert ours["level"] == "info" and ours["service"] == "agency"
    assert ours["note"] == "回电 138****5678"  # non-ASCII kept as it is, not \\u-escaped
    assert ours["contact"] == {"name": "赵**", "phone": "137****9999"}
    assert ours["timestamp"].endswith("Z")
    assert library == {"event": "worker said 137****9999", "level": "warning",
                       "logger": "nameko.containers", "timestamp": library["timestamp"]}


def test_levels_below_the_configured_one_are_not_written(json_logging, capsys):
    log = get_logger("whistle.routing")
    log.debug("not_written")
    log.warning("written", reason=ValueError("x"))  # not JSON-native: its str()
    [line] = lines(capsys.readouterr().err)
    assert line["event"] == "written" and line["reason"] == "x"


def test_no_value_makes_a_log_line_raise(json_logging, capsys):
    log = get_logger("whistle.routing")
    log.info("odd_keys", counts={1: "one", 2: "two"}, ratio=float("nan"))
    log.info("big_number", big=2**70)  # beyond what orjson encodes
    odd, big = lines(capsys.readouterr().err)
    assert odd["counts"] == {"1": "one", "2": "two"} and odd["ratio"] is None
    assert big["event"] == "big_number" and big["big"] == 2**70


def test_an_exception_is_rendered_and_masked(json_logging, capsys):
    try:
        raise RuntimeError("could not call 13700009999")
    except RuntimeError:
        get_logger("whistle.notify").exception("delivery_failed")
    [line] = lines(capsys.readouterr().err)
    assert "RuntimeError: could not call 137****9999" in line["exception"]
    assert "13700009999" not in json.dumps(line)


def test_an_expected_worker_error_is_one_line_naming_the_exception(json_logging, capsys):
    from shared.errors import Unauthorized

    try:
        raise Unauthorized("a token is needed")
    except Unauthorized as exc:
        logging.getLogger("nameko.containers").warning(
            "(expected) error handling worker %s: %s", "<WorkerContext [intake.x]>", exc,
            exc_info=True)
    [line] = lines(capsys.readouterr().err)
    assert line["level"] == "warning" and "exception" not in line
    assert line["event"] == ("(expected) error handling worker <WorkerContext [intake.x]>: "
                             "Unauthorized: a token is needed")


def test_an_unexpected_worker_error_keeps_its_traceback(json_logging, capsys):
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        logging.getLogger("nameko.containers").exception(
            "error handling worker %s: %s", "<WorkerContext [intake.x]>", exc)
    [line] = lines(capsys.readouterr().err)
    assert "Traceback" in line["exception"] and "RuntimeError: boom" in line["exception"]


def test_nameko_times_workers_only_when_its_debug_lines_are_wanted(caplog):
    import nameko.containers

    whistle_logging.time_workers_only_when_debugging()
    caplog.set_level(logging.INFO, logger="nameko.containers")
    timing = nameko.containers._log_time("ran worker %s", "routing.route_issue")
    assert isinstance(timing, contextlib.nullcontext)  # no timer, no message formatted
    with timing:
        pass
    assert not [r for r in caplog.records if r.name == "nameko.containers"]

    caplog.set_level(logging.DEBUG, logger="nameko.containers")  # turned on at run time
    with nameko.containers._log_time("ran worker %s", "routing.route_issue"):
        pass
    (line,) = [r.getMessage() for r in caplog.records if r.name == "nameko.containers"]
    assert line.startswith("ran worker routing.route_issue in ")


def test_broker_passwords_in_a_cluster_uri_never_reach_the_log(json_logging, capsys):
    # kombu masks only the first address of AMQP_URI when it cannot connect
    logging.getLogger("kombu.mixins").warning(
        "Error connecting to broker at %s (%s).", "amqp://whistle:********@rabbit-a:5672/;"
        "amqp://whistle:s3cr#t@rabbit-b:5672/;amqp://whistle:s3cr#t@rabbit-c:5672/", "refused")
    (line,) = lines(capsys.readouterr().err)
    assert "s3cr#t" not in line["event"]
    assert "amqp://whistle:********@rabbit-b:5672/" in line["event"]


def test_a_phone_is_masked_wherever_it_is_on_the_line(json_logging, capsys):
    """In a bound value, an event's value, the event itself and an exception's text."""
    log = get_logger("whistle.notify").bind(service="notify", caller="13700009999")
    log.info("notified", issue_id="WH-20261121-0001", to="+86 138-1234-5678")
    log.info("called 13912345678 back")
    try:
        raise RuntimeError("could not call １３７００００９９９９")
    except RuntimeError:
        log.exception("delivery_failed", issue_id="WH-20261121-0001")
    bound, event, failed = lines(capsys.readouterr().err)
    assert bound["caller"] == "137****9999" and bound["to"] == "138****5678"
    assert bound["issue_id"] == "WH-20261121-0001"
    assert event["event"] == "called 139****5678 back"
    assert failed["caller"] == "137****9999" and failed["level"] == "error"
    assert "RuntimeError: could not call 137****9999" in failed["exception"]
    assert list(bound) == ["logger", "service", "caller", "issue_id", "to", "event", "level",
                           "timestamp"]
    assert list(failed)[-3:] == ["level", "timestamp", "exception"]


def test_the_timestamp_is_iso_utc_as_structlog_writes_it(json_logging, capsys, monkeypatch):
    import re
    import time

    from shared.logging import _UtcTimestamp

    stamp = _UtcTimestamp()
    monkeypatch.setattr(time, "time_ns", lambda: 1_795_336_205_000_123_999)
    assert stamp(None, "info", {})["timestamp"] == "2026-11-22T08:30:05.000123Z"
    monkeypatch.setattr(time, "time_ns", lambda: 1_795_336_206_000_000_999)
    assert stamp(None, "info", {})["timestamp"] == "2026-11-22T08:30:06Z"  # as isoformat()
    monkeypatch.undo()
    get_logger("whistle.routing").info("routed")
    [line] = lines(capsys.readouterr().err)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", line["timestamp"])


def test_the_console_format_still_writes_masked_lines(capsys):
    previous = whistle_logging._configured_format
    whistle_logging._configured_format = None
    configure_logging("console")
    try:
        get_logger("whistle.agency").info("assignment_delivered", note="回电 138 1234 5678")
        err = capsys.readouterr().err
    finally:
        whistle_logging._configured_format = None
        configure_logging(previous or "console")
    assert "assignment_delivered" in err and "138****5678" in err and "1234" not in err


def test_a_value_that_is_not_text_is_masked_as_it_would_be_shown(json_logging, capsys):
    # The renderer writes a value with no JSON form as its str(): a phone in bytes, a
    # set, a model or an exception reached the line in clear, and an int as it was.
    import dataclasses

    from pydantic import BaseModel

    class Contact(BaseModel):
        name: str
        phone: str

    @dataclasses.dataclass
    class Note:
        text: str

    get_logger("whistle.notify").info(
        "odd_values", as_int=13912345678, as_bytes=b"call 13912345678", as_set={"13912345678"},
        model=Contact(name="赵大爷", phone="13700009999"), note=Note("回电 13700009999"),
        error=RuntimeError("could not call 13912345678"), count=3, ms=1.5, ok=True,
        nested={"phone": 7654321, "raw": [b"13912345678", 13912345678]})
    err = capsys.readouterr().err
    [line] = lines(err)
    assert "13912345678" not in err and "13700009999" not in err and "赵大爷" not in err
    assert line["as_int"] == "139****5678" and line["as_bytes"] == "b'call 139****5678'"
    assert line["as_set"] == ["139****5678"] and line["note"] == {"text": "回电 137****9999"}
    assert line["model"] == {"name": "赵**", "phone": "137****9999"}
    assert line["error"] == "could not call 139****5678"
    assert line["nested"] == {"phone": "***4321", "raw": ["b'139****5678'", "139****5678"]}
    assert (line["count"], line["ms"], line["ok"]) == (3, 1.5, True)  # numbers stay numbers


def test_a_lines_own_personal_keys_are_masked_by_key(json_logging, capsys):
    # Nested {"name": ...} was masked by its key; a line's own name= was not.
    get_logger("whistle.notify").info("called_back", name="张三丰", phone="7654321",
                                      token="abc.def", agency="power")
    err = capsys.readouterr().err
    [line] = lines(err)
    assert "张三丰" not in err and "7654321" not in err and "abc.def" not in err
    assert (line["name"], line["phone"], line["agency"]) == ("张**", "***4321", "power")
    assert line["token"] != "abc.def"


def test_keys_holding_a_phone_or_token_are_masked_on_the_line(json_logging, capsys):
    # A dict's keys (and a line's own, made from data with **) reached the line in clear.
    link = "http://x/issues/WH-1/feedback?token=eyJhbGciOi.eyJzdWIi.c2ln"
    get_logger("whistle.notify").info(
        "calls_seen", seen={"13912345678": 1, 13900005678: 2, link: 3},
        nested=[{"by": {"13700009999": True}}], **{"13812345678": "x"})
    err = capsys.readouterr().err
    [line] = lines(err)
    for clear in ("13912345678", "13900005678", "13700009999", "13812345678", "eyJ"):
        assert clear not in err
    assert line["seen"] == {"139****5678": 1, "139****5678 #2": 2,
                            "http://x/issues/WH-1/feedback?token=[redacted]": 3}
    assert line["nested"] == [{"by": {"137****9999": True}}]
    assert line["138****5678"] == "x" and line["event"] == "calls_seen"

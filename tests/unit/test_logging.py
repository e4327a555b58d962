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

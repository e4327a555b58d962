"""The pure parts of whistle tail and whistle trace."""

import json
from datetime import UTC, datetime, timedelta

from whistle.tail_cli import agency_cell, describe, matches, render
from whistle.trace_cli import build_trace, human, short_call_id
from whistle.trace_cli import render as render_trace

NOW = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def test_an_event_line_names_source_type_issue_and_agency_only():
    body = {"event_id": "e2", "trace_id": "t1", "causation_id": "e1",
            "issue_id": "WH-20261121-0001", "assignment": {"agency": "power"},
            "description": "请回电13812345678"}
    line = describe(body, {"x-whistle-source": "routing", "x-whistle-event-type":
                           "assignment.created"}, "assignment.created", "whistle.events", NOW)
    assert (line["kind"], line["service"], line["type"], line["issue"], line["agency"]) == (
        "event", "routing", "assignment.created", "WH-20261121-0001", "power")
    assert "13812345678" not in str(line) and "description" not in line


def test_a_dispatch_line_names_every_agency_and_matches_each_of_them():
    body = {"event_id": "e2", "issue_id": "WH-20261121-0004",
            "assignments": [{"agency": "housing_admin", "role": "lead"},
                            {"agency": "power", "role": "support"}]}
    line = describe(body, {"x-whistle-source": "routing"}, "issue.dispatched",
                    "whistle.events", NOW)
    assert line["agency"] == "housing_admin,power"
    assert matches(line, None, "power", None, None)
    assert matches(line, None, "housing_admin", None, None)
    assert not matches(line, None, "housing", None, None)  # whole names, not prefixes
    # the text column keeps its width: the first agency and how many more
    assert agency_cell(line["agency"]) == "housing_admin +1"
    assert agency_cell("power,water") == "power,water"
    assert agency_cell("housing_admin,property_manager,power,water") == "housing_admin +3"


def test_rpc_requests_and_error_replies_are_described_without_their_arguments():
    request = describe({"args": ["token", "power", "WH-20261121-0003", {"note": "x"}],
                        "kwargs": {}},
                       {"nameko.call_id_stack": ["agency.resolve_http.abc"]},
                       "agency.resolve", "nameko-rpc", NOW, reply_to="rpc.reply-standalone")
    assert (request["kind"], request["type"], request["issue"], request["agency"],
            request["service"]) == ("rpc", "rpc agency.resolve", "WH-20261121-0003", "power",
                                    "agency")
    assert "token" not in str(request)
    reply = describe({"result": None, "error": {"exc_type": "Forbidden",
                                                "value": "call 13812345678"}},
                     {}, "reply-queue-id", "nameko-rpc", NOW)
    assert reply["type"] == "rpc reply (error: Forbidden)"
    assert "13812345678" not in reply["detail"] and "138****5678" in reply["detail"]


def test_a_scripts_rpc_is_from_a_client_and_keeps_the_columns_in_place():
    request = describe({"args": ["WH-20261121-0003"], "kwargs": {}},
                       {"nameko.call_id_stack": ["standalone_rpc_proxy.call.9f1e"]},
                       "intake.get_issue", "nameko-rpc", NOW, reply_to="rpc.reply-standalone")
    assert request["service"] == "client"
    event_line = describe({"issue_id": "WH-20261121-0003"}, {"x-whistle-source": "intake"},
                          "issue.received", "whistle.events", NOW)
    assert render(request).index("WH-20261121-0003") == render(event_line).index("WH-20261121-0003")


def test_filters_combine():
    line = {"issue": "WH-1", "agency": "gas", "type": "table.convened", "service": "routing"}
    assert matches(line, "WH-1", "gas", "table.*", "routing")
    assert not matches(line, "WH-2", None, None, None)
    assert not matches(line, None, None, "issue.*", None)
    assert not matches(line, None, None, None, "intake")


def event(event_type, event_id, at, call_id, cause=None, **fields):
    return {"event_type": event_type, "event_id": event_id, "causation_id": cause,
            "occurred_at": (NOW + at).isoformat(), "call_id": call_id, **fields}


def test_trace_tells_processing_from_waiting_for_people_and_deadlines():
    events = [
        event("issue.received", "e1", timedelta(0), "intake.submit_issue_http.1"),
        event("issue.dispatched", "e2", timedelta(milliseconds=8), "routing.route_issue.2", "e1",
              assignments=[{"agency": a} for a in ("housing_admin", "property_manager",
                                                   "power", "water")]),
        event("issue.escalated", "e3", timedelta(hours=2), "routing.watch_deadlines.3",
              agency={"agency": "power"}),
        event("assignment.acknowledged", "e4", timedelta(hours=2, minutes=30),
              "agency.acknowledge_http.4", agency="power"),
    ]
    notes = [{"kind": "received", "status": "sent", "created_at": (NOW + timedelta(
        milliseconds=5)).isoformat(), "sent_at": (NOW + timedelta(milliseconds=5)).isoformat()}]
    trace = build_trace({"issue_id": "WH-1", "trace_id": "t", "status": "in_progress",
                         "category": "flying_wire", "priority": "urgent"}, events, notes)
    kinds = [(s["type"], s["kind"], s["service"], s["entrypoint"]) for s in trace["steps"]]
    assert kinds == [
        ("issue.received", "start", "intake", "submit_issue_http"),
        ("notified received (sent)", "processing", "notify", None),
        ("issue.dispatched", "processing", "routing", "route_issue"),
        ("issue.escalated", "waiting (deadline)", "routing", "watch_deadlines"),
        ("assignment.acknowledged", "waiting (people)", "agency", "acknowledge_http"),
    ]
    assert trace["steps"][2]["duration_s"] == 0.008  # from its cause, not the notification
    assert trace["totals_s"] == {"processing": 0.008, "waiting (deadline)": 7199.992,
                                 "waiting (people)": 1800.0}
    assert human(7199.992) == "1h59m" and human(0.008) == "8ms" and human(90000) == "1d1h"
    assert trace["steps"][2]["agency"] == "housing_admin,property_manager,power,water"
    dispatched = next(r for r in render_trace(trace).splitlines() if "issue.dispatched" in r)
    assert "housing_admin +3  routing.route_issue.2" in dispatched  # the column's width kept
    # the notification rows are not in the processing total, and the total says so
    assert "processing 8ms (events, not notifications)," in render_trace(trace)


def test_short_call_ids_keep_service_entrypoint_and_four_characters():
    assert short_call_id("intake.submit_issue_http.daa5e546-0734-44d5-b4a6-155b8dcdc6da") == \
        "intake.submit_issue_http.daa5…"
    assert short_call_id("routing.route_issue.2") == "routing.route_issue.2"
    assert short_call_id(None) == "-"


def test_a_malformed_event_is_a_line_without_its_fields_and_teaches_no_receipt_time():
    # the poison a service dead-letters: valid JSON, not an event. `whistle tail` died
    # on it with KeyError 'occurred_at' (a traceback), and printed its issue_id as given
    from whistle.tail_cli import ReceivedTimes

    times = ReceivedTimes(None, "p")
    for body in ({"issue_id": "WH-20261207-0009", "unexpected": True},
                 {"issue_id": "WH-20261207-0009", "occurred_at": "yesterday"},
                 {"issue_id": ["WH-20261207-0009"], "occurred_at": NOW.isoformat()},
                 {"issue_id": "欧阳娜娜 13912345678", "agency": "欧阳娜娜",
                  "assignments": [{"agency": "13912345678"}], "trace_id": "欧阳娜娜",
                  "event_id": {"x": 1}, "causation_id": "13912345678 欧阳娜娜"}):
        line = describe(body, {}, "issue.received", "whistle.events", NOW)
        times.learn(line, body)
        assert times.elapsed(line["issue"], NOW) is None
        assert "欧阳" not in render(line) + str(line) and "1391234" not in str(line)
    assert describe({"issue_id": "WH-20261207-0009"}, {}, "issue.received",
                    "whistle.events", NOW)["issue"] == "WH-20261207-0009"
    request = describe({"args": "WH-20261207-0009 欧阳娜娜"}, {}, "agency.resolve",
                       "nameko-rpc", NOW, reply_to="r")
    assert request["issue"] is None and request["agency"] is None


def test_an_error_reply_of_every_whistle_error_keeps_the_columns_in_place():
    """``rpc reply (error: InvalidTransition)`` is longer than the type column once was:
    it pushed the issue, agency and detail of that line out of line with the others."""
    from shared import errors

    event_line = describe({"issue_id": "WH-20261121-0003"}, {"x-whistle-source": "intake"},
                          "issue.received", "whistle.events", NOW)
    whistle_errors = [c for c in vars(errors).values()
                      if isinstance(c, type) and issubclass(c, errors.WhistleError)]
    assert "InvalidTransition" in {c.__name__ for c in whistle_errors}
    for error in whistle_errors:
        reply = describe({"result": None, "error": {"exc_type": error.__name__, "value": ""}},
                         {}, "reply-queue-id", "nameko-rpc", NOW)
        assert len(render(reply)) == len(render(event_line)), error.__name__


def test_a_message_forged_or_garbled_anywhere_shows_no_name_or_number():
    """The body's fields were shown only when shaped, but the routing key, the sender's
    header, the caller's call id, a trace id header and an error's class were printed as
    they came: ``孙建国13812345678`` in the service and type columns."""
    resident = "孙建国13812345678"
    lines = [
        describe({"issue_id": "WH-20261121-0003"},
                 {"x-whistle-source": resident, "x-whistle-event-type": resident,
                  "nameko.trace_id": resident}, "issue.received", "whistle.events", NOW),
        describe({"x": 1}, {}, f"issue.{resident}", "whistle.events", NOW),
        describe({"args": ["WH-20261121-0003"], "kwargs": {}},
                 {"nameko.call_id_stack": [f"{resident}.get_issue.1"]},
                 "intake.get_issue13812345678", "nameko-rpc", NOW, reply_to="rpc.reply-x"),
        describe({"result": None, "error": {"exc_type": resident, "value": "x"}},
                 {"nameko.call_id_stack": [f"{resident}.x.1"]}, "reply-queue-id",
                 "nameko-rpc", NOW),
        describe({"result": None, "error": {"exc_type": "Forbidden13812345678", "value": ""}},
                 {}, "reply-queue-id", "nameko-rpc", NOW),
    ]
    for line in lines:
        shown = render(line) + json.dumps(line, ensure_ascii=False)
        assert "孙建国" not in shown and "13812345678" not in shown, shown
    assert lines[0]["type"] == "issue.received" and lines[0]["service"] is None
    assert lines[0]["issue"] == "WH-20261121-0003"
    assert lines[2]["service"] == "client" and lines[2]["issue"] == "WH-20261121-0003"
    # Whistle's own stay as they were
    own = describe({"issue_id": "WH-20261121-0003"},
                   {"x-whistle-source": "routing", "x-whistle-event-type": "issue.dispatched",
                    "nameko.trace_id": "6b900f26e9114529b1b15b3561c4c027"},
                   "issue.dispatched", "whistle.events", NOW)
    assert (own["type"], own["service"], own["trace_id"]) == (
        "issue.dispatched", "routing", "6b900f26e9114529b1b15b3561c4c027")
    web = describe({"args": ["WH-20261121-0003"], "kwargs": {}},
                   {"nameko.call_id_stack": ["web.desk_issue.9f1e"]}, "intake.get_issue",
                   "nameko-rpc", NOW, reply_to="rpc.reply-x")
    assert (web["type"], web["service"]) == ("rpc intake.get_issue", "web")


def test_an_error_class_from_outside_whistle_longer_than_the_column_is_cut_to_fit():
    """nameko's ``IncorrectSignature`` made ``rpc reply (error: IncorrectSignature)``, 37
    characters in a column of 36: the issue, agency and detail of its line moved right."""
    event_line = describe({"issue_id": "WH-20261121-0003"}, {"x-whistle-source": "intake"},
                          "issue.received", "whistle.events", NOW)
    for exc_type in ("IncorrectSignature", "MethodNotFound", "UnknownService",
                     "A" * 64):
        reply = describe({"result": None, "error": {"exc_type": exc_type, "value": "x"}},
                         {}, "reply-queue-id", "nameko-rpc", NOW)
        shown = render(reply)
        assert len(shown.split("  x")[0]) == len(render(event_line)), shown
        assert shown.endswith("  x")
    reply = describe({"result": None, "error": {"exc_type": "IncorrectSignature", "value": ""}},
                     {}, "reply-queue-id", "nameko-rpc", NOW)
    assert "rpc reply (error: IncorrectSignatu…)" in render(reply)
    assert reply["type"] == "rpc reply (error: IncorrectSignature)"  # --json: whole


def test_an_id_not_shaped_like_whistles_own_is_shown_as_malformed():
    """Any 1-128 letters and digits passed as an id: a phone number in the trace, event or
    causation id of a garbled message reached ``--json`` whole."""
    own = "6b900f26e9114529b1b15b3561c4c027"
    for phone in ("13812345678", "008613812345678", "4155550132"):
        line = describe({"issue_id": "WH-20261121-0003", "trace_id": phone,
                         "event_id": phone, "causation_id": phone},
                        {"nameko.trace_id": phone}, "issue.received", "whistle.events", NOW)
        assert (line["trace_id"], line["event_id"], line["causation_id"]) == (
            "(malformed)",) * 3
        assert phone not in json.dumps(line) + render(line)
        reply = describe({"result": None}, {"nameko.trace_id": phone}, "reply-queue-id",
                         "nameko-rpc", NOW)
        assert reply["trace_id"] == "(malformed)"
    line = describe({"issue_id": "WH-20261121-0003", "trace_id": own, "event_id": own,
                     "causation_id": None}, {}, "issue.received", "whistle.events", NOW)
    assert (line["trace_id"], line["event_id"], line["causation_id"]) == (own, own, None)
    # an event without its own trace id keeps the one nameko's header carries
    line = describe({"issue_id": "WH-20261121-0003"}, {"nameko.trace_id": own},
                    "issue.received", "whistle.events", NOW)
    assert line["trace_id"] == own


def test_whistles_own_ids_have_the_shape_the_tools_show():
    from shared.contracts import new_id
    from shared.topology import WHISTLE_ID

    assert all(WHISTLE_ID.fullmatch(new_id()) for _ in range(100))


def test_an_error_replys_quoted_value_is_shown_only_when_shaped_as_a_thing():
    """An error's text quotes what it was given: ``unknown agency 'Margaret Okafor'`` or
    ``KeyError: '欧阳娜娜'`` reached the tail's detail in clear (only phones are masked)."""
    for value, hidden in [("unknown agency 'Margaret Okafor'", "Okafor"),
                          ("'欧阳娜娜'", "欧阳")]:
        reply = describe({"result": None, "error": {"exc_type": "InvalidPayload",
                                                    "value": value}},
                         {}, "reply-queue-id", "nameko-rpc", NOW)
        assert hidden not in render(reply) + json.dumps(reply, ensure_ascii=False)
        assert "(text, " in reply["detail"]
    kept = describe({"result": None, "error": {"exc_type": "NotFound",
                                               "value": "no issue 'WH-20261121-0003'"}},
                    {}, "reply-queue-id", "nameko-rpc", NOW)
    assert kept["detail"] == "no issue 'WH-20261121-0003'"

"""What ``whistle dlq`` shows of a dead letter (``whistle.ops.DeadLetter.describe``)."""

import json

from whistle.ops import DeadLetter, known_safe


def letter(body: dict) -> DeadLetter:
    return DeadLetter(1, {"x-whistle-event-type": "issue.received"},
                      json.dumps(body, ensure_ascii=False).encode(), "application/json")


def test_an_issue_id_or_event_id_not_shaped_like_one_is_not_shown():
    """A garbled or forged body's ``issue_id`` was shown as it came, scrubbed of its phone
    only: ``issue   张三 138****5678``. The ids are shown apart from the body, for finding
    the issue, and only ids have their place there."""
    shown = letter({"issue_id": "张三 13812345678", "event_id": "孙建国13812345678"}).describe()
    assert shown["issue_id"] == "(not an issue id)" and shown["event_id"] == "(not an id)"
    assert "张三" not in json.dumps(shown, ensure_ascii=False)
    good = letter({"issue_id": "WH-20261121-0001",
                   "event_id": "c18b429e3f9945b0b18e2f41a0b1c2d3"})
    assert (good.describe()["issue_id"], good.describe()["event_id"]) == (
        "WH-20261121-0001", "c18b429e3f9945b0b18e2f41a0b1c2d3")
    # digits alone are no id of Whistle's (shared.contracts.new_id): a phone, masked or not
    assert letter({"event_id": "13812345678"}).describe()["event_id"] == "(not an id)"
    assert letter({"x": 1}).describe()["issue_id"] is None


def test_an_event_type_header_not_shaped_like_one_is_not_shown():
    """A service copies the message's x-whistle-event-type onto its dead letter: a forged
    one showed as the letter's type (``孙**138****5678`` when the name was the issue's
    resident's, unmasked for anyone else's)."""
    forged = DeadLetter(1, {"x-whistle-event-type": "李四13812345678",
                            "x-whistle-routing-key": "issue.received"}, b"{}", "application/json")
    assert forged.describe()["event_type"] == "issue.received"
    both = DeadLetter(1, {"x-whistle-event-type": "李四", "x-whistle-routing-key": "李四.x"},
                      b"{}", "application/json")
    assert both.describe()["event_type"] == "(malformed)"
    assert letter({"x": 1}).describe()["event_type"] == "issue.received"
    assert DeadLetter(1, {}, b"{}").describe()["event_type"] is None


def test_a_name_that_belongs_to_no_stored_issue_is_not_shown_in_the_preview():
    """Names are masked only where they are known (the issue's residents); a neighbour's,
    or any in a forged body, has no shape to be found by and was shown in clear beside the
    masked phone. The preview now shows only what is safe by its shape, no free text."""
    body = {"event_id": "c18b429e3f9945b0b18e2f41a0b1c2d3", "issue_id": "WH-20261121-0001",
            "occurred_at": "2026-11-21T08:00:00+00:00",
            "description": "楼上欧阳娜娜家漏水，Margaret Okafor 也说了，电话13812345678",
            "location": {"community": "缤泰社区", "address": "丽德花园5号楼2单元801"},
            "note": "Margaret Okafor", "channel": "hotline", "language": "zh",
            "assignments": [{"agency": "power", "role": "lead"}], "has_contact": True,
            "cycle": 2, "category": "欧阳娜娜", "欧阳娜娜": "x"}
    shown = letter(body).describe(frozenset({"孙建国"}))
    everything = json.dumps(shown, ensure_ascii=False)
    for personal in ("欧阳", "娜娜", "Margaret", "Okafor", "丽德", "138", "5678"):
        assert personal not in everything, (personal, shown["preview"])
    assert shown["preview"].startswith('{"description":"(text, ')
    preview = known_safe(body)  # the preview is cut at 200 characters: its source, whole
    assert preview["description"].startswith("(text, ")
    assert preview["location"] == {"community": "(text, 4 characters)",
                                   "address": "(text, 13 characters)"}
    # what tells the operator which message and what kind: codes, flags, numbers
    assert (preview["channel"], preview["language"], preview["assignments"],
            preview["has_contact"], preview["cycle"]) == (
        "hotline", "zh", [{"agency": "power", "role": "lead"}], True, 2)
    assert preview["category"].startswith("(text, ")  # not shaped as a code
    assert "(field 13)" in preview
    assert (shown["issue_id"], shown["event_id"]) == (
        "WH-20261121-0001", "c18b429e3f9945b0b18e2f41a0b1c2d3")


def test_a_body_that_is_not_json_is_not_shown():
    garbled = DeadLetter(1, {}, b"\xff{not json, " + "欧阳娜娜 Margaret Okafor".encode())
    shown = garbled.describe()
    assert shown["body_format"] == "undecodable"
    assert "欧阳" not in shown["preview"] and "Okafor" not in shown["preview"]


def test_a_reason_whose_names_could_not_be_read_is_shown_only_by_its_class():
    named = DeadLetter(1, {"x-whistle-error": "NotFound: no issue WH-20261121-0001 (孙建国)"},
                       b"{}", "application/json")
    assert named.describe(frozenset({"孙建国"}))["reason"] == \
        "NotFound: no issue WH-20261121-0001 (孙**)"
    blind = named.describe(None)["reason"]
    assert blind.startswith("NotFound: (not shown") and "孙" not in blind


def test_a_value_an_error_quotes_is_shown_only_when_shaped_as_a_name_of_a_thing():
    """An error's text quotes what it was given (``KeyError: '欧阳娜娜'``): a name there
    that belongs to no stored issue cannot be masked, and was shown in clear."""
    for reason, hidden in [("KeyError: '欧阳娜娜'", "欧阳"),
                           ("InvalidPayload: unknown agency 'Margaret Okafor'", "Okafor"),
                           ('ValueError: "Margaret" is not a category', "Margaret")]:
        shown = DeadLetter(1, {"x-whistle-error": reason}, b"{}").describe()["reason"]
        assert hidden not in shown and "(text, " in shown, shown
    kept = "KeyError: 'occurred_at'; unknown event 'issue.received' of 'WH-20261121-0001'"
    assert DeadLetter(1, {"x-whistle-error": kept}, b"{}").describe()["reason"] == kept

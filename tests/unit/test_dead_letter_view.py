"""What ``whistle dlq`` shows of a dead letter (``whistle.ops.DeadLetter.describe``)."""

import json

from whistle.ops import DeadLetter


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

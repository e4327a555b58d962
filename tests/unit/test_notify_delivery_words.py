"""What a resident reads of a message the desk relayed: what was said to them, never the
instruction to the desk's staff that ends the desk's copy of a rating request."""

from __future__ import annotations

import pytest

from services.notify.channels import OutgoingMessage
from services.notify.delivery import attempted, new_record, relayed_by_desk
from services.notify.templates import Templates
from shared.authz import View, notifications_view

ISSUE_ID = "WH-20261207-0001"
VALUES = {"issue_id": ISSUE_ID, "link": "http://x/resident/WH?token=[redacted]",
          "expires_at": "2026-12-14 10:00", "if_unsatisfied": "会重新交办"}
INSTRUCTION = {"zh": "代居民评价", "en": "Record the resident's rating"}
NOW = "2026-12-07T02:00:00Z"


@pytest.fixture(scope="module")
def templates():
    return Templates.load()


def rating_request(templates, language: str) -> OutgoingMessage:
    return OutgoingMessage(
        notification_id="a" * 24, issue_id=ISSUE_ID, kind="rating_request",
        language=language, text=templates.render("rating_request", language, **VALUES),
        for_desk=templates.render("rating_request_desk", language, **VALUES))


@pytest.mark.parametrize("language", ["zh", "en"])
def test_a_resident_reads_a_rating_request_the_desk_relayed_without_its_words_to_staff(
        templates, language):
    message = rating_request(templates, language)
    record = new_record(message, "resident", "desk", NOW)
    by_desk = attempted(record, message, True, "desk", "", "", NOW, 4)
    gave_up = relayed_by_desk(attempted(record, message, False, "webhook", "HTTP 503", "",
                                        NOW, 1), message)
    by_webhook = attempted(record, message, True, "webhook", "HTTP 200", "", NOW, 4)
    for relayed in (by_desk, gave_up):
        # The desk's page shows what the desk says; the resident, what was said to them.
        assert relayed["text"] == message.for_desk and INSTRUCTION[language] in relayed["text"]
        [shown] = notifications_view(View.resident, [relayed])
        assert INSTRUCTION[language] not in shown["text"]
        assert shown["text"] == message.for_desk[:len(shown["text"])]
        assert ISSUE_ID in shown["text"] and shown["text"].endswith(("。", ".", "？", "?"))
        assert notifications_view(View.desk, [relayed]) == [relayed]
    assert by_webhook["text"] == message.text  # it went out in the resident's own words
    assert notifications_view(View.resident, [by_webhook])[0]["text"] == message.text


@pytest.mark.parametrize("language", ["zh", "en"])
def test_a_record_stored_with_only_the_desks_copy_loses_the_instruction_for_its_resident(
        templates, language):
    """A record as stored, with only the desk's copy."""
    desk_copy = templates.render("rating_request_desk", language, **VALUES)
    record = {"kind": "rating_request", "audience": "resident", "text": desk_copy,
              "status": "sent", "channel": "desk"}
    [shown] = notifications_view(View.resident, [record])
    assert INSTRUCTION[language] not in shown["text"] and "社区：" not in shown["text"]
    assert ISSUE_ID in shown["text"] and shown["text"].endswith(("。", "."))
    assert shown["text"] == desk_copy[:len(shown["text"])]

"""Channels without a network: signatures, which channel, the email built, the record's life.

The same channels against a real HTTP server, a real SMTP server and Redis are in
``tests/integration/test_notify_channels.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from services.notify.channels import (
    EmailChannel,
    OutgoingMessage,
    Sealed,
    WebhookChannel,
    build_channels,
    choose_channel,
    direct_channel,
    sign_webhook,
    verify_webhook_signature,
    why_unreachable,
)
from services.notify.delivery import attempted, history_of, new_record
from shared import config as cfg
from shared.jsoncodec import dumps

SECRET = "webhook-secret-of-at-least-32-characters"
NID = "4f1c2a9b8e7d6c5b4a392817"
EMAIL = "tom.baker@example.org"


def message(**overrides) -> OutgoingMessage:
    fields = {"notification_id": NID, "issue_id": "WH-20261121-0001", "kind": "closed",
              "language": "en", "text": "[Whistle] Your report WH-20261121-0001 is now closed.",
              "recipient": {"name": "Tom Baker", "phone": "13700001111", "email": EMAIL},
              "subject": "[Whistle] Your report WH-20261121-0001 is closed"}
    return OutgoingMessage(**{**fields, **overrides})


# -------------------------------------------------------------------- signatures


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b'1795000000.{"a":1}', hashlib.sha256).hexdigest()

    assert sign_webhook(SECRET, 1795000000, b'{"a":1}') == f"sha256={expected}"
    assert sign_webhook(SECRET, "1795000000", '{"a":1}') == f"sha256={expected}"


def test_a_genuine_recent_signature_verifies():
    body = '{"text": "已办结"}'.encode()
    signature = sign_webhook(SECRET, 1795000000, body)

    assert verify_webhook_signature(SECRET, "1795000000", body, signature, now=1795000100)


@pytest.mark.parametrize(("secret", "timestamp", "body", "signature_of", "now"), [
    ("another-secret", "1795000000", b"{}", (1795000000, b"{}"), 1795000000),  # wrong key
    (SECRET, "1795000000", b'{"x":1}', (1795000000, b"{}"), 1795000000),  # body changed
    (SECRET, "1795000001", b"{}", (1795000000, b"{}"), 1795000000),  # timestamp changed
    (SECRET, "1795000000", b"{}", (1795000000, b"{}"), 1795000301),  # too old: a replay
    (SECRET, "1795000000", b"{}", (1795000000, b"{}"), 1794999699),  # from the future
    (SECRET, "yesterday", b"{}", (1795000000, b"{}"), 1795000000),  # malformed
    (SECRET, None, b"{}", (1795000000, b"{}"), 1795000000),  # missing
    ("", "1795000000", b"{}", (1795000000, b"{}"), 1795000000),  # no secret configured
])
def test_anything_else_does_not_verify(secret, timestamp, body, signature_of, now):
    signature = sign_webhook(SECRET, *signature_of)

    assert not verify_webhook_signature(secret, timestamp, body, signature, now=now)


@pytest.mark.parametrize("signature", [None, "", "sha256=", "md5=abc"])
def test_a_missing_or_malformed_signature_does_not_verify(signature):
    assert not verify_webhook_signature(SECRET, "1795000000", b"{}", signature, now=1795000000)


def test_tolerance_is_configurable():
    signature = sign_webhook(SECRET, 1795000000, b"{}")

    assert verify_webhook_signature(SECRET, 1795000000, b"{}", signature, tolerance_s=3600,
                                    now=1795003000)
    assert not verify_webhook_signature(SECRET, 1795000000, b"{}", signature, tolerance_s=10,
                                        now=1795000011)


def test_webhook_request_is_signed_and_names_the_message():
    body, headers = WebhookChannel("https://gw.example/send", SECRET).request(
        message(), now=1795000000.7)

    assert headers["Idempotency-Key"] == NID
    assert headers["X-Whistle-Timestamp"] == "1795000000"
    assert verify_webhook_signature(SECRET, headers["X-Whistle-Timestamp"], body,
                                    headers["X-Whistle-Signature"], now=1795000000)
    payload = json.loads(body)
    assert payload["kind"] == "closed" and payload["language"] == "en"
    assert payload["sent_at"] == "2026-11-18T11:06:40.700000Z"
    assert payload["recipient"] == {"name": "Tom Baker", "phone": "13700001111"}


def test_the_webhook_is_not_given_the_residents_email_address():
    """The gateway texts a phone: the resident's email address is none of its business,
    so it never leaves Whistle in a webhook body (the email channel alone uses it)."""
    body, _ = WebhookChannel("https://gw.example/send", SECRET).request(message())

    assert EMAIL not in body.decode("utf-8")
    assert "email" not in json.loads(body)["recipient"]


def test_webhook_needs_a_secret():
    with pytest.raises(ValueError, match="secret"):
        WebhookChannel("https://gw.example/send", "")


# ---------------------------------------------------------------- which channel


CONFIGURED = frozenset({"desk", "webhook", "email"})


@pytest.mark.parametrize(("preferred", "configured", "has_email", "expected"), [
    ("desk", CONFIGURED, True, ("desk", "")),
    ("webhook", CONFIGURED, False, ("webhook", "")),
    ("email", CONFIGURED, True, ("email", "")),
    ("email", CONFIGURED, False, ("desk", "preferred email but no email address; sent to desk")),
    ("webhook", {"desk", "email"}, True, ("desk", "preferred webhook not configured; sent to desk")),
    ("email", {"desk"}, True, ("desk", "preferred email not configured; sent to desk")),
    ("Email ", CONFIGURED, True, ("email", "")),
    ("pigeon", CONFIGURED, True, ("desk", "unknown preferred channel 'pigeon'; sent to desk")),
])
def test_the_residents_choice_when_this_deployment_has_it(preferred, configured, has_email,
                                                          expected):
    assert choose_channel(preferred, configured, has_email, has_phone=True) == expected


@pytest.mark.parametrize(("default", "expected"), [("desk", "desk"), ("webhook", "webhook")])
def test_no_choice_means_the_deployments_default(default, expected):
    assert choose_channel(None, CONFIGURED, False, default=default, has_phone=True) == \
        (expected, "")
    assert choose_channel("", CONFIGURED, False, default=default, has_phone=True) == \
        (expected, "")


@pytest.mark.parametrize("preferred", [None, ""])
def test_the_default_email_without_an_address_does_not_say_the_resident_chose_it(preferred):
    """NOTIFY_CHANNEL=email and a resident who gave a phone only, and chose nothing: the
    desk's record must not read "preferred email" (the desk would look for a choice the
    resident never made)."""
    assert choose_channel(preferred, CONFIGURED, False, default="email", has_phone=True) == \
        ("desk", "no email address for email; sent to desk")


@pytest.mark.parametrize(("preferred", "configured", "has_email", "expected"), [
    ("webhook", CONFIGURED, True, ("email", "no phone number for webhook; sent by email")),
    (None, CONFIGURED, True, ("email", "no phone number for webhook; sent by email")),
    ("webhook", CONFIGURED, False, ("desk", "no phone number for webhook; sent to desk")),
    (None, CONFIGURED, False, ("desk", "no phone number for webhook; sent to desk")),
    ("webhook", {"desk", "webhook"}, True, ("desk", "no phone number for webhook; sent to desk")),
    ("email", CONFIGURED, True, ("email", "")),
])
def test_a_webhook_without_a_phone_number_goes_where_the_resident_can_be_reached(
        preferred, configured, has_email, expected):
    """An SMS gateway or mini-program texts a phone: a resident who left only an email
    address, or nothing, was POSTed to it with no number, and never heard a word."""
    assert choose_channel(preferred, configured, has_email, default="webhook",
                          has_phone=False) == expected


def test_supervisors_are_always_told_through_the_desk():
    assert choose_channel("email", CONFIGURED, True, default="webhook", supervisor=True,
                          has_phone=False) == ("desk", "")


def config(**values) -> dict:
    return cfg.config_from_env({}, **values)


def test_only_the_desk_by_default():
    channels = build_channels(config(), redis=None, prefix="whistle")

    assert channels.configured == {"desk"}
    assert channels.default == "desk"
    assert channels.for_message(message(preferred_channel="email"))[0] is channels.desk


def test_webhook_and_email_when_configured():
    channels = build_channels(config(**{
        cfg.NOTIFY_WEBHOOK_URL: "https://gw.example/send", cfg.SMTP_HOST: "mail.example",
        cfg.SMTP_PORT: "587", cfg.SMTP_FROM: "Whistle <whistle@bintai.example>",
        cfg.SMTP_USER: "whistle", cfg.SMTP_PASSWORD: "pw", cfg.SMTP_STARTTLS: "true"}),
        redis=None, prefix="whistle")

    assert channels.configured == {"desk", "webhook", "email"}
    webhook, email = channels.others["webhook"], channels.others["email"]
    assert webhook.secret == cfg.DEV_SECRET  # NOTIFY_WEBHOOK_SECRET unset: WHISTLE_SECRET
    assert (email.host, email.port, email.user, email.starttls) == \
        ("mail.example", 587, "whistle", True)
    assert email.domain == "bintai.example"
    chosen, note = channels.for_message(message(preferred_channel="email"))
    assert (chosen, note) == (email, "")


def test_the_webhook_has_its_own_secret_when_set():
    channels = build_channels(config(**{cfg.NOTIFY_WEBHOOK_URL: "https://gw.example/send",
                                        cfg.NOTIFY_WEBHOOK_SECRET: SECRET}), None, "whistle")

    assert channels.others["webhook"].secret == SECRET


@pytest.mark.parametrize(("values", "error"), [
    ({cfg.NOTIFY_CHANNEL: "webhook"}, "NOTIFY_CHANNEL=webhook needs NOTIFY_WEBHOOK_URL"),
    ({cfg.NOTIFY_CHANNEL: "email"}, "NOTIFY_CHANNEL=email needs SMTP_HOST"),
    ({cfg.NOTIFY_CHANNEL: "sms"}, "NOTIFY_CHANNEL must be desk or webhook or email, not 'sms'"),
    ({cfg.NOTIFY_WEBHOOK_URL: "gw.example/send"}, "must start with http"),
    ({cfg.SMTP_HOST: "mail.example", cfg.SMTP_STARTTLS: "maybe"}, "SMTP_STARTTLS"),
])
def test_misconfiguration_stops_the_service_at_start_up(values, error):
    with pytest.raises(cfg.ConfigurationError, match=error):
        build_channels(config(**values), None, "whistle")


# ------------------------------------------------------------------------ email


def built(**overrides) -> tuple:
    channel = EmailChannel("mail.example", 25, "Whistle <whistle@bintai.example>")
    email = channel.build(message(**overrides), now=datetime(2026, 11, 21, 2, 0, tzinfo=UTC))
    return channel, message_from_bytes(email.as_bytes(), policy=policy.default)


def test_email_headers_name_the_resident_the_subject_and_the_message():
    _, email = built()

    assert email["To"] == EMAIL
    assert email["From"] == "Whistle <whistle@bintai.example>"
    assert email["Subject"] == "[Whistle] Your report WH-20261121-0001 is closed"
    assert email["Message-ID"] == f"<{NID}@bintai.example>"
    assert email["X-Whistle-Notification-Id"] == NID
    assert email["Content-Language"] == "en"
    assert email["Date"] == "Sat, 21 Nov 2026 02:00:00 +0000"


def test_email_is_utf8_text_with_a_chinese_subject():
    _, email = built(language="zh", subject="【吹哨报到】您反映的问题已办结归档 WH-20261121-0001",
                     text="【吹哨报到】您反映的问题（编号 WH-20261121-0001）已办结归档：您已确认满意。")

    assert email["Subject"] == "【吹哨报到】您反映的问题已办结归档 WH-20261121-0001"
    assert email.get_content_type() == "text/plain"
    assert email.get_content_charset() == "utf-8"
    assert "已办结归档：您已确认满意。" in email.get_content()


def test_the_same_message_always_has_the_same_message_id():
    channel, first = built()
    _, again = built()

    assert first["Message-ID"] == again["Message-ID"] == channel.message_id(NID)


def test_email_without_an_address_is_refused_without_trying():
    result = EmailChannel("127.0.0.1", 1, "whistle@localhost").deliver(
        message(recipient={"name": "Tom Baker"}))

    assert (result.ok, result.detail) == (False, "no email address")


def test_sender_without_a_domain_still_gives_a_message_id():
    assert EmailChannel("mail.example", 25, "whistle").message_id(NID) == \
        f"<{NID}@whistle.local>"


# ------------------------------------------------------------- the record's life


def record_after(*results: tuple[bool, str], max_attempts: int = 3, note: str = "") -> dict:
    record = new_record(message(), "resident", "webhook", "2026-11-21T02:00:00Z")
    for n, (ok, detail) in enumerate(results, start=1):
        record = attempted(record, message(), ok, "webhook", detail, note,
                           f"2026-11-21T02:00:0{n}Z", max_attempts)
    return record


def test_a_new_record_is_queued_with_the_contact_masked():
    record = record_after()

    assert (record["status"], record["attempts"], record["sent_at"]) == ("queued", 0, None)
    assert record["recipient"] == {"name": "T********", "phone": "137****1111",
                                   "email": "t********@example.org"}


def test_sent_at_the_first_attempt():
    record = record_after((True, "HTTP 204"))

    assert (record["status"], record["attempts"], record["detail"]) == ("sent", 1, "HTTP 204")
    assert record["sent_at"] == record["last_attempt_at"] == "2026-11-21T02:00:01Z"
    assert record["last_error"] is None


def test_refused_below_the_limit_stays_queued_with_the_error():
    record = record_after((False, "HTTP 500"), (False, "ReadTimeout"))

    assert (record["status"], record["attempts"], record["last_error"]) == \
        ("queued", 2, "ReadTimeout")
    assert record["sent_at"] is None


def test_sent_after_refusals_keeps_the_last_error():
    record = record_after((False, "HTTP 500"), (False, "HTTP 500"), (True, "HTTP 200"))

    assert (record["status"], record["attempts"], record["last_error"]) == \
        ("sent", 3, "HTTP 500")


def test_failed_at_the_limit_with_the_reason():
    record = record_after((False, "HTTP 500"), (False, "HTTP 503"), (False, "SMTP 451"))

    assert (record["status"], record["attempts"], record["detail"]) == ("failed", 3, "SMTP 451")


def test_the_note_says_why_it_went_to_the_desk():
    record = record_after((True, ""), note="preferred webhook not configured; sent to desk")

    assert record["detail"] == "preferred webhook not configured; sent to desk"


# ------------------------------------------------------------ sealed links


SHOWN = "https://whistle.example/issues/WH-20261121-0001/feedback?token=[redacted]"
REAL = "https://whistle.example/issues/WH-20261121-0001/feedback?token=eyJ0.eyJz.c2ln"


def sealed_message() -> OutgoingMessage:
    return message(kind="rating_request", text=f"Rate it at {SHOWN} please.",
                   sealed=(Sealed(shown=SHOWN, opened=lambda: REAL),))


def test_a_sealed_link_opens_only_in_what_reaches_the_resident():
    sealed = sealed_message()
    assert sealed.delivered_text() == f"Rate it at {REAL} please."
    body, _ = WebhookChannel("http://gateway.example/send", SECRET).request(sealed, now=1.0)
    assert REAL in json.loads(body)["text"]
    email = EmailChannel("smtp.example", 25, "whistle@example.org").build(sealed)
    assert REAL in email.get_content()
    # What is stored, shown to the desk, logged: the redacted link only.
    assert sealed.payload()["text"] == f"Rate it at {SHOWN} please."
    assert "eyJ" not in repr(sealed)
    record = attempted(new_record(sealed, "resident", "webhook", "t0"), sealed, True,
                       "webhook", "HTTP 200", "", "t1", 4)
    assert "eyJ" not in json.dumps(record)


def test_a_link_is_signed_only_when_a_channel_opens_it_and_only_once():
    signed = []

    def sign() -> str:
        signed.append(1)
        return REAL

    link = Sealed(shown=SHOWN, opened=sign)
    relayed = message(kind="rating_request", text=f"Rate it at {SHOWN} please.", sealed=(link,))
    assert relayed.payload()["text"] == f"Rate it at {SHOWN} please."  # the desk's copy
    assert str(link) == SHOWN and signed == []
    assert relayed.delivered_text() == relayed.delivered_text() == f"Rate it at {REAL} please."
    assert signed == [1]


def test_a_sealed_value_renders_as_its_redacted_form():
    link = Sealed(shown=SHOWN, opened=lambda: REAL)
    assert f"{link}" == str(link) == SHOWN and f"{link}" == SHOWN
    assert REAL not in repr(link)


@pytest.mark.parametrize("preferred, configured, phone, email, expected", [
    ("webhook", {"desk", "webhook", "email"}, True, True, "webhook"),
    ("email", {"desk", "webhook", "email"}, True, True, "email"),
    ("desk", {"desk", "webhook", "email"}, True, True, "webhook"),  # never the desk
    ("desk", {"desk", "email"}, True, True, "email"),
    ("email", {"desk", "webhook", "email"}, True, False, "webhook"),  # no address
    ("desk", {"desk", "webhook"}, False, True, None),  # the gateway needs a phone
    (None, {"desk"}, True, True, None),  # nothing reaches the resident directly
])
def test_a_resent_link_takes_a_channel_that_reaches_the_resident_directly(
        preferred, configured, phone, email, expected):
    assert direct_channel(preferred, configured, has_phone=phone, has_email=email) == expected


@pytest.mark.parametrize("configured, phone, email, expected", [
    ({"desk", "webhook", "email"}, True, False, None),  # reachable: nothing to explain
    ({"desk", "email"}, False, True, None),
    ({"desk"}, True, True, "no_channel"),  # neither a webhook nor email here
    ({"desk", "webhook", "email"}, False, False, "no_contact"),  # nothing given
    ({"desk", "webhook"}, False, True, "no_match"),  # the gateway needs a phone
    ({"desk", "email"}, True, False, "no_match"),  # email needs an address
])
def test_the_desk_is_told_why_no_resent_link_would_reach_the_resident(
        configured, phone, email, expected):
    assert why_unreachable(configured, has_phone=phone, has_email=email) == expected
    assert (direct_channel(None, configured, has_phone=phone, has_email=email) is None) is (
        expected is not None)


def test_records_are_answered_with_z_in_the_order_they_were_made():
    # "a" was stored before moments were spelled with Z. As text, "b" (a whole second,
    # written without a fraction) would sort after "c": "." comes before "Z".
    a = dict(record_after((True, "HTTP 204")), notification_id="a",
             created_at="2026-11-21T02:00:00.500000+00:00",
             last_attempt_at="2026-11-21T02:00:01+00:00", sent_at="2026-11-21T02:00:01+00:00")
    b = dict(record_after(), notification_id="b", created_at="2026-11-21T02:00:01Z")
    c = dict(record_after(), notification_id="c", created_at="2026-11-21T02:00:01.250000Z")
    history = history_of({"c": dumps(c), "b": dumps(b), "a": dumps(a)})

    assert [r["notification_id"] for r in history] == ["a", "b", "c"]
    assert (history[0]["created_at"], history[0]["sent_at"]) == (
        "2026-11-21T02:00:00.500000Z", "2026-11-21T02:00:01Z")
    assert history[1]["sent_at"] is None

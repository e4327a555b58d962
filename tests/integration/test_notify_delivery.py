"""The resident's channels through the running notify service: real broker, Redis, HTTP, SMTP.

Issues are stored directly (with each resident's contact and channel choice) and
events published raw to ``whistle.events``, so only the notify service runs. The
webhook receiver is a real HTTP server that can refuse; the email server is a
real SMTP server (aiosmtpd).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from services.notify.channels import OutgoingMessage, verify_webhook_signature
from services.notify.delivery import message_id, new_record
from services.notify.recipients import RESIDENT
from services.notify.service import ORDERING_GRACE_S, NotifyService
from shared import config as cfg
from shared.auth import verify_feedback_token
from shared.contracts import (
    AssignmentSummary,
    Channel,
    IssueDispatched,
    IssueReceived,
    IssueResolved,
    Language,
    Location,
    Priority,
    Role,
    Sector,
)
from shared.issue import receive
from shared.jsoncodec import utc_moment
from tests.integration import test_delivery, test_notify_channels, test_notify_service
from tests.support.auth import DESK
from tests.support.smtp import smtp_server

# Shared fixtures and helpers, one place each.
amqp, store, wait_until = test_delivery.amqp, test_delivery.store, test_delivery.wait_until
gateway, publish = test_notify_channels.gateway, test_notify_service.publish
dead_letters = test_delivery.dead_letters

pytestmark = pytest.mark.integration

PLACE = Location(community="缤泰社区", address="丽德花园7号楼")
WEBHOOK_SECRET = "webhook-secret-of-at-least-32-characters"
NOTIFY_ATTEMPTS, EVENT_ATTEMPTS = 4, 6
SENDER = "Whistle <whistle@bintai.example>"


@pytest.fixture
def config(whistle_config):
    """Fast retries; notify gives up on a message well before the event is dead-lettered."""
    whistle_config.update({cfg.RETRY_DELAY_MS: 50, cfg.NOTIFY_MAX_ATTEMPTS: NOTIFY_ATTEMPTS,
                           cfg.MAX_ATTEMPTS: EVENT_ATTEMPTS,
                           cfg.NOTIFY_WEBHOOK_SECRET: WEBHOOK_SECRET,
                           cfg.PUBLIC_URL: "https://whistle.bintai.example"})
    return whistle_config


def stored(store, issue_id: str, contact: dict, language: str = "zh") -> IssueReceived:
    record = receive(issue_id, f"trace-{issue_id}", "楼道灯坏了好几天了", None, PLACE,
                     Channel.hotline, Language(language), datetime.now(UTC))
    store.create(record, contact, "test", {})
    return IssueReceived(trace_id=record.trace_id, issue_id=issue_id,
                         description=record.description, location=PLACE, channel="hotline",
                         language=language, has_contact=True)


def start(runner_factory, config) -> str:
    runner_factory(config, NotifyService).start()
    return f"http://{config[cfg.WEB_SERVER_ADDRESS]}"


def told(base: str, issue_id: str) -> list[dict]:
    return test_notify_service.told(base, issue_id)


def settled(base: str, issue_id: str, count: int = 1) -> list[dict]:
    """The issue's messages once ``count`` of them are sent or failed."""
    def probe():
        found = told(base, issue_id)
        return sum(n["status"] in ("sent", "failed") for n in found) >= count and found

    return wait_until(probe)


def signed(request) -> bool:
    return verify_webhook_signature(WEBHOOK_SECRET, request.headers["X-Whistle-Timestamp"],
                                    request.body, request.headers["X-Whistle-Signature"])


# ------------------------------------------------------------------------- webhook


def test_a_refusing_webhook_is_retried_with_the_event_until_it_accepts(
        runner_factory, config, store, amqp, gateway, caplog):
    caplog.set_level(logging.WARNING)
    gateway.failures = 2
    config.update({cfg.NOTIFY_CHANNEL: "webhook", cfg.NOTIFY_WEBHOOK_URL: gateway.url})
    event = stored(store, "WH-20261121-0301", {"phone": "13812345678",
                                                "preferred_channel": "webhook"})
    base = start(runner_factory, config)

    publish(amqp, event)

    [record] = settled(base, event.issue_id)
    time.sleep(1.0)  # nothing more arrives: no hot retry, no duplicate
    assert (record["status"], record["channel"], record["attempts"]) == ("sent", "webhook", 3)
    assert record["last_error"] == "HTTP 500" and record["detail"] == "HTTP 200"
    assert record["sent_at"] == record["last_attempt_at"]
    assert [r.method for r in gateway.requests] == ["POST"] * 3
    assert {r.headers["Idempotency-Key"] for r in gateway.requests} == \
        {message_id(event.event_id, "received")}
    assert all(signed(r) for r in gateway.requests)
    steps = [s.detail for s in store.get_with_notes(event.issue_id).timeline if s.service == "notify"]
    assert steps == ["received message sent via webhook"]
    assert dead_letters(amqp) == []
    # A refusal is routine, retried as documented: a warning per attempt, not an error
    # with a traceback for every message a gateway refuses.
    refusals = [r for r in caplog.records if "HTTP 500" in r.getMessage()]
    assert refusals and all(r.levelno == logging.WARNING and not r.exc_info
                            for r in refusals)


def test_a_duplicate_of_an_event_waiting_out_a_refusal_does_not_send_its_message_early(
        runner_factory, config, store, amqp, gateway):
    """At-least-once: a second copy of the event arrives while the first waits out the
    backoff of its message's refusal. It sent the message again at once, spending one of
    its attempts on a gateway that had just refused it; now it waits for the backoff
    too, and the message is tried once more when the backoff is over."""
    backoff_s = 1.5
    gateway.failures = 1
    config.update({cfg.RETRY_DELAY_MS: int(backoff_s * 1000), cfg.NOTIFY_CHANNEL: "webhook",
                   cfg.NOTIFY_WEBHOOK_URL: gateway.url})
    event = stored(store, "WH-20261207-0313", {"phone": "13812345678",
                                                "preferred_channel": "webhook"})
    base = start(runner_factory, config)

    publish(amqp, event)
    wait_until(lambda: [n["attempts"] for n in told(base, event.issue_id)] == [1])
    publish(amqp, event)  # its duplicate, well within the backoff

    time.sleep(backoff_s / 2)
    assert len(gateway.requests) == 1
    [record] = settled(base, event.issue_id)
    time.sleep(0.5)  # nothing more: the other copy finds it sent
    assert (record["status"], record["attempts"]) == ("sent", 2)
    assert len(gateway.requests) == 2
    assert dead_letters(amqp) == []


def test_a_webhook_that_always_refuses_is_marked_failed_handed_to_the_desk_and_the_rest_flows(
        runner_factory, config, store, amqp, gateway):
    """Given up on, a message goes to the desk's outbox to relay: the desk sees only the
    masked phone on its pages, and the resident would otherwise never hear it."""
    gateway.status = 500
    config[cfg.NOTIFY_WEBHOOK_URL] = gateway.url
    refused = stored(store, "WH-20261121-0302", {"phone": "13812345678",
                                                  "preferred_channel": "webhook"})
    at_desk = stored(store, "WH-20261121-0303", {"phone": "13700001111"})
    base = start(runner_factory, config)

    publish(amqp, refused, at_desk)

    [record] = settled(base, refused.issue_id)
    [desk] = settled(base, at_desk.issue_id)
    time.sleep(1.5)  # longer than the remaining backoff: it is not tried again
    assert (record["status"], record["attempts"], record["detail"]) == \
        ("failed", NOTIFY_ATTEMPTS, "HTTP 500; sent to desk")
    assert (record["channel"], record["last_error"], record["sent_at"]) == \
        ("webhook", "HTTP 500", None)
    assert len(gateway.requests) == NOTIFY_ATTEMPTS
    assert all(signed(r) for r in gateway.requests)
    assert (desk["status"], desk["channel"], desk["attempts"]) == ("sent", "desk", 1)
    steps = [s.detail for s in store.get_with_notes(refused.issue_id).timeline if s.service == "notify"]
    assert steps == ["received message failed via webhook (HTTP 500; sent to desk)"]
    assert dead_letters(amqp) == []
    relayed = outbox_of(store, refused.issue_id)
    assert [(m["notification_id"], m["recipient"]) for m in relayed] == \
        [(record["notification_id"], {"phone": "13812345678"})]
    # The desk relays its own copy, something to say: no link (the desk never has its token).
    assert relayed[0]["text"] == record["text"] and "http" not in record["text"]
    # A redelivered event neither tries a message notify has given up on, nor hands it
    # to the desk twice.
    publish(amqp, refused)
    time.sleep(0.5)
    assert len(gateway.requests) == NOTIFY_ATTEMPTS
    assert told(base, refused.issue_id)[0]["attempts"] == NOTIFY_ATTEMPTS
    assert len(outbox_of(store, refused.issue_id)) == 1


def outbox_of(store, issue_id: str) -> list[dict]:
    """The desk outbox's messages to the resident of ``issue_id``, oldest first."""
    entries = [json.loads(e) for e in store.redis.lrange(store.keys.desk_outbox, 0, -1)]
    return [e for e in reversed(entries) if e["issue_id"] == issue_id]


def test_a_resident_without_a_phone_is_not_sent_to_the_sms_gateway(
        runner_factory, config, store, amqp, gateway):
    """With the webhook (an SMS gateway) as the deployment's channel, a resident who left
    only an email address, or nothing, was POSTed to it without a number: the gateway
    could text nobody, and they never heard a word. Email, or the desk, reaches them."""
    with smtp_server() as smtp:
        config.update({cfg.NOTIFY_WEBHOOK_URL: gateway.url, cfg.NOTIFY_CHANNEL: "webhook",
                       cfg.SMTP_HOST: "127.0.0.1", cfg.SMTP_PORT: smtp.port})
        only_email = stored(store, "WH-20261121-0307", {"name": "Tom Baker",
                                                         "email": "tom.baker@example.org"},
                            language="en")
        nothing = stored(store, "WH-20261121-0308", {"name": "王芳"})
        with_phone = stored(store, "WH-20261121-0309", {"phone": "13812345678"})
        base = start(runner_factory, config)

        publish(amqp, only_email, nothing, with_phone)

        [by_email] = settled(base, only_email.issue_id)
        [at_desk] = settled(base, nothing.issue_id)
        [texted] = settled(base, with_phone.issue_id)
        [mail] = smtp.wait_for(1)

    assert mail.envelope_to == ["tom.baker@example.org"]
    assert (by_email["channel"], by_email["status"], by_email["detail"]) == \
        ("email", "sent", "no phone number for webhook; sent by email")
    assert (at_desk["channel"], at_desk["status"], at_desk["detail"]) == \
        ("desk", "sent", "no phone number for webhook; sent to desk")
    assert [m["recipient"] for m in outbox_of(store, nothing.issue_id)] == [{"name": "王芳"}]
    assert (texted["channel"], texted["status"]) == ("webhook", "sent")
    assert [json.loads(r.body)["issue_id"] for r in gateway.requests] == [with_phone.issue_id]


# --------------------------------------------------------------------------- email


def test_a_resident_who_chose_email_gets_email_in_their_language(
        runner_factory, config, store, amqp):
    with smtp_server() as smtp:
        config.update({cfg.SMTP_HOST: "127.0.0.1", cfg.SMTP_PORT: smtp.port,
                       cfg.SMTP_FROM: SENDER})
        event = stored(store, "WH-20261121-0304", {
            "name": "Tom Baker", "email": "tom.baker@example.org", "preferred_channel": "email"},
            language="en")
        base = start(runner_factory, config)
        resolved = IssueResolved(trace_id=event.trace_id, issue_id=event.issue_id,
                                 agencies=["power"])

        publish(amqp, event, event, resolved)

        received, done, rating = smtp.wait_for(3)
        records = settled(base, event.issue_id, 3)
        time.sleep(0.5)
        assert len(smtp.received) == 3  # the duplicate event sent nothing twice

    assert received.envelope_to == ["tom.baker@example.org"]
    assert received.message["To"] == "tom.baker@example.org"
    assert received.message["From"] == SENDER
    assert received.message["Subject"] == \
        f"[Whistle] We have received your report {event.issue_id}"
    assert f"Your reference number is {event.issue_id}" in received.message.get_content()
    nid = message_id(event.event_id, "received")
    assert received.message["Message-ID"] == f"<{nid}@bintai.example>"
    assert received.message["X-Whistle-Notification-Id"] == nid
    assert done.message["Subject"] == f"[Whistle] Your report {event.issue_id} has been resolved"
    assert rating.message["Subject"] == \
        f"[Whistle] How did we do? Rate the outcome of {event.issue_id}"
    link = f"https://whistle.bintai.example/issues/{event.issue_id}/feedback?token="
    body = rating.message.get_content()
    assert link in body
    token = body.split("token=")[1].split()[0]
    grant = verify_feedback_token(token, config[cfg.SECRET], event.issue_id)
    assert (grant.issue_id, grant.cycle) == (event.issue_id, 0)
    assert [(r["kind"], r["channel"], r["status"]) for r in records] == [
        ("received", "email", "sent"), ("resolved", "email", "sent"),
        ("rating_request", "email", "sent")]
    assert records[0]["recipient"] == {"name": "T********", "phone": None,
                                       "email": "t********@example.org"}


def test_a_choice_that_cannot_be_honoured_goes_to_the_desk_and_says_why(
        runner_factory, config, store, amqp):
    with smtp_server() as smtp:
        config.update({cfg.SMTP_HOST: "127.0.0.1", cfg.SMTP_PORT: smtp.port})
        no_address = stored(store, "WH-20261121-0305", {"phone": "13812345678",
                                                         "preferred_channel": "email"})
        no_webhook = stored(store, "WH-20261121-0306", {"phone": "13700001111",
                                                         "preferred_channel": "webhook"})
        base = start(runner_factory, config)

        publish(amqp, no_address, no_webhook)

        [first] = settled(base, no_address.issue_id)
        [second] = settled(base, no_webhook.issue_id)
        assert smtp.received == []

    assert (first["channel"], first["status"]) == ("desk", "sent")
    assert first["detail"] == "preferred email but no email address; sent to desk"
    assert (second["channel"], second["status"]) == ("desk", "sent")
    assert second["detail"] == "preferred webhook not configured; sent to desk"
    outbox = store.redis.lrange(store.keys.desk_outbox, 0, -1)
    assert len(outbox) == 2
    steps = [s.detail for s in store.get_with_notes(no_webhook.issue_id).timeline if s.service == "notify"]
    assert steps == ["received message sent via desk "
                     "(preferred webhook not configured; sent to desk)"]


def test_notify_refuses_to_start_when_it_would_be_dead_lettered_first(runner_factory, config):
    config[cfg.NOTIFY_MAX_ATTEMPTS] = config[cfg.MAX_ATTEMPTS]

    with pytest.raises(cfg.ConfigurationError, match="NOTIFY_MAX_ATTEMPTS"):
        runner_factory(config, NotifyService).start()


def test_the_desk_sees_every_record_field(runner_factory, config, store, amqp):
    event = stored(store, "WH-20261121-0307", {"phone": "13812345678"})
    base = start(runner_factory, config)

    publish(amqp, event)

    [record] = settled(base, event.issue_id)
    assert set(record) >= {"notification_id", "kind", "language", "text", "channel", "status",
                           "attempts", "detail", "last_error", "created_at", "last_attempt_at",
                           "sent_at", "recipient", "audience"}
    assert requests.get(f"{base}/issues/WH-20991231-0001/notifications", headers=DESK).status_code == 404


# --------------------------------------------------------- order, with a slow channel


SLOW_SEND_S = ORDERING_GRACE_S + 0.5  # longer than a message once waited for the one before


def water_dispatch(issue_id: str) -> IssueDispatched:
    summary = AssignmentSummary(agency="water", agency_name="自来水公司",
                                agency_name_en="Water company", sector=Sector.utilities,
                                role=Role.lead, acknowledge_by=datetime.now(UTC),
                                resolve_by=datetime.now(UTC) + timedelta(hours=24))
    return IssueDispatched(trace_id=f"trace-{issue_id}", issue_id=issue_id,
                           category="water_leak", priority=Priority.high, assignments=[summary])


def gateway_order(gateway, events: dict[str, object]) -> list[str]:
    """The kinds the gateway was asked to send, in the order the requests arrived
    (``events``: kind -> the event that sends it)."""
    kind_of = {message_id(e.event_id, k): k for k, e in events.items()}
    return [kind_of[r.headers["Idempotency-Key"]] for r in gateway.requests]


def test_a_slow_webhook_gets_the_residents_messages_in_chain_order(
        runner_factory, config, store, amqp, gateway):
    """Each send takes longer than a message once waited for its predecessor
    (ORDERING_GRACE_S): "resolved" used to overtake "dispatched", which overtook
    "received". Now each waits while the one before is being sent."""
    gateway.delay = SLOW_SEND_S
    config.update({cfg.NOTIFY_CHANNEL: "webhook", cfg.NOTIFY_WEBHOOK_URL: gateway.url})
    received = stored(store, "WH-20261207-0311", {"phone": "13812345678",
                                                   "preferred_channel": "webhook"})
    dispatched = water_dispatch(received.issue_id)
    resolved = IssueResolved(trace_id=received.trace_id, issue_id=received.issue_id,
                             agencies=["water"])
    base = start(runner_factory, config)

    publish(amqp, received, dispatched, resolved)

    records = wait_until(lambda: (found := told(base, received.issue_id)) and sum(
        n["status"] == "sent" for n in found) == 4 and found, timeout=8 * SLOW_SEND_S)
    events = {"received": received, "dispatched": dispatched, "resolved": resolved,
              "rating_request": resolved}
    assert gateway_order(gateway, events) == \
        ["received", "dispatched", "resolved", "rating_request"]
    # Once each, first time: waiting spent no attempt and sent nothing twice.
    assert sorted(r["attempts"] for r in records) == [1, 1, 1, 1]
    sent = sorted(records, key=lambda r: r["sent_at"])
    assert [r["kind"] for r in sent] == ["received", "dispatched", "resolved", "rating_request"]
    assert dead_letters(amqp) == []


def test_a_predecessor_whose_worker_died_holds_the_next_message_only_until_its_lease_lapses(
        runner_factory, config, store, amqp, gateway):
    """A worker died sending "received": its record says queued, no attempt finished,
    and its lease lives on for a while. "dispatched" waits while the lease is held
    (it cannot tell a dead worker from a slow one), and goes once it has lapsed."""
    lease_left_s = int(ORDERING_GRACE_S) + 2  # outlives the old bound: the lease is what counts
    config.update({cfg.NOTIFY_CHANNEL: "webhook", cfg.NOTIFY_WEBHOOK_URL: gateway.url})
    received = stored(store, "WH-20261207-0312", {"phone": "13812345678",
                                                   "preferred_channel": "webhook"})
    dead = OutgoingMessage(notification_id=message_id(received.event_id, "received"),
                           issue_id=received.issue_id, kind="received", language="zh",
                           text="已收到您的反映", recipient={})
    store.redis.hset(store.keys.notifications(received.issue_id), dead.notification_id,
                     json.dumps(new_record(dead, RESIDENT, "webhook", utc_moment(
                         datetime.now(UTC)))))
    store.redis.set(f"{store.keys.prefix}:notify:lease:{dead.notification_id}",
                    "a-dead-worker", ex=lease_left_s)
    dispatched = water_dispatch(received.issue_id)
    base = start(runner_factory, config)
    began = time.monotonic()

    publish(amqp, dispatched)

    time.sleep(ORDERING_GRACE_S + 1)  # past the old bound, the lease still held
    assert gateway.requests == []
    wait_until(lambda: any(n["kind"] == "dispatched" and n["status"] == "sent"
                           for n in told(base, received.issue_id)), timeout=15)
    assert time.monotonic() - began < lease_left_s + ORDERING_GRACE_S + 3
    assert gateway_order(gateway, {"dispatched": dispatched}) == ["dispatched"]
    assert dead_letters(amqp) == []

"""Delivery channels against a real Redis, a real HTTP server and a real SMTP server.

Works with or without ``eventlet.monkey_patch()`` (the project's conftest applies
it): the HTTP server runs in a thread, which is a green thread once patched, and
every blocking call the client makes yields to it. The SMTP server is aiosmtpd's
``Controller``: its asyncio loop runs in a thread too, and under eventlet that
loop's selector is green, so it serves the (green) smtplib client in-process.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import uuid4

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.notify.channels import (
    Channels,
    DeliveryResult,
    DeskOutboxChannel,
    EmailChannel,
    OutgoingMessage,
    WebhookChannel,
    build_channels,
    verify_webhook_signature,
)
from services.notify.delivery import Deliveries
from shared import config as cfg
from tests.support.smtp import smtp_server

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
PHONE = "13812345678"
NAME = "张三"
SECRET = "webhook-secret-of-at-least-32-characters"
EMAIL = "zhangsan@bintai.example"


def make_message(**overrides) -> OutgoingMessage:
    fields = {
        "notification_id": uuid4().hex,
        "issue_id": "WH-20250105-0001",
        "kind": "received",
        "language": "zh",
        "text": "【吹哨报到】您反映的问题已受理，编号 WH-20250105-0001。",
        "recipient": {"name": NAME, "phone": PHONE},
    }
    return OutgoingMessage(**{**fields, **overrides})


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client) -> Iterator[str]:
    """A key prefix no other test uses; every key under it is removed afterwards."""
    prefix = f"test-{uuid4().hex}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        redis_client.delete(*keys)


def outbox(redis_client, prefix) -> list[dict]:
    return [json.loads(raw) for raw in redis_client.lrange(f"{prefix}:desk:outbox", 0, -1)]


def test_desk_outbox_records_the_message(redis_client, prefix):
    message = make_message()
    before = datetime.now(UTC)

    result = DeskOutboxChannel(redis_client, prefix).deliver(message)

    assert result == DeliveryResult(ok=True, channel="desk")
    [entry] = outbox(redis_client, prefix)
    at = datetime.fromisoformat(entry.pop("at"))
    assert at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC) + timedelta(seconds=1)
    assert entry == {
        "notification_id": message.notification_id,
        "issue_id": "WH-20250105-0001",
        "kind": "received",
        "language": "zh",
        "text": message.text,
        # The desk relays the message, so it sees the contact unmasked.
        "recipient": {"name": NAME, "phone": PHONE},
    }


def test_desk_outbox_is_newest_first(redis_client, prefix):
    channel = DeskOutboxChannel(redis_client, prefix)
    first, second = make_message(kind="received"), make_message(kind="dispatched")

    channel.deliver(first)
    channel.deliver(second)

    assert [e["notification_id"] for e in outbox(redis_client, prefix)] == \
        [second.notification_id, first.notification_id]


def test_the_desk_outbox_drops_nothing_still_to_relay(redis_client, prefix):
    """Every entry is a resident still to be told: past the 10,000 an earlier release kept,
    the oldest is still there for the desk to relay (a trim used to drop it unread)."""
    channel = DeskOutboxChannel(redis_client, prefix)
    oldest = make_message(kind="received")
    channel.deliver(oldest)
    pipe = redis_client.pipeline(transaction=False)
    pipe.lpush(f"{prefix}:desk:outbox", *(["{}"] * 10_000))
    pipe.execute()

    channel.deliver(make_message(kind="dispatched"))

    assert redis_client.llen(f"{prefix}:desk:outbox") == 10_002
    assert json.loads(redis_client.lindex(f"{prefix}:desk:outbox", -1))["notification_id"] \
        == oldest.notification_id


@pytest.mark.parametrize("used_before", [True, False])
def test_the_desk_outbox_still_works_after_redis_forgot_its_scripts(redis_client, prefix,
                                                                     used_before):
    channel = DeskOutboxChannel(redis_client, prefix)
    first, second = make_message(kind="received"), make_message(kind="dispatched")
    if used_before:
        channel.deliver(first)
    redis_client.script_flush()  # as after a Redis restart

    assert channel.deliver_recorded(second, f"{prefix}:records", "the record",
                                    f"{prefix}:slot-waits") is None

    assert redis_client.hget(f"{prefix}:records", second.notification_id) == "the record"
    assert [e["notification_id"] for e in outbox(redis_client, prefix)] == \
        [second.notification_id, *([first.notification_id] if used_before else [])]


def test_desk_outbox_with_empty_recipient(redis_client, prefix):
    DeskOutboxChannel(redis_client, prefix).deliver(make_message(recipient={}))

    assert outbox(redis_client, prefix)[0]["recipient"] == {}


def test_desk_outbox_uses_only_its_keys(redis_client, prefix):
    message = make_message()
    DeskOutboxChannel(redis_client, prefix).deliver(message)

    assert set(redis_client.scan_iter(match=f"{prefix}:*")) == {
        f"{prefix}:desk:outbox", f"{prefix}:desk:pushed:{message.notification_id}"}


def test_desk_outbox_takes_each_message_once(redis_client, prefix):
    """Redelivered after Redis died between the push and the record: still one entry."""
    channel = DeskOutboxChannel(redis_client, prefix)
    message = make_message()
    assert channel.deliver(message).ok and channel.deliver(message).ok
    assert redis_client.llen(f"{prefix}:desk:outbox") == 1


def test_desk_push_record_and_note_are_one_step_and_a_settled_record_wins(redis_client, prefix):
    channel = DeskOutboxChannel(redis_client, prefix)
    message = make_message()
    records, notes = f"{prefix}:issue:X:notifications", f"{prefix}:issue:X:notes"
    marks = f"{prefix}:notify:slot-waits:X"
    redis_client.hset(marks, message.notification_id, '{"kind":"received"}')  # put off once

    first = channel.deliver_recorded(message, records, '{"status":"sent"}', marks,
                                     note=(notes, "notified:1", '{"step":"resident_notified"}'))
    again = channel.deliver_recorded(message, records, '{"status":"other"}', marks,
                                     note=(notes, "notified:1", '{"step":"other"}'))

    assert first is None and again == '{"status":"sent"}'  # the existing record, untouched
    assert redis_client.llen(f"{prefix}:desk:outbox") == 1
    assert redis_client.hgetall(records) == {message.notification_id: '{"status":"sent"}'}
    assert redis_client.hgetall(notes) == {"notified:1": '{"step":"resident_notified"}'}
    assert redis_client.hgetall(marks) == {}  # gone with the record


def test_desk_outbox_redis_errors_propagate(prefix):
    """The caller retries: a lost desk message must not look delivered."""
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 0), decode_responses=True)

    with pytest.raises(redis.ConnectionError):
        DeskOutboxChannel(dead, prefix).deliver(make_message())


def test_message_repr_hides_recipient():
    assert PHONE not in repr(make_message())
    assert NAME not in repr(make_message())


# ------------------------------------------------------------------------- webhook


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Gateway:
    """A real HTTP server on 127.0.0.1 that records requests and answers ``status``
    (``failures``: how many requests first get a 500). Each answer waits ``delay``
    seconds, or, while ``held``, until :meth:`release` (a test that must see what happens
    while sends are on the wire says so by the gateway's state, not by the clock)."""

    server: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200
    failures: int = 0
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    answered: int = 0
    held: threading.Event | None = None

    def hold(self) -> None:
        """Answer nothing until :meth:`release`."""
        self.held = threading.Event()

    def release(self) -> None:
        if self.held is not None:
            self.held.set()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/send"


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # the name http.server dispatches to
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            gw.requests.append(Recorded("POST", self.path, dict(self.headers), body))
            if gw.held is not None:
                gw.held.wait(timeout=60)
            elif gw.delay:
                time.sleep(gw.delay)
            try:
                self.send_response(500 if len(gw.requests) <= gw.failures else gw.status)
                for name, value in gw.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                gw.answered += 1
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout test)

        do_GET = do_POST  # lets a test see a redirect-turned-GET

        def log_message(self, format, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    gw = Gateway(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield gw
    gw.release()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def free_port() -> int:
    """A port nothing listens on: bound by the OS, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_webhook_posts_json_with_idempotency_key(gateway):
    message = make_message(kind="dispatched", language="en", text="[Whistle] sent to 供电公司")

    result = WebhookChannel(gateway.url, SECRET).deliver(message)

    assert result.ok is True
    assert result.channel == "webhook"
    [request] = gateway.requests
    assert request.method == "POST"
    assert request.path == "/send"
    assert request.headers["Idempotency-Key"] == message.notification_id
    assert request.headers["Content-Type"] == "application/json"
    assert verify_webhook_signature(SECRET, request.headers["X-Whistle-Timestamp"],
                                    request.body, request.headers["X-Whistle-Signature"])
    assert abs(int(request.headers["X-Whistle-Timestamp"]) - time.time()) < 5
    body = json.loads(request.body.decode("utf-8"))
    assert datetime.fromisoformat(body.pop("sent_at")).utcoffset() == timedelta(0)
    assert body == {
        "notification_id": message.notification_id,
        "issue_id": "WH-20250105-0001",
        "kind": "dispatched",
        "language": "en",
        "text": "[Whistle] sent to 供电公司",
        "recipient": {"name": NAME, "phone": PHONE},
    }


def test_webhook_retry_sends_the_same_idempotency_key(gateway):
    channel = WebhookChannel(gateway.url, SECRET)
    message = make_message()

    channel.deliver(message)
    channel.deliver(message)

    keys = {r.headers["Idempotency-Key"] for r in gateway.requests}
    assert keys == {message.notification_id}
    assert all(verify_webhook_signature(SECRET, r.headers["X-Whistle-Timestamp"], r.body,
                                        r.headers["X-Whistle-Signature"])
               for r in gateway.requests)


def test_webhook_signature_does_not_verify_with_another_secret(gateway):
    WebhookChannel(gateway.url, SECRET).deliver(make_message())

    [request] = gateway.requests
    assert not verify_webhook_signature("another-secret", request.headers["X-Whistle-Timestamp"],
                                        request.body, request.headers["X-Whistle-Signature"])


@pytest.mark.parametrize("signature", ["sha256=é", "sha256=签名", "é"])
def test_a_signature_holding_non_ascii_does_not_verify_and_raises_nothing(signature):
    """A receiver hands the header over as it came: anything in it is a False, not a crash."""
    now = int(time.time())
    assert verify_webhook_signature(SECRET, str(now), b"{}", signature, now=now) is False


@pytest.mark.parametrize("status", [201, 202, 204])
def test_webhook_any_2xx_is_ok(gateway, status):
    gateway.status = status

    assert WebhookChannel(gateway.url, SECRET).deliver(make_message()).ok is True


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_webhook_error_status_is_not_ok(gateway, status):
    gateway.status = status

    result = WebhookChannel(gateway.url, SECRET).deliver(make_message())

    assert result == DeliveryResult(ok=False, channel="webhook", detail=f"HTTP {status}")


def test_webhook_does_not_follow_redirects(gateway):
    """requests would turn a redirected POST into a GET and call it a success."""
    gateway.status = 302
    gateway.headers = {"Location": "/elsewhere"}

    result = WebhookChannel(gateway.url, SECRET).deliver(make_message())

    assert result == DeliveryResult(ok=False, channel="webhook", detail="HTTP 302")
    assert [r.method for r in gateway.requests] == ["POST"]


def test_webhook_closed_port_is_not_ok():
    result = WebhookChannel(f"http://127.0.0.1:{free_port()}/send", SECRET, timeout=2).deliver(
        make_message())

    assert result == DeliveryResult(ok=False, channel="webhook", detail="ConnectionError")


def test_webhook_timeout_is_not_ok(gateway):
    gateway.delay = 1.0

    result = WebhookChannel(gateway.url, SECRET, timeout=0.2).deliver(make_message())

    assert result == DeliveryResult(ok=False, channel="webhook", detail="ReadTimeout")


def test_webhook_detail_never_contains_the_recipient(gateway):
    gateway.status = 500
    failures = [
        WebhookChannel(gateway.url, SECRET).deliver(make_message()),
        WebhookChannel(f"http://127.0.0.1:{free_port()}/send", SECRET).deliver(make_message()),
    ]

    for result in failures:
        assert PHONE not in result.detail and NAME not in result.detail


def test_webhook_uses_the_given_session(gateway):
    session = requests.Session()
    session.headers["X-Gateway-Token"] = "test-token"

    WebhookChannel(gateway.url, SECRET, session=session).deliver(make_message())

    assert gateway.requests[0].headers["X-Gateway-Token"] == "test-token"


def test_a_message_nothing_retries_is_failed_on_its_refusal_and_stays_off_the_desk(
        gateway, redis_client, prefix):
    """A rating link the desk resends has one attempt: refused, it read "queued" (待发送)
    forever, as if it would still go. It is "failed" with the refusal, and it is not put
    in the desk's outbox: the desk asked, and hears the answer itself."""
    gateway.status = 503
    channels = Channels(DeskOutboxChannel(redis_client, prefix),
                        {"webhook": WebhookChannel(gateway.url, SECRET)})
    deliveries = Deliveries(redis_client, prefix, channels, max_attempts=4)
    message = make_message(kind="rating_request", preferred_channel="webhook")

    outcome = deliveries.deliver_once(message, single_attempt=True)

    assert (outcome.status, outcome.fresh, outcome.detail) == ("failed", True, "HTTP 503")
    [record] = deliveries.history(message.issue_id)
    assert (record["status"], record["attempts"], record["detail"]) == ("failed", 1, "HTTP 503")
    assert outbox(redis_client, prefix) == []
    assert len(gateway.requests) == 1


def test_a_message_given_up_on_goes_to_the_desks_outbox_once(gateway, redis_client, prefix):
    gateway.status = 503
    channels = Channels(DeskOutboxChannel(redis_client, prefix),
                        {"webhook": WebhookChannel(gateway.url, SECRET)})
    # No backoff: each call is the event back from its retry's.
    deliveries = Deliveries(redis_client, prefix, channels, max_attempts=2, retry_delay_s=0)
    message = make_message(preferred_channel="webhook")

    outcomes = [deliveries.deliver_once(message) for _ in range(3)]

    assert [(o.status, o.detail) for o in outcomes] == [
        ("queued", "HTTP 503"), ("failed", "HTTP 503; sent to desk"),
        ("failed", "HTTP 503; sent to desk")]
    assert len(gateway.requests) == 2
    [relayed] = outbox(redis_client, prefix)
    assert (relayed["notification_id"], relayed["recipient"]) == \
        (message.notification_id, {"name": NAME, "phone": PHONE})


# ----------------------------------------------------------------------- factory


def test_build_channels_desk_only(redis_client, prefix):
    channels = build_channels(cfg.config_from_env({}), redis_client, prefix)

    assert channels.configured == {"desk"}
    assert channels.desk.key == f"{prefix}:desk:outbox"
    assert channels.desk.deliver(make_message()).ok is True


def test_build_channels_with_a_webhook(gateway, redis_client, prefix):
    channels = build_channels(cfg.config_from_env({}, **{
        cfg.NOTIFY_WEBHOOK_URL: gateway.url, cfg.NOTIFY_WEBHOOK_SECRET: SECRET}),
        redis_client, prefix)

    channel, note = channels.for_message(make_message(preferred_channel="webhook"))
    assert (channel.name, note) == ("webhook", "")
    assert channel.deliver(make_message()).ok is True
    [request] = gateway.requests
    assert verify_webhook_signature(SECRET, request.headers["X-Whistle-Timestamp"],
                                    request.body, request.headers["X-Whistle-Signature"])


# -------------------------------------------------------------------------- email


@pytest.fixture
def smtp():
    with smtp_server() as server:
        yield server


def email_channel(smtp, **kwargs) -> EmailChannel:
    return EmailChannel("127.0.0.1", smtp.port, "Whistle <whistle@bintai.example>", **kwargs)


def test_email_reaches_the_resident_with_subject_body_and_message_id(smtp):
    message = make_message(recipient={"name": NAME, "phone": PHONE, "email": EMAIL},
                           subject="【吹哨报到】您反映的问题已受理 WH-20250105-0001")

    result = email_channel(smtp).deliver(message)

    assert result == DeliveryResult(ok=True, channel="email")
    [mail] = smtp.wait_for(1)
    assert mail.envelope_from == "whistle@bintai.example"
    assert mail.envelope_to == [EMAIL]
    assert mail.message["To"] == EMAIL
    assert mail.message["Subject"] == "【吹哨报到】您反映的问题已受理 WH-20250105-0001"
    assert mail.message["Message-ID"] == f"<{message.notification_id}@bintai.example>"
    assert mail.message["X-Whistle-Notification-Id"] == message.notification_id
    assert message.text in mail.message.get_content()


def test_a_resent_email_has_the_same_message_id(smtp):
    channel = email_channel(smtp)
    message = make_message(recipient={"email": EMAIL})

    channel.deliver(message)
    channel.deliver(message)

    ids = {mail.message["Message-ID"] for mail in smtp.wait_for(2)}
    assert ids == {channel.message_id(message.notification_id)}


@pytest.mark.parametrize(("code", "detail"), [(451, "SMTP 451"), (550, "SMTP 550"),
                                              (554, "SMTP 554")])
def test_a_refused_email_says_the_smtp_code_not_the_address(smtp, code, detail):
    smtp.refuse_with = f"{code} refused for testing"

    result = email_channel(smtp).deliver(make_message(recipient={"email": EMAIL}))

    assert result == DeliveryResult(ok=False, channel="email", detail=detail)
    assert EMAIL not in result.detail


def test_a_refused_recipient_says_the_smtp_code(smtp):
    smtp.refuse_recipients_with = "550 no such mailbox"

    result = email_channel(smtp).deliver(make_message(recipient={"email": EMAIL}))

    assert result == DeliveryResult(ok=False, channel="email", detail="SMTP 550")


def test_no_smtp_server_is_not_ok_and_never_raises():
    result = EmailChannel("127.0.0.1", free_port(), "whistle@localhost", timeout=2).deliver(
        make_message(recipient={"email": EMAIL}))

    assert result == DeliveryResult(ok=False, channel="email", detail="ConnectionRefusedError")


def test_login_without_auth_support_is_not_ok(smtp):
    result = email_channel(smtp, user="whistle", password="secret").deliver(
        make_message(recipient={"email": EMAIL}))

    assert result == DeliveryResult(ok=False, channel="email", detail="SMTPNotSupportedError")
    assert smtp.received == []

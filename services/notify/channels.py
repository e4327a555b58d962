"""Delivery channels: adapters that hand a rendered message to the outside world.

The notify service renders a message, wraps it in an :class:`OutgoingMessage` and
asks :class:`Channels` which channel reaches that recipient. Three channels exist:

- ``desk``: the community desk's outbox in Redis, which the desk reads and relays
  (by phone, in person). The default, and always available;
- ``webhook``: a signed JSON POST to a mini-program or SMS gateway
  (``NOTIFY_WEBHOOK_URL``);
- ``email``: a UTF-8 email over SMTP (``SMTP_HOST``) to the resident's address.

Each resident chose one (``preferred_channel`` in their contact). A choice this
deployment has not configured, or email without an address, goes to the desk,
and the delivery record says so. Supervisors are always told through the desk.

Contract with the caller: a *transient* failure of the desk's own Redis raises
(the caller retries), while a webhook or SMTP failure comes back as
``DeliveryResult(ok=False)`` so the caller decides whether and when to retry.
``detail`` never contains the recipient's address: it ends up in logs.

Usage::

    channels = build_channels(config, redis, "whistle")
    channel, note = channels.for_message(message, audience="resident")
    result = channel.deliver(message)

Receivers of the webhook check its signature with :func:`verify_webhook_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import requests

from shared import config as cfg
from shared.config import ConfigurationError
from shared.jsoncodec import dumps, utc_moment
from shared.store import run_script

if TYPE_CHECKING:
    from redis import Redis

DESK, WEBHOOK, EMAIL = "desk", "webhook", "email"
CHANNEL_NAMES = (DESK, WEBHOOK, EMAIL)

SIGNATURE_HEADER = "X-Whistle-Signature"
TIMESTAMP_HEADER = "X-Whistle-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
NOTIFICATION_ID_HEADER = "X-Whistle-Notification-Id"
SIGNATURE_TOLERANCE_S = 300
"""How old (or how far in the future) a signed webhook may be before a receiver refuses it."""

RECIPIENT_FIELDS = ("name", "phone", "email")
"""What a resident's contact gives a channel: where to reach them, nothing else."""

WEBHOOK_RECIPIENT_FIELDS = ("name", "phone")
"""What of a resident's contact the webhook is given: the gateway texts a phone, so their
email address (the email channel's) never leaves Whistle in a webhook body."""


@dataclass(frozen=True)
class Sealed:
    """A template value only the recipient may read: a link carrying a token.

    Rendering a template puts ``shown`` (the link with its token redacted) into the
    message's text, which is what is stored, shown to the desk, logged, traced and
    tailed. The channel puts ``secret`` back at the moment it hands the message to the
    resident (:meth:`OutgoingMessage.delivered_text`): a webhook's body and an email's
    text. The desk outbox, read by staff, keeps ``shown``, so the token is signed only
    when a channel opens the link (``opened``, called once): a message the desk relays
    never has one made at all.
    """

    shown: str
    opened: Callable[[], str] = field(repr=False, compare=False)

    @cached_property
    def secret(self) -> str:
        """The link with its token."""
        return self.opened()

    def __str__(self) -> str:
        return self.shown

    def __format__(self, spec: str) -> str:
        return format(self.shown, spec)


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered message for one recipient.

    ``recipient`` (``{"name", "phone", "email"}``, possibly empty, or a supervisor's
    office) is left out of ``repr`` so that logging a message cannot leak a
    resident's phone number or address. ``preferred_channel`` is the resident's
    choice (``None``: the deployment's default, ``NOTIFY_CHANNEL``); ``subject`` is
    the email subject line.
    """

    notification_id: str
    issue_id: str
    kind: str
    language: str
    text: str
    recipient: dict[str, Any] = field(default_factory=dict, repr=False)
    preferred_channel: str | None = None
    subject: str = ""
    # The Sealed values in ``text``.
    sealed: tuple[Sealed, ...] = field(default=(), repr=False, compare=False)
    # What the desk reads out when it relays the message (by phone, in person), where that
    # differs from ``text``: a link is useless read aloud, so its copy says what to ask
    # instead (``templates``' ``*_desk`` wordings).
    for_desk: str | None = None

    def text_via(self, channel: str) -> str:
        """The readable text as ``channel`` carries it: the desk's own copy on the desk."""
        return (self.for_desk or self.text) if channel == DESK else self.text

    def delivered_text(self) -> str:
        """The text as the resident receives it: sealed links with their tokens."""
        text = self.text
        for link in self.sealed:
            text = text.replace(link.shown, link.secret)
        return text

    def payload(self, sent_at: datetime | None = None, reveal: bool = False,
                fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The JSON-safe body the desk and webhook channels send (recipient unmasked:
        it is the address). ``reveal``: with sealed links opened (the webhook, which
        reaches the resident); the desk outbox, which staff read, never reveals.
        ``fields``: only these of the recipient (``None``: all)."""
        recipient = {k: v for k, v in self.recipient.items() if fields is None or k in fields}
        return {
            "notification_id": self.notification_id,
            "issue_id": self.issue_id,
            "kind": self.kind,
            "language": self.language,
            "text": self.delivered_text() if reveal else self.text,
            "recipient": recipient,
            "sent_at": utc_moment(sent_at or datetime.now(UTC)),
        }


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    channel: str
    detail: str = ""


class DeliveryChannel(Protocol):
    name: str

    def deliver(self, message: OutgoingMessage) -> DeliveryResult: ...


# ------------------------------------------------------------------------- desk


class DeskOutboxChannel:
    """Pushes messages onto the desk's outbox list ``{prefix}:desk:outbox``, newest first.

    One Lua script marks the message pushed (``{prefix}:desk:pushed:{id}``, kept a
    day) and pushes it, so each message lands once even when Redis dies between the
    push and the delivery record and the event is redelivered. Redis errors
    propagate: the outbox is our own store, so a failure is transient and retried.

    The outbox is never trimmed: an entry is a message somebody still has to be told,
    and leaves only when the desk relays it or its resident's contact is erased. A
    backlog is the operator's to see (``whistle status``), not Whistle's to drop.

    The desk lives in the same Redis as the delivery records, so
    :meth:`deliver_recorded` can push a message, record it sent and note it on the
    timeline in the same script: one round trip, and no window in which it is pushed
    but not recorded.
    """

    # KEYS: outbox, pushed marker[, records hash, slot-wait marks[, notes hash]];
    # ARGV: entry[, id, record[, note id, note]].
    # With a records hash, an existing record wins: it is returned and nothing is written.
    # Else the record is written and the message's slot-wait mark removed with it (a
    # message put off for a webhook or email slot may go through the desk in the end).
    _PUSH_ONCE = """
    if #KEYS >= 4 then
        local existing = redis.call('HGET', KEYS[3], ARGV[2])
        if existing then return existing end
    end
    if redis.call('SET', KEYS[2], '1', 'NX', 'EX', 86400) then
        redis.call('LPUSH', KEYS[1], ARGV[1])
    end
    if #KEYS >= 4 then
        redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
        redis.call('HDEL', KEYS[4], ARGV[2])
    end
    if #KEYS == 5 then redis.call('HSETNX', KEYS[5], ARGV[4], ARGV[5]) end
    return false
    """

    name = DESK

    def __init__(self, redis: Redis, prefix: str):
        self.redis = redis
        self.key = f"{prefix}:desk:outbox"
        self.pushed_prefix = f"{prefix}:desk:pushed"
        self._push_once = None  # registered on first use: building a channel needs no Redis

    def deliver(self, message: OutgoingMessage) -> DeliveryResult:
        self._push(message)
        return DeliveryResult(ok=True, channel=self.name)

    def deliver_recorded(self, message: OutgoingMessage, records_key: str, sent_record: str,
                         slot_waits_key: str, note: tuple[str, str, str] | None = None
                         ) -> str | None:
        """Push and store ``sent_record`` under the message's id in ``records_key``,
        atomically, unless a record is there already: then return it, write nothing.

        ``slot_waits_key``: the hash of the resident's slot-wait marks
        (``services.notify.delivery``): the message's mark, if it was put off for a slot
        on another channel before it came to the desk, goes with the record.
        ``note``: (hash, field, value) written with it, once (``HSETNX``): the timeline
        note that says the message went (``shared.store``, notes).
        """
        keys, args = [records_key, slot_waits_key], [message.notification_id, sent_record]
        if note is not None:
            keys.append(note[0])
            args += [note[1], note[2]]
        return self._push(message, keys, args)

    def _push(self, message: OutgoingMessage, keys: list[str] = (), args: list[str] = ()):
        entry = message.payload()
        entry["text"] = message.text_via(DESK)
        entry["at"] = entry.pop("sent_at")
        if self._push_once is None:
            self._push_once = self.redis.register_script(self._PUSH_ONCE)
        # Once or twice an event: by its sha, without the script object's per-call work.
        return run_script(self._push_once,
                          [self.key, f"{self.pushed_prefix}:{message.notification_id}", *keys],
                          [dumps(entry), *args])


# ---------------------------------------------------------------------- webhook


def sign_webhook(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """``sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">``, keyed with ``secret``."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + raw, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify_webhook_signature(secret: str, timestamp: int | str | None, body: bytes | str,
                             signature: str | None, tolerance_s: float = SIGNATURE_TOLERANCE_S,
                             now: float | None = None) -> bool:
    """For receivers: did Whistle send this body, recently?

    ``timestamp`` and ``signature`` are the ``X-Whistle-Timestamp`` and
    ``X-Whistle-Signature`` headers; ``body`` is the raw request body, exactly as
    received (not re-serialised JSON). False when the signature does not match, or
    the timestamp is missing, malformed or more than ``tolerance_s`` seconds away
    from ``now`` (a replayed request).
    """
    if not secret or not signature or timestamp is None:
        return False
    try:
        sent = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    # As bytes: compare_digest raises on a str holding anything outside ASCII, and a
    # signature header is whatever the request carried.
    return hmac.compare_digest(sign_webhook(secret, str(timestamp).strip(), body).encode(),
                               signature.strip().encode())


class WebhookChannel:
    """POSTs each message as signed JSON to a gateway.

    Headers: ``Idempotency-Key: <notification_id>`` (the same on every retry, so the
    gateway can drop a duplicate when we retry after a timeout that actually
    succeeded), ``X-Whistle-Timestamp: <unix seconds>`` and ``X-Whistle-Signature:
    sha256=<HMAC-SHA256 of "{timestamp}.{raw body}">``. Redirects are not followed:
    requests would turn a redirected POST into a GET and report success for a
    message nobody received. Failures come back as ``ok=False`` with
    ``"HTTP <status>"`` or the exception class name only, because exception text
    can include the URL (and its credentials).
    """

    name = WEBHOOK

    def __init__(self, url: str, secret: str, timeout: float = 5.0,
                 session: requests.Session | None = None):
        if not secret:
            raise ValueError("the webhook channel needs a signing secret")
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()

    def request(self, message: OutgoingMessage, now: float | None = None) -> tuple[bytes, dict]:
        """The body and headers of one signed POST (a fresh timestamp per attempt)."""
        sent = time.time() if now is None else now
        timestamp = int(sent)
        body = json.dumps(message.payload(datetime.fromtimestamp(sent, UTC), reveal=True,
                                          fields=WEBHOOK_RECIPIENT_FIELDS),
                          ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: message.notification_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign_webhook(self.secret, timestamp, body),
        }
        return body, headers

    def deliver(self, message: OutgoingMessage) -> DeliveryResult:
        body, headers = self.request(message)
        try:
            with self.session.post(self.url, data=body, headers=headers,
                                   timeout=self.timeout, allow_redirects=False) as response:
                status = response.status_code
        except requests.RequestException as exc:
            return DeliveryResult(ok=False, channel=self.name, detail=type(exc).__name__)
        return DeliveryResult(ok=200 <= status < 300, channel=self.name, detail=f"HTTP {status}")


# ------------------------------------------------------------------------ email


class EmailChannel:
    """Sends each message as a UTF-8 email over SMTP to ``recipient["email"]``.

    ``Message-ID`` is derived from the notification id (the same on every retry, so
    a mail system can drop a duplicate), and ``X-Whistle-Notification-Id`` carries
    it verbatim. A connection per message: messages are few, and a long-lived SMTP
    session would need keep-alive handling for nothing. Failures come back as
    ``ok=False`` with ``"SMTP <code>"`` or the exception class name, never the address.
    """

    name = EMAIL

    def __init__(self, host: str, port: int, sender: str, user: str | None = None,
                 password: str | None = None, starttls: bool = False, timeout: float = 10):
        self.host, self.port, self.sender = host, int(port), sender
        self.user, self.password = user or None, password or None
        self.starttls, self.timeout = starttls, timeout
        _, at, domain = sender.rpartition("@")
        self.domain = (at and domain.strip(" >")) or "whistle.local"

    def message_id(self, notification_id: str) -> str:
        return f"<{notification_id}@{self.domain}>"

    def build(self, message: OutgoingMessage, now: datetime | None = None) -> EmailMessage:
        """The email for one message; needs ``message.recipient["email"]``."""
        email = EmailMessage(policy=SMTP_POLICY)
        email["From"] = self.sender
        email["To"] = message.recipient["email"]
        email["Subject"] = message.subject or f"[Whistle] {message.issue_id}"
        email["Date"] = format_datetime(now or datetime.now(UTC))
        email["Message-ID"] = self.message_id(message.notification_id)
        email[NOTIFICATION_ID_HEADER] = message.notification_id
        email.set_content(message.delivered_text() + "\n", charset="utf-8")
        email["Content-Language"] = message.language  # after set_content, which clears Content-*
        return email

    def deliver(self, message: OutgoingMessage) -> DeliveryResult:
        if not message.recipient.get("email"):
            return DeliveryResult(ok=False, channel=self.name, detail="no email address")
        email = self.build(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            return DeliveryResult(ok=False, channel=self.name,
                                  detail=f"SMTP {codes[0]}" if codes else type(exc).__name__)
        except smtplib.SMTPResponseException as exc:
            return DeliveryResult(ok=False, channel=self.name, detail=f"SMTP {exc.smtp_code}")
        except (smtplib.SMTPException, OSError) as exc:
            return DeliveryResult(ok=False, channel=self.name, detail=type(exc).__name__)
        return DeliveryResult(ok=True, channel=self.name)


# --------------------------------------------------------------- channel choice


def choose_channel(preferred: str | None, configured: Collection[str], has_email: bool,
                   default: str = DESK, supervisor: bool = False, *,
                   has_phone: bool) -> tuple[str, str]:
    """(the channel's name, a note for the delivery record) for one recipient. Pure.

    ``preferred`` is the resident's choice (``None`` or empty: ``default``), honoured
    when this deployment has that channel (``configured``) and the resident gave what
    it needs: an email address for email, a phone number for the webhook (a
    mini-program or SMS gateway texts a phone; without one it can reach nobody).
    Otherwise the desk, with a note saying why; a webhook without a phone goes by email
    instead when the resident gave an address and email is configured.
    Supervisors are always told through the desk.
    """
    if supervisor:
        return DESK, ""
    wanted = (preferred or default or DESK).strip().lower()
    if wanted == DESK:
        return DESK, ""
    if wanted not in CHANNEL_NAMES:
        return DESK, f"unknown preferred channel {wanted[:20]!r}; sent to desk"
    if wanted not in configured:
        return DESK, f"preferred {wanted} not configured; sent to desk"
    if wanted == EMAIL and not has_email:
        if not (preferred or "").strip():  # the deployment's default: not the resident's choice
            return DESK, "no email address for email; sent to desk"
        return DESK, "preferred email but no email address; sent to desk"
    if wanted == WEBHOOK and not has_phone:
        if EMAIL in configured and has_email:
            return EMAIL, "no phone number for webhook; sent by email"
        return DESK, "no phone number for webhook; sent to desk"
    return wanted, ""


def direct_channel(preferred: str | None, configured: Collection[str], has_phone: bool,
                   has_email: bool) -> str | None:
    """The channel that reaches a resident *without passing through the desk*, for a
    message only they may read (a resent rating link); ``None`` if there is none. Pure.

    Their own choice first (webhook or email, when configured and usable), then a
    webhook (a mini-program or SMS gateway, which needs a phone number), then email.
    """
    usable = {WEBHOOK: WEBHOOK in configured and has_phone,
              EMAIL: EMAIL in configured and has_email}
    wanted = (preferred or "").strip().lower()
    if usable.get(wanted):
        return wanted
    return next((name for name in (WEBHOOK, EMAIL) if usable[name]), None)


class Unreachable(StrEnum):
    """Why no channel reaches a resident directly (:func:`direct_channel` found none)."""

    no_channel = "no_channel"  # this deployment has neither a webhook nor email
    no_contact = "no_contact"  # the resident gave neither a phone nor an email address
    no_match = "no_match"  # the channels here need what the resident did not give


def why_unreachable(configured: Collection[str], has_phone: bool,
                    has_email: bool) -> Unreachable | None:
    """Why :func:`direct_channel` finds nothing for this resident, ``None`` when it finds
    one: the desk's page says it instead of offering a resend that must fail. Pure."""
    if direct_channel(None, configured, has_phone, has_email) is not None:
        return None
    if WEBHOOK not in configured and EMAIL not in configured:
        return Unreachable.no_channel
    if not has_phone and not has_email:
        return Unreachable.no_contact
    return Unreachable.no_match


@dataclass(frozen=True)
class Channels:
    """The channels this deployment has: the desk always, webhook and email if configured."""

    desk: DeskOutboxChannel
    others: Mapping[str, DeliveryChannel] = field(default_factory=dict)
    default: str = DESK

    @property
    def configured(self) -> frozenset[str]:
        return frozenset({DESK, *self.others})

    def for_message(self, message: OutgoingMessage,
                    supervisor: bool = False) -> tuple[DeliveryChannel, str]:
        """The channel that reaches ``message.recipient``, and why if not their choice."""
        name, note = choose_channel(message.preferred_channel, self.configured,
                                    has_email=bool(message.recipient.get("email")),
                                    default=self.default, supervisor=supervisor,
                                    has_phone=bool(message.recipient.get("phone")))
        return (self.desk if name == DESK else self.others[name]), note


def build_channels(config: Mapping[str, Any], redis: Redis, prefix: str) -> Channels:
    """Every channel the config names, checked up front.

    Misconfiguration raises :class:`~shared.config.ConfigurationError` here, at
    service start-up, rather than on the first resident's message.
    """
    others: dict[str, DeliveryChannel] = {}
    url = str(cfg.get(config, cfg.NOTIFY_WEBHOOK_URL) or "").strip()
    if url:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{cfg.NOTIFY_WEBHOOK_URL} must start with http:// or "
                                     "https://")
        secret = cfg.get(config, cfg.NOTIFY_WEBHOOK_SECRET) or cfg.get(config, cfg.SECRET)
        others[WEBHOOK] = WebhookChannel(url, str(secret))
    host = str(cfg.get(config, cfg.SMTP_HOST) or "").strip()
    if host:
        others[EMAIL] = EmailChannel(
            host, int(cfg.get(config, cfg.SMTP_PORT)), str(cfg.get(config, cfg.SMTP_FROM)),
            user=cfg.get(config, cfg.SMTP_USER) or None,
            password=cfg.get(config, cfg.SMTP_PASSWORD) or None,
            starttls=parse_bool(cfg.get(config, cfg.SMTP_STARTTLS), cfg.SMTP_STARTTLS))
    default = str(cfg.get(config, cfg.NOTIFY_CHANNEL)).strip().lower()
    needs = {WEBHOOK: cfg.NOTIFY_WEBHOOK_URL, EMAIL: cfg.SMTP_HOST}
    if default not in CHANNEL_NAMES:
        raise ConfigurationError(f"unknown delivery channel {default!r} in "
                                 f"{cfg.NOTIFY_CHANNEL}; expected one of "
                                 f"{', '.join(CHANNEL_NAMES)}")
    if default != DESK and default not in others:
        raise ConfigurationError(f"{cfg.NOTIFY_CHANNEL}={default} needs {needs[default]}")
    return Channels(DeskOutboxChannel(redis, prefix), others, default)


def parse_bool(value: Any, name: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")

"""Delivery channels: adapters that hand a rendered message to the outside world.

The notify service renders a message, wraps it in an :class:`OutgoingMessage` and
calls ``channel.deliver(message)``. Two channels exist:

- ``desk``: the community desk's outbox in Redis, which the desk reads and relays
  (by phone, in person, through the mini-program);
- ``webhook``: an HTTP POST to an SMS or messaging gateway.

Contract with the caller: a *transient* failure of the desk's own Redis raises
(the caller retries), while a webhook failure comes back as
``DeliveryResult(ok=False)`` so the caller decides whether and when to retry.
``detail`` never contains the recipient: it ends up in logs.

Usage::

    channel = build_channel("webhook", redis, "whistle", "https://sms.example/send")
    result = channel.deliver(OutgoingMessage(notification_id, issue_id, "received", "zh",
                                             text, {"name": "张三", "phone": "13812345678"}))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import requests

if TYPE_CHECKING:
    from redis import Redis

DESK_OUTBOX_LIMIT = 10_000
"""Newest desk outbox entries kept; older ones were long since read and relayed."""

CHANNEL_NAMES = ("desk", "webhook")


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered message for one recipient.

    ``recipient`` (``{"name": ..., "phone": ...}``, possibly empty) is left out of
    ``repr`` so that logging a message cannot leak a resident's phone number.
    """

    notification_id: str
    issue_id: str
    kind: str
    language: str
    text: str
    recipient: dict[str, Any] = field(default_factory=dict, repr=False)

    def payload(self) -> dict[str, Any]:
        """The JSON-safe body both channels send (recipient unmasked: it is the address)."""
        return {
            "notification_id": self.notification_id,
            "issue_id": self.issue_id,
            "kind": self.kind,
            "language": self.language,
            "text": self.text,
            "recipient": dict(self.recipient),
        }


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    channel: str
    detail: str = ""


class DeliveryChannel(Protocol):
    name: str

    def deliver(self, message: OutgoingMessage) -> DeliveryResult: ...


class DeskOutboxChannel:
    """Pushes messages onto the desk's outbox list ``{prefix}:desk:outbox``, newest first.

    LPUSH and LTRIM run in one MULTI so the list never grows past ``max_entries``,
    even with many workers delivering at once. Redis errors propagate: the outbox
    is our own store, so a failure is transient and the caller retries. Entries carry
    ``notification_id`` so the desk can drop a duplicate left by such a retry.
    """

    name = "desk"

    def __init__(self, redis: Redis, prefix: str, max_entries: int = DESK_OUTBOX_LIMIT):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.redis = redis
        self.key = f"{prefix}:desk:outbox"
        self.max_entries = max_entries

    def deliver(self, message: OutgoingMessage) -> DeliveryResult:
        entry = message.payload()
        entry["at"] = datetime.now(UTC).isoformat()
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(self.key, json.dumps(entry, ensure_ascii=False))
        pipe.ltrim(self.key, 0, self.max_entries - 1)
        pipe.execute()
        return DeliveryResult(ok=True, channel=self.name)


class WebhookChannel:
    """POSTs each message as JSON to a gateway, with ``Idempotency-Key: <notification_id>``.

    The key lets the gateway drop the duplicate when we retry after a timeout that
    actually succeeded. Redirects are not followed: requests would turn a redirected
    POST into a GET and report success for a message nobody received. Failures come
    back as ``ok=False`` with ``"HTTP <status>"`` or the exception class name only,
    because exception text can include the URL (and its credentials).
    """

    name = "webhook"

    def __init__(self, url: str, timeout: float = 5.0, session: requests.Session | None = None):
        self.url = url
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()

    def deliver(self, message: OutgoingMessage) -> DeliveryResult:
        body = json.dumps(message.payload(), ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.notification_id,
        }
        try:
            with self.session.post(self.url, data=body, headers=headers,
                                   timeout=self.timeout, allow_redirects=False) as response:
                status = response.status_code
        except requests.RequestException as exc:
            return DeliveryResult(ok=False, channel=self.name, detail=type(exc).__name__)
        if 200 <= status < 300:
            return DeliveryResult(ok=True, channel=self.name, detail=f"HTTP {status}")
        return DeliveryResult(ok=False, channel=self.name, detail=f"HTTP {status}")


def build_channel(name: str, redis: Redis | None, prefix: str,
                  webhook_url: str | None) -> DeliveryChannel:
    """The channel configured by ``name`` (``"desk"`` or ``"webhook"``), checked up front.

    Misconfiguration raises ``ValueError`` here, at service start-up, rather than on
    the first resident's message.
    """
    if name == "desk":
        if redis is None:
            raise ValueError("the desk channel needs a Redis client")
        return DeskOutboxChannel(redis, prefix)
    if name == "webhook":
        if not webhook_url or not webhook_url.startswith(("http://", "https://")):
            raise ValueError("the webhook channel needs a webhook URL starting with "
                             "http:// or https://")
        return WebhookChannel(webhook_url)
    raise ValueError(f"unknown delivery channel {name!r}; expected one of "
                     f"{', '.join(CHANNEL_NAMES)}")

"""Delivery records: each recipient gets each message once, and the desk sees its fate.

A message id is derived from the event id, the message kind and, for a merged
reporter, the report it is addressed to, so a redelivered event maps to the
same record. Records live under the issue whose resident was told (or, for a
supervisor, the escalated issue) and say whom they were for (``audience``). The record is written *after* the
channel answered (never a "seen" marker before the work: a crash in between
would lose the message). A short lease stops two notify instances sending the
same message at the same moment; the loser retries later and finds it sent.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import eventlet
import redis

from services.notify.channels import DeliveryChannel, OutgoingMessage
from services.notify.recipients import RESIDENT
from shared.privacy import mask_name, mask_phone
from shared.store import Keys

LEASE_SECONDS = 30


class DeliveryFailed(Exception):
    """The channel refused or could not be reached; the event is retried, then dead-lettered."""


@dataclass(frozen=True)
class Outcome:
    fresh: bool  # this call sent it (False: it had already been sent)
    status: str  # "sent" | "failed"
    channel: str
    detail: str = ""


def message_id(event_id: str, kind: str, reporter: str | None = None) -> str:
    """Deterministic id of one message; ``reporter`` names a merged report it goes to.

    Without ``reporter`` (the event's own issue) the id is what it always was.
    """
    key = f"{event_id}:{kind}" if reporter is None else f"{event_id}:{kind}:{reporter}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class Deliveries:
    def __init__(self, client: redis.Redis, prefix: str, channel: DeliveryChannel):
        self.redis = client
        self.keys = Keys(prefix)
        self.channel = channel
        self.prefix = prefix

    def deliver_once(self, message: OutgoingMessage, audience: str = RESIDENT) -> Outcome:
        """Send unless already sent, then record it under ``message.issue_id``'s notifications.

        ``message.recipient`` is a resident's name and phone (possibly empty: the desk
        relays it), or a supervisor's role, level and office name.
        """
        nid = message.notification_id
        key = self.keys.notifications(message.issue_id)
        raw = self.redis.hget(key, nid)
        record = json.loads(raw) if raw else None
        if record and record["status"] == "sent":
            return Outcome(False, "sent", record["channel"])
        lease = f"{self.prefix}:notify:lease:{nid}"
        if not self.redis.set(lease, "1", nx=True, ex=LEASE_SECONDS):
            raise DeliveryFailed(f"message {nid} is being sent by another worker")
        try:
            now = datetime.now(UTC).isoformat()
            record = record or {
                "notification_id": nid, "issue_id": message.issue_id, "kind": message.kind,
                "language": message.language, "text": message.text,
                "channel": self.channel.name, "audience": audience,
                "recipient": _as_recorded(message.recipient, audience),
                "status": "queued", "attempts": 0, "created_at": now,
            }
            result = self.channel.deliver(message)
            record.update(attempts=record["attempts"] + 1, channel=result.channel,
                          status="sent" if result.ok else "failed",
                          detail=result.detail, last_attempt_at=now)
            if result.ok:
                record["sent_at"] = now
            self.redis.hset(key, nid, json.dumps(record, ensure_ascii=False))
        finally:
            self.redis.delete(lease)
        return Outcome(result.ok, record["status"], record["channel"], record.get("detail", ""))

    def wait_for_kind(self, issue_id: str, kind: str, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` messages of ``kind`` reached the issue's resident; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            sent = [r for r in self.history(issue_id) if r["kind"] == kind
                    and r["status"] == "sent" and r["audience"] == RESIDENT]
            if len(sent) >= count:
                return True
            if time.monotonic() > deadline:
                return False
            eventlet.sleep(0.05)

    def history(self, issue_id: str) -> list[dict]:
        records = [json.loads(v) for v in self.redis.hgetall(self.keys.notifications(issue_id)).values()]
        for record in records:
            record.setdefault("audience", RESIDENT)  # recorded before supervisors were told
        return sorted(records, key=lambda r: r["created_at"])


def _as_recorded(recipient: dict[str, str], audience: str) -> dict[str, str | None]:
    """A resident's contact is personal data: masked. A supervisor is an office: kept."""
    if audience == RESIDENT:
        return {"name": mask_name(recipient.get("name")),
                "phone": mask_phone(recipient.get("phone"))}
    return dict(recipient)

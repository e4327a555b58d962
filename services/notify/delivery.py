"""Delivery records: each resident gets each message once, and the desk sees its fate.

A message id is derived from the event id and the message kind, so a
redelivered event maps to the same record. The record is written *after* the
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


def message_id(event_id: str, kind: str) -> str:
    return hashlib.sha256(f"{event_id}:{kind}".encode()).hexdigest()[:24]


class Deliveries:
    def __init__(self, client: redis.Redis, prefix: str, channel: DeliveryChannel):
        self.redis = client
        self.keys = Keys(prefix)
        self.channel = channel
        self.prefix = prefix

    def deliver_once(self, nid: str, issue_id: str, kind: str, language: str, text: str,
                     contact: dict[str, str]) -> Outcome:
        key = self.keys.notifications(issue_id)
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
                "notification_id": nid, "issue_id": issue_id, "kind": kind,
                "language": language, "text": text, "channel": self.channel.name,
                "recipient": {"name": mask_name(contact.get("name")),
                              "phone": mask_phone(contact.get("phone"))},
                "status": "queued", "attempts": 0, "created_at": now,
            }
            result = self.channel.deliver(OutgoingMessage(
                notification_id=nid, issue_id=issue_id, kind=kind, language=language,
                text=text, recipient=dict(contact)))
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
        """Wait until ``count`` messages of ``kind`` were sent for the issue; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            sent = [r for r in self.history(issue_id) if r["kind"] == kind and r["status"] == "sent"]
            if len(sent) >= count:
                return True
            if time.monotonic() > deadline:
                return False
            eventlet.sleep(0.05)

    def history(self, issue_id: str) -> list[dict]:
        records = [json.loads(v) for v in self.redis.hgetall(self.keys.notifications(issue_id)).values()]
        return sorted(records, key=lambda r: r["created_at"])

"""What the desk still has to relay (待转告), and the record of a relay. Pure.

The desk's outbox (``channels.DeskOutboxChannel``, newest first) holds every message
the desk passes on by phone or in person: residents who chose the desk (the default),
messages a webhook or email gave up on, and supervisors' notices. This module turns its
entries into the desk's list: only the caller's communities (its issue's community; one
whose community is not known is shown to an unscoped desk only),
oldest first (at most ``RELAY_LIST_LIMIT``), without those relayed already, each with whom to call *in full*: the
one view of a resident's contact that is not masked (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import Field

from services.notify.recipients import RESIDENT, SUPERVISOR
from shared.contracts import Strict, bounded_text

RELAYED_STEP = "relayed"
RELAY_LIST_LIMIT = 200
"""Messages on the desk's relay list at most, the oldest: relaying them brings on the next."""
NOTIFICATION_ID = r"^[0-9a-f]{24}$"
"""``delivery.message_id``'s shape: what a relay names."""


class MarkRelayed(Strict):
    """``mark_relayed``'s payload: the desk's optional note (stored masked)."""

    note: bounded_text(300) | None = None


class RelayTarget(Strict):
    """The message a relay names (validated before anything is read)."""

    notification_id: str = Field(pattern=NOTIFICATION_ID)


def audience_of(entry: Mapping[str, Any]) -> str:
    """Whom an outbox entry is for: its ``audience``, or (an entry pushed before it had
    one) a supervisor when its recipient is an office (``recipients.supervisor_for``)."""
    if entry.get("audience") in (RESIDENT, SUPERVISOR):
        return entry["audience"]
    return SUPERVISOR if (entry.get("recipient") or {}).get("role") == SUPERVISOR else RESIDENT


def relay_item(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What the desk's list shows of one entry: the message (the desk's copy, with links
    redacted), and whom to tell: a resident's name, phone and email in full, or a
    supervisor's office (level and name) and no resident contact at all."""
    audience = audience_of(entry)
    recipient = entry.get("recipient") or {}
    item = {k: entry.get(k) for k in ("notification_id", "issue_id", "kind", "language",
                                      "text", "at")}
    item["audience"] = audience
    if audience == SUPERVISOR:
        item["office"] = {"level": recipient.get("level"), "name": recipient.get("name")}
    else:
        item["resident"] = {k: recipient.get(k) or None for k in ("name", "phone", "email")}
    return item


def pending_relays(entries: Iterable[Mapping[str, Any]], relayed: Iterable[str],
                   visible: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The outbox's ``entries`` (newest first, as stored) still to relay: oldest first,
    each once, none in ``relayed`` (ids), only those of issues ``visible`` (by id) allows
    (the caller's communities: an issue whose community is not known is not in them), as
    :func:`relay_item` shows them."""
    done = set(relayed)
    seen: set[str] = set()
    items = []
    for entry in reversed(list(entries)):
        nid = entry.get("notification_id")
        if not nid or nid in done or nid in seen:
            continue
        seen.add(nid)
        if visible(entry.get("issue_id") or ""):
            items.append(relay_item(entry))
    return items


def relay_note(kind: str, audience: str) -> str:
    """The timeline note a relay leaves: the kind of message only, never whom or what."""
    who = "督办" if audience == SUPERVISOR else "居民"
    return f"社区已转告{who}：{kind}"


def relayed_record(record: Mapping[str, Any], relay: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery record once the desk relayed its message (``relay``: who, when, note)."""
    return {**record, "relayed_by": relay["relayed_by"], "relayed_at": relay["relayed_at"],
            "relay_note": relay.get("note")}

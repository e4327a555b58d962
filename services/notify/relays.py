"""What the desk still has to relay (待转告), and the record of a relay. Pure.

The desk's outbox (``channels.DeskOutboxChannel``, newest first) holds every message
the desk passes on by phone or in person: residents who chose the desk (the default),
messages a webhook or email gave up on, and supervisors' notices. This module turns its
entries into the desk's list: only the caller's communities (its issue's community; one
whose community is not known is shown to an unscoped desk only),
oldest first (at most ``RELAY_LIST_LIMIT``), without those relayed already, each with whom to call *in full*: the
one view of a resident's contact that is not masked (docs/security.md). A rating request
whose answer can no longer be recorded is told apart (:func:`rating_request_moot`, from the
issue's state, which the caller reads): the desk is not to ask it, and it leaves with its
card.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import Field

from services.notify.recipients import RESIDENT, SUPERVISOR
from shared.contracts import Strict, bounded_text

RELAYED_STEP = "relayed"
RATING_REQUEST = "rating_request"
"""The kind of message that asks a question: the resident's answer is recorded after."""
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


# Why a rating request on the desk's list can no longer be answered (its answer could not be
# recorded: ``services.routing.feedback.rate`` would refuse it): the resident answered it
# (their link, or the desk's call-back), the issue closed, another reporter's answer
# reopened it (they are asked again once it is resolved again), its window passed, or the
# issue is not waiting for this resident's rating for another reason (split off).
MOOT_RATED, MOOT_CLOSED, MOOT_REOPENED, MOOT_WINDOW, MOOT_NOT_AWAITED = (
    "rated", "closed", "reopened", "window", "not_awaited")
MOOT_NOTE = "评价邀请未问：评价已无法登记"
"""The note a relay of such a request carries (with the desk's own after it): it leaves
the list with the card's other messages, and its record says it was not asked."""


def rating_request_moot(item: Mapping[str, Any], own: Mapping[str, Any],
                        work: Mapping[str, Any], now: datetime) -> str | None:
    """Why the rating request ``item`` (an outbox entry or :func:`relay_item`) can no longer
    be answered, one of the ``MOOT_*``; None while it can, and for any other message.

    ``own``: the report of the resident it asks (its ``issue_id``), as intake shows it;
    ``work``: the issue that carries that report (itself, or the one it was merged into),
    the one rated. A request belongs to the cycle in which it was sent: each rating ends a
    cycle (satisfied closes, not satisfied reopens), so a rating given since it was sent
    (``at``) ended its cycle, whoever gave it."""
    if item.get("kind") != RATING_REQUEST or not item.get("at"):
        return None  # (an entry without its time cannot be placed in a cycle: asked as ever)
    sent = datetime.fromisoformat(item["at"])
    since = [r for r in work.get("ratings") or []
             if datetime.fromisoformat(r["at"]) >= sent]
    if any(r.get("reporter_issue_id") == own["issue_id"] for r in since):
        return MOOT_RATED
    if work.get("status") == "closed":
        return MOOT_CLOSED
    if since:
        return MOOT_REOPENED
    due = work.get("feedback_due")
    if work.get("status") != "resolved" or not due:
        return MOOT_NOT_AWAITED
    if now > datetime.fromisoformat(due):
        return MOOT_WINDOW
    return None


def moot_relay_note(note: str | None, limit: int = 300) -> str:
    """The note a moot rating request is relayed with: :data:`MOOT_NOTE`, then the desk's
    own (cut to the note's ``limit``, ``MarkRelayed``)."""
    return f"{MOOT_NOTE}；{note}"[:limit] if note else MOOT_NOTE

"""共性问题统筹: duplicates merge into the open issue. Pure parts only.

A report *merges* when an open issue of the same category was reported from
the same address, or the same grid of the same community, within the window
(rules.yaml ``merging.window``). Each (category, scope) pair is a *bucket*
owned by one issue; routing claims buckets atomically in Redis, so two
simultaneous identical reports give exactly one issue. The newcomer's record
points at the issue it joined, and that issue lists it as a reporter, so its
resident gets every update from then on.
"""

from __future__ import annotations

import re
from datetime import datetime

from shared.contracts import Event, IssueMerged, IssueReceived, IssueStatus, Location, Priority
from shared.errors import InvalidTransition
from shared.folding import folded
from shared.issue import IssueRecord, Routing

OPEN_STATUSES = {IssueStatus.received, IssueStatus.dispatched, IssueStatus.in_progress}
_SPACE_AND_PUNCT = re.compile(r"[\s\-_,，.。·#/、()（）]+")


_DIGIT_BREAK = "\ue000"  # private-use placeholder, never in real input after NFKC
_BETWEEN_DIGITS = re.compile(r"(?<=\d)[\s\-_,，.。·#/、]+(?=\d)")


def normalise_address(address: str) -> str:
    """Treat "丽德花园 3号楼", "丽德花园3号楼" and "麗德花園3號樓" (and full-width forms)
    as one place, but keep 1-1-101 (building 1, unit 1, flat 101) apart from 11-101."""
    text = folded(address)
    text = _BETWEEN_DIGITS.sub(_DIGIT_BREAK, text)
    return _SPACE_AND_PUNCT.sub("", text).replace(_DIGIT_BREAK, "-")


def buckets(category: str, location: Location) -> list[tuple[str, str]]:
    """The (category, scope) buckets a report falls into, most specific first."""
    community = normalise_address(location.community)
    scopes = [f"{community}:addr:{normalise_address(location.address)}"]
    if location.grid:
        scopes.append(f"{community}:grid:{normalise_address(location.grid)}")
    return [(category, scope) for scope in scopes]


def can_join(primary: IssueRecord) -> bool:
    return primary.status in OPEN_STATUSES and primary.merged_into is None


class PrimaryClosed(InvalidTransition):
    """The issue a report was about to join closed in the meantime."""


def join(primary: IssueRecord, newcomer_id: str, now: datetime) -> IssueRecord:
    """The open issue gains a reporter (idempotent). Refused once it is closed: the
    check before (``can_join``) read the issue, which may have changed since."""
    if newcomer_id in primary.reporters:
        return primary
    if not can_join(primary):
        raise PrimaryClosed(f"issue {primary.issue_id} is {primary.status.value}: "
                            "it takes no new reporters")
    new = primary.copy_to_change()
    new.reporters.append(newcomer_id)
    new.step(now, "routing", "reporter_joined",
             f"{newcomer_id} reported the same problem and was merged into this issue")
    return new


def fold(newcomer: IssueRecord, primary: IssueRecord, category: str, cause: IssueReceived,
         now: datetime, own_priority: Priority | None = None,
         routing: Routing | None = None) -> tuple[IssueRecord, list[Event]]:
    """The newcomer is folded into the primary issue, in the category both share.

    ``category`` is the duplicate bucket's: the primary may not be routed yet when
    two neighbours report at the same moment. Then it has no priority yet either,
    and the newcomer keeps the one routing gave its own report (``own_priority``).
    ``routing`` is how routing read the newcomer's own report (its category given by
    the desk, or the model's): kept, so that a split routes it as it was given.
    """
    if newcomer.status is not IssueStatus.received:
        raise InvalidTransition(f"issue {newcomer.issue_id} is already {newcomer.status.value}")
    new = newcomer.copy_to_change()
    new.status, new.merged_into, new.category = IssueStatus.merged, primary.issue_id, category
    new.priority = primary.priority or own_priority
    if routing is not None:
        new.routing = routing
    new.step(now, "routing", "merged",
             f"same {category} problem as {primary.issue_id}: merged (共性问题统筹)")
    return new, [cause.caused(IssueMerged, occurred_at=now, into_issue_id=primary.issue_id,
                              category=category)]


def split_refusal(primary: IssueRecord, reporter_id: str) -> str | None:
    """Why the report ``reporter_id`` can no longer be split from ``primary``; None while
    it can.

    A split routes the report again as a job of its own. Once its reporter has rated the
    issue (in any cycle), the issue's outcome rests on them: their "satisfied" closed it,
    their "not satisfied" sent every agency back to it. Once the issue is closed, its
    closure rests on the work done for every reporter. Splitting then would send the
    agency a second job for a problem already answered for, and leave that answer on an
    issue the reporter no longer belongs to. An open or resolved issue (waiting for a
    rating this reporter has not given) can still be split as before.
    """
    if any(r.reporter_issue_id == reporter_id for r in primary.ratings):
        return (f"the reporter of {reporter_id} has rated issue {primary.issue_id}; "
                "the report can no longer be split from it")
    if primary.status is IssueStatus.closed:
        return (f"issue {primary.issue_id} is closed; "
                f"{reporter_id} can no longer be split from it")
    return None


def must_be_merged(merged: IssueRecord) -> None:
    """Only a merged report can be split (from the issue it joined)."""
    if merged.status is not IssueStatus.merged:
        raise InvalidTransition(f"issue {merged.issue_id} is not merged into another issue")


def leave(primary: IssueRecord, newcomer_id: str, now: datetime) -> IssueRecord:
    """Undo a wrong merge on the primary's side: the split is judged here
    (:func:`split_refusal`), on the issue the rating lands on, so a rating and a split
    at the same moment cannot both succeed. A report no longer among its reporters (the
    split got this far before) leaves it as it is."""
    if newcomer_id not in primary.reporters:
        return primary
    if why := split_refusal(primary, newcomer_id):
        raise InvalidTransition(why)
    new = primary.copy_to_change()
    new.reporters = [r for r in new.reporters if r != newcomer_id]
    new.step(now, "routing", "reporter_split", f"{newcomer_id} was split off by the desk")
    return new


def unfold(merged: IssueRecord, has_contact: bool,
           now: datetime) -> tuple[IssueRecord, IssueReceived]:
    """The desk split a wrong merge: the report goes back to routing, on its own.

    A category the desk gave the report itself (``category_source`` ``given``) still
    wins over the model: the desk undid the merge, not its own reading of the report.
    """
    must_be_merged(merged)
    new = merged.copy_to_change()
    was = new.merged_into
    given = (merged.category if merged.routing is not None
             and merged.routing.category_source == "given" else None)
    new.status, new.merged_into, new.priority = IssueStatus.received, None, None
    new.step(now, "routing", "split", f"split from {was} by the desk; routed on its own")
    again = IssueReceived(trace_id=merged.trace_id, issue_id=merged.issue_id, occurred_at=now,
                          description=merged.description, category=given,
                          location=merged.location, channel=merged.channel,
                          language=merged.language, has_contact=has_contact,
                          allow_merge=False)
    return new, again

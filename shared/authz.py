"""Who may read or change what, and what they see. Pure: no Redis, no nameko.

Every HTTP endpoint, the web pages and Open311 decide with these functions, so
there is one set of rules and no second, looser door. Each ``may_*`` function
returns what the caller is allowed (a scope, a view) or raises
:class:`~shared.errors.Unauthorized` (401: no usable identity; anonymous callers
get it on every read) or :class:`~shared.errors.Forbidden` (403: known, not
allowed). The principal comes from ``shared.auth.principal_from_request`` (and the
revocation check of ``shared.guard.Guard``).

The rules (docs/security.md has the table):

- **desk staff** read everything in their communities (every community when the
  token names none): issues, lists, timelines, journals, notifications, stats;
  they submit, split, convene tables and resend rating links. View: ``desk``.
- **agency staff** read an issue only while or after their agency has an
  assignment on it (a withdrawn or finished assignment still counts: "has or
  had"); they see the work (``agency`` view: the problem, the place, every
  assignment's state, the table, a timeline without the messages to residents),
  never the resident's contact beyond its masked form, nor other reporters, nor
  ratings. They act only on their own agency's assignments.
- **a resident** (a signed link) reads only their own report, in plain words
  (``resident`` view): progress, the agencies' names and states, their own
  words and masked contact; no internal notes, no staff ids, no other reporter
  of a merged issue. A rating link rates only its own issue and cycle.
- **anonymous** callers read nothing (401). They may submit when the deployment
  allows it (``WHISTLE_ANONYMOUS_SUBMIT``), within the anonymous rate limit.

Usage (a page handler does exactly what the API handler does)::

    principal = self.guard.check(request)                  # 401/429 raised here
    record = self.store.get_with_notes(issue_id)
    view = may_read_issue(principal, record, issue_id)     # 401/403 raised here
    return issue_view(view, record, contact, primary=None)  # the dict to render
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, TypeVar

from shared.addresses import public_address
from shared.auth import FeedbackGrant, Principal, Role
from shared.contracts import ISSUE_ID, AssignmentStatus, IssueFilter, IssueStatus, Location
from shared.errors import Forbidden, InvalidTransition, NotFound, Unauthorized
from shared.folding import folded
from shared.issue import IssueRecord, mask_comments, masked_comment, without_comments
from shared.jsoncodec import utc_moment
from shared.privacy import mask_email, mask_name, mask_phone


class View(StrEnum):
    """Which shape of an issue a principal gets (see :func:`issue_view`)."""

    desk = "desk"
    agency = "agency"
    resident = "resident"


def _signed_in(principal: Principal) -> None:
    if principal.role is Role.anonymous:
        raise Unauthorized("sign in: this needs a staff token or your own link")


def _staff(principal: Principal) -> None:
    _signed_in(principal)
    if not principal.is_staff:
        raise Forbidden("only desk or agency staff can do this")


def must_be_desk(principal: Principal) -> None:
    """Desk-only actions: split a merge, convene a table, resend a rating link, stats."""
    _signed_in(principal)
    if not principal.is_desk:
        raise Forbidden("only community desk staff can do this (whistle token desk)")


def involved_agencies(record: IssueRecord) -> set[str]:
    """Agencies that have, or had, an assignment on the issue (withdrawn ones included:
    an assignment is closed, never deleted; a reroute keeps it in ``record.withdrawn``)."""
    return {a.agency for a in [*record.assignments, *record.withdrawn]}


def _in_scope(principal: Principal, record: IssueRecord) -> bool:
    return in_communities(principal, record.location.community)


def in_communities(principal: Principal, community: str) -> bool:
    """Whether ``principal`` is scoped to ``community`` (every one, when it names none),
    both sides folded (``shared.folding.folded``: NFKC, case, traditional characters as
    simplified): 缤泰社區 is the 缤泰社区 a token names, whichever way either is written,
    and no other community is."""
    if principal.communities is None:
        return True
    wanted = folded(community)
    return any(folded(mine) == wanted for mine in principal.communities)


# ------------------------------------------------------------------- issues

Judged = TypeVar("Judged")


def unknown_issue(issue_id: str) -> IssueRecord:
    """What a caller is judged on when ``issue_id`` names no issue: an issue in no
    community, with no agency on it and no resident but its own. See :func:`load_judged`."""
    return IssueRecord.model_construct(
        issue_id=issue_id, location=Location.model_construct(community="", address=""),
        assignments=[], withdrawn=[], reporters=[], merged_into=None)


def load_judged(load: Callable[[str], IssueRecord], issue_id: str,
                judge: Callable[[IssueRecord], Judged]) -> tuple[IssueRecord, Judged]:
    """``load(issue_id)`` and ``judge`` (a ``may_*`` function for the caller) on it.

    An id that names no issue is judged as an issue the caller has no part in
    (:func:`unknown_issue`), so a caller who could not read such an issue gets the very
    refusal (401/403, the same words) it gets for one that exists: a desk outside its
    communities, another agency, another issue's link learn nothing of which ids exist
    (they are numbered by day). Only a caller whom that issue would not refuse (the
    unscoped desk, a resident's own report) hears the 404. What is not shaped like an
    issue id (a NUL, a phone number, no string) is a 404 to anyone: no issue could have
    it, so the answer says nothing, and the refusal would repeat what was typed.
    """
    try:
        record = load(issue_id)
    except NotFound:
        judge_unknown(issue_id, judge)
        raise
    return record, judge(record)


def judge_unknown(issue_id: Any, judge: Callable[[IssueRecord], object]) -> None:
    """Raise what ``judge`` says of an issue ``issue_id`` that does not exist (see
    :func:`load_judged`), for a caller that learnt so some other way; returns when the
    caller may hear the 404."""
    if isinstance(issue_id, str) and ISSUE_ID.fullmatch(issue_id):
        judge(unknown_issue(issue_id))



def may_read_issue(principal: Principal, record: IssueRecord, issue_id: str | None = None
                   ) -> View:
    """The view ``principal`` gets of ``record`` (read through ``GET /issues/{issue_id}``).

    Desk: ``desk`` within its communities. Agency: ``agency`` if its agency has or had
    an assignment. Resident: ``resident`` for their own report only (``issue_id`` is the
    id they asked for; a merged report shows the progress of the issue it joined, read
    by the caller, see :func:`issue_view`). Raises 401 for anonymous, 403 otherwise.
    """
    _signed_in(principal)
    if principal.is_desk:
        if not _in_scope(principal, record):
            raise Forbidden(f"issue {record.issue_id} is outside your communities")
        return View.desk
    if principal.role is Role.agency:
        if principal.agency not in involved_agencies(record):
            raise Forbidden(f"agency {principal.agency!r} has no assignment on issue "
                            f"{record.issue_id}")
        return View.agency
    wanted = issue_id or record.issue_id
    if principal.reporter_issue_id != wanted or record.issue_id != wanted:
        raise Forbidden("this link is for another issue")
    return View.resident


def issue_view(view: View, record: IssueRecord, contact: dict[str, Any] | None,
               primary: IssueRecord | None = None, agency: str | None = None,
               rates: tuple[str, int] | None = None,
               reporters: Iterable[str | None] = (), lang: str | None = None) -> dict[str, Any]:
    """``record`` shaped for ``view``; contact always masked.

    ``primary``: for the resident view of a merged report, the issue it joined (its
    progress is the resident's progress). ``agency``: the reading agency (its own
    assignment is marked ``yours``). ``rates``: the resident's rating grant
    (``Principal.rates``), for ``can_rate``. ``reporters``: the names of the reports
    merged into ``record``, masked in the agency view's notes as the resident's own is.
    ``lang``: the language the resident view is worded in (unset: the report's own); the
    desk and agency views are data, not words, and the same in either.
    """
    if view is View.desk:
        return desk_view(record, contact)
    if view is View.agency:
        return agency_view(record, contact, agency, reporters)
    return resident_view(record, contact, primary, rates, lang)


def masked_contact(contact: dict[str, Any] | None) -> dict[str, Any]:
    contact = contact or {}
    return {"name": mask_name(contact.get("name")), "phone": mask_phone(contact.get("phone")),
            "email": mask_email(contact.get("email")),
            "preferred_channel": contact.get("preferred_channel")}


def desk_view(record: IssueRecord, contact: dict[str, Any] | None) -> dict[str, Any]:
    """Everything the record holds, the contact masked and phones, emails and the
    resident's name masked in rating comments: what the desk works from."""
    view = mask_comments(record.model_dump(mode="json"), contact)
    view["contact"] = masked_contact(contact)
    return view


# The parts of an issue the agencies need to do the work.
_AGENCY_FIELDS = {"issue_id", "status", "description", "category", "priority", "location",
                  "channel", "language", "received_at", "updated_at", "routing",
                  "escalation_level", "table", "reopen_count", "closed_reason", "closed_at",
                  "assignments", "withdrawn", "timeline"}


def agency_view(record: IssueRecord, contact: dict[str, Any] | None,
                agency: str | None = None, reporters: Iterable[str | None] = ()
                ) -> dict[str, Any]:
    """The work: problem, place, every assignment's state (the parts a reroute withdrew
    too), the table, the timeline without the messages to residents and without the
    residents' rating comments. No reporters, ratings or unmasked contact. An agency a
    reroute withdrew (with no part now) reads the address down to the building only:
    it no longer goes there, and the flat is the resident's home."""
    view = without_comments(record.model_dump(mode="json", include=_AGENCY_FIELDS))
    if agency is not None and agency not in {a.agency for a in record.assignments}:
        view["location"]["address"] = public_address(view["location"]["address"])
    view["timeline"] = [entry for entry in view["timeline"] if entry["service"] != "notify"]
    for assignment in view["assignments"]:
        assignment["yours"] = assignment["agency"] == agency
    _mask_staff_notes(view, [(contact or {}).get("name"), *reporters])
    view["contact"] = masked_contact(contact)
    return view


def _mask_staff_notes(view: dict[str, Any], names: list[str | None]) -> None:
    """Staff write down whom they called ("已联系孙建国，电话13812345678"): in the agency
    view, every note (报到 and resolution notes, earlier cycles' too, the timeline's steps
    that quote them, the table's tasks) has phones, emails and the resident's name masked as a rating comment
    is, since the contact is shown to agencies only masked (Open311 masks them as well).
    ``names``: the resident's and those of the neighbours whose reports merged into it."""
    for assignment in [*view["assignments"], *view["withdrawn"]]:
        mask_assignment_notes(assignment, names)
    for entry in view["timeline"]:
        entry["detail"] = masked_comment(entry.get("detail"), names)
    mask_task_notes(view.get("table"), names)


def mask_assignment_notes(assignment: dict[str, Any], names: Iterable[str | None]) -> None:
    """One dumped assignment's notes (报到, resolution, earlier cycles') masked for an
    agency, as :func:`agency_view` shows them (its list of assignments too)."""
    for key in ("acknowledge_note", "resolution_note"):
        assignment[key] = masked_comment(assignment.get(key), names)
    for earlier in assignment.get("earlier_resolutions", []):
        earlier["note"] = masked_comment(earlier.get("note"), names)


def mask_task_notes(table: dict[str, Any] | None, names: Iterable[str | None]) -> None:
    """A dumped table's tasks (what was agreed, and the note closing each) masked for an
    agency, as :func:`agency_view` shows them (its list of assignments too)."""
    for task in (table or {}).get("tasks", []):
        task["description"] = masked_comment(task.get("description"), names)
        task["note"] = masked_comment(task.get("note"), names)


def may_list_issues(principal: Principal, query: IssueFilter) -> list[IssueFilter]:
    """The store queries that answer ``GET /issues`` for ``principal`` (run each, merge).

    Desk: the query, narrowed to its communities (one query per community when it names
    none). Agency: the query narrowed to its own agency (asking for another agency is
    403). Residents: 403; anonymous: 401. Filter the merged records with
    :func:`visible_in_list` as well.
    """
    _staff(principal)
    if principal.role is Role.agency:
        if query.agency not in (None, principal.agency):
            raise Forbidden(f"agency staff list only their own agency's issues "
                            f"({principal.agency})")
        return [query.model_copy(update={"agency": principal.agency})]
    if principal.communities is None:
        return [query]
    if query.community is not None:
        if not in_communities(principal, query.community):
            raise Forbidden("that community is outside your communities")
        return [query]
    return [query.model_copy(update={"community": c}) for c in sorted(principal.communities)]


def visible_in_list(principal: Principal, record: IssueRecord) -> bool:
    """Whether a listed record may be shown to ``principal`` (the list's second check)."""
    if principal.is_desk:
        return _in_scope(principal, record)
    if principal.role is Role.agency:
        return principal.agency in involved_agencies(record)
    return False


def may_read_events(principal: Principal, record: IssueRecord) -> None:
    """The journal (every committed event) is the desk's: it holds every step of every
    party. Agencies and residents get 403, anonymous 401."""
    must_be_desk(principal)
    if not _in_scope(principal, record):
        raise Forbidden(f"issue {record.issue_id} is outside your communities")


def may_read_notifications(principal: Principal, record: IssueRecord,
                           issue_id: str | None = None) -> View:
    """Messages to residents (text with links redacted, recipient masked).

    Desk: every message (``View.desk``). A resident: the messages to them
    (``View.resident``: keep ``audience == "resident"`` only). Agencies: 403.
    """
    _signed_in(principal)
    if principal.is_desk:
        if not _in_scope(principal, record):
            raise Forbidden(f"issue {record.issue_id} is outside your communities")
        return View.desk
    if principal.role is Role.resident:
        return may_read_issue(principal, record, issue_id)
    raise Forbidden("messages to residents are the desk's to read")


def may_relay(principal: Principal, notification_id: str, community: str | None) -> None:
    """Mark a message in the desk's outbox relayed (or read it with whom to call, in
    full): desk staff of its issue's community (``community``; ``None``: no such message,
    or an issue whose community is not known). A scoped desk is refused alike whether the
    message is elsewhere or nowhere (no oracle of which exist); an unscoped one may hear
    the 404."""
    must_be_desk(principal)
    if not in_communities(principal, community or ""):
        raise Forbidden(f"message {notification_id} is outside your communities")


# The end of the desk's copy of a rating request, which tells staff where to record the
# answer (notify's templates, rating_request_desk): cut for the resident, at read time
# (keeping the resident's wording beside every desk copy cost notify ~2.5% more
# instructions a message, for a view read rarely).
_DESK_INSTRUCTION = re.compile(r"\s*[（(](?:社区：|Desk: )[^（()）]*[）)]\s*$")


def notifications_view(view: View, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Delivery records as ``view`` may see them (already masked and redacted as stored).
    A resident sees each message as it was said to them: where the desk relayed it, the
    desk's copy (what staff read out), without its closing instruction to staff."""
    if view is View.desk:
        return records
    return [{k: r.get(k) for k in ("kind", "language", "status", "created_at", "sent_at")}
            | {"text": _resident_text(r)}
            for r in records if r.get("audience", "resident") == "resident"]


def _resident_text(record: dict[str, Any]) -> str | None:
    """A message as its resident may read it: never the desk's instruction to its staff."""
    text = record.get("text")
    if text and record.get("kind") == "rating_request":
        return _DESK_INSTRUCTION.sub("", text)
    return text


def may_read_stats(principal: Principal) -> frozenset[str] | None:
    """The three rates are the desk's: the communities to count (``None``: all)."""
    must_be_desk(principal)
    return principal.communities


def may_read_assignments(principal: Principal, agency: str) -> None:
    """An agency's assignment list: its own staff, or the desk. A desk token scoped to
    some communities lists only those communities' assignments: narrow the store query
    with :func:`may_list_issues` and filter the records with :func:`visible_in_list`."""
    _staff(principal)
    if principal.role is Role.agency and principal.agency != agency:
        raise Forbidden(f"token is for agency {principal.agency!r}, not {agency!r}")


def may_act_for_agency(principal: Principal, agency: str) -> None:
    """报到, resolve, check in, finish a table task: only that agency's own staff."""
    _staff(principal)
    if principal.agency != agency:
        raise Forbidden(f"token is for agency {principal.agency!r}, not {agency!r}")


def may_act_on_assignment(principal: Principal, agency: str, record: IssueRecord) -> None:
    """报到 or resolve ``agency``'s part of ``record``: that agency's own staff, and only
    while the agency has an assignment there (a withdrawn one is gone). Judged before the
    request's body is read, so a caller refused here never learns about the body."""
    may_act_for_agency(principal, agency)
    if all(a.agency != agency for a in record.assignments):
        raise Forbidden(f"agency {agency!r} has no assignment on issue {record.issue_id}")


def may_submit(principal: Principal, anonymous_allowed: bool) -> None:
    """``POST /issues``: staff always; anonymous callers when the deployment allows it
    (``WHISTLE_ANONYMOUS_SUBMIT``); residents' links, which are for reading, as anonymous."""
    if principal.is_staff:
        return
    if not anonymous_allowed:
        raise Unauthorized("submitting needs a staff token here (anonymous submission is off)")


def may_submit_in(principal: Principal, community: str) -> None:
    """A desk token that names communities submits only there: what it submitted
    elsewhere it could neither read, nor follow up, nor triage (its lists and reads stop
    at its communities). 403 naming ``location.community``, shown beside the page's field."""
    if in_communities(principal, community):
        return
    mine = ", ".join(sorted(principal.communities))
    raise Forbidden(f"this token submits for {mine} only; a report in {community} is for "
                    "that community's desk", [{
                        "field": "location.community", "type": "outside_scope",
                        "message": f"not one of this token's communities ({mine})"}])


# ------------------------------------------------------------------- rating


def may_rate(principal: Principal, reporter_issue_id: str) -> FeedbackGrant:
    """The grant of a rating link used on ``/issues/{reporter_issue_id}/feedback``.

    Only a resident's rating link rates; a progress link, a staff token or nothing at
    all does not (401 without a link, 403 with the wrong kind or another issue's link).
    """
    _signed_in(principal)
    if principal.role is not Role.resident or principal.rates is None:
        raise Forbidden("only the resident's own rating link can rate")
    if principal.reporter_issue_id != reporter_issue_id:
        raise Forbidden(f"this rating token is not for issue {reporter_issue_id}")
    issue_id, cycle = principal.rates
    return FeedbackGrant(reporter_issue_id=reporter_issue_id, issue_id=issue_id, cycle=cycle)


def may_resend_rating_link(principal: Principal, record: IssueRecord) -> None:
    """The desk asks for a resident's rating link to be sent again (it never sees it):
    only while the issue waits for its rating."""
    must_be_desk(principal)
    if not _in_scope(principal, record):
        raise Forbidden(f"issue {record.issue_id} is outside your communities")
    if record.status is not IssueStatus.resolved or record.feedback_due is None:
        raise InvalidTransition(f"issue {record.issue_id} is not waiting for a rating "
                                f"(it is {record.status.value})")


def may_record_rating(principal: Principal, own: IssueRecord) -> None:
    """The desk records the answer of the resident of ``own`` (their own report), who
    was called back or visited (电话回访): desk staff only, a scoped desk only in its
    communities. Whether the issue waits for that rating is the domain's to say."""
    must_be_desk(principal)
    if not _in_scope(principal, own):
        raise Forbidden(f"issue {own.issue_id} is outside your communities")


# ------------------------------------------------------------ resident view

_STATUS_WORDS = {
    "zh": {IssueStatus.received: "已受理，正在分派", IssueStatus.merged: "已并入同一问题处理",
           IssueStatus.dispatched: "已派给相关单位", IssueStatus.in_progress: "正在处理",
           IssueStatus.resolved: "已办结，请您评价", IssueStatus.closed: "已结案"},
    "en": {IssueStatus.received: "received, being routed",
           IssueStatus.merged: "handled together with the same problem",
           IssueStatus.dispatched: "sent to the responsible agencies",
           IssueStatus.in_progress: "being handled", IssueStatus.resolved: "done: please rate it",
           IssueStatus.closed: "closed"},
}
_STEP_WORDS = {
    "zh": {"received": "您的问题已受理", "merged": "与邻居反映的同一问题合并办理",
           "dispatched": "已派给：{agencies}", "rerouted": "已改派给：{agencies}",
           "acknowledged": "{agency}已报到",
           "part_resolved": "{agency}已完成", "table": "相关单位当面协调（{place}）",
           "resolved": "各单位均已办结", "rated": "您已评价", "reopened": "重新交办，提级督办",
           "reopened_at_top": "重新交办，仍由区督办",
           "closed": "已结案"},
    "en": {"received": "your report was received",
           "merged": "handled together with the same problem reported by neighbours",
           "dispatched": "sent to: {agencies}", "rerouted": "sent on instead to: {agencies}",
           "acknowledged": "{agency} reported in",
           "part_resolved": "{agency} finished its part",
           "table": "the agencies met to settle it ({place})",
           "resolved": "every agency has finished", "rated": "you rated it",
           "reopened": "sent back to the agencies, escalated",
           "reopened_at_top": "sent back to the agencies; the district keeps following it up",
           "closed": "closed"},
}
_TIMELINE_STEPS = {"dispatched", "resolved", "reopened", "closed", "merged"}
# Which agencies the issue was sent to at each step, read from the steps' details as
# ``shared.issue`` and ``services.routing.table`` write them (agency names, in Chinese):
# the first dispatch's parties, the table's additions, a reroute's withdrawn and added.
_PARTY = re.compile(r"(.+?) \((lead|support)\)(?:, |$)")
_SENT = {
    "dispatched": re.compile(r"^category \S+, priority \S+, rule \S+: (?P<added>.+)$"),
    "table_convened": re.compile(r"^table at .*, \d{4}-\d\d-\d\dT\S+: (?P<seated>.+)$"),
    "table_invited": re.compile(r"^(?P<seated>.+?) invited by .+$"),
    "rerouted": re.compile(r"^by \S+: category .*?(?:; withdrawn: (?P<withdrawn>.+?))?"
                           r"(?:; added: (?P<added>.+?))?(?:; now: (?P<roles>.+?))?; why: .*$",
                           re.DOTALL),
}
# A reopening at the top level already (``routing.feedback.reopen``): nothing went up. Read
# from the step's tail, after the resident's comment, which cannot hold its ";".
_REOPENED_AT_TOP = re.compile(r"; back to [^;]*, still with \w+$")
# Steps about the whole issue that follow from an agency's at the same moment: the last
# agency finishing resolves the issue in the same change, and "all done" must read after
# "the drainage company has finished", not before.
# And the closing follows from the resident's rating at that moment: "you rated it", then
# "closed" (the rating's rank is 1, the closing's 2).
_CONCLUDING_STEPS = {"resolved": 1, "closed": 2}


def resident_view(own: IssueRecord, contact: dict[str, Any] | None,
                  primary: IssueRecord | None = None,
                  rates: tuple[str, int] | None = None,
                  lang: str | None = None) -> dict[str, Any]:
    """The resident's page: their own words and place, progress in plain words, the
    agencies by name and state, whether they can rate now. Nothing about any other
    reporter (a merged report shows the joined issue's progress, not its text), no
    internal notes (报到 or resolution), no staff ids. ``rates``: the (issue, cycle) of
    the caller's rating link, to say whether it can still be used. ``lang``: the
    language to say it in (a page read with ``?lang=en``); unset, the report's own."""
    if lang not in _STEP_WORDS:
        lang = own.language.value if own.language.value in _STEP_WORDS else "zh"
    words, status_words = _STEP_WORDS[lang], _STATUS_WORDS[lang]
    work = primary if primary is not None and own.merged_into == primary.issue_id else own
    # (when, 1 for a step that concludes what happened at that moment, the words)
    progress = [(own.received_at, 0, words["received"])]
    if work is not own:
        progress += [(e.at, 0, words["merged"]) for e in own.timeline if e.step == "merged"][:1]
    for entry, sent_to in _sent_to(work):
        if sent_to is not None:  # dispatched, or rerouted to other agencies
            progress.append((entry.at, 0, words[entry.step].format(
                agencies=_names_said(sent_to, work, lang))))
        elif entry.step in _TIMELINE_STEPS and entry.step not in ("merged", "dispatched"):
            text = words[entry.step]
            if entry.step == "reopened" and _REOPENED_AT_TOP.search(entry.detail):
                text = words["reopened_at_top"]
            progress.append((entry.at, _CONCLUDING_STEPS.get(entry.step, 0), text))
        elif entry.step == "table_convened" and work.table is not None:
            progress.append((entry.at, 0, words["table"].format(place=work.table.place)))
    # Every 报到 of an agency still on the issue, as its timeline tells them: a cycle the
    # resident sent back keeps its own (the assignment holds only the latest moment).
    reported = {}
    for entry in work.timeline:
        if entry.step == "acknowledged" and entry.agency:
            reported.setdefault(entry.agency, set()).add(entry.at)
    for a in work.assignments:
        name = a.agency_name_en if lang == "en" else a.agency_name
        moments = reported.get(a.agency, set())
        if a.acknowledged_at is not None:
            moments = moments | {a.acknowledged_at}
        progress += [(at, 0, words["acknowledged"].format(agency=name)) for at in moments]
        if a.resolved_at is not None and len(work.assignments) > 1:
            progress.append((a.resolved_at, 0, words["part_resolved"].format(agency=name)))
    # Each of their ratings, one a cycle: the one that reopened the issue as well as the
    # one that closed it. A rating comes before what it caused at the same moment (the
    # reopening, the closing): "closed, you rated it" read as if closed without them.
    progress += [(r.at, -1, words["rated"]) for r in work.ratings
                 if r.reporter_issue_id == own.issue_id]
    progress.sort(key=lambda item: item[:2])
    status = work.status
    return {
        "issue_id": own.issue_id,
        "status": status.value,
        "status_text": status_words[status],
        "description": own.description,
        "address": own.location.address,
        "community": own.location.community,
        "received_at": utc_moment(own.received_at),
        "updated_at": utc_moment(max(own.updated_at, work.updated_at)),
        "agencies": [{"name": a.agency_name_en if lang == "en" else a.agency_name,
                      "role": a.role.value, "status": a.status.value}
                     for a in work.assignments if a.status.value in _SHOWN_STATES],
        "progress": [{"at": utc_moment(at), "text": text} for at, _, text in progress],
        "can_rate": _can_rate(own, work, rates),
        "rate_state": _rate_state(own, work, rates),
        "rate_by": utc_moment(work.feedback_due) if work.feedback_due else None,
        "contact": masked_contact(contact),
        "language": lang,
    }


_SHOWN_STATES = {s.value for s in (AssignmentStatus.assigned, AssignmentStatus.acknowledged,
                                   AssignmentStatus.resolved)}


def _sent_to(work: IssueRecord) -> Iterable[tuple[Any, list[str] | None]]:
    """Each step of ``work``'s timeline, with the agencies (by their Chinese names) the
    issue was sent to by it: the first dispatch's, then each reroute's (every agency on
    it after the reroute, as the resident's message names them), None for any other step
    and for a reroute that changed neither an agency nor the lead (the resident is not
    told of that one: ``IssueRerouted.agencies_changed``).
    The page said the agencies on the issue now beside the first dispatch's time: after
    a reroute, as if they had been sent it from the start."""
    on_it: list[str] = []
    for entry in work.timeline:
        found = _SENT[entry.step].match(entry.detail or "") if entry.step in _SENT else None
        if entry.step == "dispatched" and not found:  # of another shape: the agencies now
            on_it = [a.agency_name for a in work.assignments]
            yield entry, list(on_it)
            continue
        if not found:
            yield entry, None
            continue
        parts = found.groupdict()
        before = list(on_it)
        gone = set((parts.get("withdrawn") or "").split(", "))
        on_it = [name for name in on_it if name not in gone]
        on_it += [name for name, _ in _PARTY.findall(parts.get("added") or "")
                  if name not in on_it]
        on_it += [name for name in (parts.get("seated") or "").split("、")
                  if name and name not in on_it]
        # A new lead first, as the route lists it (and the resident is told of it).
        leads = [name for name, role in _PARTY.findall(
            f"{parts.get('added') or ''}, {parts.get('roles') or ''}".strip(", "))
                 if role == "lead"]
        on_it = [*[n for n in on_it if n in leads], *[n for n in on_it if n not in leads]]
        if entry.step == "dispatched" or (entry.step == "rerouted"
                                          and (on_it != before or parts.get("roles"))):
            yield entry, list(on_it)
        else:
            yield entry, None


def _names_said(names: list[str], work: IssueRecord, lang: str) -> str:
    """Agencies named as the timeline names them (their Chinese names) in ``lang``."""
    if lang == "zh":
        return "、".join(names)
    english = {a.agency_name: a.agency_name_en for a in [*work.withdrawn, *work.assignments]}
    return ", ".join(english.get(name, name) for name in names)


def _rate_state(own: IssueRecord, work: IssueRecord, rates: tuple[str, int] | None) -> str:
    """Why the resident may rate now, or why not, so their page can say so: ``open``
    (this link rates it now), ``rated`` (they rated this outcome), ``closed``,
    ``use_rating_link`` (resolved, but this link rates nothing: a progress link, or the
    rating link of an earlier outcome) or ``later`` (not resolved yet; a rating link is
    sent when it is). A resident at their progress link read "once the issue is resolved
    you can rate it here" under "resolved, please rate", with no form."""
    if _can_rate(own, work, rates):
        return "open"
    if any(r.reporter_issue_id == own.issue_id and r.cycle == work.reopen_count
           for r in work.ratings):
        return "rated"
    if work.status is IssueStatus.closed:
        return "closed"
    return "use_rating_link" if work.status is IssueStatus.resolved else "later"


def _can_rate(own: IssueRecord, work: IssueRecord, rates: tuple[str, int] | None) -> bool:
    if rates is None or work.status is not IssueStatus.resolved:
        return False
    issue_id, cycle = rates
    return (issue_id == work.issue_id and cycle == work.reopen_count and not any(
        r.reporter_issue_id == own.issue_id and r.cycle == cycle for r in work.ratings))

"""What the pages show, worked out without I/O: texts, labels, clocks, charts.

Everything here is pure (no nameko, no Redis), so the pages' logic is unit-tested
in milliseconds; ``service.py`` only fetches data over RPC and renders.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from services.routing.rules import spoken_duration
from shared.errors import InvalidPayload

I18N_DIR = Path(__file__).with_name("i18n")
LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"


@cache
def catalogue(lang: str) -> dict[str, str]:
    with open(I18N_DIR / f"{lang}.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def language_of(value: str | None, fallback: str = DEFAULT_LANGUAGE) -> str:
    return value if value in LANGUAGES else fallback


@dataclass(frozen=True)
class Translator:
    """``t("key", name=value)``: the page text in one language; a missing key shows
    itself (never an exception in a page)."""

    lang: str

    def __call__(self, key: str, **values: Any) -> str:
        text = catalogue(self.lang).get(key) or catalogue(DEFAULT_LANGUAGE).get(key) or key
        return text.format(**values) if values else text

    def done(self, action: str | None, **values: Any) -> str:
        """What a page says once the write ``action`` (``?done=``: its name, as
        ``shared.guard`` audits it) went through: its own words where the catalogue has
        some, else "Done.". Only the catalogue's words are ever shown, so an address
        someone sends cannot put words of theirs in the desk's green box."""
        key = f"done_{action}".replace(".", "_")
        if action and key in catalogue(self.lang):
            try:
                return catalogue(self.lang)[key].format(
                    **{name: value for name, value in values.items() if value is not None})
            except (KeyError, IndexError):  # words that need what this page has not
                pass
        return self("done_ok")

    def counted(self, key: str, n: int) -> str:
        """``key`` for a count ``n``: its own words for that number where the language has
        them (``key_1``: "once", ``key_2``: "twice"), else ``key_n`` with ``{n}`` ("3
        times"; "time 1" read as a label, not English)."""
        for lang in dict.fromkeys((self.lang, DEFAULT_LANGUAGE)):
            words = catalogue(lang)
            text = words.get(f"{key}_{n}") or words.get(f"{key}_n")
            if text:
                return text.format(n=n)
        return f"{key}_n"

    def label(self, prefix: str, code: str | None) -> str:
        return self(f"{prefix}_{code}") if code else "—"

    def name(self, prefix: str, code: str) -> str:
        """``prefix_code`` in this language, or the code itself when the catalogue has no
        such text (a step or kind added after the catalogue)."""
        key = f"{prefix}_{code}"
        return self(key) if key in catalogue(self.lang) else code


# ---------------------------------------------------------------- time


def duration_text(seconds: float, lang: str) -> str:
    """``3725`` -> ``1 h 2 min`` / ``1小时2分``: two units at most, never negative."""
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = (("天", "d"), ("小时", "h"), ("分", "min"), ("秒", "s"))
    parts = [(n, u) for n, u in zip((days, hours, minutes, secs), units, strict=True) if n]
    parts = parts[:2] or [(0, units[3])]
    if lang == "zh":
        return "".join(f"{n}{u[0]}" for n, u in parts)
    return " ".join(f"{n} {u[1]}" for n, u in parts)


def local_time(value: str | datetime | None, tz: str) -> str:
    if not value:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def clock_time(value: str | None, tz: str) -> str:
    """"17:51:07.642": an event's moment on the operator's flow, in the desk's zone."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value).astimezone(ZoneInfo(tz))
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def flow_lines(lines: list[dict[str, Any]], tz: str) -> list[dict[str, Any]]:
    """The flow's lines as the operator's page draws them: each with its ``clock`` in
    the desk's time zone (``time`` stays as the service wrote it, UTC)."""
    return [{**line, "clock": clock_time(line.get("time"), tz)} for line in lines]


def deadline_text(row: dict[str, Any], now: datetime, t: Translator) -> str:
    """"报到还剩 1小时2分" / "Resolve: 5 min overdue" for a board or workspace row."""
    due = row.get("next_deadline")
    if not due:
        return "—"
    left = (datetime.fromisoformat(due) - now).total_seconds()
    kind = t.label("kind", row.get("next_deadline_kind"))
    key = "due_in" if left >= 0 else "due_over"
    return t(key, kind=kind, left=duration_text(left, t.lang))


# -------------------------------------------------------------- the board


# What the live board draws of a row (app.js): its poll sends these and nothing else.
BOARD_FIELDS = ("issue_id", "status", "status_label", "priority", "priority_label",
                "category_label",
                "community", "lead_label", "escalation_level", "level_label", "next_deadline",
                "kind_label", "due_at", "overdue")


def board_rows(rows: list[dict[str, Any]], t: Translator, names=None, *, tz: str
               ) -> list[dict[str, Any]]:
    """Board rows (intake's ``board``) with their labels in the reader's language and the
    next deadline's moment in the desk's time zone (``due_at``: the page says it before,
    or without, its script); the countdown itself is computed by the browser from
    ``next_deadline``."""
    out = []
    for row in rows:
        lead = row.get("lead") or {}
        due = row.get("next_deadline")
        out.append({
            **row,
            "due_at": t("due_at", at=local_time(due, tz)) if due else "",
            "status_label": t.label("status", row["status"]) + (
                f" · {t('reopened_n', n=row['reopen_count'])}" if row.get("reopen_count") else ""),
            "priority_label": t.label("priority", row.get("priority")),
            "level_label": t.label("level", row.get("escalation_level")),
            "kind_label": t.label("kind", row.get("next_deadline_kind")),
            "category_label": (names.category(row.get("category"), t.lang) if names
                               else row.get("category") or "—"),
            "lead_label": (lead.get("agency_name") if t.lang == "zh"
                           else lead.get("agency_name_en")) or "—",
        })
    return out


# --------------------------------------------------------------- the forms


FORM_ERROR_KEYS = {"missing", "string_too_short", "string_too_long", "string_pattern_mismatch",
                   "enum", "value_error", "too_short", "datetime", "past_due", "unknown",
                   "unknown_agency", "outside_scope"}

# "Not in the expected format" left the clerk guessing what a phone number may look like.
PATTERN_ERROR_KEYS = {"contact.phone": "err_phone", "contact.email": "err_email"}


def field_errors(errors: list[dict[str, Any]], t: Translator) -> dict[str, str]:
    """The API's 422 ``fields`` as ``{form field: message}``: each shown beside its field.

    The API names fields by their path in the body (``location.community``,
    ``contact.phone``); the form's inputs carry the same names. A list's item
    (``agencies.1``) is its list's one input (``agencies``, typed comma-separated);
    pydantic's several ways of failing a date and time are one ``datetime``.
    """
    out: dict[str, str] = {}
    for err in errors:
        field = re.sub(r"(\.\d+)+$", "", err.get("field") or "") or "(body)"
        kind = err.get("type") or ""
        kind = "datetime" if kind.startswith(("datetime_", "date_")) else kind
        text = (t(PATTERN_ERROR_KEYS[field]) if kind == "string_pattern_mismatch"
                and field in PATTERN_ERROR_KEYS
                else t(f"err_{kind}") if kind in FORM_ERROR_KEYS else t("err_other"))
        if t.lang == "en" and kind not in FORM_ERROR_KEYS:
            text = err.get("message") or text
        # How long it may be ("at most 4000 characters"): "too long" alone left the clerk
        # guessing how much of a resident's long message to cut.
        if kind == "string_too_long" and (limit := re.search(r"at most (\d+)",
                                                               err.get("message") or "")):
            text = t("err_string_too_long_max", max=limit[1])
        # How far ahead a date may be, in the page's language and as a person says it
        # ("0.5 days" was a window under a day); a service that did not say keeps its words.
        # Over RPC the number arrives as text (nameko sends an error's arguments as strings).
        if kind == "too_far" and str(within := err.get("within_seconds")).isdigit():
            text = t("err_too_far", window=spoken_duration(timedelta(seconds=int(within)),
                                                           t.lang))
        # Which of the typed agencies is unknown ("unknown agency 'foo'"): the field holds several.
        if kind == "unknown_agency" and (named := re.search(r"'([^']+)'", err.get("message") or "")):
            text += ("：" if t.lang == "zh" else ": ") + named[1]
        out.setdefault(field, text)
    return out


# The fields each of the pages' forms shows, by the form's key (``_field.html``'s
# ``failed``; a key with an issue or task after a dash, ``close-T1``, by its first part).
# An error on any other field (a hidden ``request_id`` edited, an unknown task in the
# address) has nowhere to be shown beside: it is said at the top in words instead, and
# not counted among the fields to fix (``有 1 处需要修改`` with no field marked).
FORM_FIELDS: dict[str, tuple[str, ...]] = {
    "new_issue": ("description", "location.community", "location.address", "location.grid",
                  "category", "contact.name", "contact.phone", "contact.email",
                  "contact.preferred_channel", "channel", "language"),
    "route": ("category", "lead", "urgent", "reason"),
    "table.convene": ("meets_at", "place", "agencies"),
    "table.invite": ("agencies",),
    "table.task": ("agency", "description", "due"),
    "close": ("note",),
    "rating": ("rating", "method", "comment"),
    "rating-link": (),  # a button: not the rating form its key begins with
    "ack": ("note",),
    "res": ("note",),
    "td": ("note",),
}

# What an error on a field no form shows means, said as the person at the page can act on
# it (by the field's name, then by its name and type).
_UNSHOWN_ERROR_KEYS = {"request_id": "err_form_altered", ("task_id", "not_found"): "err_no_task"}


def form_fields(key: str) -> tuple[str, ...]:
    """The fields the form ``key`` shows (none for a form of buttons alone)."""
    if key in FORM_FIELDS:
        return FORM_FIELDS[key]
    return FORM_FIELDS.get(key.split("-", 1)[0], ())


def split_errors(errors: list[dict[str, Any]], key: str, t: Translator
                 ) -> tuple[dict[str, str], str | None]:
    """A service's 422 ``fields`` for the form ``key``: those it shows, each beside its
    field (:func:`field_errors`), and the rest said in words for the top of the page
    (None when there are none)."""
    shown_fields = set(form_fields(key))
    shown, unshown = [], []
    for err in errors:
        field = re.sub(r"(\.\d+)+$", "", err.get("field") or "")
        (shown if field in shown_fields else unshown).append(err)
    said = []
    for err in unshown:
        field = err.get("field") or ""
        text_key = (_UNSHOWN_ERROR_KEYS.get(field)
                    or _UNSHOWN_ERROR_KEYS.get((field, err.get("type") or "")))
        text = t(text_key) if text_key else t("err_unshown", field=field or "(body)")
        if text not in said:
            said.append(text)
    return field_errors(shown, t), (" ".join(said) or None)


BOARD_FILTERS = ("status", "priority", "community", "agency")


def bad_filter(errors: list[dict[str, Any]], t: Translator) -> str:
    """The board's filters the API refused, named as the board's form names them."""
    named = [field for err in errors
             if (field := (err.get("field") or "").split(".")[0]) in BOARD_FILTERS]
    shown = [t(f) for f in dict.fromkeys(named)] or [t("filter")]
    repeated = errors and all(err.get("type") == "repeated" for err in errors)
    return t("filter_repeated" if repeated else "filter_invalid",
             fields=("、" if t.lang == "zh" else ", ").join(shown))


# The rates page's window, in days: the API's own bounds (intake's stats, at most 366).
STATS_DEFAULT_DAYS = 30
STATS_MAX_DAYS = 366


def stats_window(asked: str | None) -> int | None:
    """The days ``?days=`` asks the rates over (unset: the last 30), or None when it is no
    whole number from 1 to 366: the page then says so beside the field."""
    if asked is None or asked == "":
        return STATS_DEFAULT_DAYS
    if asked.isascii() and asked.isdigit() and 1 <= int(asked) <= STATS_MAX_DAYS:
        return int(asked)
    return None


@dataclass(frozen=True)
class WorkspacePage:
    """Which of the workspace's cards one page shows: ``number`` of ``last`` (1-based)."""

    number: int
    last: int
    per_page: int

    @property
    def cards(self) -> slice:
        return slice((self.number - 1) * self.per_page, self.number * self.per_page)


def workspace_page(asked: str | None, total: int, per_page: int, t: Translator
                   ) -> WorkspacePage:
    """The page ``?page=`` asks for among ``total`` cards. A page past the last shows the
    last: work done meanwhile shortens the list under a page already open. Anything but a
    whole number from 1 is a 422 naming ``page`` in the page's language."""
    last = max(1, -(-total // per_page))
    if asked is None or asked == "":
        return WorkspacePage(1, last, per_page)
    if not asked.isascii() or not asked.isdigit() or int(asked) < 1:
        raise InvalidPayload(t("page_invalid"), [
            {"field": "page", "message": t("page_invalid"), "type": "int_from_1"}])
    return WorkspacePage(min(int(asked), last), last, per_page)


def choices(codes, name_of, lang: str) -> list[tuple[str, str]]:
    """A select's options: each code by its name in the page's language (the desk
    cannot be expected to know ``flying_wire`` or ``power``)."""
    return [(code, name_of(code, lang)) for code in codes]


def submission_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The desk form as the API's ``SubmitIssue`` body: blanks left out, so the API's own
    validation decides (and its 422 names the same fields)."""
    def value(name: str) -> str | None:
        text = (form.get(name) or "").strip()
        return text or None

    body: dict[str, Any] = {"description": form.get("description", "")}
    for name in ("category", "channel", "language"):
        if value(name):
            body[name] = value(name)
    body["location"] = {"community": form.get("location.community", ""),
                         "address": form.get("location.address", "")}
    if value("location.grid"):
        body["location"]["grid"] = value("location.grid")
    contact = {k: value(f"contact.{k}") for k in ("name", "phone", "email", "preferred_channel")}
    contact = {k: v for k, v in contact.items() if v}
    if contact:
        body["contact"] = contact
    return body


def submission_key(request_id: str | None, body: dict[str, Any]) -> str | None:
    """What makes two sends of the new-issue form one report: the same rendered form (its
    ``request_id``) with the same words. A double click on a slow line sent it twice and
    the desk had two issues, the second merged into the first as "another resident
    reported the same problem" (and the resident told twice). The words count too: a
    form brought back (the back button) and edited for the next resident is a new
    report. None without a usable id: no such check."""
    if not request_id or not 8 <= len(request_id) <= 64:
        return None
    canonical = json.dumps([request_id, body], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# ----------------------------------------------------------- the issue page

_TOKEN_IN_TEXT = re.compile(r"([?&]token=)[^\s&#\"'<>]+")


def redact_links(text: str | None) -> str:
    """A message as the desk may read it: a link's token replaced (the resident's
    link is theirs; the desk sees that one was sent, not the key itself)."""
    return _TOKEN_IN_TEXT.sub(r"\1…", text or "")


def messages_view(records: list[dict[str, Any]], tz: str, t: Translator
                  ) -> list[dict[str, Any]]:
    """The messages sent about an issue as the desk reads them: the channel named and
    the delivery's detail in the page's language (``raw`` as notify wrote it)."""
    out = []
    for r in records:
        raw = redact_links(r.get("detail") or "")
        out.append({
            "kind": r.get("kind"), "audience": r.get("audience"), "channel": r.get("channel"),
            "channel_label": t.name("pc", r.get("channel") or ""),
            "status": r.get("status"), "attempts": r.get("attempts"),
            "created_at": local_time(r.get("created_at"), tz),
            "sent_at": local_time(r.get("sent_at"), tz) if r.get("sent_at") else "",
            "text": redact_links(r.get("text")),
            "detail": delivery_note(raw, t), "detail_raw": raw,
            "issue_id": r.get("issue_id"),
            "relayed_at": local_time(r["relayed_at"], tz) if r.get("relayed_at") else "",
            "relayed_by": r.get("relayed_by"),
        })
    return out


# At most this many messages are marked relayed by one card's button: a card holds one
# issue's messages to one person, a handful (received, dispatched, reported in, ...).
RELAY_CARD_MESSAGES = 20


def relay_cards(items: list[dict[str, Any]], tz: str, t: Translator,
                moot: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The desk's list of messages to relay (notify's ``desk_relays``, oldest first) as
    its cards: one for each person to tell about one issue, in the order its first message
    came, so one call passes on all they have waiting (a resident whose issue moved on
    has received, dispatched, reported in... waiting: a card each meant a call each); a
    card holds whom (a resident's phone as a ``tel:`` link, or the supervisor's office)
    and each message's kind, time and text (links redacted), and its button relays them
    all (``also``: the ids after the first).

    ``moot``: the rating requests whose answer can no longer be recorded, by id, and why
    (``services.notify.relays.rating_request_moot``). Each stays on its card, said to need
    no asking (``moot_label``), and leaves the list with the card (``card["moot"]``: their
    ids, relayed with a note saying they were not asked); ``to_say`` counts the others."""
    moot = moot or {}
    cards: list[dict[str, Any]] = []
    filling: dict[tuple, dict[str, Any]] = {}  # by whom and which issue: the card to add to
    for item in items:
        whom = item.get("office") if item.get("audience") == "supervisor" else item.get(
            "resident")
        key = (item.get("issue_id"), item.get("audience"), tuple(sorted((whom or {}).items())))
        card = filling.get(key)
        if card is None or len(card["messages"]) >= RELAY_CARD_MESSAGES:
            phone = (item.get("resident") or {}).get("phone") or ""
            dial = "".join(c for c in phone if c.isdigit() or c == "+")
            card = filling[key] = {k: item.get(k) for k in (
                "notification_id", "issue_id", "audience", "resident", "office")}
            card.update(tel=f"tel:{dial}" if dial else None, messages=[])
            cards.append(card)
        why = moot.get(item.get("notification_id") or "")
        card["messages"].append({
            "notification_id": item.get("notification_id"),
            "at": local_time(item.get("at"), tz),
            "kind_label": t.name("msg", item.get("kind") or ""),
            "text": redact_links(item.get("text")),
            "moot": why, "moot_label": t(f"relay_moot_{why}") if why else None})
    for card in cards:
        card["also"] = [m["notification_id"] for m in card["messages"][1:]]
        card["moot"] = [m["notification_id"] for m in card["messages"] if m["moot"]]
        card["to_say"] = len(card["messages"]) - len(card["moot"])
    return cards


def to_visit(card: dict[str, Any]) -> bool:
    """Whether a relay card's resident has no phone to call and no email: the desk visits."""
    return card.get("audience") != "supervisor" and not card.get("tel") and not (
        card.get("resident") or {}).get("email")


# Why a message did not go the way the resident chose, or why an attempt failed, as
# notify writes it: ``choose_channel``'s notes and each channel's failure detail
# (services.notify.channels; "failed" when a channel said nothing, delivery.attempted).
# A sent record joins its note and the channel's answer with "; ". A failure is an
# exception's class name when the channel never answered: an operator's word, so the
# desk reads what it means (the class name stays in ``raw``). In English a note says only
# why: the channel it went by (the desk) is said beside it, on the list and the timeline.
_DELIVERY_NOTES = tuple((re.compile(pattern), zh, en) for pattern, zh, en in (
    (r"unknown preferred channel (?P<wanted>.+?); sent to desk",
     "居民选择的回复方式 {wanted} 无法识别，已改由{desk}转告",
     "the resident's chosen way to reply ({wanted}) is not one we know"),
    (r"preferred (?P<channel>\w+) not configured; sent to desk",
     "本系统未开通居民选择的{channel}，已改由{desk}转告",
     "the resident chose {channel}, which is not set up here"),
    (r"preferred email but no email address; sent to desk",
     "居民选择了邮件但没有留邮箱，已改由{desk}转告",
     "the resident chose email but gave no address"),
    (r"no email address for email; sent to desk", "居民没有留邮箱，已改由{desk}转告",
     "the resident gave no email address"),
    (r"no phone number for webhook; sent by email", "居民没有留手机号，已改发邮件",
     "the resident gave no phone number, so it was sent by email"),
    (r"no phone number for webhook; sent to desk", "居民没有留手机号，已改由{desk}转告",
     "the resident gave no phone number"),
    # After a failure: the message given up on is in the desk's outbox to relay.
    (r"sent to desk", "已交{desk}转告", "passed to the desk to relay"),
    (r"no email address", "没有邮箱地址", "no email address"),
    (r"HTTP (?P<code>2\d\d)", "对方已接收（HTTP {code}）", "accepted (HTTP {code})"),
    (r"HTTP (?P<code>\d{3})", "对方拒收（HTTP {code}）", "refused (HTTP {code})"),
    (r"SMTP (?P<code>\d{3})", "邮件服务器拒收（SMTP {code}）",
     "refused by the mail server (SMTP {code})"),
    (r"failed", "发送失败", "sending failed"),
    (r"\w*Timeout\w*", "对方未及时应答", "no answer in time"),
    (r"[A-Za-z_]\w*", "未能连上对方", "could not reach the other side"),
))


def delivery_note(note: str, t: Translator) -> str:
    """A delivery's note or failure in the page's language, said from its parts (an
    exception's class name as what it means); a note of another shape stays as written."""
    if t.lang not in ("zh", "en") or not note:
        return note
    said, rest = [], note
    while rest:
        for pattern, zh, en in _DELIVERY_NOTES:
            found = pattern.match(rest)
            if found and rest[found.end():][:2] in ("", "; "):
                parts = found.groupdict()
                if parts.get("channel"):
                    parts["channel"] = _channel_named(parts["channel"], t)
                said.append((zh if t.lang == "zh" else en).format(**parts, desk=t("pc_desk")))
                rest = rest[found.end() + 2:]
                break
        else:
            return note
    return ("；" if t.lang == "zh" else "; ").join(said)


def _channel_named(channel: str | None, t: Translator) -> str:
    """A message's channel (webhook, email) as the messages name it, in a sentence."""
    named = t.name("pc", channel or "")
    # "by email", "by mini-program / SMS"
    return named[:1].lower() + named[1:] if t.lang == "en" else named


def triage_reason(reason: str | None, t: Translator, names) -> str:
    """Why routing held a report for the desk (routing's ``not sure (...); the desk
    decides``), as the triage queue and the issue page show it: in Chinese on a Chinese
    page, as written otherwise."""
    found = _TRIAGE_REASON.match(reason or "")
    if t.lang == "zh" and found:
        return f"{_unsure(found.groupdict(), t, names)}，由{t('the_desk')}决定"
    return reason or ""


def agency_names(codes, t: Translator, names, lead: str | None = None) -> str:
    """Agencies by their names in the page's language (the table's invited and checked
    in), listed as each language lists them; ``lead``, if among them, marked as such."""
    lead_mark = t("in_brackets", text=t.label("role", "lead")) if lead else ""
    return ("、" if t.lang == "zh" else ", ").join(
        names.agency(c, t.lang) + (lead_mark if c == lead else "") for c in codes)


# ------------------------------------------------------- a refused action

# An agency's own form for an issue it has no part in (any more): its assignment was
# withdrawn by a reroute while the workspace was open (the API's 403).
NO_ASSIGNMENT = re.compile(r"agency '(?P<agency>[^']+)' has no assignment on issue \S+")

# Why a service refused an action the pages offer (InvalidTransition, 409: the state of
# the issue does not allow it), as shared.issue and services.routing word it; a page says
# it in its language ({name}: the agency's name; {state}: the status as the board names
# it). An English page says them in plain English too (``en``): the service's words held
# issue ids, agencies' codes, table tasks' ids and states such as ``in_progress``, which
# no page shows; another shape stays as written.
_REFUSALS = tuple((re.compile(pattern), zh, en) for pattern, zh, en in (
    (NO_ASSIGNMENT.pattern, "这件事已不在{name}的派单里（可能已改派给其他单位），请以下方的派单为准",
     "This issue is no longer assigned to {name} (it may have been rerouted to another "
     "agency): go by the assignments shown below"),
    (r"(?P<agency>\S+) has already acknowledged issue \S+", "{name}已经报到过了",
     "{name} has already reported in"),
    (r"(?P<agency>\S+) has already resolved issue \S+", "{name}已经办结过了",
     "{name} has already resolved its part"),
    (r"(?P<agency>\S+) has already withdrawn issue \S+", "{name}的派单已撤回",
     "{name}'s assignment has been withdrawn"),
    (r"(?P<agency>\S+) must acknowledge issue \S+ before resolving it", "{name}须先报到，才能办结",
     "{name} must report in before resolving"),
    (r"issue \S+ has open table tasks: (?P<tasks>.+); 事不完，人不撤",
     "议事桌还有未完成的事项：{tasks}。事不完，人不撤",
     "The table still has open tasks: {tasks}. Nobody leaves the table until its tasks "
     "are done: mark them done first"),
    (r"issue \S+ has open table tasks for agencies the new route drops: (?P<tasks>.+); "
     r"事不完，人不撤", "改派后不再参与的单位还有未完成的议事桌事项：{tasks}。事不完，人不撤",
     "Agencies the new route drops still have open table tasks: {tasks}. Nobody leaves "
     "the table until its tasks are done: close them first"),
    (r"(?P<agency>\S+) must report in before completing table tasks",
     "{name}须先报到，才能完成议事桌事项", "{name} must report in before completing table tasks"),
    (r"(?P<agency>\S+) is not at the table; invite it first", "{name}不在议事桌上，请先邀请",
     "{name} is not at the table: invite it first"),
    (r"(?P<agency>\S+) has already checked in at the table", "{name}已经签到过了",
     "{name} has already checked in at the table"),
    (r"task (?P<task>\S+) is already done(?: by \S+)?", "{task}已经完成",
     "{task} is already done"),
    (r"issue \S+ already has a table; invite agencies to it", "本件已召集议事桌，请邀请单位参加",
     "This issue has a table already: invite agencies to it"),
    (r"issue \S+ has no table; the desk convenes one", "本件还没有议事桌，请社区窗口先召集",
     "This issue has no table yet: the desk convenes one first"),
    (r"issue \S+ is (?P<state>\w+); a table needs a dispatched issue",
     "本件{state}，派单后才能召集议事桌",
     "This issue is “{state}”: a table can be convened once it is dispatched"),
    (r"issue \S+ is (?P<state>\w+); only a dispatched or in-progress issue can be rerouted",
     "本件{state}，只有已派单或办理中的问题才能改派",
     "This issue is “{state}”: only an issue that is “{dispatched}” or “{in_progress}” can be "
     "rerouted"),
    (r"the new route of issue \S+ leaves no part to do: every agency it keeps has resolved "
     r"its part; keep one with work left, or ask the agency whose part is open to resolve it",
     "改派后留下的单位都已办结各自的部分：请保留一个还有工作的单位，或请尚未办结的单位办结其部分",
     "Every agency the new route keeps has resolved its part already: keep one with work "
     "left, or ask the agency whose part is open to resolve it"),
    (r"issue \S+ is not waiting for triage", "本件已不在待分拣中（可能已有人处理）",
     "This issue no longer waits for triage (someone may have handled it already)"),
    (r"issue \S+ is already (?P<state>\w+)", "本件已是“{state}”状态",
     "This issue is “{state}” already"),
    (r"issue \S+ has already been rated", "这一次的处理结果已经评价过了（居民本人或社区已登记）",
     "This outcome has been rated already (by the resident, or recorded by the desk)"),
    (r"issue \S+'s rating window closed at \S+", "评价期已过，不能再代居民登记",
     "The rating window has closed: no rating can be recorded for the resident now"),
    (r"issue \S+ is not waiting for (?:this rating|a rating) \(it is (?P<state>\w+)\)",
     "本件现在不在等待评价（{state}）",
     "This issue is not waiting for a rating now (it is “{state}”)"),
    (r"issue \S+ is handled as \S+", "本报告已并入其他问题办理，请在并入的问题上登记",
     "This report is handled together with another issue: record the rating on that issue"),
    (r"the reporter of \S+ has rated issue \S+; the report can no longer be split from it",
     "这位居民已经评价过并入的问题（满意使它结案，不满意使它重办），本报告不能再拆分",
     "This resident has rated the issue the report joined (satisfied closes it, not "
     "satisfied reopens it): the report can no longer be split from it"),
    (r"issue \S+ is closed; \S+ can no longer be split from it",
     "并入的问题已结案，本报告不能再拆分",
     "The issue the report joined is closed: the report can no longer be split from it"),
    (r"\S+ was split from issue \S+; it no longer rates it",
     "本报告已从原问题拆分出来单独办理，不能再评价原问题",
     "This report was split off and is handled on its own: it no longer rates the issue it "
     "was split from"),
    (r"no channel reaches the resident of \S+ directly.*",
     "居民没有留手机或邮箱，评价链接无法直接发给本人（链接不经社区转交）：请电话回访或上门，把回答登记在上方",
     "The rating link cannot be sent to the resident directly (a link never goes through "
     "the desk), and they gave no phone or email it could go to: call them back or visit, "
     "and record their answer above"),
    (r"a rating link was resent for \S+ a moment ago; the resident can be sent another in "
     r"(?P<wait>\d+) s", "刚刚已给居民重发过评价链接，{wait} 秒后才能再发",
     "The rating link was resent to the resident a moment ago: another can be sent in "
     "{wait} s"),
    (r"the rating link was not sent: (?P<channel>\w+) refused it \((?P<detail>.*)\); try again",
     "评价链接没有发出去（{channel}：{detail}），请稍后再试",
     "The rating link was not sent by {channel} ({detail}); try again later"),
))

# A table task as the services name it in a refusal: its id and its agency's code.
_TASK_REF = re.compile(r"(?P<task>[^\s,()]+) \((?P<agency>[^\s,()]+)\)")


def refusal(message: str | None, t: Translator, names, tasks=()) -> str:
    """A refused action's reason as the page shows it (the service's words as a tooltip).

    ``tasks``: the table tasks of the issue the refused form was for, as the page lists
    them. A task is named by its own words there (its id, ``T2``, is shown on no page),
    and one the page does not show (another agency's, on a workspace) by its agency."""
    message = message or ""
    if t.lang not in ("zh", "en"):
        return message
    for pattern, zh, en in _REFUSALS:
        said = zh if t.lang == "zh" else en
        if said and (found := pattern.fullmatch(message)):
            parts = found.groupdict()
            return said.format(
                name=names.agency(parts.get("agency"), t.lang),
                state=t.label("status", parts.get("state")),
                task=_task_named(parts.get("task"), None, tasks, t, names),
                dispatched=t.label("status", "dispatched"),
                in_progress=t.label("status", "in_progress"),
                wait=parts.get("wait"), detail=delivery_note(parts.get("detail") or "", t),
                # the channel a link goes by (webhook, email), as the messages name it
                channel=_channel_named(parts.get("channel"), t),
                tasks=_tasks_named(parts.get("tasks") or "", tasks, t, names))
    return message


def _tasks_named(listed: str, tasks, t: Translator, names) -> str:
    """``T1 (power), T2 (housing)`` as the page names them: each task's own words and its
    agency (``“换电缆”（供电公司）``); a task the page does not show, by its agency alone."""
    said = [_task_named(m["task"], m["agency"], tasks, t, names)
            for m in _TASK_REF.finditer(listed)]
    return ("、" if t.lang == "zh" else "; ").join(said) if said else listed


def _task_named(task_id: str | None, agency: str | None, tasks, t: Translator, names) -> str:
    if task_id is None:
        return ""
    task = next((x for x in tasks or () if x.get("task_id") == task_id), None)
    agency = agency or (task or {}).get("agency")
    who = names.agency(agency, t.lang) if agency else ""
    if task is None:
        if not who:
            return t("task_unnamed")
        return t("task_of_agency", agency=who)
    what = t("quoted", text=task.get("description") or "")
    return what + (t("in_brackets", text=who) if who and agency else "")


def tasks_of(cards, issue_id: str | None) -> list[dict[str, Any]]:
    """The table tasks of ``issue_id`` among a page's cards (the workspace's assignments,
    or the issue page's issue), for :func:`refusal` to name them by their own words."""
    for card in cards or ():
        if card.get("issue_id") == issue_id and card.get("table"):
            return card["table"].get("tasks") or []
    return []


# ------------------------------------------------------- 电话回访 (the desk's call-back)


def rating_awaited(issue: dict[str, Any], work: dict[str, Any]) -> dict[str, Any] | None:
    """Whether the issue page offers to record its resident's rating (and to resend their
    link, :func:`with_reach`): while the issue carrying the report (``work``: itself, or
    the one it was merged into) waits for a rating this resident has not given in this
    cycle. ``due``: when the window closes."""
    if work.get("status") != "resolved" or not work.get("feedback_due"):
        return None
    cycle = work.get("reopen_count") or 0
    if any(r.get("reporter_issue_id") == issue["issue_id"] and r.get("cycle") == cycle
           for r in work.get("ratings") or []):
        return None
    return {"due": work["feedback_due"]}


def with_reach(rating: dict[str, Any], reach: dict[str, Any]) -> dict[str, Any]:
    """``rating`` (:func:`rating_awaited`) and whether a resent link would reach the
    resident (notify's ``rating_link_reach``): ``can_resend`` only when a channel reaches
    them without the desk (a link is never sent through it, so pressing it would fail);
    otherwise ``unreachable`` says why, for the page to say instead of the button."""
    can_resend = reach.get("channel") is not None
    return {**rating, "can_resend": can_resend,
            "unreachable": None if can_resend else reach.get("unreachable") or "no_match"}


# ------------------------------------------------------------- the timeline

# The details the services write on the timeline are English sentences of a fixed
# shape (shared.issue, services.agency.domain, services.routing.*,
# services.notify.recipients). A page says them in its language from their parts
# (``_step_detail``); free text in them (a note, a reason, a place) stays as written; a
# detail of another shape is shown as written (the raw text is always kept).
_UNSURE = (r"not sure \((?:top category (?P<best>\S+) at (?P<share>\d+%)"
           r"|no category recognised)\); the desk decides")
_TRIAGE_REASON = re.compile(rf"^{_UNSURE}$")
_MESSAGE = (r"(?P<kind>\w+) message (?P<status>\w+) via (?P<channel>\w+)"
            r"(?: \((?P<note>.*)\))?")
# Who of an agency's staff acted, as ``shared.issue`` writes it after the agency's name
# (``供电公司 (gd-017) reported in``); steps recorded before staff were named have none.
_BY_STAFF = r"(?: \((?P<staff_id>[^()]+)\))?"
_DETAIL = {step: re.compile(pattern, re.DOTALL) for step, pattern in {
    "received": r"^accepted via (?P<channel>\w+)$",
    "needs_triage": rf"^{_UNSURE}; suggestions: (?P<suggestions>none|\S+ \d+%(?:, \S+ \d+%)*)$",
    "flagged_for_triage": rf"^urgent but unsure, dispatched to the best guess "
                          rf"(?P<category>\S+); {_UNSURE}$",
    "dispatched": r"^category (?P<category>\S+), priority (?P<priority>\S+), "
                  r"rule (?P<rule>\S+): (?P<parties>.*)$",
    "rerouted": r"^by (?P<staff>\S+): category (?:(?P<previous>\S+) -> )?(?P<category>\S+)"
                r"(?:; priority (?P<was>\w+) -> (?P<priority>\w+))?"
                r"(?:; withdrawn: (?P<withdrawn>.+?))?(?:; added: (?P<added>.+?))?"
                r"(?:; now: (?P<roles>.+?))?; why: (?P<reason>.*)$",
    "assignment_delivered": r"^(?P<name>.+) received the assignment \((?P<role>\w+)\)$",
    "assignment_withdrawn": r"^(?P<name>.+?) was told its part is withdrawn "
                            r"\(by (?P<staff>\S+?): (?P<reason>.*)\)$",
    "acknowledged": rf"^(?P<name>.+?){_BY_STAFF} reported in(?P<late> \(after its deadline\))?"
                    r"(?:: (?P<note>.*))?$",
    "assignment_resolved": rf"^(?P<name>.+?)(?:{_BY_STAFF} resolved its part)?: (?P<note>.*)$",
    "resolved": r"^every agency has finished its part$",
    "escalated": r"^(?P<name>.+?) did not (?P<kind>report in|resolve) by (?P<missed>\S+): "
                 r"(?:escalated to|(?P<still>still with)) .+? \((?P<level>\w+)\)(?:, reminded)?"
                 # The agency's part went to a level below the issue's (another agency's
                 # misses took the issue higher): it stays there (routing.escalation).
                 r"(?:, the issue stays with .+? \((?P<issue_level>\w+)\))?; "
                 r"whistled again, new deadline (?P<due>\S+)$",
    "awaiting_rating": r"^the resident is asked to rate; closes unrated at (?P<due>\S+)$",
    "rating_recorded": r"^by the desk \((?P<staff>[^)]*)\) for the reporter of (?P<reporter>\S+), "
                       r"(?P<method>\w+): (?P<rating>\w+)$",
    "rated": r"^the resident is satisfied(?:: (?P<comment>.*))?$",
    "reopened": r"^the resident is not satisfied: (?P<reason>.*); back to (?P<agencies>.*), "
                r"(?:escalated to|(?P<still>still with)) (?P<level>\w+)$",
    "closed": r"^closed: (?P<why>the resident is satisfied|no rating within the window.*)$",
    "merged": r"^same (?P<category>\S+) problem as (?P<primary>\S+): merged \(共性问题统筹\)$",
    "reporter_joined": r"^(?P<reporter>\S+) reported the same problem and was merged "
                       r"into this issue$",
    "reporter_split": r"^(?P<reporter>\S+) was split off by the desk$",
    "split": r"^split from (?P<primary>\S+) by the desk; routed on its own$",
    "resident_notified": rf"^{_MESSAGE}(?: to the reporter of (?P<reporter>\S+))?$",
    "supervisor_notified": rf"^supervisor \((?P<level>\w+)\) notified: {_MESSAGE}$",
    "triaged": r"^(?P<staff>\S+) chose category (?P<category>\S+)(?:; why: (?P<reason>.*))?$",
    "table_convened": r"^table at (?P<place>.*), (?P<meets_at>\d{4}-\d\d-\d\dT\S+): "
                      r"(?P<names>.*)$",
    # By "the desk" or the lead agency's name; before, by "desk" or the agency's code.
    "table_invited": r"^(?P<name>.+?) invited by (?P<by>.+)$",
    "table_checked_in": rf"^(?P<name>.+?){_BY_STAFF} checked in at the table$",
    "table_task_recorded": r"^(?P<task>\S+): (?P<name>.+?) to (?P<what>.*) by (?P<due>\S+)$",
    "deadline_agreed": r"^(?P<name>.+?): resolve by (?P<due>\S+) as agreed at the table "
                       r"\((?P<task>\S+)\), not (?P<before>\S+)$",
    "table_task_done": r"^(?P<task>\S+) done by (?:the desk \((?P<staff>[^)]*)\) for )?"
                       rf"(?P<name>.+?){_BY_STAFF}: (?P<note>.*)$",
}.items()}

# Reasons a service gives where the desk gave none (services.routing.desk), as each page
# says them.
_REASONS = {"triage: the desk chose another route": {
    "zh": "分拣时社区窗口改选了路线", "en": "at triage, the desk chose another route"}}

# Each step's words in each language are in the catalogue (``said_<step>``, i18n/*.yaml),
# filled in from the step's values (``_step_values``, worked out once for both languages).
# ``said_<step>_<variant>``: the words of one of a step's outcomes (``_VARIANT``);
# ``said_<step>_<part>``: a clause said only when the step has that part (``_CLAUSES``),
# in ``{more}``. Empty: the English page shows the detail as written.

# Which of a step's outcomes it says (``said_<step>_<variant>``), as ``{outcome}``.
_VARIANT = {
    "escalated": lambda parts: "still" if parts["still"] else "to",
    "reopened": lambda parts: "still" if parts["still"] else "to",
    "closed": lambda parts: "satisfied" if parts["why"].startswith("the resident") else "unrated",
    "rerouted": lambda parts: "changed" if parts["previous"] else "same",
    "table_task_done": lambda parts: "desk" if parts["staff"] else "own",
}

# The parts a step says only when it has them, in this order, as ``{more}``.
_CLAUSES = {
    "acknowledged": ("late", "note"),
    "escalated": ("issue_level",),
    "rated": ("comment",),
    "resident_notified": ("reporter", "note"),
    "supervisor_notified": ("note",),
    "triaged": ("reason",),
    "rerouted": ("priority", "withdrawn", "added", "roles"),
}

_NEVER = re.compile(r"(?!)")


# A moment as the services write it into a step's detail (UTC, ISO 8601).
_ISO_MOMENT = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)")


def in_local_time(detail: str, tz: str) -> str:
    """A step's detail with every moment in it in the desk's time zone, as the page's
    other times are ("closes unrated at 2026-12-13T10:30:00+00:00" was UTC on an English
    page, eight hours off from the time beside it)."""
    return _ISO_MOMENT.sub(lambda m: local_time(m.group(0), tz), detail)


def timeline_rows(timeline: list[dict[str, Any]], t: Translator, names, tz: str
                  ) -> list[dict[str, Any]]:
    """The issue page's timeline (经过) in the reader's language: each step's name from
    the catalogue (``step_<step>``), its detail said from its parts in the page's
    language (``_step_detail``), and the detail as the service wrote it (``raw``)
    always."""
    rows = []
    for entry in timeline:
        raw = redact_links(entry.get("detail") or "")
        step = entry.get("step") or ""
        found = _DETAIL.get(step, _NEVER).match(raw)
        detail = _step_detail(step, found.groupdict(), t, names, tz) if found else None
        if detail is None and found:  # plain English as written: begun as the others are
            detail = in_local_time(raw[:1].upper() + raw[1:], tz)
        elif detail is None:
            detail = in_local_time(raw, tz)
        rows.append({"at": entry.get("at"), "step": step, "label": t.name("step", step),
                     "detail": detail, "raw": raw})
    return rows


def _step_detail(step: str, parts: dict[str, str | None], t: Translator, names,
                 tz: str) -> str | None:
    """A detail said from its parts in the page's language (``said_<step>``); None: the
    raw text reads well as it is (English), its moments put in the desk's time zone."""
    if not _said(step, t):
        return None
    values = _step_values(step, parts, t, names, tz)
    if step in _VARIANT:
        values["outcome"] = _say(f"{step}.{_VARIANT[step](parts)}", t, values)
    values["more"] = "".join(_say(f"{step}.{part}", t, values)
                             for part in _CLAUSES.get(step, ()) if parts.get(part))
    return _say(step, t, values)


def _said(key: str, t: Translator) -> str:
    """The catalogue's words for ``key`` (``step``, ``step.variant``) in the page's own
    language: an empty entry stays empty (the Translator would fall back to Chinese)."""
    return catalogue(t.lang)["said_" + key.replace(".", "_").replace(" ", "_")]


def _say(key: str, t: Translator, values: dict[str, Any]) -> str:
    return _said(key, t).format_map(values)


def _step_values(step: str, parts: dict[str, str | None], t: Translator, names,
                 tz: str) -> dict[str, Any]:
    """A step's parts as the page says them, whatever its language: agencies,
    categories, priorities, roles, levels by their names, moments in the desk's time
    zone; free text (a note, a reason, a place, a task) as written."""
    lang = t.lang
    values: dict[str, Any] = {**parts, "desk": t("the_desk")}
    by = _bracketed(parts["staff_id"], t) if parts.get("staff_id") else ""
    values["name"] = _agency(parts["name"], t, names) + by if parts.get("name") else ""
    for key in ("category", "previous", "best"):
        if parts.get(key):
            values[key] = names.category(parts[key], lang)
    for key, prefix in (("priority", "priority"), ("was", "priority"), ("role", "role"),
                        ("method", "method")):
        if key in parts:
            values[key] = t.label(prefix, parts[key])
    for key in ("due", "missed", "meets_at", "before"):
        if key in parts:
            values[key] = local_time(parts[key], tz)
    for key in ("parties", "added", "roles"):
        if parts.get(key):
            values[key] = _parties(parts[key], t, names)
    # A channel, a level, in a sentence (case is English's only: Chinese has none).
    if "channel" in parts:
        values["channel"] = t.name("ch", parts["channel"] or "").lower()
    if "level" in parts:
        values["level"] = t.label("level", parts["level"]).lower()
        values["supervisor"] = names.supervisor(parts["level"], lang) or _say(
            "supervisor.escalated" if step == "escalated" else "supervisor", t, values)
    if parts.get("issue_level"):
        values["issue_supervisor"] = (names.supervisor(parts["issue_level"], lang)
                                      or t.label("level", parts["issue_level"]))
    if "rating" in parts:
        values["rating"] = t(parts["rating"] or "")
    if "reason" in parts:
        values["reason_said"] = _reason(parts["reason"], t)
    if "kind" in parts and step == "escalated":
        values["kind"] = _say(f"kind.{parts['kind']}", t, values)
    if step.endswith("_notified"):
        values["message"] = _message(parts, t, values.get("supervisor"))
        values["delivered"] = delivery_note(parts["note"], t) if parts["note"] else ""
    if "best" in parts:
        values["unsure"] = _unsure(parts, t, names)
        values["unsure_after"] = values["unsure"][:1].lower() + values["unsure"][1:]
    if parts.get("suggestions") == "none":
        values["suggestions"] = _say("needs_triage.none", t, values)
    elif parts.get("suggestions"):  # "pipe_leak 45%, water_outage 30%"
        shares = (s.rsplit(" ", 1) for s in parts["suggestions"].split(", "))
        values["suggestions"] = _listed(
            (f"{names.category(code, lang)} {share}" for code, share in shares), t)
    if parts.get("withdrawn"):
        values["withdrawn"] = _listed((_agency(n, t, names)
                                       for n in parts["withdrawn"].split(", ")), t)
    if step == "reopened":
        values["agencies"] = _listed((_agency(code.strip(), t, names, coded=True)
                                      for code in parts["agencies"].split(",")), t)
    if step == "table_convened":
        values["agencies"] = _listed((_agency(n, t, names)
                                      for n in parts["names"].split("、")), t)
    if step == "table_invited":
        by_whom = parts["by"] or ""
        values["inviter"] = (t("the_desk") if by_whom in ("desk", "the desk")
                             else _agency(by_whom, t, names, coded=True))
    return values


# ------------------------------------------- the timeline: each language's own pieces


def _listed(items, t: Translator) -> str:
    """Items listed as the page's language lists them (、 in Chinese)."""
    return ("、" if t.lang == "zh" else ", ").join(items)


def _bracketed(text: str, t: Translator) -> str:
    """``（text）`` in Chinese (full width, no space), `` (text)`` in English."""
    return f"（{text}）" if t.lang == "zh" else f" ({text})"


def _agency(name: str, t: Translator, names, coded: bool = False) -> str:
    """An agency as the timeline names it (its Chinese name; a code on older steps): by
    its English name on an English page; on a Chinese page as written, or by its name
    where the step gives its code (``coded``)."""
    if t.lang == "en":
        return _en_agency(name, names)
    return names.agency(name, "zh") if coded else name


def _parties(parties: str, t: Translator, names) -> str:
    """``供电公司 (lead), 物业 (support)`` as ``供电公司（牵头）、物业（配合）`` or
    ``Power company (lead), Property management (support)``."""
    said = []
    for party in parties.split(", "):
        found = re.fullmatch(r"(?P<name>.+) \((?P<role>lead|support)\)", party)
        said.append(_agency(found["name"], t, names)
                    + _bracketed(t.label("role", found["role"]), t) if found else party)
    return _listed(said, t)


def _unsure(parts: dict[str, str | None], t: Translator, names) -> str:
    """Why routing was not sure: ``not sure (top category X at 45%)``."""
    if parts["best"]:
        return _say("unsure", t, {"best": names.category(parts["best"], t.lang),
                                  "share": parts["share"]})
    return _say("unsure.none", t, {})


def _reason(reason: str | None, t: Translator) -> str:
    """A reason as the desk typed it, or in the page's words where the service gave it."""
    return _REASONS.get(reason or "", {}).get(t.lang, reason or "")


def _message(parts: dict[str, str | None], t: Translator, supervisor: str | None) -> str:
    """A message's kind, delivery and channel in the page's language (to ``supervisor``,
    in English, inside the sentence)."""
    if t.lang == "zh":
        return (f"{t.name('msg', parts['kind'])}消息{t.name('delivery', parts['status'])}"
                f"（{t.name('pc', parts['channel'])}）")
    return _en_message(parts, t, f" to {supervisor}" if supervisor else "")


# --------------------------------------------------- the timeline, in English

# The services write a step's detail in English, but an operator's English: message kinds
# and channels by their codes ("rating_request message sent via desk"), agencies by
# their Chinese names, moments in UTC. An English page says it from its parts as the
# desk says it; free text (a note, a reason, a place, a task) stays as written.
_EN_CHANNELS = {"desk": "passed to the desk to relay", "webhook": "by mini-program / SMS",
                "email": "by email"}
_EN_DELIVERED = {"failed": "could not be sent {how}",
                 "queued": "could not be sent {how} yet: it will be tried again"}
# Kinds that are a message's own name ("the rating request"); the others are the step
# they tell of ("the dispatched message").
_EN_NAMED_KINDS = ("request", "notice", "decision")


def _en_agency(name: str | None, names) -> str:
    """An agency as the timeline names it (its Chinese name; a code on older steps) by
    its English name, as the rules file gives it; another name stays as written."""
    name = name or ""
    for code, (zh, en) in names.agencies.items():
        if name in (zh, code):
            return en
    return name


def _en_message(parts: dict[str, str | None], t: Translator, whom: str = "") -> str:
    """``rating_request message sent via desk`` as ``The rating request was passed to the
    desk to relay``."""
    kind = t.name("msg", parts["kind"] or "")
    said = kind if kind.endswith(_EN_NAMED_KINDS) else f"“{kind}” message"
    channel = parts["channel"] or ""
    how = _EN_CHANNELS.get(channel, f"via {t.name('pc', channel)}")
    status = parts["status"] or ""
    if status == "sent":  # to the desk, it is sent to its list to relay
        return f"The {said}{whom} was {'' if channel == 'desk' else 'sent '}{how}"
    verb = _EN_DELIVERED.get(status, f"is {t.name('delivery', status).lower()} {{how}}")
    return f"The {said}{whom} {verb.format(how=how)}"

# ------------------------------------------------------------------ charts

CHART_WIDTH = 420
BAR_HEIGHT = 18
BAR_GAP = 10
LABEL_WIDTH = 110


def rate_chart(rows: list[tuple[str, float | None]], title: str) -> dict[str, Any]:
    """A horizontal bar chart of rates (0..1) as SVG geometry, drawn server-side."""
    plot = CHART_WIDTH - LABEL_WIDTH - 60
    bars = []
    for i, (label, rate) in enumerate(rows):
        y = i * (BAR_HEIGHT + BAR_GAP) + 8
        width = 0 if rate is None else round(plot * max(0.0, min(rate, 1.0)), 1)
        bars.append({"label": label, "y": y, "text_y": y + BAR_HEIGHT - 4, "width": width,
                     "value": "—" if rate is None else f"{rate * 100:.1f}%",
                     "value_x": LABEL_WIDTH + width + 6})
    height = len(rows) * (BAR_HEIGHT + BAR_GAP) + 16
    return {"title": title, "bars": bars, "width": CHART_WIDTH, "height": height,
            "x0": LABEL_WIDTH, "bar_height": BAR_HEIGHT, "plot": plot}


def count_chart(rows: list[tuple[str, int]], title: str) -> dict[str, Any]:
    """The same bars for counts (escalations): scaled to the largest, labelled as counts."""
    top = max((n for _, n in rows), default=0) or 1
    chart = rate_chart([(label, n / top) for label, n in rows], title)
    for bar, (_, n) in zip(chart["bars"], rows, strict=True):
        bar["value"] = str(n)
    return chart


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def seconds_text(seconds: float | None, lang: str) -> str:
    return "—" if seconds is None else duration_text(seconds, lang)

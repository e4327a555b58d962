"""Open311 <-> Whistle, field by field. Pure: no nameko, no Redis.

- :func:`read_params`, :func:`json_pairs` and :func:`submission_for` (or
  :func:`to_submission`, for a known service): a POSTed form (or JSON body) to the
  desk's own :class:`~shared.contracts.SubmitIssue`, every problem at once, each named
  by its Open311 field;
- :func:`parse_request_query`: the GET requests filters, with the spec's 90-day rule;
- :func:`request_view`: an issue as an Open311 request. Only public fields: never the
  reporter's name, phone or email, the address only down to the building, and free
  text scrubbed as the logs are, with any flat it names masked;
- :func:`updates_from_journal`: the mySociety ``servicerequestupdates`` extension,
  one update per step of the issue's journal.

docs/open311.md is the reference for every choice made here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html.entities import html5
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from services.intake.open311.catalog import Service, service_code_of
from services.intake.open311.formats import Open311Error
from shared.addresses import mask_flats, public_address
from shared.contracts import (
    AssignmentStatus,
    Channel,
    ClosedReason,
    IssueStatus,
    Language,
    Role,
    SubmitIssue,
)
from shared.errors import InvalidPayload
from shared.issue import IssueRecord
from shared.privacy import contact_names, scrub

MAX_SPAN = timedelta(days=90)
MAX_REQUESTS = 1000
MAX_DESCRIPTION = 4000
MAX_IDS = 1000
# The dates a filter may name. Outside them the window's arithmetic (90 days back, and
# servicerequestupdates' 90 more) left datetime's range: end_date=0001-01-01T00:00:00Z
# was an OverflowError, answered as an internal error (body code 500).
EARLIEST_DATE = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DATE = datetime(9999, 1, 1, tzinfo=UTC)

_ATTRIBUTE = re.compile(r"^attribute\[([^\[\]]+)\](\[\])?$")
_CJK = re.compile(r"[\u3400-\u9fff]")
# The spec: "This may contain line breaks, but not html or code." What counts as HTML
# is an element HTML has (<b>, </p>, <a href=...>, <script>), a comment or doctype,
# or a character reference HTML defines (&amp;, &#60;). Residents' own text is not
# HTML: "the sign says <No Parking>" and "AT&T; box" are plain words, and refusing
# them left a client (FixMyStreet resends a report until it is accepted) with a
# report it could never deliver.
_ELEMENTS = frozenset({
    "a", "abbr", "acronym", "address", "applet", "area", "article", "aside", "audio", "b",
    "base", "basefont", "bdi", "bdo", "big", "blink", "blockquote", "body", "br", "button",
    "canvas", "caption", "center", "cite", "code", "col", "colgroup", "data", "datalist",
    "dd", "del", "details", "dfn", "dialog", "dir", "div", "dl", "dt", "em", "embed",
    "fieldset", "figcaption", "figure", "font", "footer", "form", "frame", "frameset", "h1",
    "h2", "h3", "h4", "h5", "h6", "head", "header", "hgroup", "hr", "html", "i", "iframe",
    "img", "input", "ins", "kbd", "label", "legend", "li", "link", "main", "map", "mark",
    "marquee", "math", "menu", "meta", "meter", "nav", "noscript", "object", "ol",
    "optgroup", "option", "output", "p", "param", "picture", "pre", "progress", "q", "rp",
    "rt", "ruby", "s", "samp", "script", "search", "section", "select", "slot", "small",
    "source", "span", "strike", "strong", "style", "sub", "summary", "sup", "svg", "table",
    "tbody", "td", "template", "textarea", "tfoot", "th", "thead", "time", "title", "tr",
    "track", "tt", "u", "ul", "var", "video", "wbr"
})
_TAG = re.compile(r"<\s*/?\s*([A-Za-z][A-Za-z0-9]*)(?=[\s/>])[^>]*>|<!--|<!doctype", re.I)
_REFERENCE = re.compile(r"&(#\d+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")


def _is_html(text: str) -> bool:
    return any(m.group(1) is None or m.group(1).lower() in _ELEMENTS
               for m in _TAG.finditer(text)) or \
        any(m.group(1).startswith("#") or f"{m.group(1)};" in html5
            for m in _REFERENCE.finditer(text))


# ------------------------------------------------------------------ parameters


@dataclass
class Params:
    """A request's parameters: plain fields (the first value wins) and attributes
    (``attribute[code]=v`` and ``attribute[code][]=v``, every value kept).

    ``problems``: Open311 field -> why its value was refused while reading (a JSON
    body's object, or list for a single field); such a field is in neither dict, and
    the checks of :func:`to_submission` leave it to this one problem."""

    fields: dict[str, str]
    attributes: dict[str, list[str]]
    problems: dict[str, str] = field(default_factory=dict)
    # Every value of every plain field, in order: the list filters of GET requests
    # "can be declared multiple times, comma delimited" (status=open&status=closed).
    repeated: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        value = self.fields.get(name)
        return value.strip() if value is not None and value.strip() else None

    def given_twice(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` declared more than once with different values: which one
        the client meant is not Whistle's to guess (the same value twice is one)."""
        return [name for name in names
                if len({value.strip() for value in self.repeated.get(name, [])}) > 1]

    def listed(self, name: str) -> list[str]:
        """A comma-delimited list, over every time the field was declared."""
        return [part.strip() for value in self.repeated.get(name, [])
                for part in value.split(",") if part.strip()]


# The single-valued fields Whistle reads from a POST (body and query string together)
# and from a GET. Each given twice with different values is a 400 naming it: taking the
# first quietly filed the report under another service than the client meant. Not
# among them: media_url (FixMyStreet's multi-photo option sends one for each photo: the
# first is kept), attributes (checked by the definition), the spec's comma lists of
# GET requests, and fields Whistle ignores.
POST_FIELDS = ("api_key", "service_code", "description", "lat", "long", "address_string",
               "address_id", "first_name", "last_name", "phone", "email", "lang")
GET_FIELDS = ("api_key", "lang", "start_date", "end_date", "page", "page_size")


def given_once(params: Params, names: Iterable[str]) -> Params:
    """``params`` with each of ``names`` given twice over (different values) added to
    its problems, so that every other check leaves that field to this one problem."""
    twice = params.given_twice(names)
    if not twice:
        return params
    problems = {**params.problems, **{
        name: _twice(name) for name in twice if name not in params.problems}}
    return Params(params.fields, params.attributes, problems, params.repeated)


def _twice(name: str) -> str:
    return f"{name} is given more than once, with different values: give it once"


def json_repeats(text: str, names: Iterable[str] = POST_FIELDS) -> dict[str, str]:
    """Those of ``names`` a JSON body's object gives twice with different values
    (``{"service_code": "pipe_leak", …, "service_code": "gas_leak"}``), each with its
    problem. A JSON parser keeps the last in silence, as a form kept the first."""
    top: list[tuple[str, Any]] = []

    def keep(pairs: list[tuple[str, Any]]) -> dict:
        top[:] = pairs  # the outermost object is the last one the parser closes
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=keep)
    except ValueError:
        return {}  # not JSON: the body's own problem, reported by its parser
    values: dict[str, set[str]] = {}
    for key, value in top:
        values.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
    return {name: _twice(name) for name in names if len(values.get(name, ())) > 1}


def refuse_repeats(params: Params, names: Iterable[str] = GET_FIELDS) -> Params:
    """A GET's parameters, or a 400 naming every one given twice over."""
    checked = given_once(params, names)
    if checked.problems:
        raise Open311Error.bad_request(*checked.problems.values())
    return checked


def read_params(pairs: Iterable[tuple[str, str]],
                problems: dict[str, str] | None = None) -> Params:
    fields: dict[str, str] = {}
    attributes: dict[str, list[str]] = {}
    repeated: dict[str, list[str]] = {}
    for key, value in pairs:
        match = _ATTRIBUTE.match(key)
        if match:
            if value.strip():
                attributes.setdefault(match.group(1), []).append(value.strip())
        else:
            fields.setdefault(key, value)
            repeated.setdefault(key, []).append(value)
    return Params(fields, attributes, dict(problems or {}), repeated)


def json_pairs(body: Any) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """A JSON body as form pairs, and the fields whose values no form could carry
    (Open311 field -> why), every one of them, not just the first.

    ``{"attribute": {"community": "x", "tags": ["a"]}}`` or flat ``"attribute[community]"``
    keys both work; numbers and booleans become their text. An object is never a
    field's value, and a list is one only for an attribute (its values)."""
    if not isinstance(body, dict):
        raise Open311Error.bad_request("a JSON body must be an object of Open311 fields")
    pairs: list[tuple[str, str]] = []
    problems: dict[str, str] = {}

    def add(key: str, value: Any, many: bool) -> None:
        name = key.removesuffix("[]")
        if value is None:
            return
        if isinstance(value, list) and many:
            if any(isinstance(item, dict | list) for item in value):
                problems[name] = f"{name} must be a list of text or numbers"
            else:
                for item in value:
                    add(key, item, many)
        elif isinstance(value, dict | list):
            problems[name] = (f"{name} must be text or a number, not "
                              f"{'an object' if isinstance(value, dict) else 'a list'}")
        elif isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        else:
            pairs.append((key, str(value)))

    for key, value in body.items():
        key = str(key)
        if key == "attribute" and isinstance(value, dict):
            for code, item in value.items():
                add(f"attribute[{code}][]" if isinstance(item, list) else f"attribute[{code}]",
                    item, True)
        elif key == "attribute" and value is not None:
            # "attribute": "x" or a list was dropped as an unknown field, and the client
            # heard that attribute[community] was missing, which it had sent.
            problems[key] = ('attribute must be an object of attribute codes and their '
                             'values ({"community": "..."})')
        else:
            add(key, value, _ATTRIBUTE.match(key) is not None)
    return pairs, problems


def language_of(value: str | None) -> Language:
    """``lang`` (``zh``, ``en``, ``zh-CN``, ``en_GB``...); Chinese when absent."""
    if not value:
        return Language.zh
    prefix = value.strip().lower().replace("_", "-").split("-")[0]
    try:
        return Language(prefix)
    except ValueError:
        raise Open311Error.bad_request("lang must be zh or en") from None


# ------------------------------------------------------------------ POST requests

# Whistle's field (as pydantic names it) -> the Open311 field a client sent.
_FIELD_NAMES = {
    "description": "description",
    "category": "service_code",
    "location.community": "attribute[community]",
    "location.address": "address_string",
    "location.grid": "attribute[grid]",
    "location.lat": "lat",
    "location.lon": "long",
    "contact.name": "first_name/last_name",
    "contact.phone": "phone",
    "contact.email": "email",
    "media_url": "media_url",
}


def to_submission(params: Params, service: Service, default_community: str | None
                  ) -> SubmitIssue:
    """The desk's submission for this POST to ``service``, or a 400 naming every bad
    field."""
    params = given_once(params, POST_FIELDS)
    problems = [(400, why) for why in params.problems.values()]
    submission = _submission(params, service, default_community, problems)
    if problems:
        raise Open311Error(400, *problems)
    return submission


def submission_for(params: Params, catalog: dict[str, Service],
                   default_community: str | None) -> tuple[Service, SubmitIssue]:
    """The service ``service_code`` names and the desk's submission, or every problem
    at once: 404 when the only one is an unknown ``service_code``, else 400 (the
    unknown service's own ``code`` stays 404)."""
    params = given_once(params, POST_FIELDS)
    problems = [(400, why) for why in params.problems.values()]
    code, service = params.get("service_code"), None
    if code is not None and "service_code" not in params.problems:
        service = catalog.get(code)
        if service is None:
            problems.append((404, f"no service {code[:40]!r} (see services.xml)"))
    elif "service_code" not in params.problems:
        problems.append((400, "service_code is required (see services.xml)"))
    submission = _submission(params, service, default_community, problems)
    if problems:
        raise Open311Error(404 if all(c == 404 for c, _ in problems) else 400, *problems)
    return service, submission


def _submission(params: Params, service: Service | None, default_community: str | None,
                problems: list[tuple[int, str]]) -> SubmitIssue | None:
    """The submission, or None with every problem appended to ``problems``. Without a
    ``service`` (its code missing or unknown) its attributes go unchecked."""
    named = set(params.problems)  # Open311 fields already reported: said once

    def problem(fields: Iterable[str], why: str) -> None:
        named.update(fields)
        problems.append((400, why))

    description = params.get("description")
    if "description" in named:
        pass
    elif description is None and service is not None and service.category is not None:
        # The spec makes description optional: "street light out, here" is a whole
        # report. The service's name says what the problem is, in the report's language.
        description = service.name_en if _language_or_default(params) is Language.en \
            else service.name
    elif description is None:
        # Routing decides a not_sure report from its description alone (and an unknown
        # service's own needs are unknown): here it is what the report is.
        problem(["description"], "description is required: what is the problem?")
    elif len(description) > MAX_DESCRIPTION:
        problem(["description"], f"description is longer than {MAX_DESCRIPTION} characters")
    elif _is_html(description):
        problem(["description"], "description must be plain text: no HTML or code")

    values: dict[str, str] = {}
    for attribute in service.attributes if service else ():
        given = params.attributes.get(attribute.code, [])
        if len(given) > 1:
            problem([f"attribute[{attribute.code}]"],
                    f"attribute[{attribute.code}] takes one value")
        elif given:
            values[attribute.code] = given[0]
    community = values.get("community") or default_community
    if "attribute" in named:  # reported as a whole: none of them reported again
        named.update(f"attribute[{a.code}]" for a in (service.attributes if service else ()))
    for attribute in service.attributes if service else ():
        if attribute.required and not values.get(attribute.code) and not (
                attribute.code == "community" and community) and \
                f"attribute[{attribute.code}]" not in named:
            problem([f"attribute[{attribute.code}]"],
                    f"attribute[{attribute.code}] is required for service "
                    f"{service.code}: {attribute.description_en}")
    if service is None:  # what the service would ask for is unknown: not reported
        named.update({"attribute[community]", "attribute[building]", "attribute[grid]"})

    lat, lon = params.get("lat"), params.get("long")
    coordinates: dict[str, float] = {}
    for name, value in (("lat", lat), ("long", lon)):
        if value is not None and name not in named:
            why = coordinate_problem(name, value)
            if why:
                problem([name], why)
            else:
                coordinates[name] = float(value)
    missing = [name for name, value in (("lat", lat), ("long", lon)) if value is None]
    if len(missing) == 1 and missing[0] not in named:
        problem(missing, "lat and long must be sent together")
    address_string, address_id = params.get("address_string"), params.get("address_id")
    where = ("lat", "long", "address_string", "address_id")
    if not (lat or lon or address_string or address_id) and not set(where) & named:
        problem(where, "a location is required: lat and long, or address_string, "
                       "or address_id")

    address = " ".join(p for p in (address_string, values.get("building")) if p)
    if not address:
        address = (f"address_id {address_id}" if address_id
                   else f"{coordinates['lat']:.6f}, {coordinates['long']:.6f}"
                   if len(coordinates) == 2 else "")
    if not address:  # only when the location's problem is already reported
        named.add("address_string")
    location: dict[str, Any] = {"community": community, "address": address}
    if values.get("grid"):
        location["grid"] = values["grid"]
    if len(coordinates) == 2:
        location["lat"], location["lon"] = coordinates["lat"], coordinates["long"]
    data: dict[str, Any] = {
        "description": description, "category": service.category if service else None,
        "location": location, "channel": Channel.app.value,
    }
    if "lang" not in named:
        try:
            data["language"] = language_of(params.get("lang")).value
        except Open311Error as exc:
            problems.extend(exc.errors)
    contact = {k: v for k, v in (("name", full_name(params.get("first_name"),
                                                    params.get("last_name"))),
                                 ("phone", params.get("phone")),
                                 ("email", params.get("email"))) if v}
    if contact:
        data["contact"] = contact
    if params.get("media_url"):
        data["media_url"] = params.get("media_url")
    try:
        submission = SubmitIssue.model_validate(data)
    except ValidationError as exc:  # SubmitIssue's errors never echo the input
        fields = InvalidPayload.from_validation_error(exc).errors
        # The desk's address is address_string and the building joined: when both were
        # sent, the client hears of both, as either may be the long one.
        names = _FIELD_NAMES if not (address_string and values.get("building")) else {
            **_FIELD_NAMES, "location.address": "address_string with attribute[building]"}
        # A refused pattern is said in words (shared.errors.described_pattern).
        problems.extend((400, f"{name} {f['message']}" if f["type"] == "string_pattern_mismatch"
                         else f"{name}: {f['message']}")
                        for f in fields
                        if (name := names.get(f["field"], f["field"])) not in named)
        return None
    return None if problems else submission


_BOUNDS = {"lat": 90.0, "long": 180.0}


def coordinate_problem(name: str, value: str) -> str | None:
    """Why ``value`` is no ``lat`` (or ``long``) in WGS84 degrees, or None. Each is
    checked on its own, so a POST with both wrong hears of both at once; NaN and
    infinity (which ``float`` reads) are not numbers of degrees, and are told so rather
    than that they are out of range."""
    try:
        if "_" in value:  # Python reads "11_7" as 117 (its digit grouping): a typo
            raise ValueError(value)
        number = float(value)
    except ValueError:
        return f"{name} must be a number (WGS84 degrees)"
    if not math.isfinite(number):
        return f"{name} is not a number (NaN or infinity): it must be WGS84 degrees"
    bound = _BOUNDS[name]
    if not -bound <= number <= bound:
        return f"{name} must be between {-bound:g} and {bound:g} (WGS84 degrees)"
    return None


def _language_or_default(params: Params) -> Language:
    """``lang``, or Chinese when it is missing or bad (a bad one is reported elsewhere)."""
    try:
        return language_of(params.get("lang"))
    except Open311Error:
        return Language.zh


def full_name(first: str | None, last: str | None) -> str | None:
    """A Chinese name is family name first, with no space (张 + 三 -> 张三); others
    are given name first ("Li Wei")."""
    if not first and not last:
        return None
    if _CJK.search((first or "") + (last or "")):
        return f"{last or ''}{first or ''}"
    return " ".join(p for p in (first, last) if p)


def post_response(issue_id: str, service: Service, notice: str) -> list[dict[str, Any]]:
    """The spec's answer to a POST: exactly these three fields. Whistle keeps no
    accounts, so ``account_id`` is null, as in the spec's example."""
    return [{"service_request_id": issue_id, "service_notice": notice, "account_id": None}]


# ------------------------------------------------------------------ dates


def w3c(moment: datetime | None, tz: ZoneInfo) -> str | None:
    """ISO 8601 with the offset, in the deployment's time zone: 2026-11-21T09:30:00+08:00."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).isoformat(timespec="seconds")


# A date-time whose offset lost its '+': "...T00:00:00 08:00". A query string's '+'
# is a space (form encoding), and a client that writes "+08:00" into the URL without
# percent-encoding it (easy to do: our own dates carry +08:00) sends exactly this.
_PLUS_AS_SPACE = re.compile(r"^(\d{4}-\d{2}-\d{2}T[\d:.,]+) (\d{2}(?::?\d{2})?)$")


def parse_w3c(value: str, field: str) -> datetime:
    """A W3C date-time with its time zone (``Z`` or ``+08:00``), or a bare date
    (midnight UTC, as the W3C note reads it). An offset whose ``+`` arrived as a
    space (not percent-encoded in the URL) is read as the ``+`` it was: a space can
    stand nowhere else in a W3C date-time."""
    text = _PLUS_AS_SPACE.sub(r"\1+\2", value.strip())
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise Open311Error.bad_request(
            f"{field} must be a W3C date-time such as 2026-11-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise Open311Error.bad_request(
            f"{field} must include its time zone (Z or an offset such as +08:00)")
    if not EARLIEST_DATE <= moment < LATEST_DATE:
        raise Open311Error.bad_request(
            f"{field} must be from 1970-01-01T00:00:00Z up to 9999-01-01T00:00:00Z")
    return moment


def date_window(params: Params, now: datetime) -> tuple[datetime, datetime]:
    """``start_date``/``end_date``: at most 90 days apart; by default the last 90 days."""
    start = parse_w3c(params.get("start_date"), "start_date") if params.get("start_date") \
        else None
    end = parse_w3c(params.get("end_date"), "end_date") if params.get("end_date") else None
    if start is None and end is None:
        end = now
    if end is None:
        end = min(start + MAX_SPAN, now) if start <= now else start
    if start is None:
        start = end - MAX_SPAN
    if start > end:
        raise Open311Error.bad_request("start_date is after end_date")
    if end - start > MAX_SPAN:
        raise Open311Error.bad_request(
            "start_date and end_date may not be more than 90 days apart")
    return start, end


@dataclass
class RequestQuery:
    """GET requests: ``ids`` (when given) override every other filter."""

    ids: list[str] | None
    service_codes: set[str] | None
    statuses: set[str] | None
    start: datetime
    end: datetime
    page: int
    page_size: int

    def matches(self, view: dict[str, Any]) -> bool:
        if self.ids is not None:
            return True
        return ((self.service_codes is None or view["service_code"] in self.service_codes)
                and (self.statuses is None or view["status"] in self.statuses))


def parse_request_query(params: Params, catalog: dict[str, Service],
                        now: datetime) -> RequestQuery:
    ids = params.listed("service_request_id")
    if len(ids) > MAX_IDS:
        raise Open311Error.bad_request(f"at most {MAX_IDS} service_request_id at once")
    page, page_size = parse_page(params)
    if ids:
        # "This overrides all other arguments": the filters are not read, so a stale
        # service_code or a status beside the ids is no reason to refuse them.
        return RequestQuery(ids, None, None, now - MAX_SPAN, now, page, page_size)
    codes = set(params.listed("service_code"))
    unknown = sorted(codes - catalog.keys())
    if unknown:
        raise Open311Error.bad_request(f"unknown service_code: {', '.join(unknown)}")
    statuses = {s.lower() for s in params.listed("status")}
    if statuses - {"open", "closed"}:
        raise Open311Error.bad_request("status must be open, closed, or open,closed")
    start, end = date_window(params, now)
    return RequestQuery(None, codes or None, statuses or None, start, end, page, page_size)


def parse_page(params: Params) -> tuple[int, int]:
    """``page`` (from 1) and ``page_size`` (1-1,000, default 1,000): the common extension."""
    return (_positive_int(params.get("page"), "page", 1, None),
            _positive_int(params.get("page_size"), "page_size", MAX_REQUESTS, MAX_REQUESTS))


def _positive_int(value: str | None, field: str, default: int, most: int | None) -> int:
    if value is None:
        return default
    try:
        if "_" in value:  # Python reads "1_0" as 10 (its digit grouping)
            raise ValueError(value)
        number = int(value)
    except ValueError:
        raise Open311Error.bad_request(f"{field} must be a whole number") from None
    if number < 1 or (most is not None and number > most):
        raise Open311Error.bad_request(
            f"{field} must be between 1 and {most}" if most else f"{field} must be 1 or more")
    return number


def newest_first(hot: list[tuple[str, float]], cold: list[tuple[str, float]]) -> list[str]:
    """Issue ids from Redis and from the archive, ``(id, received epoch s)`` each, newest
    first; an issue in both (being archived right now) once."""
    received = dict(cold)
    received.update(hot)
    return [i for i, _ in sorted(received.items(), key=lambda p: (p[1], p[0]), reverse=True)]


# ------------------------------------------------------------------ requests

OPEN = "open"
CLOSED = "closed"
_CLOSED_STATES = {IssueStatus.resolved, IssueStatus.closed}
# The Whistle states each Open311 status covers (a merged report shows its issue's).
OPEN311_STATES = {
    OPEN: set(IssueStatus) - _CLOSED_STATES - {IssueStatus.merged},
    CLOSED: _CLOSED_STATES,
}

_LEVEL = {"street": ("街道", "the street office"), "district": ("区", "the district")}

# An escalation step whose agency went to a level below the issue's: another agency's
# misses took the issue higher (routing.escalation writes it so).
_PART_BELOW = re.compile(r"\((?P<level>\w+)\), the issue stays with .+? \(\w+\); ")


def _pressed_below(level: str, issue_level: str, agency: str, en: bool) -> str:
    """A miss whistled ``agency`` to ``level`` (the street office presses it) while the
    issue stays at ``issue_level`` (the district): "escalated to the street office" told
    a resident who knew the district followed it that it went down."""
    zh, english = _LEVEL.get(level, ("上级", "a supervisor"))
    issue_zh, issue_english = _LEVEL.get(issue_level, ("上级", "a supervisor"))
    if en:
        return (f"A deadline passed: {english} is pressing {agency} to act; "
                f"{issue_english} keeps following it up")
    return f"已超时，{zh}督促{agency}办理，仍由{issue_zh}督办"


def open311_status(record: IssueRecord) -> str:
    """``closed`` once every agency has finished (resolved, or rated and closed)."""
    return CLOSED if record.status in _CLOSED_STATES else OPEN


def lead_assignment(record: IssueRecord):
    return next((a for a in record.assignments if a.role is Role.lead), None)


def expected_datetime(record: IssueRecord) -> datetime | None:
    """The current resolve deadline: the latest of the unfinished parts' (escalation
    and reopening move them), or the lead's once all are done."""
    open_parts = [a.resolve_by for a in record.assignments
                  if a.status is not AssignmentStatus.resolved]
    if open_parts:
        return max(open_parts)
    lead = lead_assignment(record)
    return lead.resolve_by if lead else None


def _agency_name(record: IssueRecord, agency: str | None, en: bool) -> str:
    for a in record.assignments:
        if a.agency == agency:
            return a.agency_name_en if en else a.agency_name
    return agency or ""


# Steps that tell the public nothing of where the issue stands: the step before them
# does. Falling through to "received" they turned the notes of an issue at work back to
# "已受理，正在派给相关单位" (a table's date moving a deadline, a report split off). The
# notes merged into a timeline read with them (notify's, an agency's delivery) neither.
_QUIET_STEPS = frozenset({
    "deadline_agreed", "reporter_split", "rating_recorded", "assignment_delivered",
    "assignment_withdrawn", "resident_notified", "supervisor_notified", "relayed"})


def status_notes(record: IssueRecord, lang: Language) -> str:
    """The latest step that says where the issue stands, in plain words, in ``lang``.
    Never an agency's note: these reads are public (FixMyStreet shows them on the
    report's page), and an agency's note is internal, as on the resident's own page
    (``authz.resident_view``): it named the fitter, the neighbour upstairs and their
    flat, with only phones masked."""
    en = lang is Language.en
    if record.merged_into:
        return (f"Joined {record.merged_into}, an open report of the same problem, and "
                f"handled with it" if en else f"已并入同一问题的 {record.merged_into} 一并处理")
    step = next((s for s in reversed(record.timeline) if s.step not in _QUIET_STEPS), None)
    kind = step.step if step else "received"
    agency = _agency_name(record, step.agency if step else None, en)
    lead = lead_assignment(record)
    lead_name = (lead.agency_name_en if en else lead.agency_name) if lead else ""
    if kind in ("assignment_resolved", "resolved", "awaiting_rating", "rated", "closed"):
        if kind == "assignment_resolved":
            return f"{agency} has done its part" if en else f"{agency}已完成其负责的部分"
        if kind == "closed":
            why = record.closed_reason
            if en:
                return ("Closed: the resident is satisfied" if why is ClosedReason.satisfied
                        else "Closed: resolved, and the rating window has passed")
            return "已结单：居民满意" if why is ClosedReason.satisfied else "已结单：已办结，评价期满"
        return ("Every agency has finished; waiting for the resident's rating" if en
                else "各相关单位均已办结，等待居民评价")
    if kind == "needs_triage":
        return ("The community desk is choosing the responsible agency" if en
                else "社区正在研判由哪个部门办理")
    at_work = [a for a in record.assignments if a.status is AssignmentStatus.acknowledged]
    if kind == "rerouted" and record.status is IssueStatus.in_progress and at_work:
        # The reroute left an agency at work (it changed the category or the urgency, or
        # brought another in): the issue is in progress, not just "sent to" its lead.
        kind = "acknowledged"
        latest = max(at_work, key=lambda a: a.acknowledged_at)
        agency = latest.agency_name_en if en else latest.agency_name
    if kind in ("dispatched", "triaged", "flagged_for_triage", "rerouted"):
        supports = [(a.agency_name_en if en else a.agency_name) for a in record.assignments
                    if a.role is Role.support]
        if en:
            return f"Sent to {lead_name} (lead)" + (
                f", supported by {', '.join(supports)}" if supports else "")
        return f"已派给{lead_name}牵头办理" + (f"，{'、'.join(supports)}配合" if supports else "")
    if kind == "acknowledged":
        return f"{agency} has reported in and is working on it" if en else \
            f"{agency}已报到，正在处理"
    if kind == "escalated":
        below = _PART_BELOW.search(step.detail)
        if below:  # the agency's part went to the street, the issue stays at the district
            return _pressed_below(below["level"], record.escalation_level.value, agency, en)
        zh, english = _LEVEL.get(record.escalation_level.value, ("上级", "a supervisor"))
        if ", reminded; " in step.detail:  # the top level's reminder (routing.escalation)
            return (f"A deadline passed again: {english}, already following it up, was "
                    f"reminded" if en else f"再次超时，已提醒{zh}继续督办")
        return f"A deadline passed: escalated to {english}" if en else f"已超时，升级至{zh}督办"
    if kind == "reopened":
        return ("The resident was not satisfied: back to the agencies" if en
                else "居民不满意，已重新交办")
    if kind.startswith("table_"):
        return ("The agencies are settling it together at a coordination table" if en
                else "已召集各相关单位协调会，桌面解决")
    if kind == "reporter_joined":
        return ("More residents reported the same problem; handled together" if en
                else "其他居民反映了同一问题，一并处理")
    return ("Received; being sent to the responsible agencies" if en
            else "已受理，正在派给相关单位")


def service_notice(record: IssueRecord, lang: Language, tz: ZoneInfo) -> str:
    """What is expected to happen: who leads and by when (the current resolve deadline)."""
    en = lang is Language.en
    lead = lead_assignment(record)
    if lead is None:
        return ("Received; the community desk sends it to the responsible agencies" if en
                else "已受理，社区正在派给相关单位")
    # Done: no deadline to promise any more (a closed request said "to be resolved by").
    if record.status is IssueStatus.resolved:
        return (f"{lead.agency_name_en} led; resolved, awaiting the resident's rating" if en
                else f"{lead.agency_name}牵头，已办结，等待居民评价")
    if record.status is IssueStatus.closed:
        return (f"{lead.agency_name_en} led; resolved and closed" if en
                else f"{lead.agency_name}牵头，已办结")
    due = expected_datetime(record)
    when = due.astimezone(tz).strftime("%Y-%m-%d %H:%M") if due else ""
    if en:
        return f"{lead.agency_name_en} leads; to be resolved by {when}"
    return f"{lead.agency_name}牵头办理，应于{when}前办结"


def request_view(record: IssueRecord, catalog: dict[str, Service], lang: Language,
                 tz: ZoneInfo, names: frozenset[str] = frozenset(),
                 merged_into: IssueRecord | None = None) -> dict[str, Any]:
    """One Open311 request. A report merged into another shows that one's progress
    (status, agency, deadlines), since the same work answers both."""
    state = merged_into or record
    code = service_code_of(record.category, catalog)
    service = catalog[code]
    lead = lead_assignment(state)
    en = lang is Language.en
    return {
        "service_request_id": record.issue_id,
        "status": open311_status(state),
        "status_notes": status_notes(record, lang) if merged_into is None else (
            status_notes(record, lang) + ("; " if en else "；") + status_notes(state, lang)),
        "service_name": service.name_en if en else service.name,
        "service_code": code,
        # Anyone reads it, and residents name their flat in it ("我家3号楼201漏水"):
        # masked as the address is, after the scrub so no phone number is cut.
        "description": mask_flats(scrub(record.description, names)),
        "agency_responsible": (lead.agency_name_en if en else lead.agency_name) if lead
        else None,
        "service_notice": service_notice(state, lang, tz),
        "requested_datetime": w3c(record.received_at, tz),
        "updated_datetime": w3c(max(record.updated_at, state.updated_at), tz),
        "expected_datetime": w3c(expected_datetime(state), tz),
        # The building, never the flat: a public read is anyone's, and "3号楼2单元501"
        # told them which door the resident opens. The desk and the agencies keep it.
        # Scrubbed first, so a phone number is masked whole before any of it is cut.
        "address": public_address(scrub(record.location.address, names)) or None,
        # The spec lists both among a request's fields (neither "may not be returned"):
        # a client reading them by name found no key. Whistle keeps neither apart; a
        # posted address_id is in the address.
        "address_id": None,
        "zipcode": None,
        "lat": record.location.lat,
        "long": record.location.lon,
        "media_url": public_media_url(record.media_url, names),
    }


def public_media_url(url: str | None, names: frozenset[str] = frozenset()) -> str | None:
    """The photo's link, for anyone to read; None when it names the resident: a phone
    number, an email address, the reporter's name or a password in it, as written or
    percent-encoded (``…/1.jpg?phone=13812345678``, ``https://bob:secret@…``). Masked,
    the link would lead nowhere; the desk and the agencies keep it as posted."""
    if not url:
        return None
    for text in (url, unquote(url)):
        if scrub(text, names) != text:
            return None
    return url


def names_of(contact: dict[str, str]) -> frozenset[str]:
    """The reporter's name and its parts, to mask wherever they appear in free text."""
    return contact_names(contact)


# ------------------------------------------------------------------ updates

# event type -> (FixMyStreet-style status after it, or None to keep the last one)
_UPDATE_STATUS = {
    "issue.received": "open",
    "issue.dispatched": "investigating",
    "issue.rerouted": "investigating",
    "assignment.withdrawn": None,
    "assignment.acknowledged": "in_progress",
    "assignment.resolved": None,
    "issue.resolved": "fixed",
    "issue.reopened": "open",
    "issue.closed": "closed",
    "issue.merged": "duplicate",
    "issue.escalated": None,
    "issue.rated": None,
    "table.convened": None,
    "table.task_recorded": None,
    "table.task_done": None,
}


def _update_text(event: dict[str, Any], en: bool, names: frozenset[str]) -> str:
    kind = event["event_type"]
    agency = event.get("agency_name_en" if en else "agency_name") or ""
    if isinstance(event.get("agency"), dict):
        agency = event["agency"].get("agency_name_en" if en else "agency_name", "")
    if kind == "issue.received":
        return "Received by the community desk" if en else "社区已受理"
    if kind == "assignment.withdrawn":
        return f"{agency} is no longer involved" if en else f"{agency}不再参与办理"
    if kind in ("issue.dispatched", "issue.rerouted"):
        parts = event.get("assignments") or []
        lead = next((a for a in parts if a.get("role") == "lead"), parts[0] if parts else {})
        name = lead.get("agency_name_en" if en else "agency_name", "")
        return f"Sent to {name} (lead)" if en else f"已派给{name}牵头办理"
    if kind == "assignment.acknowledged":
        return f"{agency} has reported in and is working on it" if en else \
            f"{agency}已报到，正在处理"
    if kind == "assignment.resolved":  # its note is the agency's own: never shown here
        return f"{agency} has done its part" if en else f"{agency}已完成其负责的部分"
    if kind == "issue.resolved":
        return "Every agency has finished its part" if en else "各相关单位均已办结"
    if kind == "issue.reopened":
        return ("The resident was not satisfied: back to the agencies" if en
                else "居民不满意，已重新交办")
    if kind == "issue.closed":
        satisfied = event.get("reason") == ClosedReason.satisfied.value
        if en:
            return "Closed: the resident is satisfied" if satisfied else \
                "Closed: the rating window has passed"
        return "已结单：居民满意" if satisfied else "已结单：评价期满"
    if kind == "issue.merged":
        into = event.get("into_issue_id", "")
        return f"Joined {into}, an open report of the same problem" if en else \
            f"已并入同一问题的 {into} 一并处理"
    if kind == "issue.escalated":
        level, issue_level = event.get("level", ""), event.get("issue_level") or ""
        if issue_level and issue_level != level:
            return _pressed_below(level, issue_level, agency, en)
        zh, english = _LEVEL.get(level, ("上级", "a supervisor"))
        return f"A deadline passed: escalated to {english}" if en else f"已超时，升级至{zh}督办"
    if kind == "issue.rated":
        satisfied = event.get("rating") == "satisfied"
        if en:
            return "The resident rated it: satisfied" if satisfied else \
                "The resident rated it: not satisfied"
        return "居民评价：满意" if satisfied else "居民评价：不满意"
    if kind == "table.convened":
        return ("The agencies meet at a coordination table" if en
                else "已召集各相关单位协调会，桌面解决")
    if kind == "table.task_recorded":
        what = mask_flats(scrub(event.get("description") or "", names))
        return f"Agreed at the table: {agency} will {what}" if en else f"协调会议定：{agency}负责{what}"
    if kind == "table.task_done":  # its note (the agency's, or the desk's) is internal
        if event.get("closed_by") == "desk":  # absent in events before the desk could close
            return (f"The community desk closed {agency}'s table task" if en
                    else f"社区已关闭{agency}的协调会任务")
        return f"{agency} finished its table task" if en else f"{agency}已完成协调会任务"
    return kind


def merged_into(journal: list[dict[str, Any]]) -> str | None:
    """The issue this report was last merged into, if it still is (not split off)."""
    into = None
    for event in journal:
        if event.get("event_type") == "issue.merged":
            into = event.get("into_issue_id")
        elif event.get("event_type") == "issue.dispatched":
            into = None  # split off by the desk and routed on its own
    return into


def _joined_events(issue_id: str, journal: list[dict[str, Any]],
                   joined: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The open issue's steps after this report joined it: the same work answers both."""
    merged_at = max((e["occurred_at"] for e in journal
                     if e.get("event_type") == "issue.merged"), default=None)
    if merged_at is None:
        return []
    since = datetime.fromisoformat(merged_at)
    return [{**e, "event_id": f"{e['event_id']}-{issue_id}"}
            for e in joined if e.get("event_type") not in ("issue.received", "issue.merged")
            and datetime.fromisoformat(e["occurred_at"]) > since]


def updates_from_journal(issue_id: str, journal: list[dict[str, Any]], lang: Language,
                         tz: ZoneInfo, start: datetime, end: datetime,
                         names: frozenset[str] = frozenset(),
                         joined: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The issue's public steps committed in ``[start, end]``, oldest first.

    ``update_id`` is the event's id (stable, unique); ``status`` is the issue's status
    after the step in FixMyStreet's words (``open``, ``investigating``, ``in_progress``,
    ``fixed``, ``closed``, ``duplicate``); ``external_status_code`` is the event type.
    ``joined``: the journal of the open issue this report was merged into; its steps
    after the merge follow (their ids suffixed with this report's), so everyone who
    reported the problem sees it handled.
    """
    en = lang is Language.en
    updates = []
    status = "open"
    seen: set[str] = set()
    for event in [*journal, *_joined_events(issue_id, journal, list(joined))]:
        kind = event.get("event_type")
        if kind not in _UPDATE_STATUS or event.get("event_id") in seen:
            continue
        if kind == "issue.escalated" and event.get("reminder"):
            # Another miss at the top level: the district was reminded, nothing went up.
            # The residents are not told again at every window (notify), and "escalated
            # to the district" once more told FixMyStreet of a step that did not happen.
            continue
        if kind == "issue.rerouted" and event.get("agencies_changed") is False:
            # Only the category or the urgency changed: the desk's and the agencies'
            # business, not told to the resident (notify), and "sent to <the same lead>"
            # with the status back to investigating told FixMyStreet the work had stopped.
            continue
        seen.add(event["event_id"])
        status = _UPDATE_STATUS[kind] or status
        at = datetime.fromisoformat(event["occurred_at"])
        if not start <= at <= end:
            continue
        updates.append({
            "update_id": event["event_id"],
            "service_request_id": issue_id,
            "status": status,
            "external_status_code": kind,
            "updated_datetime": w3c(at, tz),
            "description": _update_text(event, en, names),
            "media_url": None,
        })
    return updates


def oldest_first(updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Updates by when they happened; an issue's steps in the same second keep their
    journal order (the sort is stable). By the instant, not the text: in a
    ``WHISTLE_TZ`` with summer time the hour after the clocks go back repeats with
    another offset, and "01:15+00:00" sorted before "01:30+01:00", 45 minutes earlier,
    so FixMyStreet applied the later status first and the earlier one last."""
    return sorted(updates, key=lambda u: datetime.fromisoformat(u["updated_datetime"]))

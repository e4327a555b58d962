"""Masking of residents' personal data (phone numbers and names).

Phone numbers and names stay with the desk and the agency handling the case;
they never appear in logs, traces or the tail output. These helpers are used by
the logging processors, the issue view and ``whistle tail``.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any
from uuid import UUID

# Mainland mobiles (1[3-9]x, 11 digits), with optional +86 (or 0086) and separators, and
# landlines with an area code (010-12345678). Matches inside Chinese text too,
# where \b does not help, so digits around the match are excluded explicitly.
# Residents writing in English give British and North American numbers as well:
# UK mobiles (07700 900123, +44 7700 900123), UK numbers with the area code in
# brackets or after +44 ((020) 7946 0958, +44 20 7946 0958; without brackets the
# landline pattern above already takes them), and NANP numbers ((415) 555-0132,
# 415-555-0132, +1 415 555 0132). A NANP number needs its brackets, a "+1", or the
# same dash or dot after its area code and its exchange, so a bare run of ten digits
# (an order or reference number) or three amounts in a row ("300 200 1000") is left
# alone.
_DIGIT_CHARS = "0-9０-９"
_SEPARATOR_CHARS = " \\-　－"
_D = f"[{_DIGIT_CHARS}]"
_SEP = f"[{_SEPARATOR_CHARS}]"
_UK_TRUNK = r"(?:(?:\+|00)44[ \-]?(?:\(0\)[ \-]?)?|0)"
# Every alternative starts with a digit, a "+" or a "(": the lookahead turns every other
# position away before the five alternatives are tried there (a hex id cost 120k
# instructions to search, 45k with it); it matches nothing the alternatives do not.
_PHONE_START = "(?=[0-9０-９+＋(])"
_PHONE = re.compile(
    rf"{_PHONE_START}(?:(?<!{_D})(?:(?:[+＋]|00)?[8８][6６]{_SEP}?)?([1１][3-9３-９]{_D}){_SEP}?({_D}{{4}}){_SEP}?({_D}{{4}})(?!{_D})"
    rf"|(?<!{_D})([0０][1-9１-９]{_D}{{1,2}}){_SEP}({_D}{{3,4}}){_SEP}?({_D}{{4}})(?!{_D})"
    rf"|(?<![\d+]){_UK_TRUNK}7\d{{3}}[ \-]?\d{{3}}[ \-]?\d{{3}}(?!\d)"
    rf"|(?<![\d+])(?:\(0\d{{2,4}}\)|(?:\+|00)44[ \-]?(?:\(0\)[ \-]?)?[1-9]\d{{1,3}})"
    rf"[ \-]?\d{{3,4}}[ \-]?\d{{3,4}}(?!\d)"
    rf"|(?<![\d+])(?:(?:\+1[ .\-]?[2-9]\d{{2}}[ .\-]?|\(?[2-9]\d{{2}}\)[ .\-]?)[2-9]\d{{2}}[ .\-]?"
    rf"|[2-9]\d{{2}}(?P<nanp_sep>[.\-])[2-9]\d{{2}}(?P=nanp_sep))\d{{4}}(?!\d))"
)
_DIGITS = re.compile(r"[0-9]")
# Every other decimal digit (Arabic-Indic ٠١٢…, Devanagari ०१२…, any Unicode category
# Nd but ASCII and full-width): residents type their numbers in their own script, and
# the patterns above read such a digit as the ASCII one it stands for (see
# _mask_phones). Text holding none, as nearly all does, never needs the rewrite.
_OTHER_DIGIT = re.compile(r"(?![0-9０-９])\d")


def _ascii_digit(match: re.Match[str]) -> str:
    return chr(ord("0") + unicodedata.decimal(match.group(0)))


# Residents typing in full-width mode (１３８…) must be masked too.
_FULL_WIDTH = str.maketrans("０１２３４５６７８９－　＋", "0123456789- +")


def mask_phone(phone: str | None) -> str | None:
    """``13812345678`` -> ``138****5678``; anything else keeps only its last 4 digits."""
    if not phone or "*" in phone:
        return phone  # empty, or masked already (an erased contact keeps only its mask)
    phone = phone.translate(_FULL_WIDTH).strip()
    if not phone.isascii():
        phone = _OTHER_DIGIT.sub(_ascii_digit, phone)
    digits = "".join(_DIGITS.findall(phone))
    # "+1 415 555 0132" has eleven digits from a 1 too: only a mainland mobile keeps
    # its first three (a foreign one would show its country and area code).
    foreign = phone.startswith(("+", "00")) and not phone.startswith(("+86", "0086"))
    if len(digits) >= 11 and digits[-11] == "1" and not foreign:
        return f"{digits[-11:-8]}****{digits[-4:]}"
    if len(digits) > 4:
        return "*" * (len(digits) - 4) + digits[-4:]
    return "****"


def mask_name(name: str | None) -> str | None:
    """``张三丰`` -> ``张**``; ``Li Wei`` -> ``L*****``: enough for the desk to recognise."""
    if not name:
        return name
    return name[0] + "*" * (len(name) - 1)


_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def mask_email(email: str | None) -> str | None:
    """``tom.baker@example.org`` -> ``t*******@example.org``."""
    if not email or "@" not in email:
        return email
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'*' * max(len(local) - 1, 1)}@{domain}"


# Every phone number the patterns match is ten or more digits, separators, brackets
# and dots in a row, from a digit to a digit ("138 1234 5678", "010-12345678",
# "020) 7946 0958", "415.555.0132"), starting with the first digit of a run (each
# pattern refuses a digit before its match); every email address has an "@". Text with
# neither cannot hold one. Most logged values (event names, agencies, hex ids) have
# neither, and this one cheap search spares them the full patterns, on every log line.
# An issue id's digits ("WH-20261121-0001": a run of eight, a hyphen, a run of four,
# then neither a digit nor a separator) are such a row but never a phone: no pattern
# gives a run of exactly eight then one of four (a mainland mobile is 3 or 7 digits, or
# 5/9 after "86", 7/11 after "0086", before its last four; a landline's area code is
# 3-4 digits; a UK mobile ends in groups of three; a UK area code after "0044" leaves
# 6-8 digits after a run of eight; a UK "+44" or NANP "+1" needs the "+" the id's
# hyphen takes the place of; a NANP number has a bracket or separator after three).
# They are skipped, as an issue id is on most log lines.
# Its digits are any decimal digits (\d: every script's, as _mask_phones reads them); in
# ASCII text that is 0-9, as the patterns have it.
_CLASS = f"\\d{_SEPARATOR_CHARS}()."
_MAYBE_PHONE = re.compile(
    r"\d(?<!\d\d)"
    rf"(?!(?<=WH-[0-9])[0-9]{{7}}-[0-9]{{4}}(?![{_CLASS}]))"
    rf"[{_CLASS}]{{8,}}\d")
# That search stops at nearly every digit of a line's hex ids (its call id and trace id)
# to try the pattern there: about 30k instructions for a worker's line. In ASCII text it
# can only match inside a run of ten such characters in a row (digits and " -()."),
# which a translation of the text's bytes and a substring search rule out for less than
# a third of that. An issue id ("WH-20261121-0001", then a character outside the class)
# is such a run and the search skips it: it is taken out of the text first. What is
# taken out is a whole run (an "H" before it, no class character after) holding no match.
_ISSUE_ID_RUN = re.compile(rf"WH-[0-9]{{8}}-[0-9]{{4}}(?![{_CLASS}])")
_ISSUE_ID_LENGTH = len("WH-20261121-0001")
_ASCII_RUN_CHARS = bytes.maketrans(b"0123456789 -().", b"#" * 15)
_TEN_IN_A_RUN = b"#" * 10


def _may_hold_phone(text: str) -> bool:
    """True when ``_MAYBE_PHONE`` finds something in ``text``; in ASCII text, also for
    some runs it would turn away (a row of dots or of hyphens), for less."""
    if not text.isascii():  # other scripts' digits, full-width separators: the pattern itself
        return _MAYBE_PHONE.search(text) is not None
    start = text.find("WH-")
    while start >= 0:
        if _ISSUE_ID_RUN.match(text, start):
            text = text[:start] + text[start + _ISSUE_ID_LENGTH:]
        else:
            start += 1
        start = text.find("WH-", start)
    return _TEN_IN_A_RUN in text.encode().translate(_ASCII_RUN_CHARS)


# A JSON Web Token (base64url header "{"... = "eyJ", payload, signature): staff tokens and
# residents' links. None should reach a log; one that does is cut out.
_TOKEN = re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
# An Open311 client's API key (``services.intake.open311.clients``: "o311_" and 43
# url-safe characters), pasted into a description or a note by mistake: as secret as a
# token, and Open311's public reads would publish it.
_OPEN311_KEY_PREFIX = "o311_"
_OPEN311_KEY = re.compile(r"o311_[A-Za-z0-9_\-]{20,}")
REDACTED_TOKEN = "[redacted]"
# The password in a URL (``amqp://user:PASSWORD@host``). kombu masks only the first
# address of a cluster's AMQP_URI in its "Error connecting to broker at …" lines.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+(@)")


# A value an error's text quotes (Python's repr: ``KeyError: '孙建国'``, ``unknown agency
# 'Margaret'``): the one place such text holds what was given rather than what Whistle
# wrote, where a name no list of residents knows would be shown as given. Kept only when
# shaped as a field name, a code, an event type or one of Whistle's ids (an issue's, or
# an event's 32 hex digits); otherwise shown by its length.
_QUOTED = re.compile(r"'([^'\n]{1,500})'|\"([^\"\n]{1,500})\"")
_NAME_OF_A_THING = re.compile(r"[a-z_][a-z0-9_.]{0,63}|WH-\d{8}-\d{4,}|[0-9a-f]{32}")


def quoted_values_withheld(text: str) -> str:
    """``text`` with every value it quotes that is not shaped as the name of a thing (a
    field, a code, an id) replaced by its length: ``KeyError: '(text, 3 characters)'``."""
    if "'" not in text and '"' not in text:
        return text

    def shown(match: re.Match[str]) -> str:
        quoted = match.group(1) if match.group(1) is not None else match.group(2)
        if _NAME_OF_A_THING.fullmatch(quoted):
            return match.group(0)
        mark = match.group(0)[0]
        return f"{mark}(text, {len(quoted)} characters){mark}"
    return _QUOTED.sub(shown, text)


def scrub_text(text: str) -> str:
    """Mask every phone number, email address and URL password found anywhere in free
    text, and cut out any token or Open311 API key."""
    if "eyJ" in text:
        text = _TOKEN.sub(REDACTED_TOKEN, text)
    if _OPEN311_KEY_PREFIX in text:
        text = _OPEN311_KEY.sub(REDACTED_TOKEN, text)
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\1********\2", text)
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)) or "", text)
    elif not _MAYBE_PHONE.search(text):
        return text
    return _mask_phones(text)


# A UUID (8-4-4-4-12 hex digits: nameko's call ids, a trace's ids) is an identifier,
# never a resident's number, though its groups can read as one: "153-1340-4028" in
# "07a3f153-1340-4028-9c1e-…" is a mobile written with hyphens. A match inside one is
# left as it is, so the id still joins a call's log lines up. Only a match pays for this
# look, and few lines have one.
_UUID = re.compile(
    r"(?<![0-9A-Fa-f\-])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
    r"[0-9A-Fa-f]{12}(?![0-9A-Fa-f\-])")
_UUID_LENGTH = 36


def _inside_uuid(match: re.Match[str]) -> bool:
    for uuid in _UUID.finditer(match.string, max(0, match.start() - _UUID_LENGTH)):
        if uuid.start() > match.start():
            return False
        if match.end() <= uuid.end():
            return True
    return False


def _masked_phone(match: re.Match[str]) -> str:
    if _inside_uuid(match):
        return match.group(0)
    return mask_phone(match.group(0)) or ""


def _mask_phones(text: str) -> str:
    """Every phone number in ``text`` masked, whatever the script of its digits."""
    if text.isascii() or not _OTHER_DIGIT.search(text):
        return _PHONE.sub(_masked_phone, text)
    # The patterns search a copy with each digit in ASCII (one character for one, so a
    # match's span is the same in both); the rest of the text is kept as written.
    folded = _OTHER_DIGIT.sub(_ascii_digit, text)
    parts, end = [], 0
    for match in _PHONE.finditer(folded):
        parts += (text[end:match.start()], _masked_phone(match))
        end = match.end()
    parts.append(text[end:])
    return "".join(parts)


# Joins a line's values for the checks below: no pattern matches across it, and a value
# holding it only costs the slower road.
_VALUE_SEPARATOR = "\n"


def _may_need_scrubbing(text: str) -> bool:
    """False only when :func:`scrub_text` would return ``text`` as it is: its own checks,
    the phone one looser in ASCII text. A line it passes that holds no phone goes the
    slower road (each value through scrub_text's own checks) to the same result."""
    return ("eyJ" in text or _OPEN311_KEY_PREFIX in text or "@" in text
            or _may_hold_phone(text))


def scrub_fields(fields: dict[Any, Any], exempt: str, keys_checked: bool = False
                 ) -> dict[Any, Any]:
    """:func:`scrub` of every value of ``fields`` but ``exempt``'s, in place: a log line.
    Each value is scrubbed as a dict's value is (``scrub({key: value})``), so a line's own
    ``name=``, ``phone=`` or ``token=`` is masked by its key, as a nested one is (no call
    site logs one today; one that does must not print a resident's name).

    The same result as scrubbing each value, for much less: the text values, joined, go
    through :func:`scrub_text`'s cheap checks once, and only when the line as a whole
    fails them is each value scrubbed on its own (most lines hold nothing to mask).

    Its keys are masked as a dict's are (``log.info("seen", **by_phone)`` makes any text
    one). One set check of a line's keys tells the lines whose keys have all been seen
    before, with nothing to mask and none personal, from the others: it takes the place
    of the check for a personal key, at the same cost (bench.costs log-line)."""
    if not keys_checked and not _ORDINARY_LINE_KEYS.issuperset(fields):
        _scrub_line_keys(fields)  # rare: a key not seen before, one to mask or a personal one
        if not _PERSONAL_KEY_SET.isdisjoint(fields):
            return _scrub_with_personal_keys(fields, exempt)
    texts = []
    for key, value in fields.items():
        if isinstance(value, str):
            if key != exempt:
                texts.append(value)
        elif key == exempt or value.__class__ in _NOTHING_TO_MASK or (
                value.__class__ is int and -_NO_PHONE_BELOW < value < _NO_PHONE_BELOW):
            continue
        elif isinstance(value, dict | list | tuple):
            fields[key] = scrub(value)
        else:
            fields[key] = _scrub_other(value, _NO_NAMES)
    if texts and _may_need_scrubbing(_VALUE_SEPARATOR.join(texts)):
        for key, value in fields.items():
            if isinstance(value, str) and key != exempt:
                fields[key] = scrub_text(value)
    return fields


def _scrub_with_personal_keys(fields: dict[Any, Any], exempt: str) -> dict[Any, Any]:
    """:func:`scrub_fields` of a line holding a personal key: those values masked by their
    key, the rest as any line's, the keys kept in their order."""
    by_key = {k: _scrub_field(k, v, _NO_NAMES) for k, v in fields.items()
              if k in _PERSONAL_KEY_SET and k != exempt}
    # Neither those nor the exempt key: no personal key is left to come back here for.
    rest = scrub_fields({k: v for k, v in fields.items()
                         if k not in by_key and k != exempt}, exempt, keys_checked=True)
    scrubbed = {k: by_key[k] if k in by_key else rest.get(k, fields[k]) for k in fields}
    fields.clear()
    fields.update(scrubbed)
    return fields


# Keys of log lines seen with nothing to mask, none of them personal (a service's lines
# use a few dozen); at most this many are remembered, so keys made from data cannot grow
# it without bound (a line with a key beyond them has its keys checked every time).
_ORDINARY_LINE_KEYS: set[Any] = set()
_ORDINARY_LINE_KEYS_MAX = 4096


def _scrub_line_keys(fields: dict[Any, Any]) -> None:
    """A log line's own keys masked as a dict's are, in place, its values as they are;
    those with nothing to mask and not personal are remembered."""
    clean: set[Any] = set()
    scrubbed = _keys_scrubbed(fields, _NO_NAMES, clean)
    if len(_ORDINARY_LINE_KEYS) < _ORDINARY_LINE_KEYS_MAX:
        _ORDINARY_LINE_KEYS.update(clean - _PERSONAL_KEY_SET)
    if len(clean) != len(fields):
        fields.clear()
        fields.update(scrubbed)


def _keys_scrubbed(mapping: dict[Any, Any], names: frozenset[str],
                   clean: set[Any] | None = None) -> dict[Any, Any]:
    """``mapping``'s entries in order, each under its key masked as a value is
    (:func:`_scrub_key`), its value as it is; the text keys with nothing to mask are added
    to ``clean``. Two keys that mask to the same text (``13912345678`` and
    ``13900005678`` both show as ``139****5678``) are both kept: the later one is shown
    as ``139****5678 #2`` (``#3``, ...), never dropped."""
    out: dict[Any, Any] = {}
    for key, value in mapping.items():
        shown = _scrub_key(key, names)
        if clean is not None and shown == key and key.__class__ is str:
            clean.add(key)
        if shown in out:
            n = 2
            while f"{shown} #{n}" in out:
                n += 1
            shown = f"{shown} #{n}"
        out[shown] = value
    return out


def _scrub_key(key: Any, names: frozenset[str]) -> Any:
    """A dict's key masked as a value is: text scrubbed, a number whose digits make a
    phone as its masked text. A key JSON has no form for (a tuple, bytes, a timedelta)
    becomes its text, scrubbed: a log line's renderer would have raised on it."""
    if isinstance(key, str):
        return scrub(key, names)
    if key is None or isinstance(key, bool):
        return key
    if isinstance(key, int | float):
        return _scrub_other(key, names)
    if isinstance(key, Enum):  # as orjson shows it: its value
        return _scrub_key(key.value, names)
    return scrub(key.isoformat() if isinstance(key, date | time) else str(key), names)


def scrub(value: Any, names: frozenset[str] = frozenset()) -> Any:
    """Recursively mask phones in strings, and any of ``names`` appearing verbatim."""
    if isinstance(value, str):
        text = scrub_text(value)
        if not names:  # the common case (a log line, an audit entry): no sort to build
            return text
        # Longest first: "Wei" masked before "Wei Li" left "W** Li", the family name in
        # clear, depending on the set's order (it varies from process to process).
        for name in sorted(names, key=lambda n: (-len(n), n)):
            if name and name in text:
                text = text.replace(name, mask_name(name) or "")
        return text
    if isinstance(value, dict):  # keys masked too: {"13912345678": 1} is a phone in clear
        return {k: _scrub_field(k, v, names) for k, v in _keys_scrubbed(value, names).items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v, names) for v in value)
    return _scrub_other(value, names)


_NO_NAMES: frozenset[str] = frozenset()
# None and booleans: most of a log line's values that are not text (with small ints).
_NOTHING_TO_MASK = frozenset({type(None), bool})
# Rendered as they are (orjson has JSON for each), and no resident's data fits in one.
_KEPT_AS_THEY_ARE = (type(None), bool, datetime, date, time, timedelta, UUID)
# No phone the patterns match has fewer than ten digits: a count, a status or a duration
# never comes near.
_NO_PHONE_BELOW = 10**9


def _scrub_other(value: Any, names: frozenset[str]) -> Any:
    """A value that is neither text nor a dict, list or tuple, masked as it would be
    shown: the renderers write anything without a JSON form as its ``str()``
    (``shared.logging._json``; the console's as its ``repr()``), so a phone held in
    bytes, a set, an exception or a model reached the line in clear. Numbers stay
    numbers unless their digits make a phone (13912345678 passed as an int)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if -_NO_PHONE_BELOW < value < _NO_PHONE_BELOW:
            return value
        try:
            text = str(value)
        except ValueError:  # an int beyond str()'s digit limit: no phone, and no text
            return value
        masked = scrub_text(text)
        return value if masked == text else masked
    if isinstance(value, _KEPT_AS_THEY_ARE):
        return value
    if isinstance(value, Enum):
        return scrub(value.value, names)
    if not isinstance(value, type):
        try:  # a model or a dataclass: its fields, by key (a name under "name" masked)
            if callable(getattr(value, "model_dump", None)):  # pydantic
                return scrub(value.model_dump(mode="json"), names)
            if dataclasses.is_dataclass(value):
                return scrub(dataclasses.asdict(value), names)
        except Exception:  # noqa: BLE001 - a field with no plain form: its text, below
            pass
    if isinstance(value, set | frozenset):
        return scrub(list(value), names)
    return scrub(str(value), names)  # bytes, an exception, a path, ...: the text shown


def _redact(value: str) -> str:
    return REDACTED_TOKEN if value else value


_PERSONAL_KEYS = {"phone": mask_phone, "name": mask_name, "resident_name": mask_name,
                  "resident_phone": mask_phone, "email": mask_email, "token": _redact}
_PERSONAL_KEY_SET = frozenset(_PERSONAL_KEYS)


def _scrub_field(key: Any, value: Any, names: frozenset[str]) -> Any:
    masker = _PERSONAL_KEYS.get(key) if isinstance(key, str) else None
    if masker is not None:
        if isinstance(value, str):
            return masker(value)
        if isinstance(value, int | float | bytes) and not isinstance(value, bool):
            # {"phone": 13700009999}: its text masked as the key says, however short
            return masker(value.decode(errors="replace") if isinstance(value, bytes)
                          else str(value))
    return scrub(value, names)


def contact_names(contact: dict[str, Any] | None) -> frozenset[str]:
    """The reporter's name and its parts, to mask wherever they appear in free text. Pure.

    "Li Wei": "Wei" too, but not a two-letter part that hides inside ordinary words."""
    name = ((contact or {}).get("name") or "").strip()
    if not name:
        return frozenset()
    return frozenset({name, *(p for p in name.split() if len(p) >= 3)})


def contact_erased_from(value: Any, contact: dict[str, Any] | None) -> Any:
    """``value`` (parsed JSON: a record, a journal entry, a note) with the resident's own
    name (:func:`contact_names`), phone and email replaced in every text by their masked
    forms (``孙**``, ``138****5678``), and nothing else touched: what erasure leaves of
    the contact in the resident's own words. Pure."""
    contact = contact or {}
    found = {name: mask_name(name) for name in contact_names(contact)}
    for key, masker in (("phone", mask_phone), ("email", mask_email)):
        given = (contact.get(key) or "").strip()
        if given:
            found[given] = masker(given)
    if not found:
        return value
    order = sorted(found, key=lambda text: (-len(text), text))  # "Li Wei" before "Wei"

    def erased(item: Any) -> Any:
        if isinstance(item, str):
            for text in order:
                if text in item:
                    item = item.replace(text, found[text] or "")
            return item
        if isinstance(item, dict):
            return {key: erased(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [erased(inner) for inner in item]
        return item

    return erased(value)

"""Masking of residents' personal data (phone numbers and names).

Phone numbers and names stay with the desk and the agency handling the case;
they never appear in logs, traces or the tail output. These helpers are used by
the logging processors, the issue view and ``whistle tail``.
"""

from __future__ import annotations

import re
from typing import Any

# Mainland mobiles (1[3-9]x, 11 digits), with optional +86 and separators, and
# landlines with an area code (010-12345678). Matches inside Chinese text too,
# where \b does not help, so digits around the match are excluded explicitly.
_DIGIT_CHARS = "0-9０-９"
_SEPARATOR_CHARS = " \\-　－"
_D = f"[{_DIGIT_CHARS}]"
_SEP = f"[{_SEPARATOR_CHARS}]"
_PHONE = re.compile(
    rf"(?<!{_D})(?:[+＋]?[8８][6６]{_SEP}?)?([1１][3-9３-９]{_D}){_SEP}?({_D}{{4}}){_SEP}?({_D}{{4}})(?!{_D})"
    rf"|(?<!{_D})([0０][1-9１-９]{_D}{{1,2}}){_SEP}({_D}{{3,4}}){_SEP}?({_D}{{4}})(?!{_D})"
)
_DIGITS = re.compile(r"[0-9]")


# Residents typing in full-width mode (１３８…) must be masked too.
_FULL_WIDTH = str.maketrans("０１２３４５６７８９－　＋", "0123456789- +")


def mask_phone(phone: str | None) -> str | None:
    """``13812345678`` -> ``138****5678``; anything else keeps only its last 4 digits."""
    if not phone or "*" in phone:
        return phone  # empty, or masked already (an erased contact keeps only its mask)
    phone = phone.translate(_FULL_WIDTH)
    digits = "".join(_DIGITS.findall(phone))
    if len(digits) >= 11 and digits[-11] == "1":
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


# Every phone number either pattern matches is ten or more digits and separators in
# a row, from a digit to a digit ("138 1234 5678", "010-12345678"); every email
# address has an "@". Text with neither cannot hold one. Most logged values (event
# names, agencies, hex ids) have neither, and this one cheap search spares them the
# two full patterns, on every log line.
_MAYBE_PHONE = re.compile(f"{_D}[{_DIGIT_CHARS}{_SEPARATOR_CHARS}]{{8,}}{_D}")


# A JSON Web Token (base64url header "{"... = "eyJ", payload, signature): staff tokens and
# residents' links. None should reach a log; one that does is cut out.
_TOKEN = re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
REDACTED_TOKEN = "[redacted]"
# The password in a URL (``amqp://user:PASSWORD@host``). kombu masks only the first
# address of a cluster's AMQP_URI in its "Error connecting to broker at …" lines.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+(@)")


def scrub_text(text: str) -> str:
    """Mask every phone number, email address and URL password found anywhere in free
    text, and cut out any token."""
    if "eyJ" in text:
        text = _TOKEN.sub(REDACTED_TOKEN, text)
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\1********\2", text)
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)) or "", text)
    elif not _MAYBE_PHONE.search(text):
        return text
    return _PHONE.sub(lambda m: mask_phone(m.group(0)) or "", text)


def scrub(value: Any, names: frozenset[str] = frozenset()) -> Any:
    """Recursively mask phones in strings, and any of ``names`` appearing verbatim."""
    if isinstance(value, str):
        text = scrub_text(value)
        # Longest first: "Wei" masked before "Wei Li" left "W** Li", the family name in
        # clear, depending on the set's order (it varies from process to process).
        for name in sorted(names, key=lambda n: (-len(n), n)):
            if name and name in text:
                text = text.replace(name, mask_name(name) or "")
        return text
    if isinstance(value, dict):
        return {k: _scrub_field(k, v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v, names) for v in value)
    return value


def _redact(value: str) -> str:
    return REDACTED_TOKEN if value else value


_PERSONAL_KEYS = {"phone": mask_phone, "name": mask_name, "resident_name": mask_name,
                  "resident_phone": mask_phone, "email": mask_email, "token": _redact}


def _scrub_field(key: Any, value: Any, names: frozenset[str]) -> Any:
    masker = _PERSONAL_KEYS.get(key) if isinstance(key, str) else None
    if masker is not None and isinstance(value, str):
        return masker(value)
    return scrub(value, names)

"""Typed errors shared by every service.

Each error knows its HTTP status and a stable machine-readable ``code``, so the
same exception becomes a JSON 4xx over HTTP and a typed exception over RPC.
They are registered with :func:`nameko.exceptions.deserialize_to_instance`, so a
``ClusterRpcProxy`` caller gets the very same class back instead of a
``RemoteError``: ``except Forbidden:`` works across the wire.

Arguments are kept JSON-safe (strings and lists of dicts) because nameko
serialises ``exc.args`` to rebuild the instance on the caller's side.
"""

from __future__ import annotations

from typing import Any

from nameko.exceptions import deserialize_to_instance
from pydantic import ValidationError

# What a value refused by a pattern must look like, in words, by the pattern: a regex
# ("String should match pattern '^\\+?[0-9][0-9 \\-]{5,19}$'") is no answer for a clerk or
# a client's developer. Filled by :func:`described_pattern` where each pattern is defined.
_PATTERN_WORDS: dict[str, str] = {}


def described_pattern(regex: str, words: str) -> str:
    """``regex``, remembered with what it asks for in words (``"a phone number: …"``), so
    that a value it refuses gets the error "must be a phone number: …"."""
    _PATTERN_WORDS[regex] = words
    return regex


# What to give, in plain words, for pydantic's own errors (their "String should have at
# least 1 character", "Input should have timezone info" name pydantic's types, not what a
# clerk or an operator should type). The field is named beside it (``fields[].field``,
# ``since: …``), so the words say only what the value must be. A date and time's example
# has a zone: every one Whistle takes from outside is zone-aware.
_A_MOMENT = "a date and time with its zone, e.g. 2026-12-06T00:00:00+08:00"
_PLAIN_WORDS: dict[str, str] = {
    "missing": "is missing: give a value",
    "extra_forbidden": "is not a field this takes: leave it out",
    "string_type": "give text (a JSON string)",
    "string_too_long": "too long: give at most {max_length} characters",
    "too_short": "give at least {min_length} item(s)",
    "too_long": "give at most {max_length} item(s)",
    "timezone_aware": f"give {_A_MOMENT}",
    "timezone_naive": "give a date and time without a zone, e.g. 2026-12-06T00:00:00",
    "datetime_type": f"give {_A_MOMENT}",
    "datetime_parsing": f"give {_A_MOMENT}",
    "datetime_from_date_parsing": f"give {_A_MOMENT}",
    "int_type": "give a whole number",
    "int_parsing": "give a whole number",
    "int_from_float": "give a whole number",
    "float_type": "give a number",
    "float_parsing": "give a number",
    "greater_than": "give a number more than {gt}",
    "greater_than_equal": "give a number of at least {ge}",
    "less_than": "give a number less than {lt}",
    "less_than_equal": "give a number of at most {le}",
    "literal_error": "give one of {expected}",
    "enum": "give one of {expected}",
}


def _plain_words(err: dict[str, Any]) -> str | None:
    if err["type"] == "string_too_short":
        least = (err.get("ctx") or {}).get("min_length", 1)
        return ("is empty: give at least 1 character" if least == 1
                else f"too short: give at least {least} characters")
    words = _PLAIN_WORDS.get(err["type"])
    if words is None:
        return None
    try:
        return words.format(**(err.get("ctx") or {}))
    except (KeyError, IndexError):  # a context without the number: pydantic's own words
        return None


def _message(err: dict[str, Any]) -> str:
    if (words := _plain_words(err)) is not None:
        return words
    if err["type"] == "model_type":
        # pydantic's own words name the model's class, which the caller never sees
        return "must be a JSON object" if err["loc"] else "body must be a JSON object"
    if err["type"] in ("bool_type", "bool_parsing"):
        # a strict boolean (shared.contracts.ClientBool): "yes" was read as true
        return "must be true or false (a JSON boolean, not a string or a number)"
    if err["type"] == "string_pattern_mismatch":
        words = _PATTERN_WORDS.get((err.get("ctx") or {}).get("pattern", ""))
        return f"must be {words}" if words else "is not in the expected format"
    # our validators' own words, without pydantic's "Value error, " before them
    return err["msg"].removeprefix("Value error, ")


class WhistleError(Exception):
    """Base class: an expected, user-facing failure with a clear message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message, errors or [])
        self.message = message
        self.errors = errors or []

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.errors:
            body["error"]["fields"] = self.errors
        return body


@deserialize_to_instance
class InvalidPayload(WhistleError):
    """A request or message failed validation. ``errors`` names every bad field."""

    status = 422
    code = "invalid_payload"

    @classmethod
    def from_validation_error(cls, exc: ValidationError, what: str = "request") -> InvalidPayload:
        fields = [
            {
                "field": ".".join(str(part) for part in err["loc"]) or "(body)",
                "message": _message(err),
                "type": err["type"],
            }
            for err in exc.errors(include_input=False, include_url=False)
        ]
        names = ", ".join(f["field"] for f in fields)
        return cls(f"invalid {what}: {names}", fields)


def unknown_value(field: str, value: str, known: list[str], what: str,
                  alternative: str = "") -> InvalidPayload:
    """A value outside a closed set (an agency, a category the rules do not know): a 422
    naming ``field`` and listing the values it takes. As a list's filter a typo matched
    nothing, and an empty list hid it from the desk; as a field it was ignored."""
    message = f"unknown {what} {value!r}; one of {', '.join(known)}{alternative}"
    return InvalidPayload(f"unknown {what} {value!r}", [
        {"field": field, "type": "unknown", "message": message}])


@deserialize_to_instance
class MalformedBody(WhistleError):
    """The body is not JSON, not UTF-8, too large, or of the wrong content type."""

    status = 400
    code = "malformed_body"


@deserialize_to_instance
class Unauthorized(WhistleError):
    status = 401
    code = "unauthorized"


@deserialize_to_instance
class Forbidden(WhistleError):
    status = 403
    code = "forbidden"


@deserialize_to_instance
class NotFound(WhistleError):
    status = 404
    code = "not_found"


@deserialize_to_instance
class InvalidTransition(WhistleError):
    """The action is not allowed in the current state (e.g. resolve before 报到)."""

    status = 409
    code = "invalid_transition"


@deserialize_to_instance
class PayloadTooLarge(WhistleError):
    """The body is over the limit; refused before it is read."""

    status = 413
    code = "payload_too_large"


@deserialize_to_instance
class RateLimited(WhistleError):
    """This client made too many requests of this kind in the window. ``retry_after``
    (seconds) becomes the ``Retry-After`` header."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None,
                 retry_after: int = 1):
        super().__init__(message, errors)
        self.retry_after = max(1, int(retry_after))


@deserialize_to_instance
class Unavailable(WhistleError):
    """A backing store or the broker is down; the caller should retry later."""

    status = 503
    code = "unavailable"


EXPECTED_ERRORS = (WhistleError,)

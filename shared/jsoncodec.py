"""JSON on the hot path: orjson, with the output the standard library gave us.

Every event is encoded into its outbox entry, decoded for the journal and for
publishing, encoded as the message body, and decoded again by each consumer
(kombu's decoder calls a Python hook for every object in it). orjson does each
of these several times faster than ``json``. For our data (string keys, str, int,
bool, None, lists and dicts) :func:`dumps` gives exactly
``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``; a float in
exponent form is spelled ``1e-8`` instead of ``1e-08``, the same number.

Moments have one spelling in every JSON answer, the one pydantic writes: ISO 8601
with UTC as ``Z`` (``2026-12-06T13:00:00Z``). :func:`dumps` writes a datetime so
(``OPT_UTC_Z``, in C); code that formats a moment itself uses :func:`utc_moment`.
Stored text written before with ``+00:00`` reads the same (``datetime.fromisoformat``
takes both); :func:`utc_text` respells it for an answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from kombu import serialization
from kombu.utils import json as kombu_json

loads = orjson.loads

# kombu writes the types JSON lacks (datetime, Decimal, UUID...) as
# {"__type__": ..., "__value__": ...}; nameko's RPC payloads may hold them.
_KOMBU_TYPED = b'"__type__"'


_UTC_OFFSET = "+00:00"
_OPTIONS = orjson.OPT_UTC_Z


def dumps(value: Any) -> str:
    return orjson.dumps(value, option=_OPTIONS).decode()


def dumps_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTIONS)


def utc_moment(moment: datetime) -> str:
    """``moment`` as JSON answers spell it: ISO 8601, UTC as ``Z`` (another offset is
    kept, as pydantic keeps it)."""
    text = moment.isoformat()  # not through utc_text: one call less, once per event
    return text[:-6] + "Z" if text.endswith(_UTC_OFFSET) else text


def utc_text(text: str) -> str:
    """A stored ISO 8601 moment respelled for an answer: ``+00:00`` becomes ``Z``."""
    return text[:-6] + "Z" if text.endswith(_UTC_OFFSET) else text


def _kombu_loads(data: bytes | bytearray | memoryview | str) -> Any:
    if isinstance(data, memoryview | bytearray):
        data = bytes(data)
    typed = _KOMBU_TYPED if isinstance(data, bytes) else _KOMBU_TYPED.decode()
    if typed in data:
        return kombu_json.loads(data)  # kombu's own decoder restores those types
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # What the standard library reads and orjson refuses (NaN, Infinity, 1e400),
        # and what is not JSON at all: kombu's decoder has the last word, and its error.
        return kombu_json.loads(data)


_JSON = "application/json"


def read_message_body(message) -> Any:
    """A consumed message's body, as ``message.decode()`` gives it (kombu's decoding with
    :func:`use_for_kombu`), in one orjson call on its bytes when it is plainly ours: UTF-8
    JSON, accepted, none of kombu's typed values. Every event Whistle publishes is.

    kombu's road turns the bytes into text first (and py-amqp had done so already unless
    the channel's ``auto_decode`` is off), then orjson turns the text back into UTF-8 to
    read it. Anything else, and a body orjson refuses, takes that road, so what it reads
    and what it refuses (``DecodeError``, ``ContentDisallowed``) stay kombu's."""
    body = message.body
    if (type(body) is bytes and message.content_type == _JSON
            and message.content_encoding == "utf-8"
            and message.accept is not None and _JSON in message.accept
            and _KOMBU_TYPED not in body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # kombu's decoder has the last word, and its error
    return message.decode()


def use_for_kombu() -> None:
    """Decode ``application/json`` messages with orjson in this process (idempotent).

    kombu's encoder stays: it writes the typed values above, which orjson would
    write differently. A body orjson cannot read goes to kombu's decoder, so anything
    the standard library reads is still read, and a body that is not JSON still
    raises kombu's ``DecodeError``. One difference is left: an integer beyond 64 bits
    comes back as a float (none of our contracts carries one).
    """
    serialization.registry.register("json", kombu_json.dumps, _kombu_loads,
                                    content_type="application/json", content_encoding="utf-8")

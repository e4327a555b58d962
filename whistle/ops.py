"""What ``whistle status`` and ``whistle dlq`` read and do, without the printing.

- RabbitMQ is read through its management HTTP API (``WHISTLE_RABBIT_API``),
  on the vhost named by ``AMQP_URI``'s path (``/`` when empty, as kombu reads it).
  Its queue figures are the broker's statistics, refreshed every few seconds
  (``collect_statistics_interval``, 5 s by default), so they may lag a little.
- Redis is read with the key scheme of :class:`shared.store.Keys`.
- Dead letters are *looked at* through the management API's "get messages"
  with ``ack_requeue_true``: the broker hands them over and puts each back
  where it was, so listing removes nothing.
- Dead letters are *replayed* over AMQP, in one pass (see :func:`replay_dead_letters`),
  or set aside for good (:func:`set_aside_dead_letters`).

Nothing here shows a message body as it is: every preview, reason and issue id
passes through :func:`shared.privacy.scrub` / :func:`shared.privacy.scrub_text`.
A backend that does not answer raises :class:`Unreachable`, whose text is the
sentence shown to the operator (never a traceback, never a password).
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from shared.contracts import IssueStatus
from shared.messaging import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    EVENT_TYPE_HEADER,
    FAILED_AT_HEADER,
    QUEUE_HEADER,
    ROUTING_KEY_HEADER,
    WAITS_HEADER,
)
from shared.privacy import quoted_values_withheld, scrub, scrub_text
from shared.topology import (
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_QUEUE_NAME,
    MESSAGE_NAME,
    SERVICES,
    SUBSCRIPTIONS,
    WHISTLE_ID,
)

HTTP_TIMEOUT_S = 5.0
PREVIEW_CHARS = 200
# Every event carries these (shared.contracts.Event); a preview shows what else it says.
ENVELOPE_FIELDS = frozenset({"event_id", "trace_id", "causation_id", "occurred_at",
                             "schema_version", "issue_id"})
# The management API returns at most this much of each body; enough to read its issue id.
PEEK_TRUNCATE_BYTES = 64 * 1024
_ISSUE_ID_IN_TEXT = re.compile(r'"issue_id"\s*:\s*"(WH-\d{8}-\d{4,})"')
# The ids a dead letter is shown by, beside its body: only when shaped as ids. A garbled
# or forged body can carry anything there, a resident's name included.
_ISSUE_ID = re.compile(r"WH-\d{8}-\d{4,}")
_EVENT_ID = WHISTLE_ID  # any 1-128 letters and digits were shown: a phone number too


def _id_shown(value: Any, shape: re.Pattern, otherwise: str) -> str | None:
    if value is None:
        return None
    return scrub_text(value) if isinstance(value, str) and shape.fullmatch(value) else otherwise
RPC_QUEUE = "rpc-{}"  # nameko.rpc.RPC_QUEUE_TEMPLATE: one consumer per running instance
# Headers a replayed message leaves behind, so that it gets a fresh set of attempts.
# RabbitMQ's own dead-lettering records go too: the replayed message starts afresh.
REPLAY_DROPS_HEADERS = (ERROR_HEADER, ATTEMPTS_HEADER, WAITS_HEADER, "x-death",
                        "x-first-death-exchange", "x-first-death-queue",
                        "x-first-death-reason", "x-delivery-count")


class Unreachable(RuntimeError):
    """A backend did not answer as expected; ``str()`` is what the operator reads."""


def cannot_reach(what: str, url: str, exc: BaseException):
    """The CLI's one line (exit 1) for a backend out of reach, as `whistle tail` and
    `status` say it: ``cannot reach Redis at 127.0.0.1:6379/0 (Connection refused)``,
    never the client library's exception class alone."""
    import click

    return click.ClickException(f"cannot reach {what} at {where(url)} ({short_reason(exc)})")


# ------------------------------------------------------------------ addresses


def vhost_of(amqp_uri: str) -> str:
    """The vhost kombu connects to for ``amqp_uri``: its path, ``/`` when empty (the first
    node's, when it lists several)."""
    from shared.config import broker_uris

    path = urlsplit(broker_uris(amqp_uri)[0]).path
    path = path[1:] if path.startswith("/") else path
    return unquote(path) or "/"


def where(url: str) -> str:
    """``host:port`` (and a Redis db path) of ``url``, without any credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    address = f"{host}:{parts.port}" if parts.port else host
    return address + (parts.path if parts.scheme.startswith("redis") and parts.path != "/" else "")


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _causes(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < 12:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)
        exc = exc if isinstance(exc, BaseException) else None


def short_reason(exc: BaseException) -> str:
    """``Connection refused`` rather than three lines of urllib3 or redis-py."""
    for cause in _causes(exc):
        if isinstance(cause, TimeoutError | requests.Timeout):
            return "timed out"
        if getattr(cause, "reply_text", None):  # the broker's own refusal, from py-amqp
            return str(cause.reply_text)  # "NOT_ALLOWED - vhost nope not found"
        if isinstance(cause, ssl.SSLError):  # its errno is OpenSSL's code: 1 read "Operation
            # not permitted" (https:// at a plain-HTTP port)
            return f"TLS: {cause.reason or cause.strerror or type(cause).__name__}"
        if isinstance(cause, OSError) and cause.strerror:
            # the errno's standard text: some platforms put "ECONNREFUSED" in strerror
            return os.strerror(cause.errno) if isinstance(cause.errno, int) and cause.errno > 0 \
                else cause.strerror
    found = _ERRNO.search(str(exc))
    if found:
        return found.group(1).strip()
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


# ------------------------------------------------------------ management API


class ManagementApi:
    """The few RabbitMQ management API calls Whistle's operators need, on one vhost."""

    def __init__(self, api_url: str, vhost: str):
        # A cluster's nodes each serve the API: ``http://a:15672;http://b:15672`` lists
        # them, and each call goes to the first that answers.
        self.apis = []
        for url in (part.strip() for part in api_url.split(";") if part.strip()):
            parts = urlsplit(url)
            host = parts.netloc.rpartition("@")[2]  # credentials go in auth, never a message
            auth = (unquote(parts.username), unquote(parts.password or "")) \
                if parts.username else None
            self.apis.append((f"{parts.scheme}://{host}{parts.path.rstrip('/')}/api", auth,
                              where(url)))
        self.base, self.auth, self.location = self.apis[0]
        self.vhost = vhost

    def _call(self, method: str, path: str, **kwargs) -> Any:
        for base, auth, location in self.apis:
            try:
                response = requests.request(method, f"{base}{path}", auth=auth,
                                            timeout=HTTP_TIMEOUT_S, **kwargs)
            except requests.RequestException as exc:
                if (base, auth, location) == self.apis[-1]:
                    raise Unreachable(f"RabbitMQ management API unreachable at "
                                      f"{', '.join(api[2] for api in self.apis)} "
                                      f"({short_reason(exc)})") from None
                continue
            self.base, self.auth, self.location = base, auth, location
            break
        if response.status_code == 404:
            raise Unreachable(f"RabbitMQ management API at {self.location}: "
                              f"{self._what(path)} not found")
        if response.status_code == 401:  # also what a vhost that does not exist answers
            raise Unreachable(f"RabbitMQ management API at {self.location} refused the "
                              "account (HTTP 401): check the user and password in "
                              f"WHISTLE_RABBIT_API, and that vhost {self.vhost!r} exists")
        if not response.ok:
            raise Unreachable(f"RabbitMQ management API unreachable at {self.location} "
                              f"(HTTP {response.status_code} {response.reason})")
        try:
            return response.json()
        except ValueError:
            raise Unreachable(f"RabbitMQ management API at {self.location} did not answer "
                              "JSON (is that the management port?)") from None

    def _what(self, path: str) -> str:
        queue = path.split("/")[3] if path.count("/") >= 3 else None
        return f"queue {unquote(queue)!r} in vhost {self.vhost!r}" if queue \
            else f"vhost {self.vhost!r}"

    @property
    def _vhost_path(self) -> str:
        return quote(self.vhost, safe="")

    def queues(self) -> dict[str, dict]:
        """Every queue of the vhost: name -> consumers, messages (ready, unacked)."""
        columns = "name,consumers,messages,messages_ready,messages_unacknowledged"
        found = self._call("GET", f"/queues/{self._vhost_path}", params={"columns": columns})
        return {q["name"]: q for q in found}

    def peek(self, queue: str, count: int) -> list[dict]:
        """The first ``count`` messages of ``queue``, each put back where it was."""
        return self._call("POST", f"/queues/{self._vhost_path}/{quote(queue, safe='')}/get",
                          json={"count": count, "ackmode": "ack_requeue_true",
                                "encoding": "auto", "truncate": PEEK_TRUNCATE_BYTES})


# --------------------------------------------------------------------- status


def _depth(stats: dict | None) -> dict[str, Any]:
    if stats is None:
        return {"exists": False, "consumers": None, "ready": None, "unacked": None}
    return {"exists": True, "consumers": stats.get("consumers", 0),
            "ready": stats.get("messages_ready", 0),
            "unacked": stats.get("messages_unacknowledged", 0)}


def rabbit_status(api: ManagementApi) -> dict[str, Any]:
    """Per service: its RPC queue (consumers = running instances) and its event
    queues with their retry queues; and the dead-letter queue."""
    queues = api.queues()
    services = {}
    for service in SERVICES:
        rpc_name = RPC_QUEUE.format(service)
        subscriptions = []
        for sub in SUBSCRIPTIONS:
            if sub.service != service:
                continue
            retry = queues.get(sub.retry_queue.name)
            subscriptions.append({"queue": sub.queue_name, **_depth(queues.get(sub.queue_name)),
                                  "retry_queue": sub.retry_queue.name,
                                  "retrying": retry.get("messages", 0) if retry else None})
        rpc = {"queue": rpc_name, **_depth(queues.get(rpc_name))}
        services[service] = {"instances": rpc["consumers"] or 0, "rpc": rpc,
                             "queues": subscriptions}
    dead = queues.get(DEAD_LETTER_QUEUE_NAME)
    return {"services": services,
            "dead_letter": {"queue": DEAD_LETTER_QUEUE_NAME, "exists": dead is not None,
                            "messages": dead.get("messages", 0) if dead else 0}}


def redis_status(url: str, prefix: str) -> dict[str, Any]:
    """PING, memory, AOF, uptime, and the counts Whistle keeps under ``prefix``."""
    import redis

    from shared.store import Keys, connect

    keys = Keys(prefix)
    client = connect(url)
    try:
        client.ping()
        info = client.info()
        pipe = client.pipeline(transaction=False)
        for status in IssueStatus:
            pipe.scard(keys.by_status(status.value))
        for service in SERVICES:
            pipe.hlen(keys.outbox(service))
        pipe.zcard(keys.deadlines)
        pipe.llen(keys.desk_outbox)
        counts = pipe.execute()
    except redis.RedisError as exc:
        raise Unreachable(f"Redis unreachable at {where(url)} ({short_reason(exc)})") from None
    finally:
        client.close()
    statuses = [s.value for s in IssueStatus]
    return {
        "used_memory_human": info.get("used_memory_human"),
        "aof_enabled": bool(int(info.get("aof_enabled", 0))),
        "uptime_s": int(info.get("uptime_in_seconds", 0)),
        "version": info.get("redis_version"),
        "issues": dict(zip(statuses, counts[:len(statuses)], strict=True)),
        "outbox": dict(zip(SERVICES, counts[len(statuses):-2], strict=True)),
        "deadlines": counts[-2],
        "to_relay": counts[-1],
    }


# --------------------------------------------------------------- dead letters


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub("·", text.replace("\n", " ").replace("\t", " "))


def _shorten(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# What a preview shows of a body: only what is known safe by its shape, never free text.
# A resident's name can be masked only where it is known (the issue's residents, from
# Redis or the archive); one that belongs to no stored issue (a neighbour named in a
# description, a forged or garbled body) has no shape to be recognised by, and was shown
# in clear. An operator needs to know which issue and what kind of message failed, and
# why (the reason): the residents' words stay with the desk (`dlq drop --save` keeps a
# dead letter whole, for whoever may read it).
# Fields whose value is a code from a closed set (an agency, a category, a status...):
# shown when shaped as one. Any other text is shown as its length.
_CODE_FIELDS = frozenset({
    "agency", "agencies", "lead", "support", "remaining_agencies", "category",
    "previous_category", "priority", "role", "status", "channel", "preferred_channel",
    "language", "supervisor_language", "level", "issue_level", "deadline", "sector",
    "source", "closed_by", "method"})
_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?")


def known_safe(value: Any, field_name: str | None = None) -> Any:
    """``value`` (parsed JSON) with only what is known safe by its shape: field names,
    numbers (one shaped as a phone masked), true/false/null, Whistle's ids, times, and
    codes under the fields that hold codes; any other text as ``(text, N characters)``,
    a field name not shaped as one as ``(field N)``. Pure."""
    if isinstance(value, dict):
        return {(key if isinstance(key, str) and _FIELD_NAME.fullmatch(key)
                 else f"(field {at})"): known_safe(inner, key if isinstance(key, str) else None)
                for at, (key, inner) in enumerate(value.items(), 1)}
    if isinstance(value, list):
        return [known_safe(inner, field_name) for inner in value]
    if isinstance(value, str):
        if (_ISSUE_ID.fullmatch(value) or WHISTLE_ID.fullmatch(value)
                or _MOMENT.fullmatch(value)
                or (field_name in _CODE_FIELDS and _CODE.fullmatch(value))):
            return value
        return f"(text, {len(value)} characters)"
    return scrub(value)  # a number, true, false or null; a number can be a phone


NAMES_UNKNOWN = ("(not shown: the residents' names could not be read from Redis or the "
                 "archive to mask them)")


def residents_names(redis_url: str, prefix: str, letters: list[DeadLetter],
                    database_url: str | None = None) -> dict[str, frozenset[str]] | None:
    """The names (and their parts) every resident of each dead letter's merged group gave
    (``IssueStore.merged_groups``), by issue id, to mask in its preview as Open311's
    public reads do; ``None`` when Redis, or the archive where a closed issue and its
    contact go (``database_url``), cannot be read. The group's own: an agency's note,
    copied into each report's text, can name any of its residents."""
    from services.intake.open311.mapping import names_of
    from shared.archive import Archive
    from shared.store import IssueStore, connect

    ids = sorted({i for i in (letter.issue_of() for letter in letters) if i})
    if not ids:
        return {}
    client, archive = connect(redis_url), None
    try:
        archive = Archive(database_url) if database_url else None
        store = IssueStore(client, prefix, archive)
        groups = store.merged_groups(ids)
        contacts = store.contacts(sorted(set().union(*groups.values())))
    except Exception:  # noqa: BLE001 - out of reach or refused: the bodies are withheld
        return None
    finally:
        client.close()
        if archive is not None:
            archive.close()
    return {i: frozenset().union(*(names_of(contacts.get(m) or {}) for m in group))
            for i, group in groups.items()}


def names_in(letter: DeadLetter, names: dict[str, frozenset[str]] | None) -> frozenset[str] | None:
    """``describe``'s ``names`` for one letter, from :func:`residents_names`."""
    if names is None:
        return None
    return names.get(letter.issue_of(), frozenset())


_ERROR_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}: ")
def _error_class(reason: str) -> str:
    """The error's class a reason starts with (``NotFound: ``), if it does."""
    found = _ERROR_CLASS.match(reason)
    return found.group(0) if found else ""


@dataclass
class DeadLetter:
    """One message of ``whistle.dead-letter``, by its position from the head (1-based)."""

    position: int
    headers: dict[str, Any]
    body: bytes
    content_type: str | None = None
    size: int | None = None
    message: Any = field(default=None, repr=False)  # the kombu message, when replaying

    @classmethod
    def from_api(cls, position: int, message: dict) -> DeadLetter:
        properties = message.get("properties") or {}
        payload = message.get("payload") or ""
        body = base64.b64decode(payload) if message.get("payload_encoding") == "base64" \
            else payload.encode("utf-8")
        return cls(position, properties.get("headers") or {}, body,
                   properties.get("content_type"), message.get("payload_bytes", len(body)))

    @classmethod
    def from_kombu(cls, position: int, message) -> DeadLetter:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        return cls(position, dict(message.headers or {}), body, message.content_type,
                   len(body), message)

    @property
    def _death(self) -> dict:
        """RabbitMQ's own record of the latest dead-lettering (``x-death``), if it did it:
        a quorum queue's delivery limit (``shared.topology.QUORUM_DELIVERY_LIMIT``)."""
        deaths = self.headers.get("x-death")
        return deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) \
            else {}

    @property
    def original_queue(self) -> str | None:
        return self.headers.get(QUEUE_HEADER) or self._death.get("queue") or None

    def parsed(self) -> Any:
        """The body as JSON, or ``None`` when it is not UTF-8 JSON (it is still replayable)."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None

    def issue_of(self) -> str | None:
        """The issue the body is about: its ``issue_id``; in a body that does not parse (cut
        at ``PEEK_TRUNCATE_BYTES``), the first ``"issue_id": "WH-…"`` it gives, so that its
        resident's name is masked in the preview all the same."""
        parsed = self.parsed()
        if isinstance(parsed, dict):
            issue = parsed.get("issue_id")
            return issue if isinstance(issue, str) else None
        found = _ISSUE_ID_IN_TEXT.search(self.body.decode("utf-8", errors="replace"))
        return found.group(1) if found else None

    def describe(self, names: frozenset[str] | None = frozenset()) -> dict[str, Any]:
        """What an operator may see: scrubbed, printable, short. The body only as
        :func:`known_safe` shows it (no free text); one that is not JSON not at all.
        ``names``: the residents' names as they gave them, masked wherever the reason
        quotes them; ``None`` when they could not be read: the reason is not shown."""
        parsed = self.parsed()
        if parsed is not None:
            body_format = "json"
            # the event's own fields first: the envelope is noise here (ids are shown apart)
            shown = {k: v for k, v in parsed.items() if k not in ENVELOPE_FIELDS} \
                if isinstance(parsed, dict) else parsed
            preview = json.dumps(known_safe(shown), ensure_ascii=False, separators=(",", ":"))
        else:
            # the API returns at most PEEK_TRUNCATE_BYTES of a body: cut JSON is not bad JSON
            truncated = self.size is not None and self.size > len(self.body)
            body_format = "truncated" if truncated else "undecodable"
            preview = "(not shown: not JSON as a whole; `dlq drop --save FILE` keeps it)"
        issue_id, event_id = (parsed.get("issue_id"), parsed.get("event_id")) \
            if isinstance(parsed, dict) else (None, None)
        attempts = str(self.headers.get(ATTEMPTS_HEADER, ""))

        def header(name: str) -> str | None:
            value = self.headers.get(name)
            return _printable(scrub(str(value), names or frozenset())) \
                if value not in (None, "") else None

        death = self._death
        reason = header(ERROR_HEADER)
        if reason is not None:
            reason = quoted_values_withheld(reason)
        if reason is not None and names is None:  # its names could not be masked
            reason = f"{_error_class(reason)}{NAMES_UNKNOWN}"
        if reason is None and death.get("reason"):
            reason = f"RabbitMQ dead-lettered it: {_printable(str(death['reason']))}"
        return {
            "position": self.position,
            "failed_at": header(FAILED_AT_HEADER) or (str(death["time"]) if death.get("time")
                                                      else None),
            "queue": header(QUEUE_HEADER) or (_printable(str(death["queue"]))
                                              if death.get("queue") else None),
            "event_type": self._event_type(),
            "attempts": int(attempts) if attempts.isdigit() else None,
            "reason": reason,
            "issue_id": _id_shown(issue_id, _ISSUE_ID, "(not an issue id)"),
            "event_id": _id_shown(event_id, _EVENT_ID, "(not an id)"),
            "body_format": body_format,
            "content_type": self.content_type,
            "bytes": self.size if self.size is not None else len(self.body),
            # scrub first, then cut: a phone number cut in half would escape the mask
            "preview": _shorten(_printable(preview)),
        }

    def _event_type(self) -> str | None:
        """The type a service copied onto it (from the message's own header, which a
        garbled or forged one can fill with anything), only when shaped as one."""
        given = [self.headers.get(h) for h in (EVENT_TYPE_HEADER, ROUTING_KEY_HEADER)]
        shaped = [v for v in given if isinstance(v, str) and MESSAGE_NAME.fullmatch(v)]
        if shaped:
            return shaped[0]
        return "(malformed)" if any(v not in (None, "") for v in given) else None

    def replay_headers(self) -> dict[str, Any]:
        return {k: v for k, v in self.headers.items() if k not in REPLAY_DROPS_HEADERS}


def peek_dead_letters(api: ManagementApi, limit: int) -> tuple[list[DeadLetter], int]:
    """The first ``limit`` dead letters in queue order (they all stay in the queue), and
    how many the queue holds: exact, from the first get's ``message_count`` (the
    messages left behind it), where the API's statistics may lag a few seconds."""
    messages = api.peek(DEAD_LETTER_QUEUE_NAME, limit)
    in_queue = int(messages[0].get("message_count", len(messages) - 1)) + 1 if messages else 0
    return [DeadLetter.from_api(position, message)
            for position, message in enumerate(messages, 1)], max(in_queue, len(messages))


@dataclass
class DeadLetterPass:
    """The outcome of one pass over the dead letters (:func:`replay_dead_letters`,
    :func:`set_aside_dead_letters`)."""

    in_queue: int  # dead letters in the queue when the pass began
    done: list[dict] = field(default_factory=list)  # describe() + what was done with it
    failed: list[dict] = field(default_factory=list)  # describe() + "error"; left in place
    left_in_place: int = 0  # looked at, not selected (or failed), put back


class NotDone(Exception):  # noqa: N818 - one letter's outcome, not a failure of the pass
    """What a pass's action raises to leave a dead letter where it is, saying why."""


def _over_dead_letters(amqp_uri: str, positions: Collection[int] | None, limit: int | None,
                       act: Callable[[DeadLetter], dict],
                       names: Callable[[list[DeadLetter]], dict | None] = lambda taken: {}
                       ) -> DeadLetterPass:
    """Apply ``act`` to the selected dead letters, in one pass, on one channel.

    ``positions`` (1-based, as ``whistle dlq list`` numbers them) selects some;
    ``None`` selects every one, at most ``limit``.

    1. Count the queue (passive declare: exact, unlike the API's statistics),
       and take the first *n* messages with ``basic_get(no_ack=False)``, *n*
       being the highest position asked for (or the limit, or the count). Each
       stays unacknowledged on this channel, so the next get returns the next
       message and the positions are those of ``dlq list``. Dead letters that
       arrive meanwhile go to the tail and are not looked at.
    2. ``act`` is called on each selected one; only once it has returned is the
       message acked out of the DLQ. When it raises :class:`NotDone`, the message
       stays.
    3. Everything else that was taken is rejected with ``requeue=True`` at the
       end of the pass (not before: a requeued message would be got again);
       RabbitMQ puts each back at its original position.

    A crash anywhere closes the channel, and the broker requeues every message
    not yet acked: a dead letter is never lost.
    """
    from kombu import Connection

    wanted = set(positions) if positions is not None else None
    with Connection(amqp_uri) as connection:
        channel = connection.channel()
        queue = DEAD_LETTER_QUEUE.bind(channel)
        in_queue = queue.queue_declare(passive=True).message_count
        if wanted is not None:
            beyond = sorted(p for p in wanted if not 1 <= p <= in_queue)
            if beyond:
                raise LookupError(f"no dead letter at position {', '.join(map(str, beyond))} "
                                  f"(the queue holds {in_queue})")
            horizon = max(wanted, default=0)
        else:
            horizon = in_queue if limit is None else min(limit, in_queue)
        outcome = DeadLetterPass(in_queue)
        taken: list[DeadLetter] = []
        for position in range(1, horizon + 1):
            message = queue.get(no_ack=False)
            if message is None:  # someone else took the rest
                break
            taken.append(DeadLetter.from_kombu(position, message))
        known = names(taken)
        for letter in taken:
            if wanted is not None and letter.position not in wanted:
                continue
            described = letter.describe(names_in(letter, known))
            try:
                result = act(letter)
            except NotDone as exc:
                outcome.failed.append({**described, "error": str(exc)})
                continue
            letter.message.ack()
            letter.message = None
            outcome.done.append({**described, **result})
        for letter in taken:
            if letter.message is not None:
                letter.message.reject(requeue=True)
                outcome.left_in_place += 1
        channel.close()
    return outcome


def replay_dead_letters(amqp_uri: str, positions: Collection[int] | None = None,
                        limit: int | None = None,
                        names: Callable[[list[DeadLetter]], dict | None] = lambda taken: {}
                        ) -> DeadLetterPass:
    """Send dead letters back to the queue they failed in, and remove them from the DLQ
    (:func:`_over_dead_letters` selects and takes them).

    Each selected message is published to the default exchange with routing key
    ``x-whistle-queue`` (persistent, publisher confirms, mandatory: a queue that no
    longer exists is an error, not a drop), with its body, content type and headers
    but without ``x-whistle-error`` / ``x-whistle-attempts``, and only once the broker
    confirmed it, acked out of the DLQ. At worst one that was confirmed but not yet
    acked is both replayed and still in the DLQ; consumers are idempotent by event
    id, so replaying it again changes nothing.
    """
    from nameko.amqp.publish import UndeliverableMessage

    from shared.messaging import make_publisher

    publisher = make_publisher(amqp_uri)

    def send_back(letter: DeadLetter) -> dict:
        target = letter.original_queue
        if target is None:
            raise NotDone(f"no {QUEUE_HEADER} header")
        message_id = letter.message.properties.get("message_id")
        try:
            publisher.publish(letter.body, exchange="", routing_key=target,
                              headers=letter.replay_headers(),
                              content_type=letter.content_type or "application/octet-stream",
                              content_encoding=letter.message.content_encoding or "binary",
                              **({"message_id": message_id} if message_id else {}))
        except UndeliverableMessage:
            raise NotDone(f"queue {target} does not exist") from None
        except Exception as exc:  # broker trouble: keep it
            raise NotDone(f"could not publish to {target}: {short_reason(exc)}") from None
        return {"to": target}

    return _over_dead_letters(amqp_uri, positions, limit, send_back, names)


def set_aside_dead_letters(amqp_uri: str, positions: Collection[int], save_to: Path | None,
                           names: Callable[[list[DeadLetter]], dict | None] = lambda taken: {}
                           ) -> DeadLetterPass:
    """Take dead letters out of the DLQ for good: ones that can never succeed (an
    undecodable body, an event about an issue that does not exist), which a replay
    would only send round again.

    With ``save_to``, each is first appended to that file as one JSON line, whole
    (body, headers, properties: personal data included, so the file is created
    readable by its owner only), and the file is flushed to disk before the
    message leaves the queue: what was taken out can still be read, or published
    again by hand. Without it, they are discarded (the caller made the operator say
    so).
    """
    handle = None
    if save_to is not None:
        fd = os.open(save_to, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handle = os.fdopen(fd, "a", encoding="utf-8")

    def set_aside(letter: DeadLetter) -> dict:
        if handle is None:
            return {"saved_to": None}
        properties = letter.message.properties
        handle.write(json.dumps({
            "set_aside_at": datetime.now(UTC).isoformat(),
            "body_base64": base64.b64encode(letter.body).decode("ascii"),
            "content_type": letter.content_type,
            "content_encoding": letter.message.content_encoding,
            "message_id": properties.get("message_id"),
            "headers": letter.headers,
        }, ensure_ascii=False, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
        return {"saved_to": str(save_to)}

    try:
        return _over_dead_letters(amqp_uri, positions, None, set_aside, names)
    finally:
        if handle is not None:
            handle.close()

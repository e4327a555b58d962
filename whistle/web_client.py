"""How the ``whistle`` CLI's HTTP commands find Whistle and read its answers.

One place for ``--url`` (a bare ``host:port`` means ``http://host:port``, a bare port
``127.0.0.1:PORT`` as in ``WEB_SERVER_ADDRESS`` and ``whistle up --address``; any other
scheme than http or https is a usage error) and for an answer that is not a success:
the command stops with ``METHOD PATH answered STATUS: the service's message``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import click
import requests

from shared import config as cfg


def base_url(url: str | None) -> str:
    """Whistle's base URL: ``--url`` (checked), else ``http://$WEB_SERVER_ADDRESS``."""
    if url is None:
        return f"http://{cfg.config_from_env()[cfg.WEB_SERVER_ADDRESS]}"
    given = url.strip()
    if given.isdigit():  # a bare port, like WEB_SERVER_ADDRESS's and `up --address`'s
        given = f"127.0.0.1:{given}"
    if "://" not in given:
        given = f"http://{given}"
    try:
        parts = urlsplit(given)
    except ValueError:  # an unclosed IPv6 bracket: ``http://[::1``
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
            or any(c.isspace() or not c.isprintable() for c in given):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// address "
                                 "(or a bare host:port)", param_hint="'--url'")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise click.BadParameter(f"{url!r} has a port that is not a number",
                                 param_hint="'--url'") from None
    return given.rstrip("/")


def check_issue_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An ISSUE_ID argument's check: a malformed id is a usage error (exit 2) before any
    request, and never becomes part of a URL path (``x/../stats``, ``x?y``)."""
    from shared.contracts import ISSUE_ID

    if not ISSUE_ID.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not an issue id (they look like "
                                 "WH-20261121-0001)")
    return value


class Refused(click.ClickException):
    """Whistle answered, but not with success; ``status`` is its HTTP status."""

    def __init__(self, method: str, path: str, status: int, message: str,
                 whistles: bool = True):
        super().__init__(f"{method} {path} answered {status}: {message}")
        self.status, self.detail = status, message
        self.whistles = whistles  # the answer was Whistle's JSON error, not another server's


def call(method: str, base: str, path: str, *, ok: tuple[int, ...] = (200,),
         session: Any = requests, timeout: float = 30, **kwargs: Any) -> dict[str, Any]:
    """``METHOD base+path``'s JSON object. Unreachable: a ClickException naming ``base``;
    any status not in ``ok`` (or a body that is not a JSON object): :class:`Refused`."""
    try:
        response = session.request(method, f"{base}{path}", timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        from whistle.ops import short_reason

        raise click.ClickException(f"cannot reach Whistle at {base} "
                                   f"({short_reason(exc)})") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code not in ok or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        message = _explained(error) if isinstance(error, dict) else None
        raise Refused(method, path.split("?")[0], response.status_code,
                      message or _not_whistles(response), whistles=message is not None)
    return body


def _not_whistles(response: Any) -> str:
    """An answer without Whistle's JSON error, in one line: another server's HTML page was
    printed as it came, over many lines."""
    if response.headers.get("Content-Type", "").split(";")[0].strip() == "text/html":
        return "an HTML page, not Whistle's JSON: is this Whistle's address?"
    return " ".join(response.text.split())[:200] or response.reason or "no message"


def _explained(error: dict[str, Any]) -> str | None:
    """The service's message, and for a 422 what is wrong with each field: the message
    alone (``invalid request: since``) names the field but not what to change."""
    message = error.get("message")
    fields = error.get("fields")
    if not message or not isinstance(fields, list):
        return message
    reasons = [f"{f['field']}: {f['message']}"
               for f in fields if isinstance(f, dict) and f.get("field") and f.get("message")]
    return f"{message} ({'; '.join(reasons)})" if reasons else message


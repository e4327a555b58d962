"""How the ``whistle`` CLI authenticates to Whistle's HTTP API.

The CLI's staff HTTP commands (``whistle stats``, ``trace``, ``rating-link resend``)
send a staff token like any other client: ``$WHISTLE_TOKEN`` when it is set (a token
someone issued you), or else one the CLI signs itself for five minutes with
``$WHISTLE_SECRET``, as desk staff ``cli-<your login>``, the way ``whistle token`` would.
(``whistle demo`` signs its own desk and agency tokens.) Holding the secret is holding
every token, so only operators have it. The commands that talk to the broker or Redis
directly (``tail``, ``status``, ``dlq``, ``token revoke``, ``audit``) are operators'
tools and need those services' credentials instead (docs/security.md).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from typing import Any

import jwt

from shared import config as cfg
from shared.auth import DESK, issue_token

TOKEN_ENV = "WHISTLE_TOKEN"
CLI_TOKEN_TTL_S = 300


def cli_headers(config: Mapping[str, Any] | None = None, agency: str = DESK) -> dict[str, str]:
    """``Authorization`` for the CLI's HTTP requests (see the module docstring)."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        config = config if config is not None else cfg.config_from_env()
        token = issue_token(agency, f"cli-{_login()}", config[cfg.SECRET], CLI_TOKEN_TTL_S)
    return {"Authorization": f"Bearer {token}"}


_WHICH_CREDENTIAL = ("these commands act as the desk: set WHISTLE_TOKEN to a desk token, "
                     "or WHISTLE_SECRET to the one Whistle runs with")


def desk_call(method: str, base: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`whistle.web_client.call` with :func:`cli_headers`. A 401 or 403 adds which
    credential to change: the service's own words ("token is invalid") do not say that
    the CLI signed the token itself, with which secret."""
    from whistle.web_client import Refused, call

    try:
        return call(method, base, path, headers=cli_headers(), **kwargs)
    except Refused as exc:
        if exc.status not in (401, 403):
            raise
        hint = _scoped_desk_hint(os.environ.get(TOKEN_ENV)) if exc.status == 403 else None
        raise Refused(method, path.split("?")[0], exc.status,
                      f"{exc.detail} ({hint or _WHICH_CREDENTIAL})",
                      whistles=exc.whistles) from None


def _scoped_desk_hint(token: str | None) -> str | None:
    """For a desk token limited to some communities, refused elsewhere: "set it to a desk
    token" would not help, it is one. Its claims are read unverified, only to word the
    hint (Whistle has judged the token already)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False}) if token else {}
    except jwt.PyJWTError:
        return None
    communities = claims.get("communities")
    if claims.get("agency") != DESK or not isinstance(communities, list) or not communities:
        return None
    return (f"{TOKEN_ENV} is a desk token for {', '.join(map(str, communities))} only: set it "
            "to one for the issue's community, or to an unscoped desk token")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"

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
        raise Refused(method, path.split("?")[0], exc.status,
                      f"{exc.detail} ({_WHICH_CREDENTIAL})", whistles=exc.whistles) from None


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"

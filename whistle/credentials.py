"""How the ``whistle`` CLI authenticates to Whistle's HTTP API.

The CLI's HTTP commands (``whistle stats``, ``whistle demo``) send a staff token like
any other client: ``$WHISTLE_TOKEN`` when it is set (a token someone issued you), or
else one the CLI signs itself for five minutes with ``$WHISTLE_SECRET``, as desk staff
``cli-<your login>``, the way ``whistle token`` would. Holding the secret is holding
every token, so only operators have it. The commands that talk to the broker or Redis
directly (``tail``, ``trace``, ``status``, ``dlq``, ``token revoke``, ``audit``) are
operators' tools and need those services' credentials instead (docs/security.md).
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


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"

"""Staff tokens for tests: what the desk and agency staff send, signed with the
development secret unless a test's own secret is given."""

from __future__ import annotations

from shared import config as cfg
from shared.auth import issue_token


def staff_headers(agency: str = "desk", staff_id: str | None = None,
                  secret: str = cfg.DEV_SECRET, **claims) -> dict[str, str]:
    """``Authorization: Bearer <a fresh staff token>`` for ``agency`` (``desk``: the desk)."""
    token = issue_token(agency, staff_id or f"{agency}-test", secret, **claims)
    return {"Authorization": f"Bearer {token}"}


DESK = staff_headers("desk", "desk-test")
"""The desk's headers, for tests whose services sign with the development secret."""

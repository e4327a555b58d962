"""Agency staff tokens: signed (HS256, PyJWT), expiring, naming agency and staff.

``whistle token <agency>`` prints one. The signing secret is ``WHISTLE_SECRET``;
its development default is refused in production (``shared.config``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from shared.errors import Forbidden, Unauthorized

ISSUER = "whistle"
AUDIENCE = "whistle-agency"
ALGORITHM = "HS256"
# Services may run on several hosts whose clocks differ a little.
CLOCK_SKEW_S = 30


@dataclass(frozen=True)
class StaffPrincipal:
    agency: str
    staff_id: str


def issue_token(agency: str, staff_id: str, secret: str, ttl_s: int = 12 * 3600,
                now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": staff_id, "agency": agency,
              "iat": issued, "exp": issued + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str | None, secret: str) -> StaffPrincipal:
    """The principal a token names, or :class:`Unauthorized` saying why not."""
    if not token:
        raise Unauthorized("missing bearer token")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=AUDIENCE,
                            issuer=ISSUER, leeway=CLOCK_SKEW_S,
                            options={"require": ["exp", "sub", "agency"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token has expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("token is invalid") from None
    if not isinstance(claims.get("agency"), str) or not isinstance(claims.get("sub"), str):
        raise Unauthorized("token is invalid")
    return StaffPrincipal(agency=claims["agency"], staff_id=claims["sub"])


def bearer_token(authorization_header: str | None) -> str | None:
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


def authorize(token: str | None, secret: str, agency: str) -> StaffPrincipal:
    """Verify the token and check it belongs to ``agency`` (staff act only on their own)."""
    principal = verify_token(token, secret)
    if principal.agency != agency:
        raise Forbidden(f"token is for agency {principal.agency!r}, not {agency!r}")
    return principal


# ------------------------------------------------------------ residents' feedback

FEEDBACK_AUDIENCE = "whistle-feedback"


@dataclass(frozen=True)
class FeedbackGrant:
    """What a rating token allows: rate ``issue_id``'s resolution ``cycle``, as the
    resident who reported ``reporter_issue_id`` (their own reference)."""

    reporter_issue_id: str
    issue_id: str
    cycle: int


def issue_feedback_token(reporter_issue_id: str, issue_id: str, cycle: int, secret: str,
                         ttl_s: int, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"iss": ISSUER, "aud": FEEDBACK_AUDIENCE, "sub": reporter_issue_id,
              "issue": issue_id, "cycle": cycle, "iat": issued, "exp": issued + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_feedback_token(token: str, secret: str, reporter_issue_id: str) -> FeedbackGrant:
    """The grant a rating token carries, if it is genuine, unexpired and for this report."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=FEEDBACK_AUDIENCE,
                            issuer=ISSUER, leeway=CLOCK_SKEW_S,
                            options={"require": ["exp", "sub", "issue", "cycle"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("rating link has expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("rating token is invalid") from None
    if claims["sub"] != reporter_issue_id:
        raise Forbidden(f"this rating token is not for issue {reporter_issue_id}")
    return FeedbackGrant(reporter_issue_id=claims["sub"], issue_id=str(claims["issue"]),
                         cycle=int(claims["cycle"]))

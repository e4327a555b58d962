"""Who is calling: signed tokens (HS256, PyJWT) and the one principal model.

Four kinds of caller, one :class:`Principal` each:

- **anonymous**: no token at all (``Principal.anonymous()``);
- **desk staff**: a staff token whose ``agency`` is ``desk``; an optional
  ``communities`` claim scopes it to those communities (none: every community);
- **agency staff**: a staff token naming the agency and the staff id;
- **a resident**: a signed link bound to their own report (``reporter_issue_id``).
  Two kinds of link make a resident: the progress link (audience
  ``whistle-resident``) reads their own issue; the rating link (audience
  ``whistle-feedback``) reads it too, and rates one resolution cycle.

Staff tokens carry ``jti`` (a random id, for revocation and the audit log),
``iat`` and ``exp``, and ``auth_time``, when the first token of a refresh chain was
issued. ``whistle token AGENCY`` prints one (10 h by default: a shift of eight
hours plus a handover and overtime, so a token issued at the start of a shift
outlives the shift but not the night; a stolen one is worth one shift at most,
and ``whistle token revoke JTI`` ends it sooner). ``POST /auth/refresh`` swaps a
valid token for a fresh one, with the same claims and a new ``jti`` (the old one
is revoked), up to ``WHISTLE_TOKEN_MAX_AGE`` after ``auth_time``: a refresh chain
cannot live forever. The revocation list lives in Redis and is checked on every
request (``shared.guard``); this module is pure (no Redis).

The signing secret is ``WHISTLE_SECRET``; its development default is refused in
production (``shared.config``).

Usage::

    token = issue_token("power", "p-007", secret)           # agency staff
    desk = issue_token("desk", "d-1", secret, communities=["缤泰社区"])
    principal = principal_from_request(request, secret)      # any HTTP request
    principal.is_staff, principal.jti, principal.client      # what the guard needs
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt

from shared.errors import Forbidden, Unauthorized

ISSUER = "whistle"
AUDIENCE = "whistle-agency"  # staff tokens (desk staff are the agency "desk")
FEEDBACK_AUDIENCE = "whistle-feedback"  # a resident's rating link
RESIDENT_AUDIENCE = "whistle-resident"  # a resident's progress link
ALGORITHM = "HS256"
# Services may run on several hosts whose clocks differ a little.
CLOCK_SKEW_S = 30

DESK = "desk"  # the agency name of community desk staff (``whistle token desk``)
DEFAULT_TTL_S = 10 * 3600  # a shift (8 h) plus handover and overtime; see the docstring
MAX_TTL_S = 7 * 24 * 3600  # no staff token lives longer; revocation entries are kept as long
DEFAULT_MAX_AGE_S = 24 * 3600  # how long a refresh chain may go on after its first token
RESIDENT_LINK_TTL_S = 30 * 24 * 3600  # a progress link: the life of a typical issue, and more

TOKEN_QUERY_PARAMETER = "token"  # a resident's link carries its token here


class Role(StrEnum):
    anonymous = "anonymous"
    desk = "desk"
    agency = "agency"
    resident = "resident"


@dataclass(frozen=True)
class Principal:
    """Who made a request: one of the four :class:`Role` s, and what their token says.

    Staff (``desk`` and ``agency``): ``agency`` (``"desk"`` for desk staff),
    ``staff_id``, ``jti``, ``issued_at`` and ``expires_at`` (epoch seconds),
    ``auth_time`` (the first token of its refresh chain) and, for desk staff,
    ``communities`` (``None``: every community). Residents: ``reporter_issue_id``
    (their own report) and, from a rating link only, ``rates`` (``(issue_id,
    cycle)``: what it may rate). ``client`` is the rate limiter's key for the caller:
    the staff member, the report, or (anonymous) the address given by the web layer.
    """

    role: Role
    agency: str | None = None
    staff_id: str | None = None
    jti: str | None = None
    issued_at: int | None = None
    expires_at: int | None = None
    auth_time: int | None = None
    communities: frozenset[str] | None = None
    reporter_issue_id: str | None = None
    rates: tuple[str, int] | None = None
    address: str | None = None

    @classmethod
    def anonymous(cls, address: str | None = None) -> Principal:
        return cls(Role.anonymous, address=address)

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.desk, Role.agency)

    @property
    def is_desk(self) -> bool:
        return self.role is Role.desk

    @property
    def client(self) -> str:
        """The rate limiter's key: per staff member, per report, or per address."""
        if self.is_staff:
            return f"staff:{self.agency}:{self.staff_id}"
        if self.role is Role.resident:
            return f"resident:{self.reporter_issue_id}"
        return f"addr:{self.address or '-'}"

    def audit_fields(self) -> dict[str, str]:
        """Who acted, for the audit log and log lines: never the token itself."""
        fields = {"role": self.role.value}
        for name in ("jti", "staff_id", "agency", "reporter_issue_id"):
            value = getattr(self, name)
            if value:
                fields[name] = value
        return fields


# Kept for callers written before the principal model: a staff principal.
StaffPrincipal = Principal


# --------------------------------------------------------------------- staff tokens


def issue_token(agency: str, staff_id: str, secret: str, ttl_s: int = DEFAULT_TTL_S,
                now: float | None = None, communities: Iterable[str] | None = None,
                auth_time: int | None = None, jti: str | None = None) -> str:
    """A signed staff token: ``agency`` (``"desk"`` for the desk), ``staff_id``, a fresh
    ``jti``, ``exp`` = now + ``ttl_s`` (at most :data:`MAX_TTL_S`), and for desk staff
    the ``communities`` it is scoped to (``None``: every community)."""
    if not 0 < int(ttl_s) <= MAX_TTL_S:
        raise ValueError(f"a staff token lives between 1 s and {MAX_TTL_S} s, not {ttl_s}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": staff_id, "agency": agency,
        "jti": jti or uuid.uuid4().hex, "iat": issued, "exp": issued + int(ttl_s),
        "auth_time": issued if auth_time is None else int(auth_time)}
    if communities is not None:
        if agency != DESK:
            raise ValueError("only desk tokens are scoped to communities")
        claims["communities"] = sorted(set(communities))
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str | None, secret: str) -> Principal:
    """The staff principal a token names, or :class:`Unauthorized` saying why not.

    Checks signature, issuer, audience, expiry and the claims' types; not revocation
    (that needs Redis: ``shared.guard.Guard``).
    """
    if not token:
        raise Unauthorized("missing bearer token")
    claims = _decode(token, secret, AUDIENCE, ["exp", "sub", "agency", "jti", "iat"],
                     expired="token has expired", invalid="token is invalid")
    return _staff(claims)


def _decode(token: str, secret: str, audience: str | list[str], required: list[str], *,
            expired: str, invalid: str) -> dict[str, Any]:
    try:
        return jwt.decode(token, secret, algorithms=[ALGORITHM], audience=audience,
                          issuer=ISSUER, leeway=CLOCK_SKEW_S, options={"require": required})
    except jwt.ExpiredSignatureError:
        raise Unauthorized(expired) from None
    except jwt.InvalidTokenError:
        raise Unauthorized(invalid) from None


def _staff(claims: Mapping[str, Any]) -> Principal:
    agency, staff_id, jti = claims.get("agency"), claims.get("sub"), claims.get("jti")
    if not all(isinstance(v, str) and v for v in (agency, staff_id, jti)):
        raise Unauthorized("token is invalid")
    communities = claims.get("communities")
    if communities is not None and (agency != DESK or not isinstance(communities, list)
                                    or not all(isinstance(c, str) for c in communities)):
        raise Unauthorized("token is invalid")
    issued = int(claims["iat"])
    return Principal(
        role=Role.desk if agency == DESK else Role.agency, agency=agency, staff_id=staff_id,
        jti=jti, issued_at=issued, expires_at=int(claims["exp"]),
        auth_time=int(claims.get("auth_time", issued)),
        communities=frozenset(communities) if communities is not None else None)


def refresh_token(principal: Principal, secret: str, ttl_s: int = DEFAULT_TTL_S,
                  max_age_s: int = DEFAULT_MAX_AGE_S, now: float | None = None) -> str:
    """A fresh token with the same claims and a new ``jti``, for a verified, unrevoked
    staff principal. Refused (:class:`Forbidden`) once ``max_age_s`` has passed since the
    chain's first token: then a new ``whistle token`` is needed. The new token expires
    no later than that limit either."""
    if not principal.is_staff:
        raise Forbidden("only staff tokens can be refreshed")
    current = int(time.time() if now is None else now)
    started = principal.auth_time or principal.issued_at or current
    left = started + int(max_age_s) - current
    if left <= 0:
        raise Forbidden("this token's session is over; ask for a new token (whistle token)")
    return issue_token(principal.agency, principal.staff_id, secret, min(int(ttl_s), left),
                       now=current, communities=principal.communities, auth_time=started)


def bearer_token(authorization_header: str | None) -> str | None:
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


def authorize(token: str | None, secret: str, agency: str) -> Principal:
    """Verify the token and check it belongs to ``agency`` (staff act only on their own)."""
    principal = verify_token(token, secret)
    if principal.agency != agency:
        raise Forbidden(f"token is for agency {principal.agency!r}, not {agency!r}")
    return principal


# ------------------------------------------------------------ residents' links


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
    claims = _decode(token, secret, FEEDBACK_AUDIENCE, ["exp", "sub", "issue", "cycle"],
                     expired="rating link has expired", invalid="rating token is invalid")
    if claims["sub"] != reporter_issue_id:
        raise Forbidden(f"this rating token is not for issue {reporter_issue_id}")
    return FeedbackGrant(reporter_issue_id=claims["sub"], issue_id=str(claims["issue"]),
                         cycle=int(claims["cycle"]))


def issue_resident_token(reporter_issue_id: str, secret: str,
                         ttl_s: int = RESIDENT_LINK_TTL_S, now: float | None = None) -> str:
    """A resident's progress link token: reads their own report (resident view), nothing
    else. Rendered into a message only at delivery (``services.notify``)."""
    issued = int(time.time() if now is None else now)
    claims = {"iss": ISSUER, "aud": RESIDENT_AUDIENCE, "sub": reporter_issue_id,
              "iat": issued, "exp": issued + int(ttl_s)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_resident_token(token: str, secret: str) -> Principal:
    """The resident a progress link or a rating link names (either reads their issue)."""
    claims = _decode(token, secret, [FEEDBACK_AUDIENCE, RESIDENT_AUDIENCE], ["exp", "sub"],
                     expired="link has expired", invalid="link is invalid")
    return _resident(claims)


def _resident(claims: Mapping[str, Any]) -> Principal:
    rates = None
    if claims.get("aud") == FEEDBACK_AUDIENCE:
        issue, cycle = claims.get("issue"), claims.get("cycle")
        if not isinstance(issue, str) or not isinstance(cycle, int):
            raise Unauthorized("link is invalid")
        rates = (issue, cycle)
    if not isinstance(claims.get("sub"), str):
        raise Unauthorized("link is invalid")
    return Principal(Role.resident, reporter_issue_id=claims["sub"], rates=rates,
                     issued_at=claims.get("iat"), expires_at=int(claims["exp"]))


# ------------------------------------------------------------ from a request


def principal_from_request(headers: Mapping[str, str], args: Mapping[str, str], secret: str,
                           address: str | None = None) -> Principal:
    """The principal of an HTTP request; pure (no Redis: revocation is the guard's).

    - ``Authorization: Bearer <staff token>``: desk or agency staff;
    - ``Authorization: Bearer <resident link token>``, or ``?token=`` in the query
      string (the link a resident opens): a resident;
    - neither: anonymous (``address`` is kept as the rate limiter's key).

    A token that is present but bad raises :class:`Unauthorized`: a bad token never
    silently falls back to anonymous. One signature check per request.
    """
    token = bearer_token(headers.get("Authorization"))
    if token is None:
        token = args.get(TOKEN_QUERY_PARAMETER) or None
        if token is None:
            return Principal.anonymous(address)
        return verify_resident_token(token, secret)
    claims = _decode(token, secret, _ANY_AUDIENCE, ["exp", "sub"],
                     expired="token has expired", invalid="token is invalid")
    if claims["aud"] == AUDIENCE:
        if not all(k in claims for k in ("agency", "jti", "iat")):
            raise Unauthorized("token is invalid")
        return _staff(claims)
    return _resident(claims)


_ANY_AUDIENCE = [AUDIENCE, FEEDBACK_AUDIENCE, RESIDENT_AUDIENCE]


_JTI = re.compile(r"[0-9a-f]{32}")


def looks_like_jti(value: str) -> bool:
    """Whether ``value`` is a token id as :func:`issue_token` makes them (``uuid4().hex``)."""
    return bool(_JTI.fullmatch(value))

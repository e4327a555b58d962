"""The door every HTTP request passes: principal, revocation, rate limit, audit.

:class:`Guard` is a nameko dependency. ``self.guard.check(request)`` turns a request
into a :class:`~shared.auth.Principal` (one signature check, no Redis) and then, in
**one Redis round trip** (a Lua script), checks that a staff token's ``jti`` (or
every token of that staff member) is not revoked and counts the request against the
caller's rate limit. Refusals: 401 (no usable or a revoked token), 429 with
``Retry-After`` (over the limit), 503 (Redis unreachable: no check, no entry).
Authorization itself (may this principal read this issue?) is ``shared.authz``.

Rate limits are fixed windows per client (``WHISTLE_RATE_WINDOW_S``), shared by every
instance through Redis: ``submit`` counts ``POST /issues`` per staff member
(``WHISTLE_RATE_SUBMIT``) or, for anonymous callers, per client address
(``WHISTLE_RATE_SUBMIT_ANONYMOUS``); ``read`` counts every other request per client
(``WHISTLE_RATE_READ``). A fixed window lets a client spend up to twice its limit
across a window boundary: cheap (INCR and EXPIRE in the script), and enough to stop
one client drowning the others.

Every write (a check with ``action=``), and the one audited read (the desk's relay list,
``relay.read``, naming each issue shown: :meth:`GuardAccess.on_issues`), leaves one entry
in the audit log, the Redis stream ``{p}:audit``: when, what, on which issue, the
outcome (HTTP status), and who (role, ``jti``, staff id, agency, or the resident's
report), never the token. The issue
is named only when the path's id is shaped like one (``(not an issue id)`` otherwise: a
path parameter can be a phone number), and the entry is scrubbed like a log line. It is
written when the worker ends, after the response is handed over (a submission's
is written with the issue itself: :meth:`GuardAccess.entry_for_the_write`). A write that passes
through two workers (a page, then the owning service's RPC with the same token) is
audited by the one that did it: the page drops its own entry once the service
answered (:meth:`GuardAccess.audited_elsewhere`).

Usage::

    class IntakeService:
        guard = Guard()

        @http("GET", "/issues/<issue_id>")
        def get_issue_http(self, request, issue_id):
            principal = self.guard.check(request)
            ...

        @http("POST", "/issues/<issue_id>/split")
        def split_http(self, request, issue_id):
            principal = self.guard.check(request, action="issue.split", issue_id=issue_id)
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nameko.extensions import DependencyProvider

from shared import config as cfg
from shared.auth import (
    CLOCK_SKEW_S,
    MAX_TTL_S,
    Principal,
    Role,
    principal_from_request,
    refresh_token,
    verify_token,
)
from shared.contracts import ISSUE_ID
from shared.errors import RateLimited, Unauthorized, Unavailable, WhistleError
from shared.privacy import scrub
from shared.store import REDIS_ERRORS, StreamEntry, connect, run_script

SUBMIT, READ = "submit", "read"
RPC = "rpc"  # no rate limit: RPC callers hold broker credentials
VERIFIED_TOKENS_KEPT = 10_000

# KEYS: rate counter, revoked jti marker, staff cut-off. ARGV: limit (0: none), window,
# the token's iat, "1" to check revocation. Returns {-1, 0} when revoked, else
# {count, seconds to wait} (0 while within the limit).
_GUARD = """
if ARGV[4] == '1' then
    if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, 0} end
    local cutoff = redis.call('GET', KEYS[3])
    if cutoff and tonumber(ARGV[3]) <= tonumber(cutoff) then return {-1, 0} end
end
local limit = tonumber(ARGV[1])
if limit <= 0 then return {0, 0} end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n <= limit then return {n, 0} end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    ttl = tonumber(ARGV[2])
end
return {n, ttl}
"""


class AuthKeys:
    """Redis keys of the door (part of the scheme in ``shared.store``)::

        {p}:auth:revoked:{jti}                  string  a revoked token (kept MAX_TTL_S)
        {p}:auth:revoked-staff:{agency}:{id}    string  tokens issued up to this epoch s are revoked
        {p}:rl:{bucket}:{client}                string  requests in the current window (TTL)
        {p}:audit                               stream  every write: who, what, outcome
    """

    def __init__(self, prefix: str):
        self.prefix = prefix

    def revoked(self, jti: str) -> str:
        return f"{self.prefix}:auth:revoked:{jti}"

    def revoked_staff(self, agency: str, staff_id: str) -> str:
        return f"{self.prefix}:auth:revoked-staff:{agency}:{staff_id}"

    def rate(self, bucket: str, client: str) -> str:
        return f"{self.prefix}:rl:{bucket}:{client}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"


def revoke(client: Any, prefix: str, jti: str) -> None:
    """Revoke one token by its ``jti`` (``whistle token revoke JTI``), for as long as any
    staff token can live."""
    client.set(AuthKeys(prefix).revoked(jti), "1", ex=MAX_TTL_S + CLOCK_SKEW_S)


def revoke_staff(client: Any, prefix: str, agency: str, staff_id: str, now: float) -> None:
    """Revoke every token issued so far to one staff member (a lost phone, a leaver)."""
    client.set(AuthKeys(prefix).revoked_staff(agency, staff_id), str(int(now)),
               ex=MAX_TTL_S + CLOCK_SKEW_S)


def audit_entries(client: Any, prefix: str, count: int = 50) -> list[dict[str, str]]:
    """The newest ``count`` audit entries, newest first."""
    return [{"id": entry_id, **fields}
            for entry_id, fields in client.xrevrange(AuthKeys(prefix).audit, count=count)]


class Guard(DependencyProvider):
    """Principal, revocation, rate limit (one round trip) and audit for each worker."""

    def setup(self):
        config = self.container.config
        self.client = connect(cfg.get(config, cfg.REDIS_URL), share_round_trips=True)
        self.keys = AuthKeys(cfg.get(config, cfg.KEY_PREFIX))
        self.secret = cfg.get(config, cfg.SECRET)
        self.window = int(cfg.get(config, cfg.RATE_WINDOW_S))
        # (bucket, staff?) -> requests per window. Residents' links count as anonymous
        # callers for submissions: a link is for reading one issue, not for submitting.
        self.limits = {(SUBMIT, True): int(cfg.get(config, cfg.RATE_SUBMIT)),
                       (SUBMIT, False): int(cfg.get(config, cfg.RATE_SUBMIT_ANONYMOUS)),
                       (READ, True): int(cfg.get(config, cfg.RATE_READ)),
                       (READ, False): int(cfg.get(config, cfg.RATE_READ))}
        self.anonymous_submit = _true(cfg.get(config, cfg.ANONYMOUS_SUBMIT))
        self.token_ttl = int(cfg.get(config, cfg.TOKEN_TTL))
        self.token_max_age = int(cfg.get(config, cfg.TOKEN_MAX_AGE))
        self.audit_max = int(cfg.get(config, cfg.AUDIT_MAX_ENTRIES))
        self._script = self.client.register_script(_GUARD)
        self._pending: dict[Any, _Audit] = {}
        self._verified: dict[str, Principal] = {}  # Authorization header -> staff principal
        # id(staff principal) -> (it, its audit fields scrubbed): see _who
        self._who_verified: dict[int, tuple[Principal, dict[str, str]]] = {}

    def stop(self):
        self.client.close()

    def kill(self):
        with contextlib.suppress(Exception):  # kill() must not raise
            self.client.close()

    def get_dependency(self, worker_ctx):
        return GuardAccess(self, worker_ctx)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        entry = self._pending.pop(worker_ctx, None)
        if entry is None:
            return
        fields = self._entry_fields(entry, entry.status or _status(result, exc_info))
        if fields is None:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            # Redis gone after the write went through: the write's own record is in
            # the issue's journal; the request itself already failed if it needed Redis.
            self.client.xadd(self.keys.audit, fields, maxlen=self.audit_max,
                             approximate=True)

    def _entry_fields(self, entry: _Audit, status: int) -> dict[str, str] | None:
        """The audit log's entry for an outcome, scrubbed; None when it is not logged."""
        if status == 429 or (status >= 400 and entry.principal.role is Role.anonymous):
            return None  # nobody to attribute, or a flood: the log must not drown in them
        # The time is the entry's own text, never a caller's, and holds nothing to mask:
        # not scrubbed. The scrubber's cheap check lets no timestamp by (its dates and
        # times are runs of digits and separators, as phone numbers are), so each one
        # went through the full phone patterns, more than the rest of the entry cost
        # (tests/unit/test_privacy.py: scrubbing leaves every such timestamp as it is).
        fields = {"at": datetime.now(UTC).isoformat(),
                  **scrub({"action": entry.action, "status": str(status)})}
        fields.update(self._who(entry.principal))
        if entry.issue_id:
            fields["issue_id"] = scrub(audited_issue_id(entry.issue_id))
        if entry.issue_ids:
            fields["issue_ids"] = ",".join(audited_issue_id(i) for i in entry.issue_ids)
        return fields

    def _who(self, principal: Principal | ApiClient) -> dict[str, str]:
        """The principal's audit fields, scrubbed; a verified staff principal's were
        scrubbed once, when :meth:`principal` remembered it (the same object comes back
        for its token on every request)."""
        remembered = self._who_verified.get(id(principal))
        if remembered is not None and remembered[0] is principal:
            return remembered[1]
        return scrub(principal.audit_fields())

    def worker_teardown(self, worker_ctx):
        self._pending.pop(worker_ctx, None)

    # ------------------------------------------------------------------ checks

    def principal(self, request) -> Principal:
        """``principal_from_request``, remembering staff tokens already verified.

        A signature check costs more than the rest of the door together (PyJWT: ~160 us
        here), and a desk or agency client sends the same token all shift. A token seen
        before, byte for byte (signature included), is not verified again until it
        expires; revocation is still asked of Redis on every request (:meth:`admit`).
        """
        header = request.headers.get("Authorization")
        known = self._verified.get(header) if header else None
        if known is not None and known.expires_at + CLOCK_SKEW_S > time.time():
            return known
        principal = principal_from_request(request.headers, request.args, self.secret,
                                           address=request.remote_addr)
        if header and principal.is_staff:
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()  # a few thousand staff tokens live at once at most
                self._who_verified.clear()
            self._verified[header] = principal
            self._who_verified[id(principal)] = (principal, scrub(principal.audit_fields()))
        return principal

    def admit(self, principal: Principal, bucket: str) -> None:
        """Revocation (staff) and the rate limit, in one round trip; raises on refusal."""
        staff = principal.is_staff
        limit = self.limits.get((bucket, staff), 0)
        if not staff and limit <= 0:
            return
        keys = [self.keys.rate(bucket, principal.client),
                self.keys.revoked(principal.jti or "-"),
                self.keys.revoked_staff(principal.agency or "-", principal.staff_id or "-")]
        try:
            count, wait = run_script(self._script, keys, [limit, self.window,
                                                          principal.issued_at or 0,
                                                          "1" if staff else "0"])
        except REDIS_ERRORS as exc:
            raise Unavailable(f"cannot check the request: {type(exc).__name__}") from exc
        if count == -1:
            raise Unauthorized("token has been revoked")
        if wait:
            raise RateLimited(f"too many requests; try again in {wait} s", retry_after=wait)


class GuardAccess:
    """What a worker gets: :meth:`check` for HTTP, :meth:`staff` for RPC tokens."""

    def __init__(self, guard: Guard, worker_ctx):
        self._guard = guard
        self._worker_ctx = worker_ctx

    @property
    def anonymous_submit(self) -> bool:
        return self._guard.anonymous_submit

    def check(self, request, action: str | None = None, issue_id: str | None = None,
              bucket: str = READ, anonymous: bool = False) -> Principal:
        """The request's principal, admitted (not revoked, within its rate limit).

        ``action`` names a write: the worker's outcome is then audited under it.
        ``anonymous``: whether a caller without a token may go on (to be limited and
        judged by ``shared.authz``); otherwise 401 at once, before Redis is asked.
        """
        principal = self._guard.principal(request)
        if action is not None:
            self.record(principal, action, issue_id)
        if not anonymous and principal.role is Role.anonymous:
            raise Unauthorized("sign in: this needs a staff token or your own link")
        self._guard.admit(principal, bucket)
        return principal

    def check_token(self, token: str, action: str | None = None, issue_id: str | None = None,
                    bucket: str = READ, address: str | None = None) -> Principal:
        """:meth:`check` for a token that came in a request's body (a rating form)."""
        principal = principal_from_request({"Authorization": f"Bearer {token}"}, {},
                                           self._guard.secret, address=address)
        if action is not None:
            self.record(principal, action, issue_id)
        self._guard.admit(principal, bucket)
        return principal

    def staff(self, token: str | None, action: str | None = None,
              issue_id: str | None = None) -> Principal:
        """An RPC caller's staff token: verified, not revoked (no rate limit: RPC callers
        hold broker credentials, see docs/security.md); audited when ``action`` is given."""
        principal = verify_token(token, self._guard.secret)
        if action is not None:
            self.record(principal, action, issue_id)
        self._guard.admit(principal, RPC)
        return principal

    def refresh(self, principal: Principal) -> dict[str, Any]:
        """``POST /auth/refresh``: a fresh token for an admitted staff principal, and the
        old one revoked, so a refresh chain has one live token (``shared.auth``)."""
        guard = self._guard
        fresh = refresh_token(principal, guard.secret, guard.token_ttl, guard.token_max_age)
        new = verify_token(fresh, guard.secret)
        try:
            revoke(guard.client, guard.keys.prefix, principal.jti)
        except REDIS_ERRORS as exc:
            raise Unavailable(f"cannot refresh now: {type(exc).__name__}") from exc
        return {"token": fresh, "jti": new.jti, "expires_at": new.expires_at}

    def record(self, principal: Principal | ApiClient, action: str,
               issue_id: str | None = None) -> None:
        """Audit this worker's outcome as ``action`` by ``principal`` (the last call wins)."""
        self._guard._pending[self._worker_ctx] = _Audit(principal, action, issue_id)

    def on_issue(self, issue_id: str, status: int | None = None) -> None:
        """Name the issue the audited write created (a submission learns it late) and,
        with ``status``, the write's outcome when the worker's own answer is not it (a
        page answers a submission with a redirect; the submission was a 201)."""
        entry = self._guard._pending.get(self._worker_ctx)
        if entry is not None:
            entry.issue_id = issue_id
            entry.status = status

    def on_issues(self, issue_ids: list[str]) -> None:
        """Name every issue a read of residents' contacts showed (the desk's relay list):
        the audited read's entry lists them (``issue_ids``)."""
        entry = self._guard._pending.get(self._worker_ctx)
        if entry is not None:
            entry.issue_ids = tuple(dict.fromkeys(issue_ids))

    def entry_for_the_write(self, issue_id: str, status: int) -> StreamEntry | None:
        """The audit entry this worker's write will have if it commits with ``status``,
        for the store to write in the same script as the write (a submission): no round
        trip of its own, and no window in which the issue exists unaudited. None when
        nothing is audited. Call :meth:`audited_with_the_write` once it has committed."""
        guard = self._guard
        entry = guard._pending.get(self._worker_ctx)
        if entry is None:
            return None
        entry.issue_id = issue_id
        fields = guard._entry_fields(entry, status)
        return None if fields is None else StreamEntry(guard.keys.audit, fields,
                                                       guard.audit_max)

    def audited_with_the_write(self) -> None:
        """The entry from :meth:`entry_for_the_write` is written: none at the worker's end."""
        self._guard._pending.pop(self._worker_ctx, None)

    def audited_elsewhere(self) -> None:
        """This worker's write was handed to the service that owns it, which audits it
        (its RPC carries the same token: who, what, the real outcome). Its own entry is
        dropped, so the write has exactly one (the pages call this once that service
        answered)."""
        self._guard._pending.pop(self._worker_ctx, None)


@dataclass(frozen=True)
class ApiClient:
    """An Open311 client, known by the name its key was issued under
    (``whistle open311 key add NAME``): who posted a request, for the audit log. It
    holds no staff token, so it is no :class:`~shared.auth.Role`: it reads only what
    Open311 shows and its own requests."""

    name: str
    role: str = "open311_client"

    def audit_fields(self) -> dict[str, str]:
        return {"role": self.role, "client": self.name}


class _Audit:
    __slots__ = ("principal", "action", "issue_id", "status", "issue_ids")

    def __init__(self, principal: Principal | ApiClient, action: str, issue_id: str | None):
        self.principal, self.action, self.issue_id = principal, action, issue_id
        self.status: int | None = None  # the outcome, when not the worker's own answer
        self.issue_ids: tuple[str, ...] = ()  # a read that showed several issues' contacts


NOT_AN_ISSUE_ID = "(not an issue id)"


def audited_issue_id(value: Any) -> str:
    """The issue id an audit entry names: the path's ``{id}`` only when it is shaped like
    one (``WH-20261121-0001``). A path parameter is whatever the caller typed, a phone
    number included, and the audit log keeps no personal data. An RPC argument may be no
    string at all (``7``, ``None``), and this runs in ``worker_result``, where raising
    would stop the whole service container."""
    return value if isinstance(value, str) and ISSUE_ID.fullmatch(value) else NOT_AN_ISSUE_ID


def _status(result: Any, exc_info: Any) -> int:
    if exc_info is not None:
        exc = exc_info[1]
        return exc.status if isinstance(exc, WhistleError) else 500
    if isinstance(result, tuple):
        return int(result[0])
    return int(getattr(result, "status_code", 200))


def _true(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")

"""Staff sessions for the pages: the pasted token stays on the server.

The browser holds only a random session id, in an HttpOnly, SameSite=Strict cookie;
the token itself is kept in Redis (``{p}:web:session:{sid}``) with the session's
CSRF secret, and expires with the token. Every request verifies the token again
with the same helper the API uses, so a token that expired (or was revoked) ends
the session at once. Signing out deletes the key.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from shared.store import RedisProvider

COOKIE = "whistle_session"
SIGNIN_CSRF_COOKIE = "whistle_signin"
MAX_SESSION_S = 12 * 3600
# How long a new-issue form's send is remembered (``views.submission_key``): a double
# click, a resend on a slow line, the back button and send again.
SUBMISSION_TTL_S = 600


@dataclass(frozen=True)
class Session:
    sid: str
    token: str
    csrf: str

    def csrf_ok(self, submitted: str | None) -> bool:
        return csrf_matches(self.csrf, submitted)


def csrf_matches(expected: str | None, submitted: str | None) -> bool:
    """Whether a form's CSRF secret is the one expected, compared in constant time.
    As bytes: ``hmac.compare_digest`` raises on a str holding anything outside ASCII,
    which any form can send, and that was a 500 with a logged traceback, not a 403."""
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


class SessionStore:
    def __init__(self, client, prefix: str):
        self.redis, self.prefix = client, prefix

    def _key(self, sid: str) -> str:
        return f"{self.prefix}:web:session:{sid}"

    def create(self, token: str, ttl_s: int) -> Session:
        session = Session(sid=secrets.token_urlsafe(32), token=token,
                          csrf=secrets.token_urlsafe(32))
        ttl = max(1, min(int(ttl_s), MAX_SESSION_S))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._key(session.sid), mapping={"token": token, "csrf": session.csrf})
        pipe.expire(self._key(session.sid), ttl)
        pipe.execute()
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 64:
            return None
        data = self.redis.hgetall(self._key(sid))
        if not data.get("token"):
            return None
        return Session(sid=sid, token=data["token"], csrf=data["csrf"])

    def delete(self, sid: str) -> None:
        self.redis.delete(self._key(sid))

    # A new-issue form's send, once: claimed (empty) while it is submitted, then the
    # issue it created; forgotten if it was refused, so the corrected form goes through.

    def _submission(self, sid: str, key: str) -> str:
        return f"{self.prefix}:web:submitted:{sid}:{key}"

    def claim_submission(self, sid: str, key: str) -> bool:
        return bool(self.redis.set(self._submission(sid, key), "", nx=True,
                                   ex=SUBMISSION_TTL_S))

    def submitted_issue(self, sid: str, key: str) -> str | None:
        """The issue the send created; ``""`` while it is being submitted; None: no such
        send (never, or refused)."""
        return self.redis.get(self._submission(sid, key))

    def record_submission(self, sid: str, key: str, issue_id: str) -> None:
        self.redis.set(self._submission(sid, key), issue_id, ex=SUBMISSION_TTL_S)

    def forget_submission(self, sid: str, key: str) -> None:
        self.redis.delete(self._submission(sid, key))


class Sessions(RedisProvider):
    """Injects a :class:`SessionStore` (one Redis client per container)."""

    def setup(self):
        super().setup()
        self.sessions = SessionStore(self.client, self.prefix)

    def get_dependency(self, worker_ctx):
        return self.sessions

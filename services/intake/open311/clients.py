"""Open311 clients in Redis: their API keys, the requests each created, the posting limit.

Key scheme (``{p}`` is ``WHISTLE_KEY_PREFIX``)::

    {p}:open311:keys                      hash    sha256(api key) -> client name
    {p}:open311:clients                   hash    client name -> {"key_sha256", "created_at"} (JSON)
    {p}:open311:client:{name}:requests    zset    issue ids the client created, by received time
    {p}:rl:open311_post:{name}            string  the client's POSTs this minute (shared.guard's scheme)
    {p}:rl:open311_read:{address}         string  reads from one address this window (same)

Only a key's SHA-256 is stored: a key is 256 random bits, so a fast hash is enough
(a slow password hash protects guessable secrets; these are not guessable), and a
copy of Redis gives no usable key. ``whistle open311 key add NAME`` prints the key
once; ``key revoke NAME`` removes it at once, for every worker.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import redis

from shared.contracts import utcnow
from shared.errors import InvalidPayload, Unavailable
from shared.guard import _GUARD as GUARD_SCRIPT
from shared.guard import AuthKeys
from shared.jsoncodec import dumps, loads
from shared.store import REDIS_ERRORS

POST_BUCKET = "open311_post"  # POSTs per client key, OPEN311_POST_LIMIT a minute
POST_WINDOW_S = 60
READ_BUCKET = "open311_read"  # reads per client address, WHISTLE_RATE_READ a window
CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY_PREFIX = "o311_"  # shared.privacy cuts such keys out of free text: keep the two alike


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ClientInfo:
    name: str
    created_at: str


class Open311Clients:
    """API keys and per-client request lists (see the key scheme above)."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.redis = client
        self.prefix = prefix

    @property
    def _keys(self) -> str:
        return f"{self.prefix}:open311:keys"

    @property
    def _clients(self) -> str:
        return f"{self.prefix}:open311:clients"

    def _requests(self, name: str) -> str:
        return f"{self.prefix}:open311:client:{name}:requests"

    # ---------------------------------------------------------------- keys

    def add(self, name: str) -> str:
        """A new key for client ``name`` (refused if it has one: revoke it first)."""
        if not CLIENT_NAME.fullmatch(name):
            raise InvalidPayload("a client name is 1-64 letters, digits, '.', '_' or '-'")
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = key_digest(api_key)
        info = dumps({"key_sha256": digest, "created_at": utcnow().isoformat()})
        if not self._call(self.redis.hsetnx, self._clients, name, info):
            raise InvalidPayload(f"client {name!r} already has a key; revoke it first")
        self._call(self.redis.hset, self._keys, digest, name)
        return api_key

    def revoke(self, name: str) -> bool:
        raw = self._call(self.redis.hget, self._clients, name)
        if raw is None:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self._keys, loads(raw)["key_sha256"])
        pipe.hdel(self._clients, name)
        self._call(pipe.execute)
        return True

    def list(self) -> list[ClientInfo]:
        rows = self._call(self.redis.hgetall, self._clients)
        return [ClientInfo(name, loads(raw)["created_at"]) for name, raw in sorted(rows.items())]

    def client_for(self, api_key: str | None) -> str | None:
        """The client a key belongs to; None for no key, or one unknown or revoked."""
        if not api_key:
            return None
        return self._call(self.redis.hget, self._keys, key_digest(api_key))

    # ----------------------------------------------------------- requests

    def record_request(self, name: str, issue_id: str, received: datetime) -> None:
        self._call(self.redis.zadd, self._requests(name), {issue_id: received.timestamp()})

    def owns(self, name: str, issue_id: str) -> bool:
        return self._call(self.redis.zscore, self._requests(name), issue_id) is not None

    def owned(self, name: str, issue_ids: list[str]) -> list[str]:
        """Those of ``issue_ids`` the client created, in the order given (one round trip)."""
        if not issue_ids:
            return []
        scores = self._call(self.redis.zmscore, self._requests(name), issue_ids)
        return [i for i, score in zip(issue_ids, scores, strict=True) if score is not None]

    def requests_between(self, name: str, start: datetime, end: datetime) -> list[str]:
        """The client's requests received in ``[start, end]``, newest first."""
        return self._call(self.redis.zrevrangebyscore, self._requests(name),
                          end.timestamp(), start.timestamp())

    # -------------------------------------------------------------- limit

    def within_limit(self, bucket: str, client: str, limit: int, window_s: int
                     ) -> tuple[bool, int]:
        """Whether ``client`` may make one more request in ``bucket``, and if not, the
        seconds to wait.

        Whistle's own limiter (``shared.guard``): its fixed-window script and its key
        scheme (``{p}:rl:{bucket}:{client}``); the script's revocation check is for
        staff tokens and is off here. The one place Open311's limits are decided.
        """
        keys = [AuthKeys(self.prefix).rate(bucket, client), "-", "-"]
        _, wait = self._call(self.redis.register_script(GUARD_SCRIPT), keys=keys,
                             args=[limit, window_s, 0, "0"])
        return wait == 0, int(wait)

    @staticmethod
    def _call(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except REDIS_ERRORS as exc:
            raise Unavailable(f"Open311 client store unavailable: {type(exc).__name__}") \
                from exc


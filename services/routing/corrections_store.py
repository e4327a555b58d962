"""Where the desk's corrections are kept: one small adapter (Redis today).

Key: ``{p}:routing:corrections`` (hash: correction id -> JSON). A correction id is
``<issue id>:<route.corrected event id>``, written with HSETNX, so a redelivered
event changes nothing. Another store (PostgreSQL) implements the same
two methods, ``add`` and ``all``.

Usage, in a service::

    class RoutingService:
        corrections = CorrectionsProvider()   # self.corrections.add(correction)

and offline (the CLI): ``RedisCorrections(connect(url), prefix).all()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import redis

from services.routing.corrections import Correction
from shared.errors import Unavailable
from shared.store import REDIS_ERRORS, RedisProvider

SCAN_BATCH = 500


class CorrectionStore(Protocol):
    def add(self, correction: Correction) -> bool: ...

    def all(self) -> list[Correction]: ...


class RedisCorrections:
    """Corrections in one Redis hash."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.redis = client
        self.key = f"{prefix}:routing:corrections"

    def add(self, correction: Correction) -> bool:
        """Keep a correction once; whether it was new."""
        try:
            return bool(self.redis.hsetnx(self.key, correction.correction_id,
                                          correction.model_dump_json()))
        except REDIS_ERRORS as exc:
            raise Unavailable(f"corrections store unavailable: {type(exc).__name__}") from exc

    def all(self) -> list[Correction]:
        return list(self._scan())

    def _scan(self) -> Iterator[Correction]:
        # HSCAN, not HGETALL: a district's corrections grow without bound.
        try:
            for _field, raw in self.redis.hscan_iter(self.key, count=SCAN_BATCH):
                yield Correction.model_validate_json(raw)
        except REDIS_ERRORS as exc:
            raise Unavailable(f"corrections store unavailable: {type(exc).__name__}") from exc


class CorrectionsProvider(RedisProvider):
    """Injects a :class:`RedisCorrections` built once per container."""

    def setup(self):
        super().setup()
        self.corrections = RedisCorrections(self.client, self.prefix)

    def get_dependency(self, worker_ctx) -> CorrectionStore:
        return self.corrections

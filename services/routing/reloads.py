"""A reload asked of one routing process reaches every routing process.

An RPC is taken by one consumer of routing's queue. With two routing processes,
``reload_model`` (or ``reload_rules``) changed one of them and left the other routing
with the old model, silently. So the process that reloaded also writes what it now
holds (the model's version, the rules file's digest) to ``{p}:routing:wanted``, and
every routing process looks there every :data:`FOLLOW_INTERVAL_S` (one ``HGETALL``)
and reloads from its own configured artefact or rules file when it holds something
else. It compares states, not counters, so a process that started after the reload
(and so read the new files itself) has nothing to do. Each wanted value is acted on
once: a process whose own copy loads something else (another file, a pinned
artefact) logs it and does not try again until the next reload is asked for.

SIGHUP stays what it is for every daemon: this process only.

Usage, in a service::

    class RoutingService:
        reloads = ReloadFollowing()

        @timer(interval=FOLLOW_INTERVAL_S)
        def follow_reloads(self):
            for what in self.reloads.due({MODEL: ..., RULES: ...}):
                ...reload ``what`` here...
"""

from __future__ import annotations

import contextlib
from logging import getLogger

from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider

from shared import config as cfg
from shared.store import REDIS_ERRORS, connect

MODEL, RULES = "model", "rules"
RELOADABLE = (MODEL, RULES)
FOLLOW_INTERVAL_S = 2.0

_log = getLogger(__name__)


def to_reload(held: dict[str, str], wanted: dict[str, str],
              acted_on: dict[str, str]) -> list[str]:
    """What to reload: what another process asked for that this one neither holds nor
    has tried already.

    >>> to_reload({"model": "v1", "rules": "r1"}, {"model": "v2", "rules": "r1"}, {})
    ['model']
    >>> to_reload({"model": "v1"}, {"model": "v2"}, {"model": "v2"})  # tried: v1 came back
    []
    """
    return [what for what in RELOADABLE
            if wanted.get(what) and wanted[what] != held.get(what)
            and wanted[what] != acted_on.get(what)]


class ReloadFollowing(DependencyProvider):
    """What routing processes were last asked to hold, in Redis, and the lock that keeps
    one reload at a time in this process."""

    def setup(self):
        config = self.container.config
        self.client = connect(cfg.get(config, cfg.REDIS_URL))
        self.key = f"{cfg.get(config, cfg.KEY_PREFIX)}:routing:wanted"
        self.acted_on: dict[str, str] = {}
        # A follow and an RPC's own reload of the same thing would otherwise both load it.
        self.lock = Semaphore()

    def stop(self):
        self.client.close()

    def kill(self):
        with contextlib.suppress(Exception):  # kill() must not raise
            self.client.close()

    def get_dependency(self, worker_ctx) -> ReloadFollowing:
        return self

    def due(self, held: dict[str, str]) -> list[str]:
        """What to reload now, given what this process ``held``; marked as acted on.
        Empty while Redis cannot be reached (the next look tries again)."""
        try:
            wanted = self.client.hgetall(self.key)
        except REDIS_ERRORS as exc:
            _log.warning("reloads not looked at: %s", type(exc).__name__)
            return []
        due = to_reload(held, wanted, self.acted_on)
        self.acted_on.update({what: wanted[what] for what in due})
        return due

    def announce(self, what: str, held: str) -> bool:
        """This process reloaded ``what`` and holds ``held``: the others follow. False
        when Redis cannot be reached (then only this process has reloaded)."""
        try:
            self.client.hset(self.key, what, held)
        except REDIS_ERRORS as exc:
            _log.error("%s reloaded here, but the other routing processes were not told: %s",
                       what, type(exc).__name__)
            return False
        self.acted_on[what] = held
        return True

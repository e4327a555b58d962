"""The agencies the routing rules in force know, for services that take an agency from a
caller but do not route (agency's lists).

Read from the rules file (``RULES_FILE``, else the shipped rules) and read again when
the file changes (one ``stat`` a call), so an agency added by a rules reload in routing
is known here without a restart, as intake's Open311 catalogue does.
"""

from __future__ import annotations

import os
from logging import getLogger

from nameko.extensions import DependencyProvider

from services.routing.rules import SHIPPED_RULES, RulesError, load_rules
from shared import config as cfg

_log = getLogger(__name__)


class KnownAgencies(DependencyProvider):
    """``self.known_agencies()`` in a worker: the rules' agency codes, sorted; ``None``
    when no rules file could ever be read (nothing is refused then: routing, which
    refuses to start on such a file, is the one to say so)."""

    def setup(self):
        self.path = cfg.get(self.container.config, cfg.RULES_FILE) or str(SHIPPED_RULES)
        self._loaded: tuple[float, list[str]] | None = None
        self()

    def __call__(self) -> list[str] | None:
        try:
            mtime = os.stat(self.path).st_mtime
            if self._loaded is None or self._loaded[0] != mtime:
                self._loaded = (mtime, sorted(load_rules(self.path).agencies))
        except (OSError, RulesError, ValueError) as exc:
            # A bad edit keeps the last good file's agencies, as routing keeps its rules.
            _log.warning("known agencies kept from the last good rules file: %s",
                         str(exc).splitlines()[0])
        return None if self._loaded is None else self._loaded[1]

    def get_dependency(self, worker_ctx):
        return self

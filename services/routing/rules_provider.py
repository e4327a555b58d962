"""Routing rules that can be replaced while routing runs (SIGHUP, or the RPC).

A reload reads and validates the whole new file before anything changes. If it
is bad, the rules in force stay in force and the error (every line of it) goes
back to whoever asked. If it is good, the provider swaps one reference: workers
already running keep the :class:`RuleSet` they were given, the next worker gets
the new one. Nothing about message consumption is touched, so a reload neither
drops nor redelivers a message.

Usage, in a service::

    class RoutingService:
        name = "routing"
        rules = ReloadableRules()        # self.rules is a RuleSet in every worker

        @rpc(expected_exceptions=EXPECTED_ERRORS)
        def reload_rules(self, path=None):
            return reload_for_rpc(rules_provider_for(self.name), path)

and from a signal handler, :func:`reload_all`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from logging import getLogger
from pathlib import Path

from nameko.extensions import DependencyProvider

from services.routing.rules import SHIPPED_RULES, RuleProblem, RulesError, RuleSet, parse_rules
from shared import config as cfg
from shared.contracts import utcnow
from shared.errors import InvalidPayload
from shared.jsoncodec import utc_moment

__all__ = [
    "LoadedRules", "ReloadableRules", "describe", "live_providers", "read_rules",
    "reload_all", "reload_for_rpc", "rules_provider_for",
]

_log = getLogger(__name__)

# Providers of running containers, for reload_all() (a signal handler has no other
# way to reach them). Added on start, removed on stop or kill.
_LIVE: list[ReloadableRules] = []


@dataclass(frozen=True)
class LoadedRules:
    """One loaded rules file; replaced whole, so rules, source and time always agree.
    ``digest``: the file's text, hashed (``services.routing.reloads``: which rules a
    routing process holds)."""

    rules: RuleSet
    source: str
    loaded_at: datetime
    digest: str = ""


def read_rules(path: str | Path | None) -> LoadedRules:
    """Load and fully validate a rules file (``None``: the shipped one).

    Raises :class:`RulesError` for a bad file, including one that is not UTF-8
    text, and ``OSError`` for one that cannot be read.
    """
    source = str(path) if path is not None else str(SHIPPED_RULES)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError([RuleProblem(source, None, "(file)",
                                      f"not UTF-8 text: {exc.reason}")]) from None
    return LoadedRules(parse_rules(text, source=source), source, utcnow(),
                       hashlib.sha256(text.encode()).hexdigest()[:16])


def describe(loaded: LoadedRules) -> dict:
    """What an operator wants to see after a reload."""
    return {
        "rules": len(loaded.rules.rules),
        "agencies": len(loaded.rules.agencies),
        "source": loaded.source,
        "loaded_at": utc_moment(loaded.loaded_at),
    }


class ReloadableRules(DependencyProvider):
    """The routing rules, loaded at container setup and replaceable at run time.

    A bad file at setup raises :class:`RulesError` and stops the service before
    it consumes anything. Each worker gets the :class:`RuleSet` in force when it
    started, and keeps it for its whole run even if a reload happens meanwhile.
    """

    def setup(self):
        self.loaded: LoadedRules = read_rules(
            cfg.get(self.container.config, cfg.RULES_FILE) or None)

    def start(self):
        # Not in setup(): another extension's setup may still fail the container.
        _LIVE.append(self)

    def stop(self):
        self._forget()

    def kill(self):
        self._forget()

    def _forget(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)

    @property
    def service_name(self) -> str:
        return self.container.service_name

    def get_dependency(self, worker_ctx) -> RuleSet:
        return self.loaded.rules

    def reload(self, path: str | None = None) -> RuleSet:
        """Replace the rules with ``path`` (default: the file loaded last).

        On success the new file also becomes the one the next plain reload reads.
        Raises :class:`RulesError` or ``OSError``, with the old rules still in force.
        """
        source = path if path is not None else self.loaded.source
        try:
            new = read_rules(source)
        except (RulesError, OSError) as exc:
            _log.error("rules not reloaded from %s, keeping %d rules from %s: %s",
                       source, len(self.loaded.rules.rules), self.loaded.source, exc)
            raise
        self.loaded = new  # the swap: one reference, atomic for every green thread
        _log.info("rules reloaded from %s: %d rules", new.source, len(new.rules.rules))
        return new.rules


def live_providers() -> list[ReloadableRules]:
    """The providers of every running container in this process."""
    return list(_LIVE)


def rules_provider_for(service_name: str) -> ReloadableRules:
    """The live provider of the service called ``service_name`` in this process.

    A process normally runs one container per service; were there several, the
    most recently started one is returned.
    """
    for provider in reversed(_LIVE):
        if provider.service_name == service_name:
            return provider
    raise LookupError(f"no running service {service_name!r} with reloadable rules")


def reload_all() -> list[tuple[str, str]]:
    """Reload every live provider from its own file: ``[(service name, "ok" or the error)]``.

    One bad reload does not stop the others; each keeps its old rules on failure.
    """
    outcomes = []
    for provider in live_providers():
        try:
            provider.reload()
        except (RulesError, OSError) as exc:
            outcomes.append((provider.service_name, str(exc)))
        else:
            outcomes.append((provider.service_name, "ok"))
    return outcomes


def reload_for_rpc(provider: ReloadableRules, path: str | None = None) -> dict:
    """``provider.reload(path)`` for an RPC: :func:`describe` on success, else
    :class:`InvalidPayload` carrying every line of the problem (old rules kept)."""
    try:
        provider.reload(path)
    except RulesError as exc:
        raise InvalidPayload(
            f"rules not reloaded, the old rules stay in force:\n{exc}",
            [{"field": p.path, "line": p.line, "message": str(p), "type": "rules"}
             for p in exc.problems]) from None
    except OSError as exc:
        source = path if path is not None else provider.loaded.source
        raise InvalidPayload(
            f"rules not reloaded, the old rules stay in force: cannot read {source}: "
            f"{exc.strerror or exc}",
            [{"field": "path", "message": exc.strerror or str(exc), "type": "os_error"}],
        ) from None
    return describe(provider.loaded)

"""The names behind the codes: categories and agencies, from the routing rules file.

The pages show ``飞线/电线裸露`` rather than ``flying_wire`` and offer the categories
and agencies in their forms. They read the same file routing routes by
(``RULES_FILE``, else the shipped rules) once at start, for names only; routing stays
the one that decides (a restarted web picks up a changed file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from logging import getLogger

from nameko.extensions import DependencyProvider

from services.routing.rules import DEFAULT_SUPERVISORS, RulesError, load_rules
from services.web.views import Translator
from shared import config as cfg

_log = getLogger(__name__)


@dataclass(frozen=True)
class Names:
    categories: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (zh, en)
    agencies: dict[str, tuple[str, str]] = field(default_factory=dict)
    supervisors: dict[str, tuple[str, str]] = field(default_factory=dict)  # level -> names
    # The category of a report no rule recognises (``general``): the rules file gives it
    # no name, so the pages' catalogue does (``fallback_category``).
    fallback: str | None = None

    @property
    def routable(self) -> list[str]:
        """Every category the desk may choose (routing's ``category_names``): the rules'
        and then the fallback. Without the fallback a reroute form on an issue of that
        category preselected the first rule's (飞线): one click sent it to the power company."""
        extra = [self.fallback] if self.fallback and self.fallback not in self.categories else []
        return [*self.categories, *extra]

    def category(self, code: str | None, lang: str) -> str:
        if code and code == self.fallback and code not in self.categories:
            return Translator(lang)("fallback_category")
        return _pick(self.categories.get(code or ""), lang) or code or "—"

    def agency(self, code: str | None, lang: str) -> str:
        return _pick(self.agencies.get(code or ""), lang) or code or "—"

    def supervisor(self, level: str | None, lang: str) -> str | None:
        """Who supervises at an escalation level (街道办事处), if the rules say."""
        return _pick(self.supervisors.get(level or ""), lang)


def _pick(names: tuple[str, str] | None, lang: str) -> str | None:
    return None if names is None else names[0] if lang == "zh" else names[1]


def names_from_rules(path: str | None) -> Names:
    rules = load_rules(path or None)
    return Names(categories={r.category: (r.name, r.name_en) for r in rules.rules},
                 agencies={code: (a.name, a.name_en) for code, a in rules.agencies.items()},
                 supervisors={level.value: (s.name, s.name_en) for level, s in
                              ((level, rules.supervisor(level)) for level in DEFAULT_SUPERVISORS)},
                 fallback=rules.fallback.category)


class Catalogue(DependencyProvider):
    def setup(self):
        path = cfg.get(self.container.config, cfg.RULES_FILE)
        try:
            self.names = names_from_rules(path)
        except (RulesError, OSError) as exc:  # routing refuses to start on it; pages show codes
            _log.warning("pages show category codes: the rules file cannot be read (%s)",
                         type(exc).__name__)
            self.names = Names()

    def get_dependency(self, worker_ctx):
        return self.names

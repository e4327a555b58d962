"""Deciding where a resident's problem goes (精准派单). Pure: no nameko, no Redis.

How a decision is made:

1. Every rule's keywords are looked for in the text (see :func:`match_rules`).
2. The primary rule is the desk's given category if it names a rule; otherwise
   the best match by (highest ``precedence``, most pressing priority, most
   distinct keywords, file order); otherwise the fallback (street office).
3. The primary rule's lead is the single lead. Supports are the primary's
   supports, then the leads and supports of the other matched rules, most
   pressing first, never repeating an agency.
4. The decision's priority is the most pressing of the primary and every other
   matched rule. A cracked balcony with wet wiring stays the housing side's to
   lead, but it is urgent because of the wiring (safety first).
5. Every assignment gets the same deadlines, from that priority's window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from services.routing.rules import CategoryRule, RuleSet, needle, normalise
from shared.contracts import Priority, Role, Sector

__all__ = [
    "PlannedAssignment", "RouteDecision", "RuleMatch", "match_rules", "normalise", "route_issue",
]

# CJK ideographs (with extension A and compatibility ideographs) and kana: text in
# these scripts has no spaces, so keywords containing them match as substrings.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class RuleMatch:
    category: str
    priority: Priority
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class PlannedAssignment:
    agency: str
    agency_name: str
    sector: Sector
    role: Role
    acknowledge_by: datetime
    resolve_by: datetime
    reason: str  # e.g. "lead of rule flying_wire", "support of rule pipe_leak"


@dataclass(frozen=True)
class RouteDecision:
    category: str
    priority: Priority
    rule: str  # the primary rule's category, or "fallback"
    keywords: tuple[str, ...]  # the primary rule's keywords found in the text
    category_source: str  # "given" | "keywords" | "fallback"
    assignments: tuple[PlannedAssignment, ...]
    matched: tuple[RuleMatch, ...]  # every rule that matched, in file order

    @property
    def lead(self) -> PlannedAssignment:
        return next(a for a in self.assignments if a.role is Role.lead)


# ------------------------------------------------------------------------ matching


_needle = lru_cache(maxsize=4096)(needle)


@lru_cache(maxsize=4096)
def _pattern(keyword: str) -> re.Pattern[str]:
    norm = _needle(keyword)
    body = re.escape(norm).replace(r"\ ", " ")
    if _CJK.search(norm):
        return re.compile(body)
    # Not \b: in Python it counts CJK as word characters, so "有gas leak" would
    # miss. Only ASCII letters and digits next to the keyword block a match.
    return re.compile(rf"(?<![0-9a-z]){body}(?![0-9a-z])")


def _occurrences(text: str, rules: RuleSet) -> list[tuple[int, int, int, str]]:
    """Every (start, end, rule index, keyword) found, overlapping ones included, sorted."""
    found = []
    by_first = rules.keywords_by_first_character
    for first in set(text):  # only keywords starting with a character the text holds
        for found_as, index, keyword in by_first.get(first, ()):
            if found_as not in text:
                continue  # a plain substring test first: most keywords are absent
            pattern = _pattern(keyword)
            pos = 0
            while (m := pattern.search(text, pos)) is not None:
                found.append((m.start(), m.end(), index, keyword))
                pos = m.start() + 1
    found.sort()
    return found


def _visible(found: list[tuple[int, int, int, str]]) -> list[tuple[int, int, int, str]]:
    """Drop any occurrence that overlaps a strictly longer one.

    Chinese has no spaces, so a short keyword can sit across a word boundary:
    停电 (power cut) inside 乱停电动车 (e-bikes parked anywhere). Listing the
    longer phrase (停电动车) under the right rule hides the accidental match.
    """
    kept = []
    for start, end, index, keyword in found:
        length = end - start
        if not any(s < end and start < e and e - s > length for s, e, _, _ in found):
            kept.append((start, end, index, keyword))
    return kept


def match_rules(text: str, rules: RuleSet) -> list[RuleMatch]:
    """Every rule whose keywords occur in ``text``, in file order.

    Case-insensitive and NFKC-normalised. Keywords with CJK characters match as
    substrings; others match whole words only ("gas" is not in "gasket"), so
    plurals and inflections must be listed as keywords of their own.
    """
    norm = normalise(text)
    by_rule: dict[int, list[tuple[int, str]]] = {}
    for start, _end, index, keyword in _visible(_occurrences(norm, rules)):
        by_rule.setdefault(index, []).append((start, keyword))
    matches = []
    for index in sorted(by_rule):
        rule = rules.rules[index]
        ordered = sorted(by_rule[index])  # as they appear in the text
        keywords = tuple(dict.fromkeys(keyword for _, keyword in ordered))
        matches.append(RuleMatch(rule.category, rule.priority, keywords))
    return matches


# ------------------------------------------------------------------------- routing


def route_issue(text: str, given_category: str | None, rules: RuleSet,
                now: datetime) -> RouteDecision:
    """Decide category, priority, lead and supports for one problem (see module doc)."""
    matches = match_rules(text, rules)
    by_category = {m.category: m for m in matches}
    order = {rule.category: i for i, rule in enumerate(rules.rules)}

    def rank(match: RuleMatch) -> tuple[int, int, int, int]:
        rule = rules.rule(match.category)
        return (-rule.precedence, match.priority.rank, -len(match.keywords),
                order[match.category])

    ranked = sorted(matches, key=rank)
    primary: CategoryRule | None
    if given_category is not None and rules.has_rule(given_category):
        primary, source = rules.rule(given_category), "given"
    elif ranked:
        primary, source = rules.rule(ranked[0].category), "keywords"
    else:
        primary, source = None, "fallback"

    if primary is None:
        fallback = rules.fallback
        window = rules.window(fallback.priority)
        lead = _plan(rules, fallback.lead, Role.lead, now + window.acknowledge,
                     now + window.resolve, "fallback: no rule matched")
        return RouteDecision(
            category=fallback.category, priority=fallback.priority, rule="fallback",
            keywords=(), category_source=source, assignments=(lead,), matched=(),
        )

    priority = min([primary.priority, *(m.priority for m in matches)], key=lambda p: p.rank)
    window = rules.window(priority)
    acknowledge_by, resolve_by = now + window.acknowledge, now + window.resolve

    planned = [(primary.lead, Role.lead, f"lead of rule {primary.category}")]
    planned += [(agency, Role.support, f"support of rule {primary.category}")
                for agency in primary.support]
    for match in ranked:
        if match.category == primary.category:
            continue
        other = rules.rule(match.category)
        planned.append((other.lead, Role.support, f"lead of rule {other.category}"))
        planned += [(agency, Role.support, f"support of rule {other.category}")
                    for agency in other.support]

    assignments: list[PlannedAssignment] = []
    seen: set[str] = set()
    for agency, role, reason in planned:
        if agency in seen:
            continue
        seen.add(agency)
        assignments.append(_plan(rules, agency, role, acknowledge_by, resolve_by, reason))

    primary_match = by_category.get(primary.category)
    return RouteDecision(
        category=primary.category, priority=priority, rule=primary.category,
        keywords=primary_match.keywords if primary_match else (),
        category_source=source, assignments=tuple(assignments), matched=tuple(matches),
    )


def _plan(rules: RuleSet, agency: str, role: Role, acknowledge_by: datetime,
          resolve_by: datetime, reason: str) -> PlannedAssignment:
    definition = rules.agency(agency)
    return PlannedAssignment(
        agency=agency, agency_name=definition.name, sector=definition.sector, role=role,
        acknowledge_by=acknowledge_by, resolve_by=resolve_by, reason=reason,
    )

"""Deciding where a resident's problem goes (精准派单). Pure: no nameko, no Redis.

How a decision is made (:func:`route_issue`):

1. Every rule's keywords are looked for in the text (:func:`find_keywords`); a hit
   that is denied ("没有停电", "no gas smell": ``negation.py``) does not count.
2. The category, first that applies:
   - the desk's given category, if it names a rule ("given");
   - a matched rule marked ``force: true``: a district's certainty ("forced");
   - the classifier's top category (``classifier.py``: a learned model, or the
     keywords themselves) when it is confident ("model" / "keywords");
   - when it is not: the desk decides (``triage``). The issue waits in
     ``needs_triage`` with the top three suggestions, unless the report looks
     urgent: then it is dispatched at once to the best guess *and* flagged for
     triage;
   - nothing known at all with triage off: the fallback, the street office.
3. The primary rule's lead is the single lead. Supports are the primary's
   supports, then the leads and supports of the other matched rules, most
   pressing first, never repeating an agency.
4. Priority: the most pressing of the primary and every other matched rule,
   urgent whenever the classifier says urgent. When the classifier chose the
   category, urgency is its decision: a matched urgent rule alone makes the issue
   only high if the classifier says it is not urgent (the keyword classifier says
   urgent whenever an urgent rule matched, so keywords alone behave as before).
5. Every assignment gets the same deadlines, from that priority's window.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from services.routing.classifier import (
    KEYWORDS_VERSION,
    Classification,
    is_confident,
)
from services.routing.features import fold
from services.routing.negation import negation_before
from services.routing.rules import RuleSet, needle, normalise
from shared.contracts import Priority, Role, Sector

__all__ = [
    "NegatedHit", "PlannedAssignment", "RouteDecision", "RuleMatch", "TriageCall",
    "find_keywords", "keyword_classification", "match_rules", "normalise", "rank_matches",
    "route_issue",
]

# CJK ideographs (with extension A and compatibility ideographs) and kana: text in
# these scripts has no spaces, so keywords containing them match as substrings.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

SUGGESTIONS = 3  # how many categories the desk's triage queue shows


@dataclass(frozen=True)
class RuleMatch:
    category: str
    priority: Priority
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class NegatedHit:
    """A keyword found but denied by the words before it: it routes nothing."""

    category: str
    keyword: str
    negator: str


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
class TriageCall:
    """The classifier is not sure: the desk chooses.

    ``hold``: the issue waits in ``needs_triage`` with no agency; otherwise (an
    urgent-looking report) it is dispatched to the best guess and only flagged.
    """

    hold: bool
    suggestions: tuple[tuple[str, float], ...]
    reason: str


@dataclass(frozen=True)
class RouteDecision:
    category: str
    priority: Priority
    rule: str  # the primary rule's category, or "fallback"
    keywords: tuple[str, ...]  # the primary rule's keywords found in the text
    category_source: str  # "given" | "forced" | "model" | "keywords" | "fallback"
    assignments: tuple[PlannedAssignment, ...]
    matched: tuple[RuleMatch, ...]  # every rule that matched, in file order
    classification: Classification | None = None
    triage: TriageCall | None = None
    negated: tuple[NegatedHit, ...] = field(default=())

    @property
    def lead(self) -> PlannedAssignment:
        return next(a for a in self.assignments if a.role is Role.lead)

    @property
    def held(self) -> bool:
        """Waits for the desk (``needs_triage``): nothing is dispatched yet."""
        return self.triage is not None and self.triage.hold

    @property
    def support(self) -> list[str]:
        return [a.agency for a in self.assignments if a.role is Role.support]


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


def _pairs(text: str) -> set[str]:
    """Every two characters in a row in ``text``: each character joined to the next
    (``map`` does it in C, for less than slicing the text at every index)."""
    return set(map(operator.add, text, text[1:]))


def _occurrences(text: str, rules: RuleSet) -> list[tuple[int, int, int, str]]:
    """Every (start, end, rule index, keyword) found, overlapping ones included, sorted."""
    found = []
    by_opening = rules.keywords_by_opening
    # Only keywords opening with a pair of characters the text holds (one set
    # intersection: a report holds a few dozen pairs, and most open no keyword).
    for opening in by_opening.keys() & _pairs(text):
        for found_as, index, keyword in by_opening[opening]:
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


def find_keywords(text: str, rules: RuleSet) -> tuple[list[RuleMatch], list[NegatedHit]]:
    """Every rule whose keywords occur in ``text``, in file order, and the hits denied.

    Case-insensitive, NFKC-normalised, traditional characters read as simplified
    (``features.fold``: 電梯 is 电梯). Keywords with CJK characters match as
    substrings; others match whole words only ("gas" is not in "gasket"), so
    plurals and inflections must be listed as keywords of their own. A hit that
    a negation just before it denies (``negation.negation_before``) is set aside:
    "没有停电" matches no rule.
    """
    norm = fold(text)
    by_rule: dict[int, list[tuple[int, str]]] = {}
    negated: list[NegatedHit] = []
    for start, _end, index, keyword in _visible(_occurrences(norm, rules)):
        negator = negation_before(norm, start)
        if negator is not None:
            negated.append(NegatedHit(rules.rules[index].category, keyword, negator))
            continue
        by_rule.setdefault(index, []).append((start, keyword))
    matches = []
    for index in sorted(by_rule):
        rule = rules.rules[index]
        ordered = sorted(by_rule[index])  # as they appear in the text
        keywords = tuple(dict.fromkeys(keyword for _, keyword in ordered))
        matches.append(RuleMatch(rule.category, rule.priority, keywords))
    # A rule both denied and affirmed elsewhere in the text counts as affirmed.
    affirmed = {m.category for m in matches}
    return matches, [hit for hit in dict.fromkeys(negated) if hit.category not in affirmed]


def match_rules(text: str, rules: RuleSet) -> list[RuleMatch]:
    """The rules :func:`find_keywords` matched (negated hits left out), in file order."""
    return find_keywords(text, rules)[0]


def rank_matches(matches: list[RuleMatch], rules: RuleSet) -> list[RuleMatch]:
    """Matches in order of preference: highest ``precedence``, most pressing priority,
    most distinct keywords, file order."""
    if len(matches) < 2:  # most reports: nothing to order
        return list(matches)
    order = {rule.category: i for i, rule in enumerate(rules.rules)}

    def rank(match: RuleMatch) -> tuple[int, int, int, int]:
        rule = rules.rule(match.category)
        return (-rule.precedence, match.priority.rank, -len(match.keywords),
                order[match.category])

    return sorted(matches, key=rank)


def keyword_classification(ranked: list[RuleMatch], rules: RuleSet) -> Classification:
    """What the keyword rules say, as a :class:`Classification` (see ``KeywordClassifier``)."""
    total = sum(len(m.keywords) for m in ranked)
    urgent = [m for m in ranked if m.priority is Priority.urgent]
    return Classification(
        top=[(m.category, len(m.keywords) / total) for m in ranked],
        evidence=[(keyword, 1.0) for keyword in ranked[0].keywords] if ranked else [],
        urgent=bool(urgent),
        urgent_reasons=[f"{', '.join(m.keywords)}: rule {m.category} is urgent" for m in urgent],
        confident=bool(ranked), model_version=KEYWORDS_VERSION)


# ------------------------------------------------------------------------- routing


def route_issue(text: str, given_category: str | None, rules: RuleSet, now: datetime,
                classification: Classification | None = None,
                threshold: float | None = None) -> RouteDecision:
    """Decide category, priority, lead and supports for one problem (see module doc).

    ``classification``: what the classifier read (default: the keyword rules').
    ``threshold``: ``WHISTLE_TRIAGE_THRESHOLD`` (None: the classifier's own judgement;
    0: never triage).
    """
    matches, negated = find_keywords(text, rules)
    ranked = rank_matches(matches, rules)
    if classification is None:
        classification = keyword_classification(ranked, rules)
    fallback_category = rules.fallback.category  # known: rules.category_names()
    guesses = [(c, p) for c, p in classification.top if c == fallback_category or rules.has_rule(c)]
    best = guesses[0][0] if guesses else None
    forced = [m for m in ranked if rules.rule(m.category).force]
    learned = classification.model_version != KEYWORDS_VERSION

    triage: TriageCall | None = None
    if given_category is not None and rules.has_rule(given_category):
        category, source = given_category, "given"
    elif forced:
        category, source = forced[0].category, "forced"
    else:
        category, source = best, "model" if learned else "keywords"
        if not is_confident(classification, threshold):
            why = (f"top category {best} at {classification.probability:.0%}" if best
                   else "no category recognised")
            triage = TriageCall(hold=not classification.urgent,
                                suggestions=tuple(guesses[:SUGGESTIONS]),
                                reason=f"not sure ({why}); the desk decides")
        if category is None:
            source = "fallback"

    primary = rules.rule(category) if category is not None and rules.has_rule(category) else None
    own_judgement = source in ("model", "keywords")

    def pressing(*priorities: Priority) -> Priority:
        found = min(priorities, key=lambda p: p.rank)
        if own_judgement and found is Priority.urgent and not classification.urgent:
            found = Priority.high  # the classifier decides urgency (see module doc)
        return Priority.urgent if classification.urgent else found

    extra = {"classification": classification, "triage": triage, "negated": tuple(negated)}
    if primary is None:
        fallback = rules.fallback
        priority = pressing(fallback.priority)
        window = rules.window(priority)
        why = "fallback: no rule matched" if source == "fallback" else f"category {category}"
        lead = _plan(rules, fallback.lead, Role.lead, now + window.acknowledge,
                     now + window.resolve, why)
        return RouteDecision(
            category=fallback.category, priority=priority, rule="fallback",
            keywords=(), category_source=source, assignments=(lead,), matched=tuple(matches),
            **extra,
        )

    priority = pressing(primary.priority, *(m.priority for m in matches))
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

    primary_match = next((m for m in matches if m.category == primary.category), None)
    return RouteDecision(
        category=primary.category, priority=priority, rule=primary.category,
        keywords=primary_match.keywords if primary_match else (),
        category_source=source, assignments=tuple(assignments), matched=tuple(matches),
        **extra,
    )


def plan_route(category: str, support: list[str] | None, lead: str | None, rules: RuleSet,
               priority: Priority, now: datetime, why: str) -> tuple[PlannedAssignment, ...]:
    """The assignments of a route the desk chose: ``category``'s rule gives the lead
    and supports unless the desk overrides them (``lead``, ``support``), with fresh
    deadlines from ``priority``'s window. Raises ``KeyError`` naming an unknown
    category or agency."""
    if rules.has_rule(category):
        rule = rules.rule(category)
        default_lead, default_support = rule.lead, list(rule.support)
    elif category == rules.fallback.category:
        default_lead, default_support = rules.fallback.lead, []
    else:
        raise KeyError(f"unknown category {category!r}")
    lead = lead or default_lead
    support = default_support if support is None else support
    window = rules.window(priority)
    planned = [_plan(rules, lead, Role.lead, now + window.acknowledge, now + window.resolve,
                     f"lead: {why}")]
    for agency in dict.fromkeys(support):
        if agency != lead:
            planned.append(_plan(rules, agency, Role.support, now + window.acknowledge,
                                 now + window.resolve, f"support: {why}"))
    return tuple(planned)


def category_priority(category: str, urgent: bool | None, rules: RuleSet) -> Priority:
    """The priority of a category the desk chose: its rule's (``urgent`` None), urgent
    if the desk says it is, and at most high when the desk says it is not."""
    if urgent:
        return Priority.urgent
    base = (rules.rule(category).priority if rules.has_rule(category)
            else rules.fallback.priority)
    return Priority.high if base is Priority.urgent and urgent is False else base


def _plan(rules: RuleSet, agency: str, role: Role, acknowledge_by: datetime,
          resolve_by: datetime, reason: str) -> PlannedAssignment:
    definition = rules.agency(agency)
    return PlannedAssignment(
        agency=agency, agency_name=definition.name, sector=definition.sector, role=role,
        acknowledge_by=acknowledge_by, resolve_by=resolve_by, reason=reason,
    )

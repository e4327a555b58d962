"""How well a router routes: the figures ``whistle routing evaluate`` prints. Pure.

A report's **lead agency** comes from its category through the rules
(``rules.yaml``), and its **sector** from that agency, for the truth and the guess
alike: a guess of the wrong category with the right lead agency (noise and
illegal parking both go to urban management) routes the report correctly.

- ``agency_accuracy``: share of reports whose guessed lead agency is the true one;
- ``sector_accuracy``: the same for the lead agency's sector;
- ``category_accuracy``, and ``macro_f1``: the F1 of each category averaged with
  equal weight over the categories that occur in the truth or the guesses;
- ``urgent_recall``: share of urgent reports flagged urgent;
- ``false_urgent_rate``: share of *non-urgent* reports flagged urgent (what the
  desk and the agencies pay for recall), and ``urgent_precision``;
- ``confident_share``: share of reports the classifier was sure of (routed without
  the desk; the others go to triage), and ``confident_agency_accuracy``, the lead
  agency accuracy on those alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.routing.rules import RuleSet

__all__ = ["Guess", "Scores", "lead_of", "per_category", "score"]


@dataclass(frozen=True)
class Guess:
    category: str
    urgent: bool
    confident: bool = True


@dataclass(frozen=True)
class Scores:
    reports: int
    category_accuracy: float
    agency_accuracy: float
    sector_accuracy: float
    macro_f1: float
    urgent_recall: float
    false_urgent_rate: float
    urgent_precision: float
    urgent_reports: int
    confident_share: float = 1.0
    confident_agency_accuracy: float = 0.0

    def as_dict(self) -> dict:
        return {name: (round(value, 4) if isinstance(value, float) else value)
                for name, value in self.__dict__.items()}


def lead_of(category: str, rules: RuleSet) -> str:
    """The lead agency of ``category`` (the fallback's lead for one the rules lack)."""
    return rules.rule(category).lead if rules.has_rule(category) else rules.fallback.lead


def _share(hits: int, total: int) -> float:
    return hits / total if total else 0.0


def _f1(truth: Sequence[str], guesses: Sequence[str], label: str) -> float:
    true_positive = sum(t == g == label for t, g in zip(truth, guesses, strict=True))
    guessed = sum(g == label for g in guesses)
    actual = sum(t == label for t in truth)
    if not true_positive:
        return 0.0
    precision, recall = true_positive / guessed, true_positive / actual
    return 2 * precision * recall / (precision + recall)


def score(truth: Sequence[dict], guesses: Sequence[Guess], rules: RuleSet) -> Scores:
    """Score ``guesses`` against corpus examples ``truth`` (``category``, ``urgent``).

    >>> from services.routing.rules import load_rules
    >>> s = score([{"category": "noise", "urgent": False}],
    ...           [Guess("illegal_parking", False)], load_rules())
    >>> (s.category_accuracy, s.agency_accuracy)
    (0.0, 1.0)
    """
    if len(truth) != len(guesses):
        raise ValueError(f"{len(truth)} reports but {len(guesses)} guesses")
    categories = [t["category"] for t in truth]
    guessed = [g.category for g in guesses]
    leads = [lead_of(c, rules) for c in categories]
    guessed_leads = [lead_of(c, rules) for c in guessed]
    sector = {agency: rules.agency(agency).sector for agency in set(leads + guessed_leads)}
    labels = sorted(set(categories) | set(guessed))
    urgent = [bool(t["urgent"]) for t in truth]
    flagged = [g.urgent for g in guesses]
    caught = sum(u and f for u, f in zip(urgent, flagged, strict=True))
    false_alarms = sum(f and not u for u, f in zip(urgent, flagged, strict=True))
    n = len(truth)
    sure = [g.confident for g in guesses]
    return Scores(
        reports=n,
        category_accuracy=_share(sum(c == g for c, g in zip(categories, guessed, strict=True)), n),
        agency_accuracy=_share(sum(a == b for a, b in zip(leads, guessed_leads, strict=True)), n),
        sector_accuracy=_share(sum(sector[a] == sector[b]
                                   for a, b in zip(leads, guessed_leads, strict=True)), n),
        macro_f1=(sum(_f1(categories, guessed, label) for label in labels) / len(labels)
                  if labels else 0.0),
        urgent_recall=_share(caught, sum(urgent)),
        false_urgent_rate=_share(false_alarms, n - sum(urgent)),
        urgent_precision=_share(caught, sum(flagged)),
        urgent_reports=sum(urgent),
        confident_share=_share(sum(sure), n),
        confident_agency_accuracy=_share(
            sum(a == b and c for a, b, c in zip(leads, guessed_leads, sure, strict=True)),
            sum(sure)),
    )


def per_category(truth: Sequence[dict], guesses: Sequence[Guess],
                 rules: RuleSet) -> dict[str, Scores]:
    """:func:`score` of each true category's reports on their own (aggregates only)."""
    grouped: dict[str, tuple[list[dict], list[Guess]]] = {}
    for example, guess in zip(truth, guesses, strict=True):
        bucket = grouped.setdefault(example["category"], ([], []))
        bucket[0].append(example)
        bucket[1].append(guess)
    return {category: score(examples, guessed, rules)
            for category, (examples, guessed) in sorted(grouped.items())}

"""The classifier seam: what routing asks of whatever reads a report. Pure: no I/O.

Routing turns a resident's text into a route in two halves:

- a **classifier** reads the text and says which categories it is about, how
  sure it is, which words weighed, and whether it describes an urgent hazard;
- the **rules** (``rules.yaml``) turn the chosen category into agencies,
  supports, priority, deadlines and supervisors, force a route where a district
  wants certainty, and let the desk's own category win (``domain.route_issue``).

This module is the contract between the two, kept small and stable::

    class Classifier(Protocol):
        model_version: str
        def classify(self, text: str) -> Classification: ...

    Classification(
        top=[("gas_leak", 0.81), ("sewage_blocked", 0.12), ...],  # best first
        evidence=[("臭鸡蛋", 1.7), ("味道", 0.4)],                  # terms that weighed
        urgent=True, urgent_reasons=["smell of rotten eggs: gas"],
        confident=True, model_version="tfidf-2026-12-05",
    )

Conventions every implementation keeps:

- ``top``: up to a handful of ``(category, probability)`` pairs, best first,
  categories from the rules' taxonomy (``RuleSet.category_names()``, including
  the fallback ``general``); probabilities in [0, 1], summing to at most 1.
  Empty when the classifier has no idea at all.
- ``evidence``: the terms (words, n-grams, keywords) that weighed most for the
  top category, strongest first, with a weight on the classifier's own scale.
- ``urgent`` / ``urgent_reasons``: its urgency decision (biased to recall) and,
  in words a desk worker reads, why.
- ``confident``: whether the classifier trusts its top category by its own
  threshold (set from data for a learned model). Routing may override it with
  ``WHISTLE_TRIAGE_THRESHOLD`` (see :func:`is_confident`). Not confident means
  the desk decides (status ``needs_triage``), unless the report looks urgent,
  which is dispatched at once to the best guess *and* flagged for triage.
- ``classify`` is pure and thread-safe (green threads share one instance), and
  cheap: a few milliseconds of CPU at most.
- Optionally ``explain(text)``: the same reading, its evidence as explain shows it
  (a learned model credits word pieces to the report's words;
  ``explain.read_for_explain`` falls back to ``classify``).

Which classifier runs: :func:`load_classifier` with the artefact path from
``WHISTLE_ROUTING_MODEL``; empty means the bundled artefact
(:data:`BUNDLED_MODEL`) if one is shipped, else today's keyword rules
(:class:`KeywordClassifier`), so routing works before any model exists;
``keywords`` asks for the keyword rules whatever is bundled. A
learned model is loaded by ``services.routing.learned.load(path) -> Classifier``
(the module the model work provides); a path given explicitly must load, or
routing refuses to start.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from services.routing.rules import RuleSet

__all__ = [
    "BUNDLED_MODEL", "KEYWORDS_VERSION", "Classification", "Classifier", "KeywordClassifier",
    "LEARNED_LOADER", "ModelLoadError", "is_confident", "load_classifier",
]

BUNDLED_MODEL = Path(__file__).with_name("model") / "current"
"""Where a model artefact shipped with Whistle lives (a file or a folder; the
learned loader decides which). Absent: the keyword rules classify."""

LEARNED_LOADER = "services.routing.learned"
"""The module whose ``load(path) -> Classifier`` reads a learned model artefact."""

KEYWORDS_VERSION = "keywords"
"""``model_version`` of :class:`KeywordClassifier` (the rules file's keywords)."""


@dataclass(frozen=True)
class Classification:
    """What a classifier read in one report (see the module doc for the conventions).

    Sequences given as lists are stored as tuples: a classification is a value.
    """

    top: Sequence[tuple[str, float]]
    evidence: Sequence[tuple[str, float]] = ()
    urgent: bool = False
    urgent_reasons: Sequence[str] = ()
    confident: bool = False
    model_version: str = KEYWORDS_VERSION
    extra: dict = field(default_factory=dict, compare=False)
    """Anything else a classifier wants shown by explain (e.g. which stage of a
    cascade answered); JSON-serialisable, never needed to route."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "top", tuple((str(c), float(p)) for c, p in self.top))
        object.__setattr__(self, "evidence",
                           tuple((str(t), float(w)) for t, w in self.evidence))
        object.__setattr__(self, "urgent_reasons", tuple(str(r) for r in self.urgent_reasons))

    @property
    def best(self) -> str | None:
        """The top category, or None when the classifier has no idea."""
        return self.top[0][0] if self.top else None

    @property
    def probability(self) -> float:
        """The top category's probability (0 when there is none)."""
        return self.top[0][1] if self.top else 0.0

    def suggestions(self, count: int = 3) -> list[tuple[str, float]]:
        """The best ``count`` categories: what the desk's triage queue shows."""
        return list(self.top[:count])


@runtime_checkable
class Classifier(Protocol):
    """Reads a report's text; see the module doc. Implementations: keywords, learned."""

    model_version: str

    def classify(self, text: str) -> Classification: ...


def is_confident(classification: Classification, threshold: float | None) -> bool:
    """Whether routing may act on the classifier's top category without the desk.

    ``threshold`` (``WHISTLE_TRIAGE_THRESHOLD``) overrides the classifier's own
    judgement when set: confident means a top category at or above it. ``0``
    turns triage off (every best guess is taken; with no guess, the fallback).
    """
    if threshold is None:
        return classification.confident and classification.best is not None
    if threshold <= 0:
        return True
    return classification.best is not None and classification.probability >= threshold


# --------------------------------------------------------------------- keywords


class KeywordClassifier:
    """Today's keyword rules, as a classifier (so everything works before a model).

    Every rule whose keywords occur in the text (negated mentions excluded, see
    ``domain.match_rules``) is a candidate; they are listed in the rules' own
    order of preference (precedence, most pressing priority, most keywords, file
    order), each with its share of the keywords found as its "probability".
    Keywords are not a probability model: it is confident whenever any rule
    matched, and has no idea (not confident, empty ``top``) when none did.
    Urgent when any matched rule's priority is urgent.
    """

    model_version = KEYWORDS_VERSION

    def __init__(self, rules: RuleSet):
        self.rules = rules

    def classify(self, text: str) -> Classification:
        # Imported here: the domain imports this module (for Classification).
        from services.routing.domain import keyword_classification, match_rules, rank_matches

        ranked = rank_matches(match_rules(text, self.rules), self.rules)
        return keyword_classification(ranked, self.rules)


# ---------------------------------------------------------------------- loading


class ModelLoadError(RuntimeError):
    """A model artefact that was asked for cannot be loaded; routing refuses to start."""


def load_classifier(path: str | Path | None,
                    background: Callable[[Callable[[], None]], None] | None = None,
                    ) -> Classifier | None:
    """The learned classifier at ``path`` (``None``/``""``: the bundled one, if shipped;
    ``"keywords"``: none, whatever is bundled).

    ``background``: runs work off the serving path; given, the loader may hand it the
    slow part of loading (the learned model's sentence encoder) and return a
    classifier that serves at once (routing's start-up). Without it everything is
    loaded before this returns (the commands, the evaluation, a reload).

    Returns ``None`` when no learned model is configured or bundled: the caller
    then classifies with ``KeywordClassifier(rules)`` (built per rule set, so a
    rules reload changes the keywords too). Raises :class:`ModelLoadError` when a
    model was named, or is bundled, and cannot be loaded.
    """
    if str(path or "").strip() == KEYWORDS_VERSION:
        return None  # the keyword rules, asked for by name
    explicit = bool(path)
    artefact = Path(path) if explicit else BUNDLED_MODEL
    if not artefact.exists():
        if explicit:
            raise ModelLoadError(f"routing model {artefact} does not exist")
        return None
    try:
        loader = importlib.import_module(LEARNED_LOADER)
    except ImportError as exc:
        raise ModelLoadError(f"routing model {artefact} needs {LEARNED_LOADER}: {exc}") from None
    try:
        classifier = (loader.load(artefact) if background is None
                      else loader.load(artefact, background=background))
    except Exception as exc:  # a corrupt artefact can fail in any library's way
        raise ModelLoadError(f"routing model {artefact} cannot be loaded: {exc}") from exc
    if not isinstance(classifier, Classifier):
        raise ModelLoadError(f"{LEARNED_LOADER}.load({artefact}) did not return a Classifier")
    return classifier

"""Why routing decides what it does: the explanation ``POST /routing/explain`` and
``whistle route --json`` show. Pure.

From one :class:`~services.routing.domain.RouteDecision`: the route (category,
priority, agencies and their deadlines), the classifier's top categories with their
probabilities and the terms that weighed most, every rule that fired (and whether
it forced the route), keywords that were found but denied ("没有停电"), the urgency
decision and why, and whether the report would go to the desk's triage queue.
"""

from __future__ import annotations

from services.routing.classifier import Classification, Classifier
from services.routing.domain import RouteDecision
from services.routing.rules import RuleSet
from shared.jsoncodec import utc_moment

TOP = 5  # categories shown


def read_for_explain(classifier: Classifier, text: str) -> Classification:
    """The classifier's reading of ``text`` as explain shows it: a learned model's
    evidence is the report's words that weighed most, each once, as the report wrote
    them (``LearnedClassifier.explain``), not the raw terms routing's own reading keeps
    (3- to 5-character pieces of a word, several from the same word). A classifier
    without ``explain`` (the keyword rules: their evidence is their keywords) classifies."""
    explain = getattr(classifier, "explain", None)
    return explain(text) if explain is not None else classifier.classify(text)


def explanation(decision: RouteDecision, rules: RuleSet, threshold: float | None = None) -> dict:
    classification = decision.classification
    triage = decision.triage
    return {
        "category": decision.category,
        "category_source": decision.category_source,
        "priority": decision.priority.value,
        "rule": decision.rule,
        "keywords": list(decision.keywords),
        "assignments": [
            {"agency": p.agency, "agency_name": p.agency_name,
             "agency_name_en": rules.agency(p.agency).name_en,
             "sector": p.sector.value, "role": p.role.value, "reason": p.reason,
             "acknowledge_by": utc_moment(p.acknowledge_by),
             "resolve_by": utc_moment(p.resolve_by)}
            for p in decision.assignments
        ],
        "matched": [{"category": m.category, "priority": m.priority.value,
                     "keywords": list(m.keywords), "forced": rules.rule(m.category).force}
                    for m in decision.matched],
        "negated": [{"category": n.category, "keyword": n.keyword, "negated_by": n.negator}
                    for n in decision.negated],
        "classifier": None if classification is None else {
            "model_version": classification.model_version,
            "top": [{"category": c, "probability": round(p, 4)}
                    for c, p in classification.top[:TOP]],
            "evidence": [{"term": t, "weight": round(w, 4)} for t, w in classification.evidence],
            "confident": classification.confident,
            "threshold": threshold,
            **({"extra": classification.extra} if classification.extra else {}),
        },
        "urgency": {
            "urgent": decision.priority.value == "urgent",
            "classifier_says_urgent": bool(classification and classification.urgent),
            "reasons": list(classification.urgent_reasons) if classification else [],
        },
        "triage": {
            "would_triage": triage is not None,
            # held: waits in needs_triage; else dispatched at once to the best guess, flagged
            "held": bool(triage and triage.hold),
            "reason": triage.reason if triage else None,
            "suggestions": [{"category": c, "probability": round(p, 4)}
                            for c, p in triage.suggestions] if triage else [],
        },
    }

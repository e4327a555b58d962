"""What routing makes of every training report, recorded to prove a change alters none of it.

Routing's CPU work (the learned classifier, the hazard cues, the keyword rules, the
decision) is optimised now and then; every such change must leave each report's
reading and route exactly as they were. :func:`readings` reads every report of the
training files (``corpus/train.jsonl`` and ``corpus/urgency-addition-2.jsonl``; never
the frozen test split) with the bundled model and with the keyword rules alone, and
:func:`outputs` keeps of each:

- ``top``: the top categories' probabilities;
- ``numbers``: every other number it says (the evidence weights, the urgency
  probability), in order;
- ``digest``: a hash of everything else, compared exactly: the categories in order,
  the evidence terms, the urgent decision and its reasons, the confident flag, the
  classifier's extra (its stage), and both routing decisions in full (category,
  priority, rule, keywords, source, assignments and their deadlines, every matched
  rule, the triage call, the negated hits), with what the issue record keeps of them
  (``desk.routing_of``, ``desk.triage_state``).

The numbers are compared to within :data:`TOLERANCE`, not exactly. The model computes
in float32, and numpy and OpenBLAS pick their kernels by the CPU: on a CPU without
AVX-512 the same code and model give the same probabilities to about 3e-7, not to the
last bit. That moves nothing a person sees, and a change of code that moved a decision
still changes the digest. (Until session 19 the digest held the numbers too, and the
file recorded on an AVX-512 machine failed on one without.) The order of equal evidence
weights was the CPU's too until session 21: numpy's default sort is another algorithm
where AVX-512 is, and orders ties differently, so 148 digests recorded on an AVX-512
machine failed on one without. The classifier sorts stably now, and the file was
recorded again.

``python -m tests.support.routing_outputs`` records the file the test compares with
(:data:`RECORDED`); it was recorded from the code before the optimisation, and must be
recorded again only when routing's behaviour is meant to change.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from services.routing.classifier import Classification, load_classifier
from services.routing.desk import routing_of, triage_state
from services.routing.domain import RouteDecision, route_issue
from services.routing.rules import RuleSet, load_rules
from services.routing.training import CORPUS_DIR, read_corpus

RECORDED = Path(__file__).with_name("routing-outputs.jsonl")
SOURCES = ("train.jsonl", "urgency-addition-2.jsonl")  # never test.jsonl: a blind split
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # deadlines are counted from it
DECIMALS = 9
TOLERANCE = 1e-6  # float32's rounding, kernel to kernel, is about 3e-7 here


def reports() -> list[dict]:
    """Every report of the training files, in file order."""
    return [example for source in SOURCES for example in read_corpus(CORPUS_DIR / source)]


def _classification(c: Classification) -> dict:
    return {"categories": [category for category, _ in c.top], "evidence": list(c.evidence),
            "urgent": c.urgent, "reasons": list(c.urgent_reasons), "confident": c.confident,
            "model_version": c.model_version, "extra": c.extra}


def _decision(d: RouteDecision) -> dict:
    triage = triage_state(d, NOW)
    return {
        "category": d.category, "priority": d.priority.value, "rule": d.rule,
        "keywords": list(d.keywords), "category_source": d.category_source,
        "assignments": [[a.agency, a.agency_name, a.sector.value, a.role.value,
                         a.acknowledge_by.isoformat(), a.resolve_by.isoformat(), a.reason]
                        for a in d.assignments],
        "matched": [[m.category, m.priority.value, list(m.keywords)] for m in d.matched],
        "triage": None if d.triage is None else [
            d.triage.hold, [c for c, _ in d.triage.suggestions], d.triage.reason],
        "negated": [[n.category, n.keyword, n.negator] for n in d.negated],
        "held": d.held,
        # What the issue record keeps; its confidence is a top probability (see "top").
        "routing": routing_of(d).model_dump(mode="json", exclude={"confidence"}),
        "triage_state": None if triage is None else triage.model_dump(mode="json"),
    }


def reading(text: str, classifier, rules: RuleSet) -> dict:
    """One report's reading and routes, in the recorded form."""
    classification = classifier.classify(text)
    by_model = route_issue(text, None, rules, NOW, classification)
    by_keywords = route_issue(text, None, rules, NOW)
    everything = {"classification": _classification(classification),
                  "model_route": _decision(by_model), "keyword_route": _decision(by_keywords),
                  "keyword_classification": _classification(by_keywords.classification)}
    numbers: list[float] = []
    canonical = json.dumps(_numbers_taken_out(everything, numbers), ensure_ascii=False,
                           sort_keys=True, default=str)
    return {"top": [round(p, DECIMALS) for _, p in classification.top],
            "numbers": [round(n, DECIMALS) for n in numbers],
            "digest": hashlib.sha256(canonical.encode()).hexdigest()[:20]}


def _numbers_taken_out(value, numbers: list[float]):
    """``value`` with every float replaced by a mark, the floats appended to ``numbers``
    in a fixed order (dict keys sorted)."""
    if isinstance(value, float):
        numbers.append(value)
        return "<number>"
    if isinstance(value, dict):
        return {k: _numbers_taken_out(value[k], numbers) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_numbers_taken_out(v, numbers) for v in value]
    return value


def close(now: list[float], then: list[float]) -> bool:
    """Whether two lists of numbers are the same to within :data:`TOLERANCE`."""
    return len(now) == len(then) and all(
        abs(a - b) <= TOLERANCE for a, b in zip(now, then, strict=True))


def outputs() -> dict[str, dict]:
    """Report id -> its reading (see the module doc), from the bundled model."""
    classifier, rules = load_classifier(None), load_rules()
    assert classifier is not None, "no learned router is bundled"
    return {example["id"]: reading(example["text"], classifier, rules)
            for example in reports()}


def record(path: Path = RECORDED) -> None:
    """Write :func:`outputs` to ``path``, one report a line (diffs stay readable)."""
    lines = [json.dumps({"id": rid, **found}, separators=(",", ":")) for rid, found in outputs().items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def recorded(path: Path = RECORDED) -> dict[str, dict]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        found[entry.pop("id")] = entry
    return found


if __name__ == "__main__":
    record()
    print(f"recorded {len(recorded())} reports in {RECORDED}")

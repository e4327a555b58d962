"""The learned router's quality on the frozen test split may not slip.

``docs/routing-figures.json`` holds the figures ``whistle routing evaluate --record``
measured for the bundled model, and ``docs/routing.md`` quotes them. This test
classifies the frozen split again with the bundled model and fails when any headline
figure falls more than two points below the recorded one: a retrain, a rules change
(lead agencies come from ``rules.yaml``) or a change to the features that makes
routing worse shows up here. A regression test of quality, not of timing. It reads
aggregates only, never a single report's result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.routing.classifier import load_classifier
from services.routing.comparison import classify_all
from services.routing.evaluation import score
from services.routing.rules import load_rules
from services.routing.training import CORPUS_DIR, read_corpus

DOCS = Path(__file__).resolve().parents[2] / "docs"
RECORDED = json.loads((DOCS / "routing-figures.json").read_text(encoding="utf-8"))["frozen_split"]
SLACK = 0.02
HEADLINE = ("agency_accuracy", "sector_accuracy", "category_accuracy", "macro_f1",
            "urgent_recall")


@pytest.fixture(scope="module")
def measured():
    rules = load_rules()
    classifier = load_classifier(None)
    assert classifier is not None, "no learned router is bundled"
    examples = read_corpus(CORPUS_DIR / "test.jsonl")
    guesses, _ = classify_all(classifier, [e["text"] for e in examples],
                              rules.fallback.category)
    return score(examples, guesses, rules).as_dict(), classifier.model_version


@pytest.mark.parametrize("figure", HEADLINE)
def test_the_frozen_split_figure_is_not_two_points_below_the_recorded_one(measured, figure):
    now, _ = measured
    assert now[figure] >= RECORDED["overall"][figure] - SLACK, (
        f"{figure} {now[figure]:.3f} on the frozen split, recorded "
        f"{RECORDED['overall'][figure]:.3f} in docs/routing-figures.json")


def test_false_urgent_rate_is_not_two_points_above_the_recorded_one(measured):
    now, _ = measured
    assert now["false_urgent_rate"] <= RECORDED["overall"]["false_urgent_rate"] + SLACK


def test_the_docs_quote_the_recorded_figures_of_the_bundled_model(measured):
    _, version = measured
    doc = (DOCS / "routing.md").read_text(encoding="utf-8")
    assert RECORDED["model_version"] == version, (
        "the bundled model changed: run `whistle routing evaluate --record` and update "
        "docs/routing.md")
    overall = RECORDED["overall"]
    for figure in ("agency_accuracy", "sector_accuracy", "urgent_recall", "false_urgent_rate"):
        assert f"{overall[figure]:.1%}" in doc, f"docs/routing.md does not quote {figure}"

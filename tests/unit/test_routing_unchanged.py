"""Routing's readings and routes of every training report are those recorded.

``tests/support/routing-outputs.jsonl`` was recorded (``python -m
tests.support.routing_outputs``) from the code before routing's CPU work was cut:
for each report of the training files, the bundled model's top probabilities and a
hash of everything else it says and routing decides (see
``tests/support/routing_outputs.py``). Optimising the classifier, the hazard cues or
the keyword matcher must not change any of it.
"""

from __future__ import annotations

import pytest

from services.routing.classifier import load_classifier
from services.routing.rules import load_rules
from tests.support.routing_outputs import close, outputs, reading, recorded, reports


@pytest.fixture(scope="module")
def now_and_then():
    return outputs(), recorded()


def test_every_training_report_is_recorded(now_and_then):
    now, then = now_and_then
    assert list(now) == list(then)


def test_every_report_is_read_and_routed_as_recorded(now_and_then):
    now, then = now_and_then
    changed = [rid for rid in then if now[rid]["digest"] != then[rid]["digest"]]
    assert not changed, f"{len(changed)} reports read or routed differently: {changed[:10]}"


def test_every_top_probability_is_as_recorded(now_and_then):
    now, then = now_and_then
    moved = [rid for rid in then if not close(now[rid]["top"], then[rid]["top"])]
    assert not moved, f"{len(moved)} reports' probabilities moved: {moved[:10]}"


def test_every_other_number_is_as_recorded(now_and_then):
    now, then = now_and_then
    moved = [rid for rid in then if not close(now[rid]["numbers"], then[rid]["numbers"])]
    assert not moved, f"{len(moved)} reports' weights or urgency moved: {moved[:10]}"


def test_the_digest_sees_a_change_of_route():
    """The hash is stable, and it sees a change: a trapped person added to a report."""
    classifier, rules = load_classifier(None), load_rules()
    text = reports()[0]["text"]
    plain = reading(text, classifier, rules)
    assert plain == reading(text, classifier, rules)
    assert plain["digest"] != reading(text + " 有人困在电梯里", classifier, rules)["digest"]

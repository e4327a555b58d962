"""The hazard cues' prefilter (``services/routing/literals.py``) skips only scans that
cannot find anything: every text a pattern matches holds one of its required strings."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.routing.features import fold
from services.routing.hazards import HAZARD_CUES
from services.routing.literals import may_match, prefilter, required_literals
from tests.support.routing_outputs import reports


@pytest.mark.parametrize(("pattern", "needs"), [
    (r"(压|靠)在", {"压在", "靠在"}),                      # a run of exact parts joins up
    (r"\bspark(s|ing|ed)?\b", {"spark"}),                  # an optional part needs nothing
    (r"(电线|线|插座).{0,8}(冒烟|着火)", {"冒烟", "着火"}),  # 线 is in 电线: one is enough
    (r"(?:gas)|(?:臭鸡蛋)", {"gas", "臭鸡蛋"}),              # an alternation: any branch's
    (r"(冒|打)(火花|火)", {"冒火", "打火"}),
    (r"x+y", {"x"}),                                       # a repetition at least once
])
def test_what_a_pattern_cannot_match_without(pattern, needs):
    assert required_literals(re.compile(pattern)) == needs


@pytest.mark.parametrize("pattern", [r"a?", r".{0,4}", r"\w+", r"[^a]b?", r"(a|.)"])
def test_a_pattern_that_needs_no_literal_is_always_scanned(pattern):
    compiled = re.compile(pattern)
    assert required_literals(compiled) is None
    assert prefilter(compiled) is None
    assert may_match(None, "anything")


def test_case_insensitive_patterns_are_always_scanned():
    assert required_literals(re.compile("gas", re.IGNORECASE)) is None
    assert required_literals(re.compile("(?i:gas)x?")) is None


def test_a_text_without_the_strings_is_not_scanned():
    cue = prefilter(re.compile(r"(电线|插座).{0,8}(冒烟|着火)"))
    assert not may_match(cue, "楼道灯不亮了")
    assert may_match(cue, "插座冒烟了")


def test_every_cue_found_in_a_training_report_passes_the_prefilter():
    for text in (fold(r["text"]) for r in reports()):
        for cue in HAZARD_CUES:
            if cue.pattern.search(text):
                assert may_match(cue.prefilter, text), (cue.reason, text)


@pytest.mark.parametrize("cue", HAZARD_CUES, ids=lambda cue: cue.reason[:24])
def test_every_text_a_cue_matches_passes_its_prefilter(cue):
    assert cue.prefilter is not None  # every shipped cue has required strings

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(cue.pattern))
    def matched(text):
        assert cue.pattern.search(text)
        assert may_match(cue.prefilter, text), text

    matched()

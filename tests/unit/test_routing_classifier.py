"""The classifier seam, negation, forced rules and the triage decision (pure domain)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from services.routing.classifier import (
    KEYWORDS_VERSION,
    Classification,
    Classifier,
    KeywordClassifier,
    ModelLoadError,
    is_confident,
    load_classifier,
)
from services.routing.domain import find_keywords, match_rules, route_issue
from services.routing.negation import negation_before
from services.routing.rules import SHIPPED_RULES, load_rules, parse_rules
from shared.contracts import Priority

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def rules():
    return load_rules()


class Fixed:
    """A stand-in learned model: answers one fixed classification (the seam's contract)."""

    model_version = "fixed-1"

    def __init__(self, classification: Classification):
        self.classification = classification

    def classify(self, text: str) -> Classification:
        return self.classification


# ------------------------------------------------------------------ negation


@pytest.mark.parametrize(("text", "denied"), [
    ("没有停电，就是楼道灯不亮", "没有"),
    ("不是停电，是楼梯灯坏了", "不是"),
    ("我们楼没停水，就是水管漏了", "没"),
    ("家里没有再停电了", "没有"),
    ("there is no gas smell any more", "no"),
    ("It isn't a power cut, the fuse tripped", "isn't"),
    ("I don't smell gas now", "don't"),
])
def test_a_denied_keyword_routes_nothing(rules, text, denied):
    matches, negated = find_keywords(text, rules)
    (hit,) = negated
    assert hit.negator == denied
    assert hit.category not in [m.category for m in matches]


def test_a_denied_problem_leaves_the_real_one(rules):
    assert [m.category for m in match_rules("没有停电，就是楼道灯不亮", rules)] == [
        "stairwell_light"]
    assert [m.category for m in match_rules("我们楼没停水，就是水压低", rules)] == ["no_water"]
    # The taxonomy counts a tripped supply as a power cut: it matches by 跳闸, not 停电.
    (tripped,) = match_rules("不是停电，是跳闸了合不上", rules)
    assert (tripped.category, tripped.keywords) == ("power_cut", ("跳闸",))


def test_a_request_or_a_question_is_not_a_denial(rules):
    assert [m.category for m in match_rules("春节前能不能别停水了", rules)] == ["no_water"]
    assert [m.category for m in match_rules("早上六点拍篮球，这个算不算扰民", rules)] == ["noise"]


def test_keywords_and_their_denials_read_traditional_characters(rules):
    matches, _ = find_keywords("電梯壞了，樓上的老人下不來", rules)
    assert [m.category for m in matches] == ["lift_broken"]
    matches, negated = find_keywords("沒有停電，就是樓道燈不亮", rules)
    assert [hit.negator for hit in negated] == ["没有"]
    assert "power_cut" not in [m.category for m in matches]


@pytest.mark.parametrize("text", [
    "一直不停地漏水",            # 不停: continuously, not a denial
    "水管不断往外渗水",
    "不知道是不是燃气泄漏",       # doubt is not denial: a possible gas leak
    "不确定是不是漏电",
    "I'm not sure if it's a gas leak",
    "not only a power cut but also no water",
    "楼道里有根电线耷拉下来，不知道有没有电",
])
def test_phrases_that_only_look_negative_still_match(rules, text):
    matches, negated = find_keywords(text, rules)
    assert matches, text
    assert negated == []


def test_keywords_that_carry_a_negation_themselves_still_match(rules):
    assert [m.category for m in match_rules("家里没电了", rules)] == ["power_cut"]
    assert [m.category for m in match_rules("the tap is dry and there's no water", rules)] \
        == ["no_water"]


def test_a_negation_does_not_reach_across_a_clause(rules):
    assert negation_before("没有人管，停电三天了", len("没有人管，")) is None
    assert negation_before("no one came. power cut again", len("no one came. ")) is None
    # ... nor further than a couple of characters or a few words
    assert negation_before("没有人管的停电", len("没有人管的")) is None


def test_denied_and_affirmed_in_one_report_counts_as_affirmed(rules):
    matches, negated = find_keywords("昨天不是停电，今天真的停电了", rules)
    assert [m.category for m in matches] == ["power_cut"]
    assert negated == []


# ------------------------------------------------------------ the classifier


def test_keyword_classifier_is_a_classifier(rules):
    keywords = KeywordClassifier(rules)
    assert isinstance(keywords, Classifier)
    found = keywords.classify("楼上漏水，电线都泡水了")
    assert found.model_version == KEYWORDS_VERSION
    assert [c for c, _ in found.top] == ["flying_wire", "pipe_leak"]
    assert sum(p for _, p in found.top) == pytest.approx(1.0)
    assert found.urgent and "flying_wire" in found.urgent_reasons[0]
    assert found.confident and found.best == "flying_wire"
    assert ("电线都泡水", 1.0) in found.evidence


def test_keyword_classifier_has_no_idea_when_nothing_matches(rules):
    found = KeywordClassifier(rules).classify("请尽快派人来看看")
    assert (found.top, found.best, found.probability, found.confident) == ((), None, 0.0, False)


def test_classification_stores_values():
    found = Classification(top=[("tree", 0.6), ("rubbish", 0.3), ("noise", 0.05), ("general", 0.05)],
                           evidence=[["倒", 2]], urgent_reasons=["x"])
    assert found.top[0] == ("tree", 0.6) and isinstance(found.top, tuple)
    assert found.evidence == (("倒", 2.0),)
    assert found.suggestions() == [("tree", 0.6), ("rubbish", 0.3), ("noise", 0.05)]


@pytest.mark.parametrize(("confident", "probability", "threshold", "expected"), [
    (True, 0.4, None, True),     # the classifier's own threshold
    (False, 0.9, None, False),
    (False, 0.6, 0.5, True),     # the configured threshold overrides it
    (True, 0.4, 0.5, False),
    (False, 0.1, 0.0, True),     # 0: triage off
])
def test_confidence_threshold(confident, probability, threshold, expected):
    found = Classification(top=[("tree", probability)], confident=confident)
    assert is_confident(found, threshold) is expected


def test_keywords_by_name_and_a_missing_model_refused(tmp_path):
    assert load_classifier("keywords") is None
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_classifier(tmp_path / "missing.model")


# ----------------------------------------------------------- forced rules

@pytest.fixture(scope="module")
def forcing():
    """The shipped rules, with a district's certainty: rotten eggs is gas, whatever."""
    data = yaml.safe_load(SHIPPED_RULES.read_text(encoding="utf-8"))
    gas = next(rule for rule in data["rules"] if rule["category"] == "gas_leak")
    gas.update(force=True, keywords=[*gas["keywords"], "臭鸡蛋味", "rotten eggs"])
    return parse_rules(yaml.safe_dump(data, allow_unicode=True))


def test_a_forced_rule_beats_the_classifier(forcing):
    rules = forcing
    model = Fixed(Classification(top=[("power_cut", 0.97)], confident=True,
                                 model_version="fixed-1"))
    decision = route_issue("停电了，还有一股臭鸡蛋味", None, rules, NOW,
                           model.classify("..."))
    assert (decision.category, decision.category_source) == ("gas_leak", "forced")
    assert decision.priority is Priority.urgent
    assert decision.lead.agency == "gas" and decision.support == ["power"]
    assert decision.triage is None


def test_the_desk_beats_a_forced_rule(forcing):
    rules = forcing
    decision = route_issue("一股臭鸡蛋味，停电了", "power_cut", rules, NOW)
    assert (decision.category, decision.category_source) == ("power_cut", "given")


def test_a_denied_forced_keyword_forces_nothing(forcing):
    rules = forcing
    model = Fixed(Classification(top=[("power_cut", 0.9)], confident=True,
                                 model_version="fixed-1"))
    decision = route_issue("停电了，没有臭鸡蛋味", None, rules, NOW, model.classify(""))
    assert (decision.category, decision.category_source) == ("power_cut", "model")


# ------------------------------------------------------------------ triage


def test_an_unsure_report_waits_for_the_desk(rules):
    unsure = Classification(top=[("tree", 0.41), ("rubbish", 0.33), ("noise", 0.2),
                                 ("general", 0.06)], confident=False, model_version="m1")
    decision = route_issue("小区门口那个东西又出问题了", None, rules, NOW, unsure)
    assert decision.held
    assert decision.triage.suggestions == (("tree", 0.41), ("rubbish", 0.33), ("noise", 0.2))
    assert "41%" in decision.triage.reason
    # the best guess is still worked out, for explain
    assert decision.category == "tree" and decision.lead.agency == "landscaping"


def test_an_urgent_unsure_report_is_dispatched_to_the_best_guess_and_flagged(rules):
    unsure = Classification(top=[("flying_wire", 0.38), ("tree", 0.35)], urgent=True,
                            urgent_reasons=["cable on a tree"], confident=False,
                            model_version="m1")
    decision = route_issue("楼顶的线被风刮断了搭在树上", None, rules, NOW, unsure)
    assert decision.triage is not None and not decision.held
    assert (decision.category, decision.priority) == ("flying_wire", Priority.urgent)
    assert decision.lead.agency == "power"


def test_a_confident_model_routes_by_its_category_and_its_urgency(rules):
    sure = Classification(top=[("gas_leak", 0.93)], urgent=True, confident=True,
                          model_version="m1")
    decision = route_issue("一股臭鸡蛋味", None, rules, NOW, sure)
    assert (decision.category, decision.category_source, decision.priority) == (
        "gas_leak", "model", Priority.urgent)
    calm = Classification(top=[("flying_wire", 0.9)], urgent=False, confident=True,
                          model_version="m1")
    decision = route_issue("楼下有人私拉电线给电动车充电", None, rules, NOW, calm)
    assert (decision.category, decision.priority) == ("flying_wire", Priority.high)


def test_a_model_category_outside_the_rules_is_ignored(rules):
    odd = Classification(top=[("dragons", 0.9), ("noise", 0.05)], confident=True,
                         model_version="m1")
    decision = route_issue("...", None, rules, NOW, odd)
    assert decision.category == "noise"


def test_the_general_category_goes_to_the_street_office(rules):
    general = Classification(top=[("general", 0.8)], confident=True, model_version="m1")
    decision = route_issue("想咨询一下社区活动", None, rules, NOW, general)
    assert (decision.category, decision.category_source) == ("general", "model")
    assert decision.lead.agency == "street_office" and decision.triage is None


def test_threshold_zero_turns_triage_off(rules):
    decision = route_issue("请尽快派人来看看", None, rules, NOW, threshold=0.0)
    assert decision.triage is None
    assert (decision.category, decision.category_source) == ("general", "fallback")


def test_nothing_recognised_goes_to_triage_not_the_street_office(rules):
    decision = route_issue("请尽快派人来看看", None, rules, NOW)
    assert decision.held and decision.triage.suggestions == ()

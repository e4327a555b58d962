"""Routing decisions (精准派单) with the shipped rules and with small hand-made ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.routing.domain import RuleMatch, match_rules, normalise, route_issue
from services.routing.rules import RuleSet, load_rules, parse_rules
from shared.contracts import Priority, Role, Sector

NOW = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules()


def agencies(decision) -> list[tuple[str, Role]]:
    return [(a.agency, a.role) for a in decision.assignments]


# ------------------------------------------------- every row of the practice table

# (text, category, priority, lead): Chinese as residents say it, and English as staff write it.
TYPICAL = [
    # 楼道灯不亮 / stairwell light out
    ("3号楼2单元楼道灯不亮好几天了，晚上老人上下楼看不见", "stairwell_light", Priority.normal, "property_manager"),
    ("我们楼的声控灯坏了，跺脚也不亮", "stairwell_light", Priority.normal, "property_manager"),
    ("The stairwell light on the 4th floor has been out for a week", "stairwell_light", Priority.normal, "property_manager"),
    # 飞线 / exposed or dangling cable
    ("楼道里有根电线耷拉下来，不知道有没有电", "flying_wire", Priority.urgent, "power"),
    ("小区里有人私拉电线给电动车充电，飞线从三楼窗户挂下来", "flying_wire", Priority.urgent, "power"),
    ("墙角的电线裸露在外面，小孩天天在那玩", "flying_wire", Priority.urgent, "power"),
    ("A cable is hanging down in the lane, not sure if it's live", "flying_wire", Priority.urgent, "power"),
    ("There is an exposed wire next to the bike shed", "flying_wire", Priority.urgent, "power"),
    # 停电 / power cut
    ("我们家从早上开始就没电了，冰箱里的东西都要坏了", "power_cut", Priority.high, "power"),
    ("整栋楼停电，电话也打不通", "power_cut", Priority.high, "power"),
    ("No power in building 5 since this morning", "power_cut", Priority.high, "power"),
    ("Power cut on the whole street", "power_cut", Priority.high, "power"),
    # 管道漏水、楼上漏水 / pipe leak, water through ceiling
    ("楼上漏水，我家卫生间天花板都泡了，敲门也没人", "pipe_leak", Priority.high, "water"),
    ("厨房水管漏水，地上全是水", "pipe_leak", Priority.high, "water"),
    ("Water leaking through the ceiling from the flat upstairs", "pipe_leak", Priority.high, "water"),
    ("Burst pipe in the basement", "pipe_leak", Priority.high, "water"),
    # 停水、水压低 / no water, low pressure
    ("又停水了，也没提前通知", "no_water", Priority.high, "water"),
    ("六楼水压低，洗澡水都上不来", "no_water", Priority.high, "water"),
    ("家里没水，水龙头一滴都不出", "no_water", Priority.high, "water"),
    ("Low water pressure on the top floors every evening", "no_water", Priority.high, "water"),
    ("We have no water since 7am", "no_water", Priority.high, "water"),
    # 燃气味、煤气泄漏 / smell of gas
    ("楼道里有煤气味，挺冲的", "gas_leak", Priority.urgent, "gas"),
    ("一进单元门就闻到燃气味，怕是哪家漏了", "gas_leak", Priority.urgent, "gas"),
    ("I can smell gas on the third floor landing", "gas_leak", Priority.urgent, "gas"),
    ("Possible gas leak near the boiler room", "gas_leak", Priority.urgent, "gas"),
    # 暖气不热 / radiator cold
    ("暖气不热，屋里才十二度，老人受不了", "heating", Priority.high, "heating"),
    ("今年一直没暖气，交了费也不供", "heating", Priority.high, "heating"),
    ("The heating is not working and the radiators are cold", "heating", Priority.high, "heating"),
    # 污水堵塞、下水道反味 / sewage blocked
    ("下水道堵了，污水都冒到路面上", "sewage_blocked", Priority.normal, "drainage"),
    ("一楼卫生间地漏反味，夏天特别臭", "sewage_blocked", Priority.normal, "drainage"),
    ("The drain is blocked and sewage smells in the courtyard", "sewage_blocked", Priority.normal, "drainage"),
    # 井盖破损 / broken manhole cover
    ("小区门口的井盖破了个大洞，晚上很危险", "manhole_cover", Priority.urgent, "municipal_roads"),
    ("Manhole cover missing on Huanghe Road", "manhole_cover", Priority.urgent, "municipal_roads"),
    # 阳台开裂、墙体裂缝 / cracked balcony or wall
    ("我家阳台开裂了，裂缝越来越大", "structural_crack", Priority.complex, "housing_admin"),
    ("老楼墙体裂缝，能塞进一根手指", "structural_crack", Priority.complex, "housing_admin"),
    ("There are cracks in the wall of the old building", "structural_crack", Priority.complex, "housing_admin"),
    # 电梯故障 / lift broken
    ("电梯又坏了，老人下不了楼", "lift_broken", Priority.high, "property_manager"),
    ("2号楼电梯故障，停了三天没人修", "lift_broken", Priority.high, "property_manager"),
    ("The lift is broken again in block 7", "lift_broken", Priority.high, "property_manager"),
    ("Elevator not working since Monday", "lift_broken", Priority.high, "property_manager"),
    # 乱停车、僵尸车 / illegal parking, abandoned cars
    ("小区门口乱停车，消防车都进不来", "illegal_parking", Priority.normal, "urban_management"),
    ("楼下有辆僵尸车停了两年，落满了灰", "illegal_parking", Priority.normal, "urban_management"),
    ("An abandoned car has been sitting in the lane for months", "illegal_parking", Priority.normal, "urban_management"),
    # 违建 / illegal construction
    ("顶楼住户在楼顶搞违建，搭了个彩钢房", "illegal_construction", Priority.complex, "urban_management"),
    ("Neighbour is building an illegal extension in the yard", "illegal_construction", Priority.complex, "urban_management"),
]


@pytest.mark.parametrize(("text", "category", "priority", "lead"), TYPICAL)
def test_typical_problems_route_as_practice_expects(rules, text, category, priority, lead):
    decision = route_issue(text, None, rules, NOW)
    assert (decision.category, decision.priority, decision.lead.agency) == (category, priority, lead)
    assert decision.category_source == "keywords"
    assert decision.rule == category
    assert decision.keywords, "the matching keywords explain the decision"


def test_stairwell_light_adds_power_as_support(rules):
    decision = route_issue("楼道灯不亮", None, rules, NOW)
    assert agencies(decision) == [("property_manager", Role.lead), ("power", Role.support)]
    assert [a.reason for a in decision.assignments] == [
        "lead of rule stairwell_light", "support of rule stairwell_light"]


def test_pipe_leak_involves_the_property_manager(rules):
    decision = route_issue("楼上漏水，把我家吊顶都泡坏了", None, rules, NOW)
    assert agencies(decision) == [("water", Role.lead), ("property_manager", Role.support)]
    assert decision.keywords == ("楼上漏水",)


def test_open_manhole_brings_drainage_in(rules):
    decision = route_issue("下水道井盖丢了，路上一个大黑洞", None, rules, NOW)
    assert decision.category == "manhole_cover"
    assert agencies(decision) == [("municipal_roads", Role.lead), ("drainage", Role.support)]
    assert [m.category for m in decision.matched] == ["manhole_cover", "sewage_blocked"]


# ------------------------------------------------------------------- flying wire


def test_flying_wire_is_urgent_for_the_power_company_with_two_hour_deadline(rules):
    decision = route_issue("楼道里有根电线耷拉下来，不知道有没有电", None, rules, NOW)
    assert decision.category == "flying_wire"
    assert decision.priority is Priority.urgent
    assert decision.keywords == ("电线耷拉",)
    assert decision.matched == (RuleMatch("flying_wire", Priority.urgent, ("电线耷拉",)),)
    (lead,) = decision.assignments
    assert (lead.agency, lead.agency_name, lead.sector, lead.role) == (
        "power", "供电公司", Sector.power, Role.lead)
    assert lead.acknowledge_by == NOW + timedelta(hours=2)
    assert lead.resolve_by == NOW + timedelta(hours=24)
    assert lead.reason == "lead of rule flying_wire"


def test_unsure_if_live_does_not_read_as_a_power_cut(rules):
    # "有没有电" contains 没有电; a careless keyword would add a power-cut match.
    assert [m.category for m in match_rules("不知道有没有电", rules)] == []


# ------------------------------------------------------------ several agencies


def test_cracked_leaking_balcony_with_wet_wiring_needs_several_agencies(rules):
    decision = route_issue("阳台开裂，还往下渗水，电线都泡水了", None, rules, NOW)
    assert decision.category == "structural_crack"
    assert decision.category_source == "keywords"
    # The housing side leads the root cause; the wet wiring makes it urgent.
    assert decision.priority is Priority.urgent
    assert agencies(decision) == [
        ("housing_admin", Role.lead),
        ("property_manager", Role.support),
        ("power", Role.support),
        ("water", Role.support),
    ]
    assert [a.reason for a in decision.assignments] == [
        "lead of rule structural_crack", "support of rule structural_crack",
        "lead of rule flying_wire", "lead of rule pipe_leak",
    ]
    assert decision.keywords == ("阳台开裂",)
    assert decision.matched == (
        RuleMatch("flying_wire", Priority.urgent, ("电线都泡水",)),
        RuleMatch("pipe_leak", Priority.high, ("往下渗水",)),
        RuleMatch("structural_crack", Priority.complex, ("阳台开裂",)),
    )
    deadlines = {(a.acknowledge_by, a.resolve_by) for a in decision.assignments}
    assert deadlines == {(NOW + timedelta(hours=2), NOW + timedelta(hours=24))}


def test_the_same_agency_is_never_assigned_twice(rules):
    # Power cut and flying wire both name power; pipe leak and lift both name the property manager.
    decision = route_issue("停电了，楼道电线裸露，楼上漏水，电梯坏了", None, rules, NOW)
    assert decision.category == "flying_wire"
    assert agencies(decision) == [
        ("power", Role.lead), ("water", Role.support), ("property_manager", Role.support)]


# ------------------------------------------------------------- given category


def test_given_category_wins_over_keywords(rules):
    decision = route_issue("楼上漏水，天花板往下滴", "structural_crack", rules, NOW)
    assert decision.category == "structural_crack"
    assert decision.category_source == "given"
    assert decision.rule == "structural_crack"
    assert decision.keywords == ()  # none of its own keywords occur in the text
    assert decision.lead.agency == "housing_admin"
    # The leak the text describes still brings water in, and its priority applies.
    assert agencies(decision) == [
        ("housing_admin", Role.lead), ("property_manager", Role.support), ("water", Role.support)]
    assert decision.priority is Priority.high
    assert decision.lead.acknowledge_by == NOW + timedelta(hours=24)


def test_given_category_without_text_matches_uses_its_own_priority(rules):
    decision = route_issue("请尽快派人来看看", "lift_broken", rules, NOW)
    assert (decision.category, decision.priority, decision.category_source) == (
        "lift_broken", Priority.high, "given")
    assert agencies(decision) == [("property_manager", Role.lead)]
    assert decision.matched == ()


def test_unknown_given_category_is_ignored(rules):
    decision = route_issue("有煤气味", "dragons", rules, NOW)
    assert (decision.category, decision.category_source) == ("gas_leak", "keywords")


def test_given_fallback_category_still_lets_keywords_decide(rules):
    decision = route_issue("暖气不热", "general", rules, NOW)
    assert (decision.category, decision.category_source) == ("heating", "keywords")


# -------------------------------------------------------------------- fallback


@pytest.mark.parametrize("text", [
    "社区活动室什么时候开放？想报名书法班",
    "老楼没电梯，爬六楼太累了",  # 电梯 and 没电 must not look like a power cut
    "Who do I ask about the community choir?",
])
def test_unrecognised_text_goes_to_the_street_office(rules, text):
    decision = route_issue(text, None, rules, NOW)
    assert (decision.category, decision.priority, decision.rule, decision.category_source) == (
        "general", Priority.normal, "fallback", "fallback")
    assert decision.keywords == ()
    assert decision.matched == ()
    (lead,) = decision.assignments
    assert (lead.agency, lead.agency_name, lead.role) == ("street_office", "街道办事处", Role.lead)
    assert lead.acknowledge_by == NOW + timedelta(days=3)
    assert lead.resolve_by == NOW + timedelta(days=7)
    assert lead.reason == "fallback: no rule matched"


# -------------------------------------------------------------------- matching


@pytest.mark.parametrize(("text", "expected"), [
    ("We need a new gasket for the boiler", []),         # gas only as a whole word
    ("Someone is lifting boxes in the stairwell", []),
    ("The powerful lamp is fine", []),
    ("GAS LEAK at number 12", ["gas_leak"]),              # case-insensitive
    ("ＧＡＳ ＬＥＡＫ", ["gas_leak"]),                      # full-width letters
    ("有gas leak，快来", ["gas_leak"]),                   # ASCII keyword touching Chinese
    ("smell\n gas", ["gas_leak"]),                        # whitespace runs collapse
    ("The heating isn\u2019t working", ["heating"]),      # curly apostrophe from a phone
    ("电梯坏了", ["lift_broken"]),                         # 电 in 电梯 is not power
    ("楼道里乱停电动车，过不去人", ["illegal_parking"]),   # 停电 inside 停电动车 is not a power cut
    ("楼道里乱停电动车，还停电了", ["power_cut", "illegal_parking"]),
])
def test_match_rules(rules, text, expected):
    assert [m.category for m in match_rules(text, rules)] == expected


def test_match_lists_keywords_in_text_order_without_nested_duplicates(rules):
    (match,) = match_rules("水压低，而且经常停水，停水也不通知", rules)
    assert match == RuleMatch("no_water", Priority.high, ("水压低", "停水"))
    # 楼上漏水 contains 漏水: only the longer, more telling keyword is reported.
    (match,) = match_rules("楼上漏水", rules)
    assert match.keywords == ("楼上漏水",)


def test_normalise():
    assert normalise("Ｗａｔｅｒ　ＬＥＡＫ１２") == "water leak12"
    assert normalise("It\u2019s\n\tlive") == "it's live"


# -------------------------------------------------------- selection tie-breaks

TIE_RULES = """\
version: 1
priorities:
  urgent:  {acknowledge: 30m, resolve: 4h}
  high:    {acknowledge: 4h, resolve: 1d}
  normal:  {acknowledge: 1d, resolve: 7d}
  complex: {acknowledge: 2d, resolve: 15d}
agencies:
  alpha: {name: 甲, name_en: Alpha, sector: other}
  beta:  {name: 乙, name_en: Beta, sector: other}
  gamma: {name: 丙, name_en: Gamma, sector: utilities}
  desk:  {name: 街道, name_en: Desk, sector: other}
fallback: {category: other, priority: complex, lead: desk}
rules:
  - category: first
    name: 一
    name_en: First
    priority: normal
    lead: alpha
    keywords: [apple, 苹果]
  - category: second
    name: 二
    name_en: Second
    priority: normal
    lead: beta
    support: [alpha]
    keywords: [pear, 梨子, pears]
  - category: third
    name: 三
    name_en: Third
    priority: high
    lead: gamma
    keywords: [plum]
"""


@pytest.fixture(scope="module")
def tie_rules() -> RuleSet:
    return parse_rules(TIE_RULES)


def test_same_priority_same_keyword_count_goes_by_file_order(tie_rules):
    decision = route_issue("pear and apple", None, tie_rules, NOW)
    assert decision.category == "first"
    assert agencies(decision) == [("alpha", Role.lead), ("beta", Role.support)]


def test_more_distinct_keywords_beats_file_order(tie_rules):
    decision = route_issue("pear, 梨子, apple", None, tie_rules, NOW)
    assert decision.category == "second"
    assert decision.keywords == ("pear", "梨子")
    # alpha is second's support and first's lead: listed once, as support.
    assert agencies(decision) == [("beta", Role.lead), ("alpha", Role.support)]


def test_more_pressing_priority_beats_keyword_count(tie_rules):
    decision = route_issue("pear 梨子 pears plum", None, tie_rules, NOW)
    assert (decision.category, decision.priority) == ("third", Priority.high)
    assert agencies(decision) == [
        ("gamma", Role.lead), ("beta", Role.support), ("alpha", Role.support)]
    assert decision.lead.acknowledge_by == NOW + timedelta(hours=4)
    assert decision.lead.resolve_by == NOW + timedelta(days=1)


def test_precedence_beats_priority_but_not_the_decision_priority(tie_rules):
    data = tie_rules.model_dump()
    data["rules"][0]["precedence"] = 1
    with_precedence = RuleSet.model_validate(data)
    decision = route_issue("plum and apple", None, with_precedence, NOW)
    assert decision.category == "first"
    assert decision.priority is Priority.high  # from the matched "third"
    assert agencies(decision) == [("alpha", Role.lead), ("gamma", Role.support)]


def test_custom_fallback(tie_rules):
    decision = route_issue("nothing here", None, tie_rules, NOW)
    assert (decision.category, decision.priority, decision.lead.agency) == (
        "other", Priority.complex, "desk")
    assert decision.lead.resolve_by == NOW + timedelta(days=15)


# ------------------------------------- the keyword index finds what a full scan finds

SHIPPED = load_rules()
ALL_KEYWORDS = [keyword for rule in SHIPPED.rules for keyword in rule.keywords]


def occurrences_by_full_scan(text: str, rules: RuleSet) -> list:
    """The matcher before the index: every keyword of every rule tried on the text."""
    from services.routing.domain import _needle, _pattern

    found = []
    for index, rule in enumerate(rules.rules):
        for keyword in rule.keywords:
            if _needle(keyword) not in text:
                continue
            pos = 0
            while (m := _pattern(keyword).search(text, pos)) is not None:
                found.append((m.start(), m.end(), index, keyword))
                pos = m.start() + 1
    return sorted(found)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALL_KEYWORDS) | st.text("电线楼道灯 gasleak水", max_size=6),
                max_size=6))
def test_the_keyword_index_finds_every_occurrence_a_full_scan_finds(pieces):
    from services.routing.domain import _occurrences

    text = normalise(" ".join(pieces))
    assert _occurrences(text, SHIPPED) == occurrences_by_full_scan(text, SHIPPED)

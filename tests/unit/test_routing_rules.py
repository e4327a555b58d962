"""The rules file: the shipped one is valid and complete; broken ones say where."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.routing.rules import (
    SHIPPED_RULES,
    RulesError,
    RuleSet,
    format_duration,
    load_rules,
    parse_duration,
    parse_rules,
)
from shared.contracts import EscalationLevel, Language, Priority, Sector

# A small valid file; the error tests break it line by line, so line numbers matter.
VALID = """\
version: 1
priorities:
  urgent:  {acknowledge: 2h, resolve: 24h}
  high:    {acknowledge: 24h, resolve: 72h}
  normal:  {acknowledge: 3d, resolve: 7d}
  complex: {acknowledge: 3d, resolve: 15d}
agencies:
  power: {name: 供电公司, name_en: Power company, sector: power}
  water: {name: 自来水公司, name_en: Water utility, sector: utilities}
  street_office: {name: 街道办事处, name_en: Street office, sector: other}
fallback: {category: general, priority: normal, lead: street_office}
rules:
  - category: flying_wire
    name: 飞线
    name_en: Flying wire
    priority: urgent
    lead: power
    support: []
    keywords: [飞线, live wire]
  - category: pipe_leak
    name: 管道漏水
    name_en: Pipe leak
    priority: high
    lead: water
    support: [power]
    keywords: [漏水, water leak]
"""


def edit(text: str, line: int, new: str) -> str:
    """Replace 1-based ``line`` of ``text``: keeps the tests' line numbers obvious."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):  # a negative index would edit from the end, silently
        raise IndexError(f"line {line} is not in the text (1 to {len(lines)})")
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, source="rules.yaml")
    message = str(caught.value)
    assert message.splitlines() == [str(p) for p in caught.value.problems]
    return message.splitlines()


# ------------------------------------------------------------------ shipped file


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    return load_rules()


def test_shipped_rules_load_from_the_package(shipped):
    assert SHIPPED_RULES.name == "rules.yaml"
    assert shipped == load_rules(SHIPPED_RULES)
    assert shipped.version == 1


def test_shipped_rules_cover_every_typical_problem(shipped):
    assert shipped.category_names() == [
        "flying_wire", "gas_leak", "manhole_cover", "power_cut", "no_water", "pipe_leak",
        "heating", "lift_broken", "sewage_blocked", "structural_crack", "stairwell_light",
        "street_light", "illegal_parking", "illegal_construction", "rubbish", "noise", "tree",
        "stray_animal", "neighbour_dispute", "fitness_equipment", "general",
    ]


def _corpus_table(heading: str) -> list[list[str]]:
    """The rows of the markdown table under ``heading`` in corpus/README.md."""
    text = (Path(__file__).parents[2] / "corpus" / "README.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows[1:]  # without the header row


def test_shipped_rules_follow_the_corpus_taxonomy(shipped):
    """The corpus labels and the rules agree: every category's lead and usual support
    are the rules', so a model trained on the corpus routes through the rules."""
    taxonomy = _corpus_table("## The taxonomy")
    assert [row[0] for row in taxonomy] == shipped.category_names()
    for category, _problem, lead, support in taxonomy:
        expected_support = [s.strip().strip("`") for s in support.split(",") if s.strip()]
        if category == shipped.fallback.category:
            assert shipped.fallback.lead == lead
            continue
        rule = shipped.rule(category)
        assert (rule.lead, rule.support) == (lead, expected_support), category


def test_shipped_agencies_follow_the_corpus_table(shipped):
    agencies = _corpus_table("## The agencies and their sectors")
    assert {row[0] for row in agencies} == set(shipped.agencies)
    for agency_id, name, sector in agencies:
        agency = shipped.agency(agency_id)
        assert name == f"{agency.name} {agency.name_en}"
        assert agency.sector == Sector(sector)


@pytest.mark.parametrize(("category", "priority", "lead", "support"), [
    ("stairwell_light", Priority.normal, "property_manager", ["power"]),
    ("flying_wire", Priority.urgent, "power", []),
    ("power_cut", Priority.high, "power", []),
    ("pipe_leak", Priority.high, "water", ["property_manager"]),
    ("no_water", Priority.high, "water", []),
    ("gas_leak", Priority.urgent, "gas", []),
    ("heating", Priority.high, "heating", []),
    ("sewage_blocked", Priority.normal, "drainage", []),
    ("manhole_cover", Priority.urgent, "municipal_roads", ["drainage"]),
    ("structural_crack", Priority.complex, "housing_admin", ["property_manager"]),
    ("lift_broken", Priority.high, "property_manager", []),
    ("illegal_parking", Priority.normal, "urban_management", []),
    ("illegal_construction", Priority.complex, "urban_management", []),
    ("rubbish", Priority.normal, "sanitation", ["property_manager"]),
    ("noise", Priority.normal, "urban_management", []),
    ("tree", Priority.normal, "landscaping", []),
    ("stray_animal", Priority.normal, "street_office", []),
    ("neighbour_dispute", Priority.normal, "street_office", []),
    ("fitness_equipment", Priority.normal, "street_office", []),
])
def test_shipped_rule_owners_follow_the_practice_table(shipped, category, priority, lead, support):
    rule = shipped.rule(category)
    assert (rule.priority, rule.lead, rule.support) == (priority, lead, support)


def test_shipped_agencies_and_sectors(shipped):
    sectors = {agency_id: agency.sector for agency_id, agency in shipped.agencies.items()}
    assert sectors == {
        "power": Sector.power,
        "water": Sector.utilities, "gas": Sector.utilities, "heating": Sector.utilities,
        "drainage": Sector.utilities,
        "housing_admin": Sector.housing, "property_manager": Sector.housing,
        "urban_management": Sector.other, "municipal_roads": Sector.other,
        "sanitation": Sector.other, "landscaping": Sector.other, "street_office": Sector.other,
    }
    assert shipped.agency("sanitation").name == "环卫所"
    assert shipped.agency("landscaping").name_en == "Parks and greenery"
    assert shipped.agency("power").name == "供电公司"
    assert shipped.agency("street_office").name_en == "Street office"
    with pytest.raises(KeyError, match="unknown agency 'police'"):
        shipped.agency("police")


def test_shipped_fallback_is_the_street_office(shipped):
    assert (shipped.fallback.category, shipped.fallback.priority, shipped.fallback.lead) == (
        "general", Priority.normal, "street_office")


def test_shipped_windows_use_the_practice_defaults(shipped):
    assert shipped.window(Priority.urgent).acknowledge == timedelta(hours=2)
    assert shipped.window("urgent").resolve == timedelta(hours=24)
    assert shipped.window(Priority.high).acknowledge == timedelta(hours=24)
    assert shipped.window(Priority.normal).resolve == timedelta(days=7)
    assert shipped.window(Priority.complex).resolve == timedelta(days=15)
    for priority in Priority:
        window = shipped.window(priority)
        assert window.acknowledge <= window.resolve


def test_shipped_keywords_are_never_a_single_character(shipped):
    short = [k for rule in shipped.rules for k in rule.keywords if len(k.strip()) < 2]
    assert short == []


# --------------------------------------------------------------------- durations


@pytest.mark.parametrize(("value", "expected"), [
    ("90s", timedelta(seconds=90)),
    ("30m", timedelta(minutes=30)),
    ("2h", timedelta(hours=2)),
    ("7d", timedelta(days=7)),
    ("1w", timedelta(days=7)),
    ("1h30m", timedelta(minutes=90)),
    (" 2H ", timedelta(hours=2)),
    (3600, timedelta(hours=1)),
])
def test_parse_duration(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["2 hours", "h", "", "-2h", "0s", 0, True, 1.5, None])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_format_duration_round_trips():
    assert format_duration(timedelta(hours=26, minutes=5)) == "1d2h5m"
    assert parse_duration(format_duration(timedelta(seconds=93784))) == timedelta(seconds=93784)


# -------------------------------------------------------------------- valid input


def test_valid_text_parses():
    rules = parse_rules(VALID)
    assert [r.category for r in rules.rules] == ["flying_wire", "pipe_leak"]
    assert rules.window(Priority.normal).acknowledge == timedelta(days=3)
    assert rules.category_names() == ["flying_wire", "pipe_leak", "general"]


def test_load_rules_from_a_path(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert load_rules(path).rule("pipe_leak").support == ["power"]
    assert load_rules(str(path)).rule("flying_wire").lead == "power"


def test_integer_seconds_are_accepted():
    text = edit(VALID, 3, "  urgent:  {acknowledge: 7200, resolve: 86400}")
    assert parse_rules(text).window(Priority.urgent).acknowledge == timedelta(hours=2)


# ---------------------------------------------------------------- error reporting


def test_unknown_lead_agency_points_at_its_line():
    assert problems(edit(VALID, 17, "    lead: powr")) == [
        "rules.yaml:17: rules.0.lead: unknown agency 'powr' as lead",
    ]


def test_unknown_support_agency_points_at_the_list_item():
    text = edit(VALID, 25, "    support:\n      - power\n      - police")
    assert problems(text) == ["rules.yaml:27: rules.1.support.1: unknown agency 'police' as support"]


def test_bad_priority():
    lines = problems(edit(VALID, 23, "    priority: asap"))
    assert len(lines) == 1
    assert lines[0].startswith("rules.yaml:23: rules.1.priority: Input should be 'urgent'")


def test_missing_field_points_at_the_rule():
    lines = problems(edit(VALID, 14, "    # name removed"))
    assert lines == ["rules.yaml:13: rules.0.name: field required"]


def test_unknown_field_is_refused():
    text = edit(VALID, 26, "    keywords: [漏水, water leak]\n    colour: blue")
    assert problems(text) == ["rules.yaml:27: rules.1.colour: unknown field"]


def test_yaml_syntax_error_gives_the_line():
    lines = problems(edit(VALID, 19, "    keywords: [飞线, live wire"))
    assert len(lines) == 1
    assert lines[0].startswith("rules.yaml:20: (yaml): invalid YAML: ")
    assert "flow sequence" in lines[0]


def test_tab_indentation_is_a_syntax_error_on_its_line():
    lines = problems(edit(VALID, 9, "\twater: {name: 自来水公司, name_en: Water utility, sector: utilities}"))
    assert lines[0].startswith("rules.yaml:9: (yaml): ")


def test_every_problem_is_reported_at_once():
    text = VALID
    text = edit(text, 4, "  high:    {acknowledge: 4d, resolve: 72h}")  # acknowledge > resolve
    text = edit(text, 10, "  street_office: {name: 街道办事处, name_en: Street office}")  # no sector
    text = edit(text, 16, "    priority: critical")
    text = edit(text, 17, "    lead: powr")
    text = edit(text, 20, "  - category: flying_wire")  # duplicate id
    text = edit(text, 25, "    support: [water]")  # the lead again
    text = edit(text, 26, "    keywords: [电, water leak, Water  Leak]")
    assert problems(text) == [
        "rules.yaml:4: priorities.high: acknowledge window 4d is longer than resolve window 3d",
        "rules.yaml:10: agencies.street_office.sector: field required",
        "rules.yaml:16: rules.0.priority: Input should be 'urgent', 'high', 'normal' or 'complex'",
        "rules.yaml:17: rules.0.lead: unknown agency 'powr' as lead",
        "rules.yaml:20: rules.1.category: duplicate category 'flying_wire' (first at rules.0)",
        "rules.yaml:25: rules.1.support.0: 'water' is the lead; it cannot also support",
        "rules.yaml:26: rules.1.keywords.0: keyword '电' is a single character; too broad to route on",
        "rules.yaml:26: rules.1.keywords.2: keyword 'Water  Leak' repeats keyword 1 of this rule",
    ]


def test_missing_priority_and_bad_keys():
    text = edit(VALID, 6, "  critical: {acknowledge: 3d, resolve: 15d}")
    text = edit(text, 8, "  Power: {name: 供电公司, name_en: Power company, sector: power}")
    lines = problems(text)
    assert lines[0] == "rules.yaml:2: priorities: missing window for complex"
    assert lines[1].startswith("rules.yaml:6: priorities.critical: Input should be 'urgent'")
    assert lines[2].startswith("rules.yaml:8: agencies.Power: String should match pattern")
    # Renaming the agency also breaks the rule that used it, and that is reported too.
    assert lines[3:] == ["rules.yaml:17: rules.0.lead: unknown agency 'power' as lead",
                         "rules.yaml:25: rules.1.support.0: unknown agency 'power' as support"]


def test_bad_duration_and_bad_version():
    text = edit(VALID, 1, "version: 2")
    text = edit(text, 3, "  urgent:  {acknowledge: soon, resolve: 24h}")
    lines = problems(text)
    assert lines[0].startswith("rules.yaml:1: version: Input should be 1")
    assert lines[1] == ("rules.yaml:3: priorities.urgent.acknowledge: "
                        "expected a duration like '2h', '30m', '7d' or seconds")


def test_fallback_must_name_a_known_agency():
    text = edit(VALID, 11, "fallback: {category: general, priority: normal, lead: district}")
    assert problems(text) == ["rules.yaml:11: fallback.lead: unknown agency 'district' as fallback lead"]


def test_empty_keywords_and_whitespace_keyword():
    text = edit(VALID, 19, "    keywords: []")
    text = edit(text, 26, '    keywords: ["  ", water leak]')
    lines = problems(text)
    assert lines[0].startswith("rules.yaml:19: rules.0.keywords: List should have at least 1 item")
    assert lines[1] == "rules.yaml:26: rules.1.keywords.0: keyword is empty"


@pytest.mark.parametrize(("text", "expected"), [
    ("", "rules.yaml:1: (root): the file is empty"),
    ("- just\n- a list\n", "rules.yaml:1: (root): expected a mapping"),
])
def test_not_a_rules_file(text, expected):
    assert problems(text) == [expected]


# Lines 27-32, after VALID's 26.
SUPERVISORS = """\
supervisors:
  street: {name: 缤泰街道办事处, name_en: Bintai Street Office, language: en}
  district:
    name: 区政府
    name_en: District government
    language: zh
"""


def test_a_supervisor_reads_its_notices_in_its_language_chinese_by_default(shipped):
    ruleset = parse_rules(VALID + SUPERVISORS)
    assert ruleset.supervisor(EscalationLevel.street).language is Language.en
    assert ruleset.supervisor(EscalationLevel.district).language is Language.zh
    assert parse_rules(VALID).supervisor(EscalationLevel.street).language is Language.zh
    assert {s.language for s in shipped.supervisors.values()} == {Language.zh}


def test_a_bad_supervisor_language_is_refused_on_its_line(tmp_path):
    text = VALID + SUPERVISORS.replace("language: en", "language: english") \
        .replace("language: zh", "language: fr")
    assert problems(text) == [
        "rules.yaml:28: supervisors.street.language: Input should be 'zh' or 'en'",
        "rules.yaml:32: supervisors.district.language: Input should be 'zh' or 'en'",
    ]
    path = tmp_path / "rules.yaml"  # what `whistle rules check` loads
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert [(p.line, p.path) for p in caught.value.problems] == \
        [(28, "supervisors.street.language"), (32, "supervisors.district.language")]


def test_load_rules_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(edit(VALID, 17, "    lead: powr"), encoding="utf-8")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert str(caught.value) == f"{path}:17: rules.0.lead: unknown agency 'powr' as lead"
    assert caught.value.problems[0].line == 17
    assert caught.value.problems[0].path == "rules.0.lead"


def test_rule_sets_built_from_python_data_are_cross_checked_too():
    data = parse_rules(VALID).model_dump()
    data["rules"][1]["lead"] = "police"
    with pytest.raises(ValidationError, match="rules.1.lead: unknown agency 'police' as lead"):
        RuleSet.model_validate(data)

"""``whistle route``: routing's decision for a text, offline, from a rules file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from services.routing.rules import SHIPPED_RULES
from shared.jsoncodec import utc_moment
from whistle.cli import cli

NOW = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)  # 17:30 in Asia/Shanghai

AGENCIES = {
    "power": ("供电公司", "Power company", "power"),
    "water": ("自来水公司", "Water utility", "utilities"),
    "gas": ("燃气公司", "Gas company", "utilities"),
    "property_manager": ("物业公司", "Property management", "housing"),
    "street_office": ("街道办事处", "Street office", "other"),
}
WINDOWS = {"urgent": (2, 24), "high": (24, 72), "normal": (72, 168)}  # hours


@pytest.fixture(autouse=True)
def fixed_clock_and_env(monkeypatch):
    monkeypatch.setattr("shared.contracts.utcnow", lambda: NOW)
    for name in ("RULES_FILE", "WHISTLE_TZ", "FORCE_COLOR", "WHISTLE_TRIAGE_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    # These pin the keyword rules' reading; the learned model has its own tests.
    monkeypatch.setenv("WHISTLE_ROUTING_MODEL", "keywords")


def route(*args: str):
    return CliRunner().invoke(cli, ["route", *args], catch_exceptions=False)


def route_json(*args: str) -> dict:
    result = route(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


ROUTE_KEYS = ("category", "category_source", "priority", "rule", "keywords", "assignments",
              "matched")


def route_of(explained: dict) -> dict:
    """The route part of an explanation (the classifier's reading is checked apart)."""
    return {key: explained[key] for key in ROUTE_KEYS}


def assignment(agency: str, role: str, reason: str, priority: str) -> dict:
    name, name_en, sector = AGENCIES[agency]
    acknowledge, resolve = WINDOWS[priority]
    return {"agency": agency, "agency_name": name, "agency_name_en": name_en,
            "sector": sector, "role": role, "reason": reason,
            "acknowledge_by": utc_moment(NOW + timedelta(hours=acknowledge)),
            "resolve_by": utc_moment(NOW + timedelta(hours=resolve))}


def test_flying_wire_is_urgent_and_led_by_power():
    assert route_of(route_json("楼道里有根电线耷拉下来，不知道有没有电")) == {
        "category": "flying_wire", "category_source": "keywords", "priority": "urgent",
        "rule": "flying_wire", "keywords": ["电线耷拉"],
        "assignments": [assignment("power", "lead", "lead of rule flying_wire", "urgent")],
        "matched": [{"category": "flying_wire", "priority": "urgent", "keywords": ["电线耷拉"], "forced": False}],
    }


def test_water_through_the_ceiling_is_led_by_water_with_the_property_manager():
    assert route_of(route_json("楼上漏水，卫生间天花板一直在滴水")) == {
        "category": "pipe_leak", "category_source": "keywords", "priority": "high",
        "rule": "pipe_leak", "keywords": ["楼上漏水"],
        "assignments": [
            assignment("water", "lead", "lead of rule pipe_leak", "high"),
            assignment("property_manager", "support", "support of rule pipe_leak", "high"),
        ],
        "matched": [{"category": "pipe_leak", "priority": "high", "keywords": ["楼上漏水"], "forced": False}],
    }


def test_smell_of_gas_is_urgent_for_the_gas_company():
    assert route_of(route_json("有煤气味")) == {
        "category": "gas_leak", "category_source": "keywords", "priority": "urgent",
        "rule": "gas_leak", "keywords": ["煤气味"],
        "assignments": [assignment("gas", "lead", "lead of rule gas_leak", "urgent")],
        "matched": [{"category": "gas_leak", "priority": "urgent", "keywords": ["煤气味"], "forced": False}],
    }


def test_broken_lift_in_english_goes_to_the_property_manager():
    assert route_of(route_json("the lift is broken")) == {
        "category": "lift_broken", "category_source": "keywords", "priority": "high",
        "rule": "lift_broken", "keywords": ["lift is broken"],
        "assignments": [assignment("property_manager", "lead", "lead of rule lift_broken",
                                   "high")],
        "matched": [{"category": "lift_broken", "priority": "high",
                     "keywords": ["lift is broken"], "forced": False}],
    }


def test_unrecognised_text_falls_back_to_the_street_office():
    assert route_of(route_json("小区门口的花开得真好")) == {
        "category": "general", "category_source": "fallback", "priority": "normal",
        "rule": "fallback", "keywords": [],
        "assignments": [assignment("street_office", "lead", "fallback: no rule matched",
                                   "normal")],
        "matched": [],
    }


def test_the_desks_category_wins_and_the_keyword_match_supports():
    assert route_of(route_json("the lift is broken", "--category", "gas_leak")) == {
        "category": "gas_leak", "category_source": "given", "priority": "urgent",
        "rule": "gas_leak", "keywords": [],
        "assignments": [
            assignment("gas", "lead", "lead of rule gas_leak", "urgent"),
            assignment("property_manager", "support", "lead of rule lift_broken", "urgent"),
        ],
        "matched": [{"category": "lift_broken", "priority": "high",
                     "keywords": ["lift is broken"], "forced": False}],
    }


def test_explain_shows_the_classifier_urgency_and_triage():
    explained = route_json("楼上漏水，电线都泡水了")
    assert explained["classifier"]["model_version"] == "keywords"
    assert [t["category"] for t in explained["classifier"]["top"]] == ["flying_wire", "pipe_leak"]
    assert explained["classifier"]["evidence"] == [{"term": "电线都泡水", "weight": 1.0}]
    assert explained["urgency"]["urgent"] is True
    assert "rule flying_wire is urgent" in explained["urgency"]["reasons"][0]
    assert explained["triage"] == {"would_triage": False, "held": False, "reason": None,
                                   "suggestions": []}


def test_explain_shows_a_denied_keyword_and_the_triage_queue():
    explained = route_json("没有停电，家里都有电，就是那边不太对劲")
    assert explained["negated"] == [{"category": "power_cut", "keyword": "停电",
                                     "negated_by": "没有"}]
    assert explained["matched"] == []
    assert explained["triage"]["would_triage"] and explained["triage"]["held"]
    assert explained["urgency"] == {"urgent": False, "classifier_says_urgent": False,
                                    "reasons": []}
    out = route("没有停电，家里都有电，就是那边不太对劲").stdout
    assert "denied     停电 (power_cut), negated by 没有" in out
    assert "triage     waits for the desk (needs_triage)" in out


def test_text_output_names_agencies_roles_deadlines_rules_and_keywords():
    result = route("楼上漏水，卫生间天花板一直在滴水", "--community", "缤泰社区")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "\x1b[" not in out  # not a terminal: plain text
    assert "pipe_leak  管道漏水 / Pipe leak or water through the ceiling  (from keywords)" in out
    assert "priority   high" in out and "community  缤泰社区" in out
    assert "lead     water  自来水公司 / Water utility  sector utilities" in out
    assert "support  property_manager  物业公司 / Property management  sector housing" in out
    # 24 h and 72 h from 09:30 UTC, shown in Asia/Shanghai
    assert "acknowledge  in 1d  (2025-01-07 17:30 CST)" in out
    assert "resolve      in 3d  (2025-01-09 17:30 CST)" in out
    assert "why          lead of rule pipe_leak; keywords: 楼上漏水" in out
    assert "why          support of rule pipe_leak; keywords: 楼上漏水" in out
    assert f"rules      {SHIPPED_RULES} (" in out


def test_text_output_says_where_the_category_came_from():
    given = route("the lift is broken", "--category", "gas_leak").stdout
    assert "gas_leak  燃气泄漏 / Smell of gas  (given by the desk)" in given
    assert "lead     gas" in given and "acknowledge  in 2h  (2025-01-06 19:30 CST)" in given
    assert "why          lead of rule gas_leak; category given by the desk" in given
    assert "why          lead of rule lift_broken; keywords: lift is broken" in given
    fallback = route("小区门口的花开得真好").stdout
    assert "general  (fallback: no rule matched)" in fallback
    assert "lead     street_office" in fallback and "matched    no rule" in fallback


def test_deadlines_are_shown_in_whistle_tz(monkeypatch):
    monkeypatch.setenv("WHISTLE_TZ", "UTC")
    out = route("有煤气味").stdout
    assert "acknowledge  in 2h  (2025-01-06 11:30 UTC)" in out


def test_rules_file_from_option_and_environment(tmp_path, monkeypatch):
    edited = tmp_path / "rules.yaml"
    edited.write_text(SHIPPED_RULES.read_text(encoding="utf-8").replace(
        "smell gas,", "whiff of gas, smell gas,", 1), encoding="utf-8")
    assert route_json("a whiff of gas in the hall")["category"] == "general"
    assert route_json("a whiff of gas in the hall", "--rules", str(edited))["keywords"] \
        == ["whiff of gas"]
    monkeypatch.setenv("RULES_FILE", str(edited))
    assert route_json("a whiff of gas in the hall")["category"] == "gas_leak"


def test_invalid_rules_file_exits_2_with_every_error_and_its_line(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text(SHIPPED_RULES.read_text(encoding="utf-8")
                   .replace("lead: power\n", "lead: powr\n", 1)
                   .replace("lead: gas\n", "lead: gaz\n", 1), encoding="utf-8")
    result = route("有煤气味", "--rules", str(bad))
    assert result.exit_code == 2
    assert "the rules file is invalid" in result.stderr
    assert "unknown agency 'powr'" in result.stderr and "unknown agency 'gaz'" in result.stderr
    line = int(result.stderr.split(f"{bad}:")[1].split(":")[0])
    assert "powr" in bad.read_text(encoding="utf-8").splitlines()[line - 1]
    assert "Traceback" not in result.output

    missing = route("有煤气味", "--rules", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "cannot read the rules file" in missing.stderr


def test_bad_input_is_a_usage_error():
    assert route("有煤气味", "--category", "Gas Leak").exit_code == 2
    assert route("   ").exit_code == 2
    # An unknown category is refused, naming the option and the known ones, as POST
    # /routing/explain refuses it (422); the fallback is accepted there and here.
    unknown = route("有煤气味", "--category", "no_such_rule", "--json")
    assert unknown.exit_code == 2 and unknown.stdout == ""
    assert ("--category: unknown category 'no_such_rule'; must be one of flying_wire, "
            "gas_leak," in unknown.stderr) and "general" in unknown.stderr
    fallback = route("有煤气味", "--category", "general", "--json")
    assert fallback.exit_code == 0 and fallback.stderr == ""
    assert json.loads(fallback.stdout)["category_source"] == "keywords"


def test_the_bundled_model_says_why_it_chose(monkeypatch):
    from services.routing.classifier import BUNDLED_MODEL

    # The model ships in the repository (services/routing/model/current): its absence is a
    # defect to report, not a reason to skip.
    assert BUNDLED_MODEL.exists(), f"no bundled model at {BUNDLED_MODEL}"
    monkeypatch.delenv("WHISTLE_ROUTING_MODEL")
    explained = route_json("电梯间的灯坏了")  # no keyword of the chosen rule in it
    assert explained["category_source"] == "model"
    assert explained["classifier"]["model_version"] != "keywords"
    out = route("电梯间的灯坏了").stdout
    assert "(from the model)" in out and "the model's top category (" in out


@pytest.mark.parametrize(("text", "first"), [
    ("The radiator is stone cold again", "radiator"),
    ("I can smell gas in the stairwell, gas everywhere", "gas"),
])
def test_the_bundled_models_evidence_is_the_reports_words_each_once(monkeypatch, text, first):
    """Explain showed 3- to 5-character pieces of the words, eight of "radiator" and
    "gas" twice; now each word once, as the report wrote it (pieces credited to it)."""
    from services.routing.classifier import load_classifier

    monkeypatch.setenv("WHISTLE_ROUTING_MODEL", "")
    explained = route_json(text)
    shown = [e["term"] for e in explained["classifier"]["evidence"]]
    assert shown[0] == first and len(shown) == len(set(shown)), shown
    assert all(term in text for term in shown), shown
    words = [r for r in explained["urgency"]["reasons"] if "words:" in r]
    assert all("…" not in r for r in words), words
    # the reading itself is routing's: the same categories, urgency and confidence
    reading = load_classifier(None).classify(text)
    assert [t["category"] for t in explained["classifier"]["top"]] == [c for c, _ in reading.top]
    assert explained["urgency"]["classifier_says_urgent"] == reading.urgent
    assert explained["classifier"]["confident"] == reading.confident

"""The shipped resident message templates, and the rules every template file must follow."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from services.notify.recipients import reopen_supervision
from services.notify.templates import DESK_WORDING, MESSAGE_KINDS, TemplateError, Templates
from shared.contracts import EscalationLevel

ISSUE_ID = "WH-20250105-0001"
PRIMARY_ID = "WH-20250104-0007"
POWER = "国网朝阳供电公司"
HOUSING = "朝阳区房管局"
# 02:30 UTC is 10:30 in Beijing: the deadline residents see.
DEADLINE = datetime(2025, 1, 5, 2, 30, tzinfo=UTC)
MEETING = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)
SUPERVISOR = "缤泰街道办事处"
LINK = f"https://whistle.example/issues/{ISSUE_ID}/feedback?token=eyJ0.eyJz.c2ln"
PROGRESS = f"https://whistle.example/resident/{ISSUE_ID}?token=[redacted]"

# What the notify service passes for each kind. A template that asks for anything
# else would fail in production, so the shipped files must use exactly these.
VARIABLES: dict[str, dict[str, object]] = {
    "received": {"issue_id": ISSUE_ID, "link": PROGRESS},
    "merged": {"issue_id": ISSUE_ID, "into_issue_id": PRIMARY_ID},
    "dispatched": {"issue_id": ISSUE_ID, "agencies": [POWER, HOUSING], "lead_agency": POWER,
                   "acknowledge_by": DEADLINE},
    "acknowledged": {"issue_id": ISSUE_ID, "agency": HOUSING},
    "escalated": {"issue_id": ISSUE_ID, "agency": HOUSING, "level": "街道",
                  "supervisor": SUPERVISOR},
    "escalated_part": {"issue_id": ISSUE_ID, "agency": HOUSING, "level": "街道",
                       "supervisor": SUPERVISOR, "issue_level": "区"},
    "escalation_notice": {"issue_id": ISSUE_ID, "agency": HOUSING, "deadline": "报到",
                          "missed": DEADLINE, "level": "街道"},
    "escalation_reminder": {"issue_id": ISSUE_ID, "agency": HOUSING, "deadline": "报到",
                            "missed": DEADLINE, "level": "区"},
    # To the supervisor: the issue, where, who has it back, and the level; nothing of the
    # resident (no name, phone or comment).
    "reopen_notice": {"issue_id": ISSUE_ID, "community": "缤泰社区", "agencies": [POWER, HOUSING],
                      "acknowledge_by": DEADLINE, "level": "街道"},
    "reopen_reminder": {"issue_id": ISSUE_ID, "community": "缤泰社区",
                        "agencies": [POWER, HOUSING], "acknowledge_by": DEADLINE,
                        "level": "区"},
    "table_convened": {"issue_id": ISSUE_ID, "meets_at": MEETING, "place": "红色议事厅",
                       "agencies": [POWER, HOUSING]},
    "table_decision": {"issue_id": ISSUE_ID, "agency": HOUSING, "task": "更换开裂的阳台栏板",
                       "due": DEADLINE},
    "part_resolved": {"issue_id": ISSUE_ID, "agency": HOUSING, "remaining": [HOUSING]},
    "resolved": {"issue_id": ISSUE_ID},
    # The service also passes {token} (it is in the link); a template may leave it out.
    "rating_request": {"issue_id": ISSUE_ID, "link": LINK, "expires_at": MEETING,
                       "if_unsatisfied": "我们会重新交办、提级督办"},
    "reopened": {"issue_id": ISSUE_ID, "who": "您", "reason": "只是绑起来了，没有入管",
                 "agencies": [POWER, HOUSING], "acknowledge_by": DEADLINE,
                 "supervision": "并提级到街道督办"},
    "closed": {"issue_id": ISSUE_ID, "reason_text": "您已确认满意"},
    "rerouted": {"issue_id": ISSUE_ID, "agencies": [POWER, HOUSING], "lead_agency": POWER},
    "dispatched_one": {"issue_id": ISSUE_ID, "lead_agency": POWER, "acknowledge_by": DEADLINE},
    "rerouted_one": {"issue_id": ISSUE_ID, "lead_agency": POWER},
    "received_desk": {"issue_id": ISSUE_ID},
    "rating_request_desk": {"issue_id": ISSUE_ID, "expires_at": MEETING,
                            "if_unsatisfied": "我们会重新交办、提级督办"},
}

RESIDENTS_LOOP = ("received", "merged", "dispatched", "acknowledged", "escalated",
                  "table_convened", "resolved", "rating_request", "reopened", "closed")
"""Every message a resident gets in issue 4's loop: each must have a template."""


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates.load()


def write_language(directory: Path, language: str, joiner: str = "、",
                   **messages: str) -> None:
    data = {"_meta": {"joiner": joiner}, **messages}
    (directory / f"{language}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True),
                                               encoding="utf-8")


def minimal_messages() -> dict[str, str]:
    return {kind: " ".join(f"{{{name}}}" for name in sorted(VARIABLES[kind]))
            for kind in MESSAGE_KINDS}


def test_variables_cover_every_kind():
    assert set(VARIABLES) == set(MESSAGE_KINDS)


def test_every_message_of_the_residents_loop_has_a_template():
    assert set(RESIDENTS_LOOP) <= set(MESSAGE_KINDS)


def test_shipped_languages(templates):
    assert templates.languages == ("en", "zh")


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("kind", MESSAGE_KINDS)
def test_required_variables_are_what_the_service_passes(templates, kind, language):
    assert templates.required_variables(kind, language) == set(VARIABLES[kind])


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("kind", MESSAGE_KINDS)
def test_every_kind_renders_completely(templates, kind, language):
    text = templates.render(kind, language, **VARIABLES[kind])

    assert ISSUE_ID in text
    assert "{" not in text and "}" not in text
    assert "None" not in text


def test_received_zh_gives_reference_number(templates):
    text = templates.render("received", "zh", **VARIABLES["received"])

    assert text.startswith("【吹哨报到】")
    assert f"已受理，编号 {ISSUE_ID}" in text
    assert text.endswith(f"办理进度随时可查：{PROGRESS}")  # the progress page, from the start


def test_dispatched_names_agencies_lead_and_deadline(templates):
    zh = templates.render("dispatched", "zh", **VARIABLES["dispatched"])
    en = templates.render("dispatched", "en", **VARIABLES["dispatched"])

    assert f"已派给{POWER}、{HOUSING}" in zh
    assert f"由{POWER}牵头" in zh
    assert "2025-01-05 10:30 前报到" in zh
    assert f"sent to {POWER}, {HOUSING}" in en
    assert "by 2025-01-05 10:30" in en


def test_one_agency_is_not_told_as_a_lead_among_several(templates):
    """A one-agency issue read "已派给供电公司，由供电公司牵头办理，各单位须在…前报到"."""
    zh = templates.render("dispatched_one", "zh", **VARIABLES["dispatched_one"])
    en = templates.render("dispatched_one", "en", **VARIABLES["dispatched_one"])
    assert f"已派给{POWER}办理，须在 2025-01-05 10:30 前报到" in zh
    assert "牵头" not in zh and "各单位" not in zh
    assert f"sent to {POWER}, which must report in by 2025-01-05 10:30" in en
    assert "leading" not in en and "Each agency" not in en
    zh = templates.render("rerouted_one", "zh", **VARIABLES["rerouted_one"])
    en = templates.render("rerouted_one", "en", **VARIABLES["rerouted_one"])
    assert f"改由{POWER}办理。" in zh and "牵头" not in zh
    assert f"{POWER} is now working on it" in en and "leads" not in en


def test_rerouted_names_the_lead_once_as_leading_the_agencies_at_work(templates):
    """It read "Power now leads, and Power, Housing are working on it" / "改由供电公司牵头
    办理，现在负责的单位：供电公司、…": the lead a second time, among the others."""
    zh = templates.render("rerouted", "zh", **VARIABLES["rerouted"])
    en = templates.render("rerouted", "en", **VARIABLES["rerouted"])
    assert f"已改派给{POWER}、{HOUSING}，由{POWER}牵头办理。" in zh
    assert zh.count(POWER) == 2 and "现在负责的单位" not in zh
    assert f"{POWER}, {HOUSING} are working on it, with {POWER} leading." in en
    assert en.count(POWER) == 2 and "now leads, and" not in en


def test_acknowledged_names_the_agency(templates):
    assert f"{HOUSING}已就" in templates.render("acknowledged", "zh", **VARIABLES["acknowledged"])
    assert "报到" in templates.render("acknowledged", "zh", **VARIABLES["acknowledged"])
    assert f"{HOUSING} has reported in" in templates.render("acknowledged", "en",
                                                           **VARIABLES["acknowledged"])


def test_resolved_says_every_agency_finished(templates):
    assert "均已办结" in templates.render("resolved", "zh", issue_id=ISSUE_ID)
    assert "Every agency has finished" in templates.render("resolved", "en", issue_id=ISSUE_ID)


@pytest.mark.parametrize(("language", "expected"), [
    ("zh", [f"（编号 {ISSUE_ID}）已办结", f"请打开 {LINK} 评价", "2025-01-06 14:00 前有效"]),
    ("en", [f"Your report {ISSUE_ID} has been resolved", f"satisfied at {LINK} ",
            "valid until 2025-01-06 14:00"]),
])
def test_rating_request_gives_the_link_and_when_it_expires(templates, language, expected):
    text = templates.render("rating_request", language, **VARIABLES["rating_request"],
                            token="eyJ0.eyJz.c2ln")

    for part in expected:
        assert part in text


@pytest.mark.parametrize(("language", "who", "expected"), [
    ("zh", "您", ["【吹哨报到】您对问题", "处理结果不满意（意见：只是绑起来了，没有入管）",
                 f"重新交办{POWER}、{HOUSING}", "须在 2025-01-05 10:30 前重新报到"]),
    ("en", "You were", ["[Whistle] You were not satisfied with how report",
                        "(comment: 只是绑起来了，没有入管)", f"back with {POWER}, {HOUSING}",
                        "report in again by 2025-01-05 10:30"]),
])
def test_reopened_says_why_who_and_by_when(templates, language, who, expected):
    text = templates.render("reopened", language, **{**VARIABLES["reopened"], "who": who})

    for part in expected:
        assert part in text


@pytest.mark.parametrize(("language", "level", "escalated", "expected", "never"), [
    ("zh", EscalationLevel.street, True, "前重新报到，并提级到街道督办。", "仍由"),
    ("zh", EscalationLevel.district, False, "前重新报到，仍由区督办。", "提级"),
    ("en", EscalationLevel.street, True,
     "by 2025-01-05 10:30, and it has been escalated to the street office.", "keeps"),
    ("en", EscalationLevel.district, False,
     "by 2025-01-05 10:30, and the district keeps following it up.", "escalated"),
])
def test_reopened_at_the_district_already_says_the_district_keeps_it_not_escalated(
        templates, language, level, escalated, expected, never):
    """Reopening an issue the district already followed up took nothing higher: the
    resident read "并提级督办" / "reopened and escalated" all the same."""
    text = templates.render("reopened", language, **{
        **VARIABLES["reopened"], "supervision": reopen_supervision(level, escalated, language)})
    assert expected in text and never not in text


@pytest.mark.parametrize(("language", "reason_text", "expected"), [
    ("zh", "您已确认满意", f"您反映的问题（编号 {ISSUE_ID}）已办结归档：您已确认满意。"),
    ("zh", "评价期已过，按已办结处理", "已办结归档：评价期已过，按已办结处理。"),
    ("en", "you confirmed you are satisfied",
     f"Your report {ISSUE_ID} is now closed: you confirmed you are satisfied."),
])
def test_closed_says_why(templates, language, reason_text, expected):
    assert expected in templates.render("closed", language, issue_id=ISSUE_ID,
                                        reason_text=reason_text)


@pytest.mark.parametrize(("kind", "language", "expected"), [
    ("received", "zh", f"【吹哨报到】您反映的问题已受理 {ISSUE_ID}"),
    ("acknowledged", "zh", f"【吹哨报到】您反映的问题有新进展 {ISSUE_ID}"),
    ("acknowledged", "en", f"[Whistle] Update on your report {ISSUE_ID}"),
    ("rating_request", "zh", f"【吹哨报到】请您评价处理结果 {ISSUE_ID}"),
    ("closed", "en", f"[Whistle] Your report {ISSUE_ID} is closed"),
])
def test_email_subjects_by_kind_and_language(templates, kind, language, expected):
    assert templates.subject(kind, language, **VARIABLES[kind]) == expected


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("kind", MESSAGE_KINDS)
def test_every_kind_has_a_subject_naming_the_issue(templates, kind, language):
    assert ISSUE_ID in templates.subject(kind, language, **VARIABLES[kind])


def test_subject_needs_the_issue_id(templates):
    with pytest.raises(TemplateError, match="issue_id"):
        templates.subject("received", "zh")


def test_subject_falls_back_when_a_language_has_none(tmp_path):
    write_language(tmp_path, "zh", **minimal_messages())

    assert Templates.load(tmp_path).subject("closed", "zh", issue_id=ISSUE_ID) == \
        f"[Whistle] {ISSUE_ID}"


@pytest.mark.parametrize(("subjects", "error"), [
    ({"default": "{issue_id} {agency}"}, r"subjects\.default may use only \{issue_id\}"),
    ({"sms": "{issue_id}"}, r"subjects\.sms: unknown kind 'sms'"),
    ({"default": ""}, r"subjects\.default must be non-empty text"),
])
def test_bad_subjects_fail_to_load(tmp_path, subjects, error):
    data = {"_meta": {"joiner": "、", "subjects": subjects}, **minimal_messages()}
    (tmp_path / "zh.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    with pytest.raises(TemplateError, match=error):
        Templates.load(tmp_path)


@pytest.mark.parametrize(("language", "level", "expected"), [
    ("zh", "区", "提级到区一级，由缤泰街道办事处督办"),
    ("en", "the district", f"escalated to the district: {SUPERVISOR} is now following it up"),
])
def test_escalated_tells_the_resident_who_follows_it_up(templates, language, level, expected):
    text = templates.render("escalated", language, **{**VARIABLES["escalated"], "level": level})

    assert expected in text
    assert HOUSING in text


@pytest.mark.parametrize(("language", "level", "issue_level", "expected", "never"), [
    ("zh", "街道", "区", f"{HOUSING}未按时处理，现由街道一级的{SUPERVISOR}督促其办理；"
     "您的问题仍由区一级督办", "提级"),
    ("en", "the street office", "the district",
     f"{HOUSING} did not act on your report {ISSUE_ID} in time, so the street office "
     f"({SUPERVISOR}) is now pressing it to act. Your report stays with the district, which "
     "keeps following it up.", "escalated"),
])
def test_a_part_whistled_below_the_issues_level_does_not_read_as_going_down(
        templates, language, level, issue_level, expected, never):
    """Told once that the district follows it up, the resident read "提级到街道一级" /
    "escalated to the street office" when another agency first missed."""
    text = templates.render("escalated_part", language, **{
        **VARIABLES["escalated_part"], "level": level, "issue_level": issue_level})

    assert expected in text
    assert never not in text


@pytest.mark.parametrize(("language", "deadline", "level", "expected"), [
    ("zh", "报到", "街道", f"{HOUSING}未在 2025-01-05 10:30 前报到，现提级到街道一级督办"),
    ("zh", "办结", "区", f"{HOUSING}未在 2025-01-05 10:30 前办结，现提级到区一级督办"),
    ("en", "report in", "the street office",
     f"Escalated to the street office: on issue {ISSUE_ID}, {HOUSING} was due to report in "
     "by 2025-01-05 10:30 and has not."),
    ("en", "resolve", "the district", f"{HOUSING} was due to resolve by 2025-01-05 10:30"),
])
def test_escalation_notice_says_what_was_missed_and_when(templates, language, deadline, level,
                                                         expected):
    variables = {**VARIABLES["escalation_notice"], "deadline": deadline, "level": level}

    assert expected in templates.render("escalation_notice", language, **variables)


@pytest.mark.parametrize(("language", "expected", "never"), [
    ("zh", f"{HOUSING}未在 2025-01-05 10:30 前报到，再次超时，仍由区一级督办", "提级"),
    ("en", f"{HOUSING} was due to report in by 2025-01-05 10:30 and has not, again. It stays "
     "with the district", "Escalated"),
])
def test_a_reminder_at_the_district_does_not_say_escalated(templates, language, expected,
                                                           never):
    """Another miss by an agency the district follows already: nothing went up."""
    variables = {**VARIABLES["escalation_reminder"],
                 "deadline": "报到" if language == "zh" else "report in",
                 "level": "区" if language == "zh" else "the district"}

    text = templates.render("escalation_reminder", language, **variables)

    assert expected in text
    assert never not in text


@pytest.mark.parametrize(("kind", "language", "level", "expected", "never"), [
    ("reopen_notice", "zh", "街道",
     f"缤泰社区的问题（编号 {ISSUE_ID}）：居民对处理结果不满意，已重新交办{POWER}、{HOUSING}，"
     "须在 2025-01-05 10:30 前重新报到，现已提级到街道一级督办", "仍由"),
    ("reopen_reminder", "zh", "区", "居民对处理结果不满意，已重新交办", "提级"),
    ("reopen_reminder", "zh", "区", "仍由区一级督办，请继续协调处理", "提级"),
    ("reopen_notice", "en", "the street office",
     f"Escalated to the street office: issue {ISSUE_ID} in 缤泰社区 is back, because the "
     "resident was not satisfied", "Reminder"),
    ("reopen_reminder", "en", "the district",
     "must report in again by 2025-01-05 10:30. It stays with the district", "scalated"),
])
def test_a_reopen_tells_the_supervisor_why_it_came_back(templates, kind, language, level,
                                                        expected, never):
    """民事民评 reopened it: up a level (the notice), or at the district still (a reminder,
    as at another miss there, never "escalated")."""
    text = templates.render(kind, language, **{**VARIABLES[kind], "level": level})

    assert expected in text
    assert never not in text


@pytest.mark.parametrize(("kind", "language", "expected"), [
    # merged: the neighbour's own reference, the open issue, and that updates will follow
    ("merged", "zh", f"（编号 {ISSUE_ID}）与社区正在办理的问题（编号 {PRIMARY_ID}）是同一件事"),
    ("merged", "zh", "后续进展会同步告诉您，无需重复反映"),
    ("merged", "en", f"Your report {ISSUE_ID} is about the same problem as report {PRIMARY_ID}"),
    ("merged", "en", "already being handled"),
    ("merged", "en", "You will receive its updates"),
    ("table_convened", "zh", f"将于 2025-01-06 14:00 在红色议事厅召集{POWER}、{HOUSING}"),
    ("table_convened", "en", f"called {POWER}, {HOUSING} to meet at 红色议事厅 on 2025-01-06 14:00"),
    ("table_decision", "zh", f"由{HOUSING}负责“更换开裂的阳台栏板”，2025-01-05 10:30 前完成"),
    ("table_decision", "en", f'{HOUSING} will take care of "更换开裂的阳台栏板" by 2025-01-05 10:30'),
])
def test_merge_and_table_messages_say_what_the_resident_needs(templates, kind, language,
                                                              expected):
    assert expected in templates.render(kind, language, **VARIABLES[kind])


def test_extra_variables_are_ignored(templates):
    """The service may pass one superset of variables for every kind."""
    text = templates.render("received", "zh", **VARIABLES["dispatched"], link=PROGRESS)

    assert text == templates.render("received", "zh", **VARIABLES["received"])


@pytest.mark.parametrize("language", ["fr", "zh-TW", "", None])
def test_unknown_language_falls_back_to_zh(templates, language):
    assert templates.render("received", language, **VARIABLES["received"]) == \
        templates.render("received", "zh", **VARIABLES["received"])
    assert templates.required_variables("dispatched", language) == set(VARIABLES["dispatched"])


def test_language_enum_is_accepted(templates):
    from shared.contracts import Language

    assert templates.render("received", Language.en, **VARIABLES["received"]).startswith(
        "[Whistle]")


def test_missing_variable_names_it(templates):
    variables = dict(VARIABLES["dispatched"])
    del variables["lead_agency"]

    with pytest.raises(TemplateError, match="lead_agency"):
        templates.render("dispatched", "zh", **variables)


def test_all_missing_variables_are_named(templates):
    with pytest.raises(TemplateError) as excinfo:
        templates.render("dispatched", "en", issue_id=ISSUE_ID)

    for name in ("agencies", "lead_agency", "acknowledge_by"):
        assert name in str(excinfo.value)


@pytest.mark.parametrize("blank", [None, "", "   ", [], [""], (None,)])
def test_blank_values_count_as_missing(templates, blank):
    variables = {**VARIABLES["dispatched"], "agencies": blank}

    with pytest.raises(TemplateError, match="agencies"):
        templates.render("dispatched", "zh", **variables)


def test_unknown_kind_is_a_template_error(templates):
    with pytest.raises(TemplateError, match="unknown message kind 'sms_blast'"):
        templates.render("sms_blast", "zh", issue_id=ISSUE_ID)
    with pytest.raises(TemplateError, match="unknown message kind"):
        templates.required_variables("sms_blast", "en")


def test_lists_use_the_language_joiner(templates):
    agencies = [POWER, HOUSING, "朝阳区城管执法局"]
    variables = {**VARIABLES["dispatched"], "agencies": agencies}

    assert "、".join(agencies) in templates.render("dispatched", "zh", **variables)
    assert ", ".join(agencies) in templates.render("dispatched", "en", **variables)


def test_single_item_list_has_no_joiner(templates):
    variables = {**VARIABLES["dispatched"], "agencies": (POWER,)}

    assert f"已派给{POWER}，" in templates.render("dispatched", "zh", **variables)


def test_datetime_shown_in_shanghai_time(templates):
    # 16:05 UTC on the 5th is already the 6th in Beijing.
    variables = {**VARIABLES["dispatched"],
                 "acknowledge_by": datetime(2025, 1, 5, 16, 5, 59, tzinfo=UTC)}

    assert "2025-01-06 00:05" in templates.render("dispatched", "zh", **variables)


def test_naive_datetime_is_taken_as_utc(templates):
    variables = {**VARIABLES["dispatched"], "acknowledge_by": datetime(2025, 1, 5, 2, 30)}

    assert "2025-01-05 10:30" in templates.render("dispatched", "en", **variables)


def test_display_timezone_is_configurable():
    utc = Templates.load(tz="UTC")

    assert "2025-01-05 02:30" in utc.render("dispatched", "en", **VARIABLES["dispatched"])


def test_unknown_timezone_is_refused():
    with pytest.raises(TemplateError, match="Mars/Olympus"):
        Templates.load(tz="Mars/Olympus")


def test_values_are_not_reinterpreted_as_placeholders(templates):
    text = templates.render("acknowledged", "zh", issue_id=ISSUE_ID, agency="{issue_id}")

    assert "{issue_id}已就" in text


# ------------------------------------------------------------ loading template dirs


def test_minimal_directory_loads(tmp_path):
    write_language(tmp_path, "zh", **minimal_messages())

    loaded = Templates.load(tmp_path)

    assert loaded.render("received", "en", **VARIABLES["received"]) == f"{ISSUE_ID} {PROGRESS}"


def test_missing_kind_fails_to_load(tmp_path):
    write_language(tmp_path, "zh", **minimal_messages())
    messages = minimal_messages()
    del messages["acknowledged"]
    write_language(tmp_path, "en", joiner=", ", **messages)

    with pytest.raises(TemplateError, match=r"en\.yaml: missing template for kind 'acknowledged'"):
        Templates.load(tmp_path)


def test_unknown_kind_fails_to_load(tmp_path):
    write_language(tmp_path, "zh", **minimal_messages(), sms_blast="{issue_id}")

    with pytest.raises(TemplateError, match=r"zh\.yaml: unknown kind 'sms_blast'"):
        Templates.load(tmp_path)


def test_missing_zh_fails_to_load(tmp_path):
    write_language(tmp_path, "en", joiner=", ", **minimal_messages())

    with pytest.raises(TemplateError, match=r"zh\.yaml"):
        Templates.load(tmp_path)


def test_empty_directory_fails_to_load(tmp_path):
    with pytest.raises(TemplateError, match="no template files"):
        Templates.load(tmp_path)


def test_missing_joiner_fails_to_load(tmp_path):
    (tmp_path / "zh.yaml").write_text(yaml.safe_dump(minimal_messages()), encoding="utf-8")

    with pytest.raises(TemplateError, match=r"zh\.yaml: missing _meta\.joiner"):
        Templates.load(tmp_path)


def test_translation_with_different_variables_fails_to_load(tmp_path):
    write_language(tmp_path, "zh", **minimal_messages())
    write_language(tmp_path, "en", joiner=", ",
                   **{**minimal_messages(), "resolved": "{issue_id} {agencies}"})

    with pytest.raises(TemplateError, match=r"en\.yaml: kind 'resolved' uses"):
        Templates.load(tmp_path)


@pytest.mark.parametrize("bad", ["{issue_id.__class__}", "{issue_id[0]}", "{0}", "{}",
                                 "{issue_id!r}", "{issue_id:>20}", "{issue_id", "issue_id}"])
def test_placeholders_must_be_plain_names(tmp_path, bad):
    write_language(tmp_path, "zh", **{**minimal_messages(), "received": bad})

    with pytest.raises(TemplateError, match=r"zh\.yaml: kind 'received'"):
        Templates.load(tmp_path)


@pytest.mark.parametrize("bad", ["", "   ", 42, ["{issue_id}"], None])
def test_template_must_be_text(tmp_path, bad):
    write_language(tmp_path, "zh", **{**minimal_messages(), "received": bad})

    with pytest.raises(TemplateError, match=r"zh\.yaml: template for kind 'received'"):
        Templates.load(tmp_path)


def test_invalid_yaml_fails_to_load(tmp_path):
    (tmp_path / "zh.yaml").write_text("received: [unclosed\n", encoding="utf-8")

    with pytest.raises(TemplateError, match=r"zh\.yaml: cannot read templates"):
        Templates.load(tmp_path)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_the_desks_copy_of_a_message_with_a_link_is_something_to_say_not_a_link(
        templates, language):
    """A resident without a phone or email hears their messages from the desk (电话回访):
    the desk's copy names no link, and the rating request's asks whether they are
    satisfied and tells the desk where to record the answer, and by when."""
    for kind, desk_kind in DESK_WORDING.items():
        values = {**VARIABLES[kind], **VARIABLES[desk_kind]}
        desk_copy = templates.render(desk_kind, language, **values)
        assert LINK not in desk_copy and "http" not in desk_copy and ISSUE_ID in desk_copy
        assert templates.required_variables(desk_kind, language) <= set(values)
    asked = templates.render("rating_request_desk", language,
                             **VARIABLES["rating_request_desk"])
    assert ("满意吗" in asked and "代居民评价" in asked) if language == "zh" else (
        "Are you satisfied" in asked and "Record the resident's rating" in asked)
    by = templates.render("rating_request_desk", language, issue_id=ISSUE_ID,
                          expires_at=DEADLINE, if_unsatisfied="…")
    assert "2025-01-05 10:30" in by  # the window's end, in the desk's own time zone


def test_missing_variables_are_named_in_order(templates):
    with pytest.raises(TemplateError, match=r"missing variable\(s\) acknowledge_by, agencies, "
                                            r"lead_agency$"):
        templates.render("dispatched", "en", issue_id=ISSUE_ID)


def test_a_value_of_a_str_subclass_reads_as_its_str(templates):
    # Plain text goes into the message as it is; anything else through str().
    class Shouting(str):
        def __str__(self):
            return self.upper()

    assert templates.render("received_desk", "en", issue_id=Shouting("wh-1")) == \
        templates.render("received_desk", "en", issue_id="WH-1")

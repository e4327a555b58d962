"""The pages' pure parts: texts, clocks, forms, charts, the resident's words, the board."""

from __future__ import annotations

import re
import types
from datetime import UTC, datetime, timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest

from services.intake.domain import board_row
from services.web import views
from services.web.catalogue import names_from_rules
from shared.contracts import (
    AssignmentStatus,
    Channel,
    IssueStatus,
    Language,
    Location,
    Priority,
    Role,
    Sector,
)
from shared.issue import Assignment, IssueRecord, TimelineEntry, receive
from shared.jsoncodec import utc_moment
from shared.web import redact_request_line

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
ZH, EN = views.Translator("zh"), views.Translator("en")


def record(**changes) -> IssueRecord:
    base = receive("WH-20261205-0001", "trace-0001", "3号楼有飞线", None,
                   Location(community="幸福里", address="3号楼"), Channel.desk, Language.zh,
                   NOW - timedelta(hours=1))
    return IssueRecord.model_validate({**base.model_dump(), **changes})


def assignment(agency="power", role=Role.lead, **changes) -> Assignment:
    fields = dict(agency=agency, agency_name="供电公司", agency_name_en="Power company",
                  sector=Sector.power, role=role, assigned_at=NOW - timedelta(hours=1),
                  acknowledge_by=NOW + timedelta(hours=1), resolve_by=NOW + timedelta(days=1))
    return Assignment(**{**fields, **changes})


def test_both_languages_have_the_same_texts():
    assert set(views.catalogue("zh")) == set(views.catalogue("en"))


def test_every_timeline_step_has_its_words_in_the_catalogue():
    """The timeline says each step from one table of words in the catalogue
    (``said_<step>``): a step the services write without words there would fail the
    page. Chinese says every step; English may leave one empty (shown as written)."""
    for step in views._DETAIL:
        assert views.catalogue("zh").get(f"said_{step}"), step
        assert f"said_{step}" in views.catalogue("en"), step


def test_a_missing_text_shows_its_key_instead_of_failing():
    assert ZH("no_such_key") == "no_such_key"
    assert EN("submitted", issue_id="WH-1") == "Received as WH-1."


def test_durations_read_naturally_in_both_languages():
    assert views.duration_text(3725, "zh") == "1小时2分"
    assert views.duration_text(-3725, "en") == "1 h 2 min"
    assert views.duration_text(0, "en") == "0 s"
    assert views.duration_text(2 * 86400 + 7200 + 5, "en") == "2 d 2 h"


def test_deadline_text_says_left_or_overdue():
    row = {"next_deadline": (NOW + timedelta(minutes=5)).isoformat(),
           "next_deadline_kind": "acknowledge"}
    assert views.deadline_text(row, NOW, ZH) == "报到还剩 5分"
    assert views.deadline_text(row, NOW + timedelta(minutes=10), EN) == "Report in: 5 min overdue"
    # "Report in in 5 min" (the kind is a verb that ends in "in"): said as a label.
    assert views.deadline_text(row, NOW, EN) == "Report in: 5 min left"
    assert views.deadline_text({}, NOW, EN) == "—"


def test_the_apis_field_errors_land_beside_the_forms_fields():
    errors = [{"field": "location.community", "message": "String should have at least 1 character",
               "type": "string_too_short"},
              {"field": "contact.phone", "message": "String should match pattern", "type":
               "string_pattern_mismatch"},
              {"field": "contact.phone", "message": "second", "type": "missing"}]
    assert views.field_errors(errors, ZH) == {
        "location.community": "不能为空",
        "contact.phone": "不是电话号码：6 到 20 位数字，可带空格、短横和开头的 +"}
    assert views.field_errors([{"field": "x", "message": "odd", "type": "weird"}], EN) == {
        "x": "odd"}


def test_a_refused_phone_or_email_says_what_one_looks_like_on_the_page_and_in_the_api():
    """"123" as a phone came back "格式不对" on the page, and as pydantic's regex from the
    API: neither told the clerk or a client's developer what a phone number may be."""
    from pydantic import ValidationError

    from shared.contracts import SubmitIssue
    from shared.errors import InvalidPayload

    with pytest.raises(ValidationError) as caught:
        SubmitIssue.model_validate({"description": "楼道灯坏了", "location": {
            "community": "缤泰社区", "address": "5号楼"}, "contact": {"phone": "123",
                                                                  "email": "at home"}})
    errors = InvalidPayload.from_validation_error(caught.value).errors
    assert {e["field"]: e["message"] for e in errors} == {
        "contact.phone": "must be a phone number: 6 to 20 digits, spaces and dashes, with an "
                         "optional leading +",
        "contact.email": "must be an email address (name@example.org)"}
    assert not any("pattern" in e["message"] for e in errors)
    assert views.field_errors(errors, EN) == {
        "contact.phone": "Not a phone number: 6 to 20 digits, spaces and dashes, with an "
                         "optional leading +",
        "contact.email": "Not an email address (name@example.org)"}
    assert views.field_errors(errors, ZH)["contact.email"] == "不是邮件地址（如 name@example.org）"


def test_too_long_says_how_long_it_may_be():
    """A resident's long message pasted into the form came back "太长了" alone: the clerk
    could not tell how much to cut. The limit is the API's own (its model's)."""
    from pydantic import ValidationError

    from shared.contracts import SubmitIssue
    from shared.errors import InvalidPayload

    with pytest.raises(ValidationError) as caught:
        SubmitIssue.model_validate({"description": "x" * 4001, "location": {
            "community": "c" * 65, "address": "5号楼"}})
    errors = InvalidPayload.from_validation_error(caught.value).errors
    assert views.field_errors(errors, ZH) == {"description": "太长了：最多 4000 个字",
                                              "location.community": "太长了：最多 64 个字"}
    assert views.field_errors(errors, EN)["description"] == "Too long: at most 4000 characters"
    assert views.field_errors([{"field": "x", "message": "odd", "type": "string_too_long"}],
                              ZH) == {"x": "太长了"}


def test_the_tables_and_notes_field_errors_are_said_beside_their_fields():
    """The errors routing gives the issue page's and the workspace's forms, made by its own
    code: a table without a time or place, with a malformed and an unknown agency, a task
    due in the past, a blank note; each lands on its form's field in the page's language."""
    from pydantic import ValidationError

    from services.routing import table
    from services.routing.rules import load_rules
    from shared.contracts import CompleteTableTask, ConveneTable
    from shared.errors import InvalidPayload

    def refused(model, body) -> list[dict]:
        with pytest.raises(ValidationError) as caught:
            model.model_validate(body)
        return InvalidPayload.from_validation_error(caught.value).errors

    rules = load_rules()
    convened = refused(ConveneTable, {"meets_at": "", "place": "", "agencies": ["power", "水"]})
    assert views.field_errors(convened, ZH) == {"meets_at": "请填写日期和时间",
                                                "place": "不能为空", "agencies": "格式不对"}
    with pytest.raises(InvalidPayload) as unknown:
        table.agency_ref(rules, "powr")
    assert views.field_errors(unknown.value.errors, ZH) == {"agencies": "没有这个单位：powr"}
    assert views.field_errors(unknown.value.errors, EN) == {"agencies": "No such agency: powr"}
    issue, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(days=1), "幸福里议事厅",
                             [], rules, NOW)
    with pytest.raises(InvalidPayload) as past:
        table.record_task(issue, table.DESK, "power", "换电缆", NOW - timedelta(hours=1),
                          rules, NOW)
    assert views.field_errors(past.value.errors, ZH) == {"due": "须晚于现在"}
    assert views.field_errors(refused(CompleteTableTask, {"note": "  "}), ZH) == {
        "note": "不能为空"}


def test_a_failed_forms_errors_show_beside_its_own_fields_only():
    """The issue page drawn again after the table's form failed: the errors beside that
    form's fields, the first focused, what was typed kept; the other forms untouched."""
    from services.routing import table
    from services.routing.rules import load_rules

    issue, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(days=1), "幸福里议事厅",
                             [], load_rules(), NOW)
    html = rendered("issue.html", "zh", issue=issue.model_dump(mode="json") | {"contact": {}},
                    timeline=[], messages=[], failed="table.task",
                    form={"agency": "power", "description": "换电缆", "due": "2026-12-01T10:00"},
                    errors={"due": "须晚于现在"})
    assert '<p class="notice error" role="alert" id="form-errors">有 1 处需要修改' in html
    due = html[html.index('id="task-due"'):]
    due = due[:due.index("</div>")]
    assert 'value="2026-12-01T10:00"' in due and 'aria-invalid="true"' in due
    assert "autofocus" in due and 'aria-describedby="table-task-due-error"' in due
    assert '<p class="field-error" id="table-task-due-error" data-field="due">须晚于现在</p>' in due
    assert 'id="task-desc" name="description" value="换电缆"' in html
    assert html.count("aria-invalid") == 1 and html.count("field-error") == 1
    # The task's agency chosen among the table's by name, kept as chosen; the invite
    # form's boxes untouched (none ticked, no error).
    task = html[html.index('id="task-agency"'):]
    assert '<option value="power" selected>供电公司</option>' in task[:task.index("</select>")]
    invite = html[html.index('id="invite-form"'):]
    invite = invite[:invite.index("</form>")]
    assert 'value="water"> 自来水公司</label>' in invite and "checked" not in invite
    assert 'value="power"' not in invite  # at the table already


def test_an_error_on_a_field_the_form_does_not_show_is_said_at_the_top_not_counted():
    """A crafted form (a malformed hidden ``request_id``, a task id no table has) got
    "有 1 处需要修改" with no field marked: the page has nowhere to mark it. It is said at
    the top in words now, and only the fields the form shows are counted and marked."""
    from pydantic import ValidationError

    from services.routing import table
    from services.routing.rules import load_rules
    from shared.contracts import ChooseRoute
    from shared.errors import InvalidPayload

    rules = load_rules()
    with pytest.raises(ValidationError) as caught:
        ChooseRoute.model_validate({"category": "flying wire", "request_id": "<bad id>"})
    route = InvalidPayload.from_validation_error(caught.value).errors
    issue, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(days=1), "幸福里议事厅",
                             [], rules, NOW)
    with pytest.raises(InvalidPayload) as no_task:
        table.close_task(issue, "desk-1", "T9", "已核实", rules, NOW)
    page = issue.model_dump(mode="json") | {"contact": {}}
    for lang, altered, unknown, marked in (
            ("zh", "这张表单被改动过或已过期，没有提交：请检查后重新提交。",
             "没有这个议事桌事项（页面已过期，或地址被改动过）：请以本页列出的事项为准。", "有 1 处需要修改"),
            ("en", "This form was altered or is out of date and was not sent: check it and "
                   "send it again.",
             "There is no such table task (the page was out of date, or its address "
             "edited): go by the tasks listed on this page.", "1 field(s) need fixing")):
        t = views.Translator(lang)
        # The reroute form: the bad category beside its field, the hidden id at the top.
        shown, said = views.split_errors(route, "route", t)
        assert list(shown) == ["category"] and said == altered
        html = unescape(rendered("issue.html", lang, issue=page, timeline=[], messages=[],
                                 failed="route", form={"category": "flying wire"},
                                 errors=shown, error=said))
        assert f'id="form-errors">{marked}' in html and f'id="error">{altered}</p>' in html
        assert html.count("aria-invalid") == 1 and 'data-field="category"' in html
        # Only the hidden id wrong: nothing counted, the words alone.
        assert views.split_errors([route[1]], "route", t) == ({}, altered)
        # An unknown task closed from an edited address: no field of the note's form.
        assert views.split_errors(no_task.value.errors, "close-T9", t) == ({}, unknown)
        html = unescape(rendered("issue.html", lang, issue=page, timeline=[], messages=[],
                                 failed="close-T9", form={"note": "已核实"}, errors={},
                                 error=unknown))
        assert "form-errors" not in html and f'id="error">{unknown}</p>' in html
        # Another field no form shows is named, not counted.
        assert views.split_errors([{"field": "colour", "type": "missing"}], "new_issue",
                                  t) == ({}, t("err_unshown", field="colour"))


def test_every_field_a_form_is_said_to_show_is_marked_on_its_page():
    """``views.FORM_FIELDS`` against the templates: an error on each field it lists is
    shown beside that field (a field listed but not drawn would be marked nowhere)."""
    from services.routing import table
    from services.routing.rules import load_rules

    rules = load_rules()
    issue, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(days=1), "幸福里议事厅",
                             [], rules, NOW)
    issue, _ = table.record_task(issue, table.DESK, "power", "换电缆", NOW + timedelta(days=2),
                                 rules, NOW)
    desk = issue.model_dump(mode="json") | {"contact": {}}
    fresh = dispatched_wire(NOW).model_dump(mode="json") | {"contact": {}}
    card = issue.model_dump(mode="json") | {"table": {
        "meets_at": utc_moment(NOW), "place": "幸福里", "checked_in": True,
        "tasks": desk["table"]["tasks"]}, "location": {"community": "幸福里", "address": "3号楼"}}
    cases = {"route": ("issue.html", {"issue": fresh}, "route"),
             "table.convene": ("issue.html", {"issue": fresh}, "table.convene"),
             "table.invite": ("issue.html", {"issue": desk}, "table.invite"),
             "table.task": ("issue.html", {"issue": desk}, "table.task"),
             "close": ("issue.html", {"issue": desk}, "close-T1"),
             "rating": ("issue.html", {"issue": fresh, "rating": {
                 "due": utc_moment(NOW), "can_resend": True}}, "rating"),
             "rating-link": ("issue.html", {"issue": fresh}, "rating-link"),
             "ack": ("agency.html", {"assignments": [card | {"status": "assigned"}]},
                     f"ack-{issue.issue_id}"),
             "res": ("agency.html", {"assignments": [card | {"status": "acknowledged"}]},
                     f"res-{issue.issue_id}"),
             "td": ("agency.html", {"assignments": [card | {"status": "acknowledged"}]},
                    f"td-{issue.issue_id}-T1"),
             "new_issue": ("new_issue.html", {}, None)}
    assert set(cases) == set(views.FORM_FIELDS)
    assert views.form_fields("rating-link") == () and views.form_fields("close-T9") == ("note",)
    for prefix, (template, context, key) in cases.items():
        fields = views.FORM_FIELDS[prefix]
        errors = {name: f"wrong {name}" for name in fields}
        extra = {"total": 1, "page": None, "next_deadline": lambda a: None,
                 "principal": types.SimpleNamespace(agency="power", staff_id="p-1")} if (
            template == "agency.html") else {"timeline": [], "messages": []}
        html = rendered(template, "en", failed=key, form={}, errors=errors,
                        **(extra if template != "new_issue.html" else {}), **context)
        for name in fields:
            assert f'data-field="{name}">wrong {name}<' in html, (prefix, name)


def test_a_merged_reports_page_says_where_its_work_is_instead_of_an_empty_table():
    """A merged report's page showed an empty 派单 table (its assignments are the issue's
    it joined): it says the work is on that issue, and shows no empty table; a report not
    dispatched yet says so rather than an empty table."""
    from services.routing.merging import fold
    from shared.contracts import IssueReceived

    primary = dispatched_wire(NOW)
    newcomer = receive("WH-20261205-0002", "trace-0002", "3号楼飞线又垂下来了", None,
                       Location(community="幸福里", address="3号楼"), Channel.desk,
                       Language.zh, NOW)
    cause = IssueReceived(trace_id=newcomer.trace_id, issue_id=newcomer.issue_id,
                          occurred_at=NOW, description=newcomer.description,
                          location=newcomer.location, channel=newcomer.channel,
                          language=newcomer.language, has_contact=False)
    merged, _ = fold(newcomer, primary, "flying_wire", cause, NOW)
    page = merged.model_dump(mode="json") | {"contact": {}}
    for lang, said in (("zh", "本报告已与 WH-20261205-0001 合并办理：派单、议事桌和办理进度都在 "
                              "WH-20261205-0001 上。"),
                       ("en", "This report is handled together with WH-20261205-0001: its "
                              "assignments, table and progress are on WH-20261205-0001.")):
        html = rendered("issue.html", lang, issue=page, timeline=[], messages=[])
        assert 'id="assignments"' not in html and 'id="h-assign"' not in html
        assert 'id="h-table"' not in html
        assert f'<p class="help" id="merged-work">{said}</p>' in html
        assert '<a href="/desk/issues/WH-20261205-0001">WH-20261205-0001</a>' in html
    # The issue it joined still shows its own assignments.
    joined = rendered("issue.html", "zh", issue=primary.model_dump(mode="json") | {
        "contact": {}}, timeline=[], messages=[])
    assert 'id="assignments"' in joined and "merged-work" not in joined
    # A report not dispatched yet: no empty table, it says so.
    waiting = rendered("issue.html", "zh", issue=record().model_dump(mode="json") | {
        "contact": {}}, timeline=[], messages=[])
    assert 'id="assignments"' not in waiting and '<p class="help" id="no-assignments">尚未派单。</p>' in waiting


def test_a_closed_issues_table_is_shown_without_its_invite_and_task_forms():
    """Routing refuses to seat or task anyone at a resolved or closed issue's table (409):
    the page no longer offers the forms, only what the table was and decided."""
    from services.routing import table
    from services.routing.rules import load_rules

    issue, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(days=1), "幸福里议事厅",
                             [], load_rules(), NOW)
    for status, offered in (("in_progress", True), ("resolved", False), ("closed", False)):
        html = rendered("issue.html", "zh", timeline=[], messages=[],
                        issue=issue.model_dump(mode="json") | {"contact": {}, "status": status})
        assert "幸福里议事厅" in html
        assert ('id="invite-form"' in html) is offered, status
        assert (f'action="/desk/issues/{issue.issue_id}/table/tasks"' in html) is offered, status


def test_the_tables_agencies_are_ticked_by_name_and_sent_as_codes():
    """The table's forms asked the desk for codes typed comma-separated (单位（英文代号，
    逗号分隔）); they are boxes named in the page's language, each sending its code, and
    routing's body is the same list of codes it always took."""
    from services.routing import table
    from services.routing.rules import load_rules
    from services.web.service import _agency_codes

    issue = dispatched_wire(NOW).model_dump(mode="json") | {"contact": {}}
    html = rendered("issue.html", "en", issue=issue, timeline=[], messages=[],
                    failed="table.convene", form={"place": "Hall", "agencies": ["gas", "water"]},
                    errors={"meets_at": "Give a date and a time"})
    boxes = html[html.index('id="t-agencies"'):]
    boxes = boxes[:boxes.index("</fieldset>")]
    assert '<input type="checkbox" name="agencies" value="gas" checked> Gas company' in boxes
    assert 'value="water" checked> Water utility' in boxes
    assert 'value="power"' not in boxes  # the issue's own agency: at the table anyway
    assert "agencies are at the table: Power company" in html
    assert "codes" not in html and "agency-codes" not in html
    assert _agency_codes(["gas", "water"]) == ["gas", "water"]
    assert _agency_codes("gas, water，heating") == ["gas", "water", "heating"]  # a script's
    assert _agency_codes(None) == []
    convened, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(days=1), "Hall",
                                _agency_codes(["gas"]), load_rules(), NOW)
    assert convened.table.invited == ["power", "gas"]


def test_a_bad_board_filter_is_named_in_the_pages_language():
    """``/desk?priority=bogus`` was a Chinese page saying "invalid request: priority"."""
    errors = [{"field": "priority", "message": "Input should be 'urgent', …", "type": "enum"}]
    assert views.bad_filter(errors, views.Translator("zh")) == \
        "这个筛选条件用不了：紧急程度。请在看板上重新选择。"
    assert views.bad_filter(errors + [{"field": "status", "type": "enum"}],
                            views.Translator("en")) == \
        "This filter cannot be used: Priority, Status. Choose it again on the board."


def test_a_board_filter_given_twice_is_refused_as_the_api_refuses_it():
    """``/desk?priority=urgent&priority=high`` drew urgent issues alone (the first value,
    in silence) where the API answers 422 for a repeated filter: the board now refuses
    it the same way, naming the filter in the page's language."""
    from werkzeug.test import EnvironBuilder

    from services.web.service import WebService
    from shared.errors import InvalidPayload

    def asked(query: str):
        return EnvironBuilder(path="/desk", query_string=query).get_request()

    assert WebService._board_filters(asked("priority=urgent&community=幸福里")) == {
        "priority": "urgent", "community": "幸福里"}
    with pytest.raises(InvalidPayload) as twice:
        WebService._board_filters(asked("priority=urgent&priority=high&status=dispatched"))
    assert twice.value.status == 422
    assert twice.value.errors == [{"field": "priority", "type": "repeated",
                                   "message": "given more than once; give it once"}]
    assert views.bad_filter(twice.value.errors, ZH) == \
        "每个筛选条件只能选一个：紧急程度选了不止一个。请在看板上重新选择。"
    assert views.bad_filter(twice.value.errors, EN) == \
        "Each filter takes one value: Priority was given more than once. Choose it again " \
        "on the board."


def test_the_desk_picks_categories_and_agencies_by_name_and_a_bad_filter_is_a_page():
    """The new-issue form's category and the board's agency filter were free text: a
    clerk typing 飞线 got "格式不对", and the board filtered by 供电公司 answered 500 with a
    trace in the log. Both are now chosen by name; an edited address is a 422 page."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.web.pages import error_page
    from services.web.service import WebService
    from shared.auth import Principal, Role
    from shared.errors import InvalidPayload

    names = names_from_rules(None)
    form = rendered("new_issue.html", "zh", form={"category": "flying_wire"}, errors={})
    category = form[form.index('id="f-category"'):form.index("</select>", form.index(
        'id="f-category"'))]
    assert '<option value="" >（自动判断）</option>' in category
    assert '<option value="flying_wire" selected>飞线/电线裸露</option>' in category
    board = rendered("board.html", "zh", filters={"agency": "power"}, rows=[], total=0,
                     statuses=(), priorities=(), query="")
    agency = board[board.index('id="f-agency"'):]
    assert '<option value="power" selected>供电公司</option>' in agency[:agency.index("</select>")]
    assert views.choices(["power"], names.agency, "en") == [("power", "Power company")]

    desk = Principal(role=Role.desk, agency="desk", staff_id="desk-1")
    with pytest.raises(InvalidPayload) as refused:
        WebService._scoped(desk, {"agency": "供电公司"})
    builder = EnvironBuilder(path="/desk", query_string={"agency": "供电公司"})
    page = error_page(Request(builder.get_environ()), refused.value)
    builder.close()
    assert page.status_code == 422 and "出错了" in page.get_data(as_text=True)


def test_a_stale_form_says_so_rather_than_no_right():
    """A form from before the session (signed out and in again in another tab) was
    refused with "您无权查看或操作这项内容": staff told they lack a right they have."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.web.pages import error_page
    from services.web.service import FormExpired
    from shared.errors import Forbidden

    builder = EnvironBuilder(path="/desk/issues/WH-20261205-0001/reroute", method="POST")
    request = Request(builder.get_environ())
    builder.close()
    stale = error_page(request, FormExpired("the form's CSRF secret does not match"))
    assert stale.status_code == 403
    assert "表单已失效，请刷新页面后重试。" in stale.get_data(as_text=True)
    assert "无权" not in stale.get_data(as_text=True)
    assert "无权" in error_page(request, Forbidden("not yours")).get_data(as_text=True)


def test_a_page_over_the_rate_limit_says_when_to_come_back():
    """A page over its limit answered 429 "出错了" with no reason and no Retry-After (the
    API's 429 has it): the page now says it, in words and in the header."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.web.pages import error_page
    from shared.errors import PayloadTooLarge, RateLimited, Unavailable

    builder = EnvironBuilder(path="/desk", query_string={"lang": "en"})
    request = Request(builder.get_environ())
    builder.close()
    limited = error_page(request, RateLimited("too many requests; try again in 42 s",
                                              retry_after=42))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "42"
    assert "try again in 42 s" in limited.get_data(as_text=True)
    assert "操作太频繁，请 42 秒后再试" in error_page(
        Request(EnvironBuilder(path="/resident/WH-20261205-0001").get_environ()),
        RateLimited("x", retry_after=42)).get_data(as_text=True)
    assert error_page(request, Unavailable("redis down")).headers["Retry-After"] == "5"
    assert error_page(request, PayloadTooLarge("too large")).headers["Connection"] == "close"


def test_a_wrong_method_page_says_which_methods_the_address_takes():
    """A form's address opened as a page: the 405 page carries Allow, as the API's does."""
    from werkzeug.exceptions import MethodNotAllowed
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.web.pages import error_page

    request = Request(EnvironBuilder(path="/desk/issues/WH-20261205-0001/triage").get_environ())
    page = error_page(request, MethodNotAllowed(valid_methods=["POST"]))
    assert page.status_code == 405 and page.headers["Allow"] == "POST"


def test_the_form_becomes_the_apis_body_with_blanks_left_out():
    body = views.submission_from_form({
        "description": "飞线", "location.community": "幸福里", "location.address": "3号楼",
        "location.grid": " ", "contact.phone": "13812345678", "contact.name": "",
        "contact.preferred_channel": "", "channel": "desk", "language": "zh", "category": ""})
    assert body == {"description": "飞线", "channel": "desk", "language": "zh",
                    "location": {"community": "幸福里", "address": "3号楼"},
                    "contact": {"phone": "13812345678"}}


def test_a_missing_community_is_sent_empty_so_the_api_names_it():
    body = views.submission_from_form({"description": "x"})
    assert body["location"] == {"community": "", "address": ""} and "contact" not in body


def test_one_rendered_form_with_the_same_words_is_one_report():
    """Sent twice (a double click): one key. Another form, or the same form edited (the
    back button, then the next resident's report), is another report. No usable id, no
    check: a form without one is sent as it always was."""
    body = views.submission_from_form({"description": "井盖坏了", "location.community": "幸福里",
                                       "location.address": "南门"})
    key = views.submission_key("a" * 32, body)
    assert key == views.submission_key("a" * 32, dict(body)) and len(key) == 64
    assert views.submission_key("b" * 32, body) != key
    assert views.submission_key("a" * 32, {**body, "description": "路灯不亮"}) != key
    assert views.submission_key(None, body) is None and views.submission_key("", body) is None
    assert views.submission_key("short", body) is None
    assert views.submission_key("x" * 65, body) is None


def test_links_in_messages_are_redacted_for_the_desk():
    text = "请打开 http://h/issues/WH-1/feedback?token=eyJ.abc-def_1 评价，&token=x2 也是"
    assert views.redact_links(text) == "请打开 http://h/issues/WH-1/feedback?token=… 评价，&token=… 也是"
    assert views.redact_links(None) == ""


def test_rate_chart_scales_bars_and_shows_missing_rates_as_dashes():
    chart = views.rate_chart([("all", 1.0), ("power", 0.5), ("water", None)], "Response")
    widths = [b["width"] for b in chart["bars"]]
    assert widths[0] == 2 * widths[1] and widths[2] == 0
    assert [b["value"] for b in chart["bars"]] == ["100.0%", "50.0%", "—"]
    assert chart["height"] > 3 * chart["bar_height"]


def test_board_row_shows_the_next_deadline_and_overdue():
    fresh = record(status="dispatched", priority=Priority.urgent, category="flying_wire",
                   assignments=[assignment()])
    row = board_row(fresh, NOW)
    assert row["lead"]["agency"] == "power" and row["next_deadline_kind"] == "acknowledge"
    assert row["next_deadline"] == utc_moment(NOW + timedelta(hours=1))
    assert row["overdue"] is False and "description" not in row
    assert board_row(fresh, NOW + timedelta(hours=2))["overdue"] is True
    done = record(status="resolved", assignments=[assignment(status=AssignmentStatus.resolved)],
                  feedback_due=NOW + timedelta(days=7))
    row = board_row(done, NOW + timedelta(days=2))
    assert row["next_deadline_kind"] == "feedback" and row["overdue"] is False


@pytest.mark.parametrize("lang, kind, at", [("zh", "报到", "（截止 2026-12-05 17:00）"),
                                             ("en", "Report in", "(due 2026-12-05 17:00)")])
def test_the_board_says_each_rows_next_deadline_before_its_script_runs(lang, kind, at):
    """Without JavaScript the board's 下一时限 column said "—" on every row: the browser
    drew the deadline from ``data-due``. The server writes its moment in the desk's time
    zone (WHISTLE_TZ), the kind beside it; the script then adds the countdown."""
    fresh = record(status="dispatched", priority=Priority.urgent, category="flying_wire",
                   assignments=[assignment()])
    held = record(issue_id="WH-20261205-0002", status="needs_triage")
    rows = views.board_rows([board_row(fresh, NOW), board_row(held, NOW)],
                            views.Translator(lang), names_from_rules(None), tz="Asia/Shanghai")
    assert rows[0]["due_at"] == at and rows[1]["due_at"] == ""
    assert "due_at" in views.BOARD_FIELDS  # the poll's rows say it too
    html = rendered("board.html", lang, rows=rows, total=2, filters={}, statuses=[],
                    priorities=[], query="")
    cells = re.findall(r'<td class="due-cell">(.*?)</td>', html)
    assert [unescape(re.sub(r"<[^>]*>", "", c)) for c in cells] == [f"{kind} {at}", "—"]
    # the script's countdown goes where the kind is, the moment stays beside it
    assert f'data-due="{utc_moment(NOW + timedelta(hours=1))}"' in cells[0]
    assert '<time class="due-at" datetime=' in cells[0]


def test_the_access_log_never_holds_a_links_token():
    line = "GET /issues/WH-20261205-0001/feedback?token=eyJhbGci.x.y&lang=en HTTP/1.1"
    assert "eyJ" not in redact_request_line(line) and "lang=en" in redact_request_line(line)


def test_the_access_log_never_holds_an_open311_key_nor_a_reporters_details():
    """An Open311 client polls with ``?api_key=`` in the query string, and may POST its
    fields there: the key, the name, the email and the flat are cut out, however the
    names are spelled on the wire; the filters an operator reads by stay."""
    key = "o311_86inGYNxaNRARBvRU5JF6_Bq8g4ymCFtGRbh9momn1Q"
    poll = (f"GET /open311/v2/servicerequestupdates.json?api_key={key}"
            "&start_date=2026-12-06T00:00:00Z HTTP/1.1")
    assert redact_request_line(poll) == ("GET /open311/v2/servicerequestupdates.json"
                                         "?api_key=[redacted]&start_date=2026-12-06T00:00:00Z "
                                         "HTTP/1.1")
    post = (f"POST /open311/v2/requests.json?api%5Fkey={key}&service_code=pipe_leak"
            "&first_name=%E5%BB%BA%E5%9B%BD&last_name=%E5%AD%99&email=sun%40example.org"
            "&phone=138%2012345678&attribute%5Bbuilding%5D=3%E5%8F%B7%E6%A5%BC201"
            "&description=%E5%AD%99%E5%BB%BA%E5%9B%BD&%74oken=eyJx.y.z HTTP/1.1")
    shown = redact_request_line(post)
    for secret in (key, "%E5%BB%BA%E5%9B%BD", "%E5%AD%99", "sun%40example.org", "12345678",
                   "%E5%8F%B7", "eyJ"):
        assert secret not in shown, secret
    assert "service_code=pipe_leak" in shown and shown.endswith(" HTTP/1.1")
    assert redact_request_line("GET /issues?status=open&limit=20 HTTP/1.1") == \
        "GET /issues?status=open&limit=20 HTTP/1.1"


def test_the_access_log_never_holds_whistles_own_resident_fields_sent_in_a_query():
    """A careless client puts a submission's or a rating's fields in the query string
    (``?name=孙建国``, ``contact.name``, ``contact[name]``, ``location.address``,
    ``comment``, ``note``): its request is refused, but the line was logged with the
    resident's name and flat. Their values are cut out; filters stay."""
    line = ("POST /issues?name=%E5%AD%99%E5%BB%BA%E5%9B%BD&contact.name=%E5%AD%99"
            "&contact%5Bname%5D=Sun&location.address=%E4%B8%BD3%E5%8F%B7%E6%A5%BC501"
            "&address=Flat%205&comment=%E5%B7%AE&note=Mr%20Sun&community=%E7%BC%A4"
            "&status=open HTTP/1.1")
    shown = redact_request_line(line)
    for secret in ("%E5%AD%99", "=Sun", "501", "Flat", "%E5%B7%AE", "Mr"):
        assert secret not in shown, (secret, shown)
    assert "community=%E7%BC%A4" in shown and "status=open" in shown
    assert shown.endswith(" HTTP/1.1")


def test_the_pages_show_names_from_the_rules_file_not_codes():
    names = names_from_rules(None)
    assert names.category("flying_wire", "zh") == "飞线/电线裸露"
    assert names.agency("power", "en") == "Power company"
    assert names.category("no_such_code", "zh") == "no_such_code"
    assert names.category(None, "en") == "—"
    row = {"issue_id": "WH-20261205-0001", "status": "dispatched", "priority": "urgent",
           "category": "flying_wire", "escalation_level": "street", "reopen_count": 1,
           "lead": {"agency_name": "供电公司", "agency_name_en": "Power company"},
           "next_deadline": None, "next_deadline_kind": None, "overdue": False,
           "community": "幸福里"}
    (shown,) = views.board_rows([row], ZH, names, tz="Asia/Shanghai")
    assert shown["category_label"] == "飞线/电线裸露" and shown["lead_label"] == "供电公司"
    assert shown["status_label"] == "已派单 · 重办1次" and shown["level_label"] == "街道"
    assert set(views.BOARD_FIELDS) <= set(shown)


def test_count_chart_scales_to_the_largest_and_shows_counts():
    chart = views.count_chart([("all", 6), ("power", 3), ("water", 0)], "Escalations")
    assert [b["value"] for b in chart["bars"]] == ["6", "3", "0"]
    assert chart["bars"][0]["width"] == 2 * chart["bars"][1]["width"]
    assert views.count_chart([("all", 0)], "x")["bars"][0]["width"] == 0


def test_the_progress_link_is_sealed_and_reads_only_the_reporters_own_report():
    from services.notify.service import progress_link
    from shared.auth import issue_resident_token, verify_resident_token

    secret = "s" * 40
    token = issue_resident_token("WH-20261205-0002", secret)
    link = progress_link("https://whistle.example", "WH-20261205-0002", lambda: token)
    assert link.shown == "https://whistle.example/resident/WH-20261205-0002?token=[redacted]"
    assert link.secret == f"https://whistle.example/resident/WH-20261205-0002?token={token}"
    principal = verify_resident_token(token, secret)
    assert principal.reporter_issue_id == "WH-20261205-0002" and principal.rates is None


# ------------------------------------------------- the timeline, in the page's language


def dispatched_wire(at: datetime) -> IssueRecord:
    """The flying wire, dispatched urgently at ``at`` to the power company (lead)."""
    from services.routing.rules import load_rules
    from shared.issue import Routing, dispatch

    rules = load_rules()
    known = rules.agency("power")
    window = rules.window(Priority.urgent)
    return dispatch(record(received_at=at, updated_at=at), "flying_wire",
                    Priority.urgent,
                    Routing(rule="flying_wire", keywords=["飞线"], category_source="keywords"),
                    [Assignment(agency="power", agency_name=known.name,
                                agency_name_en=known.name_en, sector=known.sector,
                                role=Role.lead, assigned_at=at,
                                acknowledge_by=at + window.acknowledge,
                                resolve_by=at + window.resolve)], at)


def whole_chain() -> IssueRecord:
    """A flying wire through the whole chain, each step written by the code that writes it
    in the running system: received, dispatched, delivered, told, 报到 with a note,
    resolved, rated unsatisfied, reopened, reported in and resolved again, rated satisfied."""
    from services.agency.domain import delivery_notes, finish_part, report_in
    from services.notify.recipients import notified_step
    from services.routing import feedback
    from services.routing.desk import dispatched_event
    from services.routing.rules import load_rules
    from shared.auth import FeedbackGrant
    from shared.contracts import IssueResolved, Rating

    rules = load_rules()
    at = NOW - timedelta(hours=5)
    issue = dispatched_wire(at)
    for note in delivery_notes(dispatched_event(issue, at)).values():
        issue.step(note.at, note.service, note.step, note.detail, note.agency)
    issue.step(at, "notify", *notified_step("received", "sent", "webhook", issue.issue_id))
    for cycle, rating in enumerate((Rating.unsatisfied, Rating.satisfied)):
        now = at + timedelta(hours=2 * cycle + 1)
        issue, _ = report_in(issue, "power", "gd-12", now, "抢修班组已出发")
        issue, events = finish_part(issue, "power", "gd-12", "已剪除飞线", now)
        resolved = next(e for e in events if isinstance(e, IssueResolved))
        issue = feedback.await_rating(issue, resolved, timedelta(days=7))
        issue, _ = feedback.rate(issue, FeedbackGrant(reporter_issue_id=issue.issue_id,
                                                      issue_id=issue.issue_id, cycle=cycle),
                                 rating, "电线还是很低" if cycle == 0 else None, rules,
                                 now + timedelta(minutes=30))
    assert issue.status.value == "closed"
    return issue


def rendered(template: str, lang: str, **context) -> str:
    from services.web.pages import templates

    return templates.get_template(template).render({
        "t": views.Translator(lang), "lang": lang, "path": "/", "tz": "Asia/Shanghai",
        "now": NOW, "names": names_from_rules(None), "csrf": "c", "principal": None,
        "desk": True, "operator": False, "request_id": "r", "done": None, "error": None,
        **context})


def section(html: str, element_id: str) -> str:
    """The visible text of the element with that id (tags and attributes left out)."""
    start = html.index(f'id="{element_id}"')
    body = html[html.index(">", start) + 1:html.index("</ol>", start)]
    return re.sub(r"<[^>]*>", " ", body)


def test_a_chinese_issue_page_names_every_step_of_the_whole_chain_in_chinese():
    issue = whole_chain()
    steps = {e.step for e in issue.timeline}
    assert {"received", "dispatched", "assignment_delivered", "resident_notified",
            "acknowledged", "assignment_resolved", "resolved", "awaiting_rating",
            "reopened", "rated", "closed"} <= steps
    names = names_from_rules(None)
    desk = issue.model_dump(mode="json") | {"contact": {}}
    rows = views.timeline_rows(desk["timeline"], ZH, names, "Asia/Shanghai")
    html = rendered("issue.html", "zh", issue=desk, timeline=rows, messages=[])
    shown = section(html, "timeline")
    assert not re.search(r"[A-Za-z]{3,}", shown), shown  # no step name, no English detail
    # who of the agency's staff acted, beside the agency's name
    assert "报到" in shown and "供电公司（gd-12）已报到：抢修班组已出发" in shown
    assert "供电公司（gd-12）已办结：已剪除飞线" in shown
    assert "经社区窗口受理" in shown and "类别：飞线/电线裸露" in shown
    assert "居民不满意：电线还是很低" in shown and "结案：居民满意" in shown
    # the detail as written stays at hand
    assert "reported in: 抢修班组已出发" in html
    # the 说明 column holds the 报到's note next to the resolution's
    assert "抢修班组已出发" in html[html.index('id="assignments"'):html.index("</table>")]


def test_an_english_issue_page_says_every_step_of_the_whole_chain_in_english():
    """The English timeline showed the services' own words: "received message sent via
    webhook", "供电公司 (gd-12) reported in", "accepted via desk". It says each step in
    English from its parts, agencies by their English names; what people typed (a note,
    a reason) stays as written, and the detail as written is the row's tooltip."""
    issue = whole_chain().model_dump(mode="json") | {"contact": {}}
    rows = views.timeline_rows(issue["timeline"], EN, names_from_rules(None), "Asia/Shanghai")
    html = rendered("issue.html", "en", issue=issue, timeline=rows, messages=[])
    shown = unescape(section(html, "timeline"))
    typed = ("抢修班组已出发", "已剪除飞线", "电线还是很低")
    free_of_typing = shown
    for text in typed:
        free_of_typing = free_of_typing.replace(text, "")
    assert not re.search(r"[\u4e00-\u9fff]", free_of_typing), shown  # no Chinese agency name
    assert "step_" not in shown and "_" not in free_of_typing.replace("gd-12", "")
    assert "Power company (gd-12) reported in: 抢修班组已出发" in shown
    assert "Power company (gd-12) resolved its part: 已剪除飞线" in shown
    assert "Category: Exposed, dangling or wet cable, priority: Urgent" in shown
    assert "The “received” message was sent by mini-program / SMS" in shown
    assert "The resident is not satisfied: 电线还是很低; back to Power company" in shown
    assert "Closed: the resident is satisfied" in shown
    # the detail as written stays at hand, as the row's tooltip
    assert 'title="供电公司 (gd-12) reported in: 抢修班组已出发"' in html


def test_steps_written_before_staff_were_named_still_read_in_chinese():
    """Issues reported in and resolved before the staff id was written on the timeline
    (in Redis or the archive) keep their Chinese reading."""
    old = [{"at": NOW.isoformat(), "step": step, "detail": detail} for step, detail in (
        ("acknowledged", "供电公司 reported in (after its deadline): 已出发"),
        ("assignment_resolved", "供电公司: 已剪除飞线"),
        ("table_checked_in", "供电公司 checked in at the table"),
        ("table_task_done", "T1 done by 供电公司: 已更换"))]
    rows = views.timeline_rows(old, ZH, names_from_rules(None), "Asia/Shanghai")
    assert [row["detail"] for row in rows] == [
        "供电公司已报到（已超过报到时限）：已出发", "供电公司已办结：已剪除飞线",
        "供电公司已到协调会签到", "T1已由供电公司完成：已更换"]


def test_a_step_the_catalogue_does_not_know_shows_as_written():
    (row,) = views.timeline_rows([{"at": NOW.isoformat(), "step": "new_thing",
                                   "detail": "x ?token=abc"}], ZH, names_from_rules(None),
                                 "Asia/Shanghai")
    assert row["label"] == "new_thing" and row["detail"] == "x ?token=…"


# Every other step's detail as the code that writes it in the running system writes it
# (the producers are called: a change of wording there fails here), and how a Chinese
# page says it. Codes stay as they are: issue ids, task ids, the desk staff's ids.
STAFF = "desk-wang"
LATER = NOW + timedelta(minutes=5)


def desk_steps() -> list[TimelineEntry]:
    """Triage (held on a guess, held with none, flagged), the desk's triage of the flag,
    reroutes (to another category; the same category without its support), and the
    agency told its part is withdrawn."""
    from services.agency.domain import withdrawal_note
    from services.routing import desk
    from services.routing.classifier import Classification
    from services.routing.domain import route_issue
    from services.routing.rules import load_rules
    from shared.contracts import AssignmentWithdrawn, Reroute, TriageDecision

    rules = load_rules()

    def routed(text: str, classification: Classification | None = None) -> IssueRecord:
        decision = route_issue(text, None, rules, NOW, classification)
        return desk.first_route(record(description=text), decision, rules, NOW)

    def rerouted(issue: IssueRecord, body: Reroute) -> desk.DeskChange:
        return desk.reroute(issue, body, body.reason, STAFF, rules, LATER)

    held = routed("东门那边又不行了", Classification(
        top=[("street_light", 0.45), ("rubbish", 0.4), ("noise", 0.1)], model_version="m1"))
    lost = routed("东门那边又不行了", Classification(top=[], model_version="m1"))
    flagged = routed("一股臭鸡蛋味", Classification(
        top=[("gas_leak", 0.5), ("sewage_blocked", 0.4)], urgent=True, model_version="m1"))
    triaged = desk.triage(flagged, TriageDecision(category="sewage_blocked"), None, STAFF,
                          rules, LATER).record
    chosen = desk.triage(held, TriageDecision(category="rubbish"), "垃圾堆在路灯下", STAFF,
                         rules, LATER).record
    leak = routed("楼上漏水，天花板滴水")  # water leads, the property manager supports
    moved = rerouted(leak, Reroute(category="sewage_blocked", reason="是下水道堵了"))
    trimmed = rerouted(leak, Reroute(category="pipe_leak", support=[],
                                     reason="物业不用来\n管道归自来水公司"))
    swapped = rerouted(leak, Reroute(category="pipe_leak", lead="property_manager",
                                     support=["water", "power"], urgent=True,
                                     reason="水已漫到配电箱"))
    told = [withdrawal_note(e)[1] for e in moved.events if isinstance(e, AssignmentWithdrawn)]
    return [held.timeline[-1], lost.timeline[-1], flagged.timeline[-1],
            next(e for e in triaged.timeline if e.step == "rerouted"),
            *(e for e in [*triaged.timeline, *chosen.timeline] if e.step == "triaged"),
            moved.record.timeline[-1], trimmed.record.timeline[-1],
            swapped.record.timeline[-1], *told]


def escalation_steps() -> list[TimelineEntry]:
    """The power company silent past its 报到 (to the street office), then past its 办结
    (to the district) twice (the district reminded), and each supervisor told: by email,
    then failed."""
    from services.notify.recipients import notified_step
    from services.routing.escalation import escalate
    from services.routing.rules import load_rules
    from shared.contracts import DeadlineKind, EscalationLevel
    from shared.issue import acknowledge, pending_deadlines

    rules = load_rules()
    issue = dispatched_wire(NOW)
    for kind in (DeadlineKind.acknowledge, DeadlineKind.resolve, DeadlineKind.resolve):
        deadline = next(d for d in pending_deadlines(issue) if d.kind is kind)
        issue, _ = escalate(issue, deadline, rules, deadline.due + timedelta(minutes=1))
        if kind is DeadlineKind.acknowledge:
            issue = acknowledge(issue, "power", "power-12", issue.updated_at)
    for level, status, note in ((EscalationLevel.street, "sent", ""),
                                (EscalationLevel.district, "failed", "SMTP 550")):
        issue.step(issue.updated_at, "notify", *notified_step(
            "escalation_notice", status, "email", issue.issue_id, level=level, note=note))
    return [e for e in issue.timeline if e.step in ("escalated", "supervisor_notified")]


def merging_steps() -> list[TimelineEntry]:
    """A neighbour's report folded into the wire's issue, then split off by the desk."""
    from services.routing.merging import fold, join, leave, unfold
    from shared.contracts import IssueReceived

    primary = dispatched_wire(NOW)
    neighbour = record(issue_id="WH-20261205-0002", trace_id="trace-0002")
    cause = IssueReceived(trace_id=neighbour.trace_id, issue_id=neighbour.issue_id,
                          occurred_at=NOW, description=neighbour.description,
                          location=neighbour.location, channel=neighbour.channel,
                          language=neighbour.language, has_contact=True)
    merged, _ = fold(neighbour, primary, "flying_wire", cause, NOW)
    joined = join(primary, neighbour.issue_id, NOW)
    split, _ = unfold(merged, True, LATER)
    return [merged.timeline[-1], joined.timeline[-1],
            leave(joined, neighbour.issue_id, LATER).timeline[-1], split.timeline[-1]]


def table_steps() -> list[TimelineEntry]:
    """A table for the wire: the property manager brought in at convening, the water
    utility invited by the desk and the gas company by the lead, two tasks: one done by
    its agency, one closed by the desk."""
    from services.routing import table
    from services.routing.rules import load_rules
    from shared.issue import acknowledge

    rules = load_rules()
    issue, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(days=1), "幸福里议事厅",
                             ["property_manager"], rules, NOW)
    issue, _ = table.invite(issue, table.DESK, ["water"], rules, NOW)
    issue, _ = table.invite(issue, "power", ["gas"], rules, NOW)
    issue, _ = table.check_in(issue, "power", "gd-12", rules, NOW)
    issue = acknowledge(issue, "power", "gd-12", NOW)
    for agency, what in (("power", "更换老化电缆"), ("property_manager", "清理楼道杂物")):
        issue, _ = table.record_task(issue, table.DESK, agency, what, NOW + timedelta(days=2),
                                     rules, NOW)
    issue, _ = table.complete_task(issue, "power", "gd-17", "T1", "已更换", rules, LATER)
    issue, _ = table.close_task(issue, STAFF, "T2", "现场已核实", rules, LATER)
    return [e for e in issue.timeline if e.step.startswith("table_")]


def every_other_step() -> list[dict]:
    return [e.model_dump(mode="json") for e in
            [*desk_steps(), *escalation_steps(), *merging_steps(), *table_steps()]]


def test_a_chinese_page_says_every_other_steps_detail_in_chinese():
    timeline = every_other_step()
    assert {"needs_triage", "flagged_for_triage", "rerouted", "assignment_withdrawn",
            "escalated", "merged", "reporter_joined", "reporter_split", "split",
            "table_convened", "table_invited", "table_task_recorded", "table_task_done",
            "supervisor_notified"} <= {e["step"] for e in timeline}
    rows = views.timeline_rows(timeline, ZH, names_from_rules(None), "Asia/Shanghai")
    for row in rows:
        codes_out = row["detail"].replace(STAFF, "").replace("SMTP", "")
        assert not re.search(r"[A-Za-z]{3,}", codes_out), (row["step"], row["detail"])
    assert [(row["step"], row["detail"]) for row in rows] == [
        ("needs_triage", "类别没有把握（最可能是路灯不亮，45%），由社区窗口决定；候选：路灯不亮 45%、垃圾堆放/清运不及时 40%、噪音扰民 10%"),
        ("needs_triage", "未能识别类别，由社区窗口决定；候选：无"),
        ("flagged_for_triage", "紧急但类别没有把握（最可能是燃气泄漏，50%）：已先按燃气泄漏派单，由社区窗口决定"),
        ("rerouted", "desk-wang改派：类别燃气泄漏→污水堵塞/下水道反味；撤回燃气公司；新增排水公司（牵头）；原因：分拣时社区窗口改选了路线"),
        ("triaged", "desk-wang选定类别：污水堵塞/下水道反味"),
        ("triaged", "desk-wang选定类别：垃圾堆放/清运不及时；原因：垃圾堆在路灯下"),
        ("rerouted", "desk-wang改派：类别管道漏水→污水堵塞/下水道反味；紧急程度高→一般；撤回自来水公司、物业公司；新增排水公司（牵头）；原因：是下水道堵了"),
        ("rerouted", "desk-wang改派：类别不变（管道漏水）；撤回物业公司；原因：物业不用来\n管道归自来水公司"),
        ("rerouted", "desk-wang改派：类别不变（管道漏水）；紧急程度高→紧急；新增供电公司（配合）；改为物业公司（牵头）、自来水公司（配合）；原因：水已漫到配电箱"),
        ("assignment_withdrawn", "已告知自来水公司：其派单已撤回（desk-wang：是下水道堵了）"),
        ("assignment_withdrawn", "已告知物业公司：其派单已撤回（desk-wang：是下水道堵了）"),
        ("escalated", "供电公司未在2026-12-05 18:00前报到，升级至街道办事处督办；再次吹哨，新时限2026-12-05 20:01"),
        ("escalated", "供电公司未在2026-12-06 16:00前办结，升级至区政府督办；再次吹哨，新时限2026-12-07 16:01"),
        ("escalated", "供电公司未在2026-12-07 16:01前办结，仍由区政府督办，已再次提醒；再次吹哨，新时限2026-12-08 16:02"),
        ("supervisor_notified", "致街道办事处的督办通知消息已送达（邮件）"),
        ("supervisor_notified", "致区政府的督办通知消息发送失败（邮件）：邮件服务器拒收（SMTP 550）"),
        ("merged", "与 WH-20261205-0001 同为飞线/电线裸露问题，已合并（共性问题统筹）"),
        ("reporter_joined", "WH-20261205-0002 反映的是同一问题，已并入本件"),
        ("reporter_split", "社区窗口已将 WH-20261205-0002 拆出，单独办理"),
        ("split", "社区窗口已将本件从 WH-20261205-0001 拆出，单独派单"),
        ("table_convened", "2026-12-06 16:00在幸福里议事厅召开协调会，参会单位：供电公司、物业公司"),
        ("table_invited", "社区窗口邀请自来水公司参会"),
        ("table_invited", "供电公司邀请燃气公司参会"),
        ("table_checked_in", "供电公司（gd-12）已到协调会签到"),
        ("table_task_recorded", "T1：供电公司负责更换老化电缆，2026-12-07 16:00前完成"),
        ("table_task_recorded", "T2：物业公司负责清理楼道杂物，2026-12-07 16:00前完成"),
        ("table_task_done", "T1已由供电公司（gd-17）完成：已更换"),
        ("table_task_done", "T2由社区窗口（desk-wang）代物业公司关闭：现场已核实"),
    ]
    assert all(row["raw"] == e["detail"] for row, e in zip(rows, timeline, strict=True))


def test_a_deadline_agreed_at_the_table_is_said_in_both_languages():
    """The urgent wire's power company had 24 hours to resolve; the table agreed two
    days: the issue page says the deadline moved, and to when, in the reader's language."""
    from services.routing import table
    from services.routing.rules import load_rules

    rules = load_rules()
    issue, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(hours=1), "幸福里议事厅",
                             [], rules, NOW)
    issue, _ = table.record_task(issue, table.DESK, "power", "更换老化电缆",
                                 NOW + timedelta(days=2), rules, NOW)
    steps = [e.model_dump(mode="json") for e in issue.timeline if e.step == "deadline_agreed"]
    (zh,) = views.timeline_rows(steps, ZH, names_from_rules(None), "Asia/Shanghai")
    assert (zh["label"], zh["detail"]) == (
        "协调会商定时限", "T1：按协调会商定，供电公司的办结时限由2026-12-06 16:00改为2026-12-07 16:00")
    (en,) = views.timeline_rows(steps, EN, names_from_rules(None), "Asia/Shanghai")
    assert (en["label"], en["detail"]) == (
        "Deadline agreed at the table",
        "T1: Power company to resolve by 2026-12-07 16:00 as agreed at the table, "
        "not 2026-12-06 16:00")
    assert en["raw"] == ("供电公司: resolve by 2026-12-07T08:00:00+00:00 as agreed at the table "
                         "(T1), not 2026-12-06T08:00:00+00:00")


def test_a_reopening_at_the_district_already_reads_still_with_the_district():
    """The issue page and the resident's page said "升级至区督办" / "escalated" for a
    reopening that took nothing higher; they say the district keeps it now."""
    from shared.authz import resident_view
    from shared.issue import TimelineEntry

    detail = "the resident is not satisfied: 还在滴水; back to power, still with district"
    (row,) = views.timeline_rows([{"at": NOW.isoformat(), "step": "reopened",
                                   "detail": detail}], ZH, names_from_rules(None),
                                 "Asia/Shanghai")
    assert row["detail"] == "居民不满意：还在滴水；重新交办供电公司，仍由区督办"
    issue = whole_chain()  # its own reopening, from the community, went up: ours did not
    issue.timeline = [e if e.step != "reopened" else
                      TimelineEntry(at=e.at, service="routing", step="reopened", detail=detail)
                      for e in issue.timeline]
    said = {lang: [p["text"] for p in resident_view(issue, None, lang=lang)["progress"]]
            for lang in ("zh", "en")}
    assert "重新交办，仍由区督办" in said["zh"] and "重新交办，提级督办" not in said["zh"]
    assert ("sent back to the agencies; the district keeps following it up" in said["en"]
            and "sent back to the agencies, escalated" not in said["en"])
    # The rating form's answer (web's POST /resident/{id}/rating, when routing says the
    # reopening went nowhere higher).
    for lang, says in (("zh", "我们已重新交办，仍由区督办"),
                       ("en", "It has gone back to the agencies, and the district keeps")):
        html = rendered("resident.html", lang, view=resident_view(issue, None, lang=lang),
                        token="t", rated="reopened_at_top")
        assert says in html and "one level up" not in html and "提级" not in html
    went_up = "the resident is not satisfied: x; back to power, escalated to street"
    (row,) = views.timeline_rows([{"at": NOW.isoformat(), "step": "reopened",
                                   "detail": went_up}], ZH, names_from_rules(None),
                                 "Asia/Shanghai")
    assert row["detail"] == "居民不满意：x；重新交办供电公司，升级至街道督办"


def test_the_residents_page_says_what_was_sent_when_across_a_reroute():
    """After a reroute the resident's page said "已派给：<the agencies now>" at the first
    dispatch's time, as if they had had it from the start. It says the first dispatch's
    agencies then, and the reroute's (every agency on it after) when it happened; a
    reroute that changed no agency, of which the resident is not told, is not there."""
    from shared.authz import resident_view
    from shared.issue import reroute

    first = dispatched_wire(NOW)
    manager = assignment("property_manager", agency_name="物业公司",
                         agency_name_en="Property management", sector=Sector.housing,
                         assigned_at=NOW + timedelta(hours=1))
    moved = reroute(first, "stairwell_light", Priority.high, first.routing, [manager],
                    "desk-1", "楼道内的线路归物业", NOW + timedelta(hours=1)).record
    same = reroute(moved, "flying_wire", Priority.high, first.routing,
                   [moved.assignment_for("property_manager")], "desk-1", "类别改回",
                   NOW + timedelta(hours=2)).record
    assert [e.step for e in same.timeline].count("rerouted") == 2
    for lang, sent, rerouted in (("zh", "已派给：供电公司", "已改派给：物业公司"),
                                 ("en", "sent to: Power company",
                                  "sent on instead to: Property management")):
        view = resident_view(same, None, lang=lang)
        assert [(p["at"], p["text"]) for p in view["progress"]][1:] == [
            (utc_moment(NOW), sent), (utc_moment(NOW + timedelta(hours=1)), rerouted)]
        html = rendered("resident.html", lang, view=view, token="t", rated=None)
        progress = section(html, "progress")
        assert progress.index(sent) < progress.index(rerouted)
    # The lead changing hands is told as well, the new lead first.
    both = reroute(first, "flying_wire", Priority.urgent, first.routing,
                   [manager, first.assignment_for("power").model_copy(
                       update={"role": Role.support})], "desk-1", "物业牵头",
                   NOW + timedelta(hours=1)).record
    swapped = reroute(both, "flying_wire", Priority.urgent, first.routing,
                      [both.assignment_for("power").model_copy(update={"role": Role.lead}),
                       both.assignment_for("property_manager").model_copy(
                           update={"role": Role.support})], "desk-1", "还是供电牵头",
                      NOW + timedelta(hours=2)).record
    assert [p["text"] for p in resident_view(swapped, None, lang="zh")["progress"]][1:] == [
        "已派给：供电公司", "已改派给：物业公司、供电公司", "已改派给：供电公司、物业公司"]


def delivery_records() -> list[dict]:
    """A resident's messages as notify records them, each note and failure written by the
    code that writes it: a choice this deployment cannot honour (an unknown channel, one
    not configured, email without an address: sent through the desk), a webhook that
    cannot be reached, one that answers 503, one that answers 200, an email without an
    address, and a channel that never says why."""
    import requests

    from services.notify.channels import (
        EmailChannel,
        OutgoingMessage,
        WebhookChannel,
        choose_channel,
    )
    from services.notify.delivery import attempted, new_record, relayed_by_desk

    message = OutgoingMessage(notification_id="n1", issue_id="WH-20261205-0001",
                              kind="dispatched", language="zh", text="【吹哨报到】已派单")
    notes = [choose_channel(wanted, configured, has_email=has_email, has_phone=has_phone)[1]
             for wanted, configured, has_email, has_phone in (
                 ("pigeon", {"desk"}, True, True), ("email", {"desk"}, True, True),
                 ("email", {"desk", "email"}, False, True),
                 ("webhook", {"desk", "webhook", "email"}, True, False),
                 ("webhook", {"desk", "webhook"}, False, False))]
    unreachable = WebhookChannel("http://127.0.0.1:9/", "s" * 40).deliver(message).detail
    no_address = EmailChannel("127.0.0.1", 9, "whistle@example.org").deliver(message).detail
    record = new_record(message, "resident", "desk", NOW.isoformat())
    sent = [attempted(record, message, True, "desk", "", note, NOW.isoformat(), 1)
            for note in notes]
    failed = [attempted(record, message, False, channel, detail, "", NOW.isoformat(), 1)
              for channel, detail in (("webhook", unreachable), ("webhook", "HTTP 503"),
                                      ("webhook", requests.ReadTimeout.__name__),
                                      ("email", no_address), ("email", ""))]
    failed.append(relayed_by_desk(attempted(record, message, False, "webhook", "HTTP 503", "",
                                            NOW.isoformat(), 1), message))
    answered = attempted(record, message, True, "webhook", "HTTP 200", "", NOW.isoformat(), 1)
    return [*sent, *failed, answered]


def test_a_chinese_page_says_why_a_message_went_otherwise_or_failed_in_chinese():
    from services.notify.recipients import notified_step

    records = delivery_records()
    shown = views.messages_view(records, "Asia/Shanghai", ZH)
    assert [(m["channel_label"], m["detail"]) for m in shown] == [
        ("社区联系", "居民选择的回复方式 'pigeon' 无法识别，已改由社区联系转告"),
        ("社区联系", "本系统未开通居民选择的邮件，已改由社区联系转告"),
        ("社区联系", "居民选择了邮件但没有留邮箱，已改由社区联系转告"),
        ("社区联系", "居民没有留手机号，已改发邮件"),
        ("社区联系", "居民没有留手机号，已改由社区联系转告"),
        ("小程序/短信", "未能连上对方"),
        ("小程序/短信", "对方拒收（HTTP 503）"),
        ("小程序/短信", "对方未及时应答"),
        ("邮件", "没有邮箱地址"),
        ("邮件", "发送失败"),
        ("小程序/短信", "对方拒收（HTTP 503）；已交社区联系转告"),
        ("小程序/短信", "对方已接收（HTTP 200）"),
    ]
    assert [m["detail_raw"] for m in shown] == [r["detail"] for r in records]
    assert records[5]["detail"] == "ConnectionError"  # the class name, kept as raw

    # The timeline's "resident told" steps carry the same notes (notify's timeline_note:
    # the note, else a failure's detail), and a supervisor's too.
    timeline = [{"at": NOW.isoformat(), "step": step, "detail": detail} for step, detail in (
        notified_step("dispatched", r["status"], r["channel"], r["issue_id"],
                      note=r["detail"] if r["status"] == "failed" or r["channel"] == "desk"
                      else "")
        for r in records)]
    timeline.append({"at": NOW.isoformat(), "step": "supervisor_notified", "detail": notified_step(
        "escalation_notice", "failed", "email", "WH-20261205-0001",
        level="street", note="SMTPServerDisconnected")[1]})
    rows = views.timeline_rows(timeline, ZH, names_from_rules(None), "Asia/Shanghai")
    for row in rows:
        assert not re.search(r"[A-Za-z]{3,}", row["detail"].replace("pigeon", "")
                             .replace("HTTP", "").replace("SMTP", "")), row["detail"]
    assert rows[0]["detail"] == ("派单消息已送达（社区联系）：居民选择的回复方式 'pigeon' "
                                 "无法识别，已改由社区联系转告")
    assert rows[6]["detail"] == "派单消息发送失败（小程序/短信）：对方拒收（HTTP 503）"
    assert rows[-3]["detail"] == ("派单消息发送失败（小程序/短信）：对方拒收（HTTP 503）；"
                                  "已交社区联系转告")
    assert rows[-2]["detail"] == "派单消息已送达（小程序/短信）"
    assert rows[-1]["detail"] == "致街道办事处的督办通知消息发送失败（邮件）：未能连上对方"

    # An English page says them in plain English too (an exception's name, a code, as
    # what it means: "ConnectionError" and "sent to desk" were shown as notify wrote them);
    # a note of another shape stays as written.
    shown = views.messages_view(records, "Asia/Shanghai", EN)
    assert [m["detail"] for m in shown] == [
        "the resident's chosen way to reply ('pigeon') is not one we know",
        "the resident chose email, which is not set up here",
        "the resident chose email but gave no address",
        "the resident gave no phone number, so it was sent by email",
        "the resident gave no phone number",
        "could not reach the other side",
        "refused (HTTP 503)",
        "no answer in time",
        "no email address",
        "sending failed",
        "refused (HTTP 503); passed to the desk to relay",
        "accepted (HTTP 200)",
    ]
    assert [m["detail_raw"] for m in shown] == [r["detail"] for r in records]
    rows = views.timeline_rows(timeline, EN, names_from_rules(None), "Asia/Shanghai")
    assert rows[0]["detail"] == ("The “dispatched” message was passed to the desk to relay: "
                                 "the resident's chosen way to reply ('pigeon') is not one "
                                 "we know")
    assert rows[6]["detail"] == ("The “dispatched” message could not be sent by "
                                 "mini-program / SMS: refused (HTTP 503)")
    assert rows[-2]["detail"] == "The “dispatched” message was sent by mini-program / SMS"
    assert rows[-1]["detail"] == ("The escalation notice to Street office could not be sent "
                                  "by email: could not reach the other side")
    assert views.delivery_note("the pigeon flew off", EN) == "the pigeon flew off"
    assert views.delivery_note("the pigeon flew off", ZH) == "the pigeon flew off"
    assert views.delivery_note("HTTP 503; the pigeon flew off", ZH) == (
        "HTTP 503; the pigeon flew off")


def test_the_fallback_category_has_a_name_on_every_page():
    """A report no rule recognises (``general``, which the rules file names nowhere):
    suggested by routing, chosen by the desk's triage, dispatched to the street office."""
    from services.routing import desk
    from services.routing.classifier import Classification
    from services.routing.domain import route_issue
    from services.routing.rules import load_rules
    from shared.contracts import TriageDecision

    rules, names = load_rules(), names_from_rules(None)
    assert rules.fallback.category == "general"
    assert names.category("general", "zh") == "其他问题"
    assert names.category("general", "en") == "Other problem"
    text = "小区门口那块空地能不能搞个活动"
    held = desk.first_route(record(description=text), route_issue(
        text, None, rules, NOW, Classification(top=[("general", 0.34), ("noise", 0.11)],
                                               model_version="m1")), rules, NOW)
    triaged = desk.triage(held, TriageDecision(category="general"), None, STAFF, rules,
                          LATER).record
    timeline = [e.model_dump(mode="json") for e in triaged.timeline
                if e.step in ("needs_triage", "triaged", "dispatched")]
    rows = views.timeline_rows(timeline, ZH, names, "Asia/Shanghai")
    assert [row["detail"] for row in rows] == [
        "类别没有把握（最可能是其他问题，34%），由社区窗口决定；候选：其他问题 34%、噪音扰民 11%",
        "desk-wang选定类别：其他问题",
        "类别：其他问题，优先级：一般；派给街道办事处（牵头）",
    ]
    row = {"issue_id": "WH-20261205-0001", "status": "dispatched", "priority": "normal",
           "category": "general", "escalation_level": "community", "lead": {},
           "next_deadline": None, "next_deadline_kind": None, "overdue": False,
           "community": "幸福里"}
    assert views.board_rows([row], ZH, names, tz="Asia/Shanghai")[0]["category_label"] == "其他问题"
    assert views.board_rows([row], EN, names, tz="Asia/Shanghai")[0]["category_label"] == "Other problem"
    # The desk may choose it too (routing accepts it), and an issue in it is rerouted
    # from it: the form preselected the first rule's category (飞线) instead.
    assert names.routable == [*names.categories, "general"]
    page = rendered("issue.html", "zh", issue=triaged.model_dump(mode="json") | {
        "contact": {}}, timeline=[], messages=[])
    select = page[page.index('id="rr-category"'):]
    assert re.findall(r'<option value="(\w+)" selected>', select[:select.index("</select>")]
                      ) == ["general"]
    assert '<option value="general" >其他问题</option>' in rendered(
        "new_issue.html", "zh", form={}, errors={})


def test_a_held_reports_card_shows_where_it_is_and_no_priority_class_of_none():
    """The triage queue's cards showed no address (the desk judges a report by its place
    too), and a held report's card carried ``class="pr pr-None"`` (no priority yet,
    rendered into a class); the board's row too."""
    from services.intake.domain import board_row
    from services.routing import desk
    from services.routing.classifier import Classification
    from services.routing.domain import route_issue
    from services.routing.rules import load_rules

    rules, names = load_rules(), names_from_rules(None)
    text = "东门那边又不行了"
    held = desk.first_route(record(description=text), route_issue(
        text, None, rules, NOW, Classification(top=[("street_light", 0.45)],
                                               model_version="m1")), rules, NOW)
    assert held.priority is None
    for lang in ("zh", "en"):
        t = views.Translator(lang)
        rows = views.board_rows([board_row(held, NOW)], t, names, tz="Asia/Shanghai")
        queue = rendered("triage.html", lang, rows=rows)
        assert "pr-None" not in queue and 'class="pr"' not in queue
        card = queue[queue.index('id="t-WH-20261205-0001"'):]
        assert '<span class="place">幸福里 · 3号楼</span>' in card
        board = rendered("board.html", lang, rows=rows, total=1, filters={},
                         statuses=(), priorities=(), query="")
        assert "pr-None" not in board and '<td class="pr">—</td>' in board
    dispatched = views.board_rows([board_row(dispatched_wire(NOW), NOW)], ZH, names, tz="Asia/Shanghai")
    assert '<td class="pr pr-urgent">' in rendered("board.html", "zh", rows=dispatched, total=1,
                                                    filters={}, statuses=(), priorities=(),
                                                    query="")


def test_a_chinese_page_says_why_routing_held_a_report_and_names_the_tables_agencies():
    """The triage queue and the issue page said routing's own English ("not sure (top
    category street_light at 45%); the desk decides") and the table's agencies as codes
    ("water, property_manager"); a Chinese page says both in Chinese."""
    from services.intake.domain import board_row
    from services.routing import desk, table
    from services.routing.classifier import Classification
    from services.routing.domain import route_issue
    from services.routing.rules import load_rules

    rules, names = load_rules(), names_from_rules(None)
    text = "东门那边又不行了"
    held = desk.first_route(record(description=text), route_issue(
        text, None, rules, NOW, Classification(top=[("street_light", 0.45), ("noise", 0.1)],
                                               model_version="m1")), rules, NOW)
    lost = desk.first_route(record(description=text), route_issue(
        text, None, rules, NOW, Classification(top=[], model_version="m1")), rules, NOW)
    rows = views.board_rows([board_row(held, NOW), board_row(lost, NOW)], ZH, names, tz="Asia/Shanghai")
    queue = rendered("triage.html", "zh", rows=rows)
    said = [re.sub(r"<[^>]*>", "", m) for m in re.findall(
        r'class="triage-reason">(.*?)</small>', queue)]
    assert said == ["类别没有把握（最可能是路灯不亮，45%），由社区窗口决定",
                    "未能识别类别，由社区窗口决定"]
    page = rendered("issue.html", "zh", issue=held.model_dump(mode="json") | {"contact": {}},
                    timeline=[], messages=[])
    assert "类别没有把握（最可能是路灯不亮，45%），由社区窗口决定" in page
    assert "not sure" not in page
    english = rendered("issue.html", "en", issue=held.model_dump(mode="json") | {
        "contact": {}}, timeline=[], messages=[])
    assert "not sure (top category street_light at 45%); the desk decides" in english

    issue, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(days=1), "幸福里议事厅",
                             ["property_manager"], rules, NOW)
    issue, _ = table.invite(issue, table.DESK, ["water"], rules, NOW)
    issue, _ = table.check_in(issue, "power", "power-12", rules, NOW)
    issue, _ = table.record_task(issue, table.DESK, "water", "查漏点", NOW + timedelta(days=2),
                                 rules, NOW)
    for lang, invited, present, task in (
            ("zh", "供电公司、物业公司、自来水公司", "供电公司", "自来水公司"),
            ("en", "Power company, Property management, Water utility", "Power company",
             "Water utility")):
        page = rendered("issue.html", lang, issue=issue.model_dump(mode="json") | {
            "contact": {}}, timeline=[], messages=[])
        start = page.index('id="table-agencies">') + len('id="table-agencies">')
        t = views.Translator(lang)
        assert page[start:page.index("</p>", start)] == (
            f"{t('invited')}{t('colon')}{invited} · {t('checked_in')}{t('colon')}{present}")
        assert ("已邀请：" in page) == (lang == "zh")  # 已邀请: was an ASCII colon
        task_row = page[page.index('data-task="T1"'):]
        assert f"<td>{task}</td>" in task_row[:task_row.index("</tr>")]


def test_a_held_reports_own_form_routes_it_and_does_not_say_reroute():
    """A report held for triage was never dispatched, yet its form on the issue page,
    under the heading 待分拣, ended in a button 改派 ("reroute") beside a reason that
    read as required: the desk hesitated to route a report it was told it would
    reroute. The held report's button says 派单 / "Dispatch", its reason is optional;
    a dispatched issue's form still says 改派 and needs its reason."""
    from services.routing import desk
    from services.routing.classifier import Classification
    from services.routing.domain import route_issue
    from services.routing.rules import load_rules

    rules = load_rules()
    text = "东门那边又不行了"
    held = desk.first_route(record(description=text), route_issue(
        text, None, rules, NOW, Classification(top=[("street_light", 0.45)],
                                               model_version="m1")), rules, NOW)
    assert held.status.value == "needs_triage"

    def route_form(issue, lang):
        page = rendered("issue.html", lang, issue=issue.model_dump(mode="json") | {
            "contact": {}}, timeline=[], messages=[])
        start = page.index('id="reroute-form"')
        return unescape(page[start:page.index("</form>", start)])

    for lang, button, reason in (("zh", "派单", "原因（可不填）"),
                                 ("en", "Dispatch", "Reason (optional)")):
        form = route_form(held, lang)
        assert f'<button type="submit">{button}</button>' in form
        assert f">{reason}</label>" in form
    for lang, button, reason in (("zh", "改派", "原因"), ("en", "Reroute", "Reason")):
        form = route_form(dispatched_wire(NOW), lang)
        assert f'<button type="submit">{button}</button>' in form
        assert f">{reason}</label>" in form


def test_a_chinese_page_says_why_an_action_was_refused():
    """What an agency or the desk meets by acting in the wrong order (resolving before
    报到, a table task before 报到, resolving with the table's tasks open, a second 报到,
    a task for an agency not at the table, a second table, inviting with none, a second
    check-in), refused by the code that refuses it, said in Chinese on a Chinese page."""
    from services.routing import table
    from services.routing.rules import load_rules
    from shared.errors import InvalidTransition
    from shared.issue import acknowledge, resolve

    rules, names = load_rules(), names_from_rules(None)
    wire, later = dispatched_wire(NOW), NOW + timedelta(days=2)
    issue, _ = table.convene(wire, NOW + timedelta(days=1), "幸福里议事厅", [], rules, NOW)
    issue, _ = table.record_task(issue, table.DESK, "power", "换电缆", later, rules, NOW)
    checked, _ = table.check_in(issue, "power", "power-12", rules, NOW)
    refusals = (
        lambda: resolve(wire, "power", "power-12", "已处理", NOW),
        lambda: table.complete_task(issue, "power", "staff-1", "T1", "已换", rules, NOW),
        lambda: resolve(acknowledge(issue, "power", "power-12", NOW), "power", "power-12",
                        "已处理", NOW),
        lambda: acknowledge(acknowledge(wire, "power", "power-12", NOW), "power", "power-12",
                            NOW),
        lambda: table.record_task(issue, table.DESK, "water", "查漏", later, rules, NOW),
        lambda: table.convene(issue, later, "居委会", [], rules, NOW),
        lambda: table.invite(wire, table.DESK, ["water"], rules, NOW),
        lambda: table.check_in(checked, "power", "power-12", rules, NOW),
    )
    messages = []
    for refused in refusals:
        with pytest.raises(InvalidTransition) as caught:
            refused()
        messages.append(caught.value.message)
    assert [views.refusal(m, ZH, names) for m in messages] == [
        "供电公司须先报到，才能办结",
        "供电公司须先报到，才能完成议事桌事项",
        "议事桌还有未完成的事项：供电公司的一项事项。事不完，人不撤",
        "供电公司已经报到过了",
        "自来水公司不在议事桌上，请先邀请",
        "本件已召集议事桌，请邀请单位参加",
        "本件还没有议事桌，请社区窗口先召集",
        "供电公司已经签到过了",
    ]
    # In English too where the service's words name an agency by its code: by its name.
    assert [views.refusal(m, EN, names) for m in messages] == [
        "Power company must report in before resolving",
        "Power company must report in before completing table tasks",
        "The table still has open tasks: a task of Power company. Nobody leaves the table "
        "until its tasks are done: mark them done first",
        "Power company has already reported in",
        "Water utility is not at the table: invite it first",
        "This issue has a table already: invite agencies to it",
        "This issue has no table yet: the desk convenes one first",
        "Power company has already checked in at the table",
    ]
    assert views.refusal("something else went wrong", ZH, names) == "something else went wrong"
    page = rendered("issue.html", "zh", issue=issue.model_dump(mode="json") | {"contact": {}},
                    timeline=[], messages=[], error=messages[4])
    assert (f'id="error" title="{messages[4]}">自来水公司不在议事桌上，请先邀请</p>') in page


def test_an_english_page_says_a_refusal_by_the_issues_state_in_plain_english():
    """"issue WH-20261205-0001 is already dispatched", "… is in_progress; only a dispatched
    or in-progress issue can be rerouted", "… is not waiting for this rating (it is
    in_progress)": an English page showed the services' words, issue ids and states as
    codes. It says them in plain English, each state as the board names it; the service's
    words stay the tooltip."""
    from services.routing import feedback
    from services.routing.rules import load_rules
    from shared.auth import FeedbackGrant
    from shared.contracts import Rating
    from shared.errors import InvalidTransition
    from shared.issue import acknowledge, dispatch, reroute

    rules, names = load_rules(), names_from_rules(None)
    wire = dispatched_wire(NOW)
    started = acknowledge(wire, "power", "power-12", NOW)
    closed = record(status=IssueStatus.closed)
    grant = FeedbackGrant(reporter_issue_id=wire.issue_id, issue_id=wire.issue_id, cycle=0)
    refusals = (
        lambda: dispatch(wire, "flying_wire", Priority.urgent, wire.routing,
                         [wire.assignment_for("power")], NOW),
        lambda: reroute(closed, "flying_wire", Priority.urgent, wire.routing,
                        [wire.assignment_for("power")], "desk-1", "x", NOW),
        lambda: feedback.rate(started, grant, Rating.satisfied, None, rules, NOW),
    )
    messages = []
    for refused in refusals:
        with pytest.raises(InvalidTransition) as caught:
            refused()
        messages.append(caught.value.message)
    assert messages[0] == f"issue {wire.issue_id} is already dispatched"
    assert "in_progress" in messages[2]
    assert [views.refusal(m, EN, names) for m in messages] == [
        "This issue is “Dispatched” already",
        "This issue is “Closed”: only an issue that is “Dispatched” or “In progress” can be "
        "rerouted",
        "This issue is not waiting for a rating now (it is “In progress”)",
    ]
    # and the rest of the issue's refusals, as the services word them
    for message in (
            f"issue {wire.issue_id} already has a table; invite agencies to it",
            f"issue {wire.issue_id} has no table; the desk convenes one",
            f"issue {wire.issue_id} is needs_triage; a table needs a dispatched issue",
            f"issue {wire.issue_id} is not waiting for triage",
            f"issue {wire.issue_id} has already been rated",
            f"issue {wire.issue_id}'s rating window closed at 2026-12-12T08:00:00+00:00",
            f"issue {wire.issue_id} is handled as WH-20261205-0009",
            f"the reporter of {wire.issue_id} has rated issue WH-20261205-0009; the report can "
            "no longer be split from it",
            f"issue WH-20261205-0009 is closed; {wire.issue_id} can no longer be split from it",
            f"{wire.issue_id} was split from issue WH-20261205-0009; it no longer rates it",
            f"no channel reaches the resident of {wire.issue_id} directly (no phone or email)",
            f"a rating link was resent for {wire.issue_id} a moment ago; the resident can be "
            "sent another in 287 s",
            "the rating link was not sent: webhook refused it (ConnectionError); try again"):
        said = views.refusal(message, EN, names)
        assert said != message and "WH-" not in said and "_" not in said, said
    assert views.refusal(f"issue {wire.issue_id} is needs_triage; a table needs a dispatched "
                         "issue", EN, names) == (
        "This issue is “Needs triage”: a table can be convened once it is dispatched")
    assert views.refusal("the rating link was not sent: webhook refused it (HTTP 503); try "
                         "again", EN, names) == (
        "The rating link was not sent by mini-program / SMS (refused (HTTP 503)); try again "
        "later")
    assert views.refusal("the rating link was not sent: webhook refused it (HTTP 503); try "
                         "again", ZH, names) == "评价链接没有发出去（小程序/短信：对方拒收（HTTP 503）），请稍后再试"
    page = rendered("issue.html", "en", issue=wire.model_dump(mode="json") | {"contact": {}},
                    timeline=[], messages=[], error=messages[0])
    assert (f'id="error" title="{messages[0]}">This issue is “Dispatched” already</p>'
            in unescape(page))


def test_a_refusal_for_open_table_tasks_names_each_task_by_its_words_not_its_id():
    """"议事桌还有未完成的事项：T2（物业公司）": no page shows T1 or T2, and an English page
    showed the service's words, agency codes and Chinese. The refusal names each task by
    what the table agreed and its agency by name, in the page's language; a task the
    page does not list (another agency's, on a workspace) by its agency alone."""
    from services.agency.domain import assignment_view
    from services.routing import table
    from services.routing.rules import load_rules
    from shared.errors import InvalidTransition
    from shared.issue import acknowledge, reroute, resolve

    rules, later = load_rules(), NOW + timedelta(days=2)
    issue, _ = table.convene(dispatched_wire(NOW), NOW + timedelta(days=1), "幸福里议事厅",
                             ["property_manager"], rules, NOW)
    issue = resolve(acknowledge(issue, "property_manager", "pm-1", NOW), "property_manager",
                    "pm-1", "已清理", NOW)
    issue, _ = table.record_task(issue, table.DESK, "power", "更换老化电缆", later, rules, NOW)
    issue, _ = table.record_task(issue, table.DESK, "property_manager", "清理楼道杂物", later,
                                 rules, NOW)
    issue = acknowledge(issue, "power", "power-12", NOW)
    with pytest.raises(InvalidTransition) as own:  # its own task open
        resolve(issue, "power", "power-12", "已处理", NOW)
    done, _ = table.check_in(issue, "power", "power-12", rules, NOW)
    done, _ = table.complete_task(done, "power", "power-12", "T1", "已换", rules, NOW)
    with pytest.raises(InvalidTransition) as others:  # the last part, another's task open
        resolve(done, "power", "power-12", "已处理", NOW)
    with pytest.raises(InvalidTransition) as again:
        table.complete_task(done, "power", "power-12", "T1", "已换", rules, NOW)
    with pytest.raises(InvalidTransition) as dropped:  # the desk reroutes the manager away
        reroute(issue, "flying_wire", Priority.urgent, issue.routing,
                [issue.assignment_for("power").model_copy()], "desk-1", "不归物业", NOW)
    assert "T2 (property_manager)" in dropped.value.message

    for lang, said in (
            ("zh", ["议事桌还有未完成的事项：“更换老化电缆”（供电公司）。事不完，人不撤",
                    "议事桌还有未完成的事项：物业公司的一项事项。事不完，人不撤",
                    "“更换老化电缆”（供电公司）已经完成"]),
            ("en", ["The table still has open tasks: “更换老化电缆” (Power company). Nobody "
                    "leaves the table until its tasks are done: mark them done first",
                    "The table still has open tasks: a task of Property management. Nobody "
                    "leaves the table until its tasks are done: mark them done first",
                    "“更换老化电缆” (Power company) is already done"])):
        for card_of, refused, words in ((issue, own, said[0]), (done, others, said[1]),
                                        (done, again, said[2])):
            card = assignment_view(card_of, "power", NOW)
            html = rendered("agency.html", lang, assignments=[card], total=1, page=None,
                            next_deadline=lambda a: None, error=refused.value.message,
                            acted_on=card_of.issue_id, principal=types.SimpleNamespace(
                                agency="power", staff_id="power-12"))
            shown = unescape(html[html.index('id="error"'):])
            shown = shown[shown.index(">") + 1:shown.index("</p>")]
            assert shown == words
            assert "T1" not in shown and "T2" not in shown and "property_manager" not in shown
    # The desk's reroute on the issue page, which lists every task: the manager's by name.
    for lang, words in (("zh", "改派后不再参与的单位还有未完成的议事桌事项：“清理楼道杂物”（物业公司）。"
                               "事不完，人不撤"),
                        ("en", "Agencies the new route drops still have open table tasks: "
                               "“清理楼道杂物” (Property management). Nobody leaves the table until "
                               "its tasks are done: close them first")):
        html = rendered("issue.html", lang, issue=issue.model_dump(mode="json") | {"contact": {}},
                        timeline=[], messages=[], error=dropped.value.message)
        shown = unescape(html[html.index('id="error"'):])
        assert shown[shown.index(">") + 1:shown.index("</p>")] == words


def test_an_english_page_says_every_other_steps_detail_in_english_in_the_desks_time():
    """The English page showed these as the services wrote them: Chinese agency names,
    category codes ("category gas_leak -> sewage_blocked"), "supervisor (street)
    notified: escalation_notice message sent via email". Each is said in English from its
    parts; what the desk typed (a reason, a place, a task) stays as written."""
    timeline = every_other_step()
    rows = views.timeline_rows(timeline, EN, names_from_rules(None), "Asia/Shanghai")
    assert [(row["step"], row["detail"]) for row in rows] == [
        ("needs_triage", "Routing is not sure of the category (most likely Street light out, "
                         "45%): the desk decides; suggestions: Street light out 45%, Rubbish "
                         "piling up or not collected 40%, Noise nuisance 10%"),
        ("needs_triage", "Routing recognised no category: the desk decides; suggestions: none"),
        ("flagged_for_triage", "Urgent, but routing is not sure of the category (most likely "
                               "Smell of gas, 50%): dispatched as Smell of gas meanwhile; the "
                               "desk decides"),
        ("rerouted", "Rerouted by desk-wang: category Smell of gas → Blocked sewer or drain "
                     "smell; withdrawn from Gas company; added Drainage company (lead); why: at "
                     "triage, the desk chose another route"),
        ("triaged", "desk-wang chose the category Blocked sewer or drain smell"),
        ("triaged", "desk-wang chose the category Rubbish piling up or not collected; why: "
                    "垃圾堆在路灯下"),
        ("rerouted", "Rerouted by desk-wang: category Pipe leak or water through the ceiling "
                     "→ Blocked sewer or drain smell; priority High → Normal; withdrawn from "
                     "Water utility, Property management; added Drainage company (lead); why: "
                     "是下水道堵了"),
        ("rerouted", "Rerouted by desk-wang: category unchanged (Pipe leak or water through "
                     "the ceiling); withdrawn from Property management; why: 物业不用来\n"
                     "管道归自来水公司"),
        ("rerouted", "Rerouted by desk-wang: category unchanged (Pipe leak or water through "
                     "the ceiling); priority High → Urgent; added Power company (support); now "
                     "Property management (lead), Water utility (support); why: 水已漫到配电箱"),
        ("assignment_withdrawn", "Water utility was told its part is withdrawn (desk-wang: "
                                 "是下水道堵了)"),
        ("assignment_withdrawn", "Property management was told its part is withdrawn "
                                 "(desk-wang: 是下水道堵了)"),
        ("escalated", "Power company did not report in by 2026-12-05 18:00: escalated to "
                      "Street office; whistled again, new deadline 2026-12-05 20:01"),
        ("escalated", "Power company did not resolve its part by 2026-12-06 16:00: escalated "
                      "to District government; whistled again, new deadline 2026-12-07 16:01"),
        ("escalated", "Power company did not resolve its part by 2026-12-07 16:01: still with "
                      "District government, reminded; whistled again, new deadline "
                      "2026-12-08 16:02"),
        ("supervisor_notified", "The escalation notice to Street office was sent by email"),
        ("supervisor_notified", "The escalation notice to District government could not be "
                                "sent by email: refused by the mail server (SMTP 550)"),
        ("merged", "The same Exposed, dangling or wet cable problem as WH-20261205-0001: "
                   "merged, to be handled together"),
        ("reporter_joined", "WH-20261205-0002 reported the same problem and was merged into "
                            "this issue"),
        ("reporter_split", "WH-20261205-0002 was split off by the desk"),
        ("split", "Split from WH-20261205-0001 by the desk; routed on its own"),
        ("table_convened", "Table at 幸福里议事厅, 2026-12-06 16:00: Power company, Property "
                           "management"),
        ("table_invited", "Water utility invited by the desk"),
        ("table_invited", "Gas company invited by Power company"),
        ("table_checked_in", "Power company (gd-12) checked in at the table"),
        ("table_task_recorded", "T1: Power company to 更换老化电缆 by 2026-12-07 16:00"),
        ("table_task_recorded", "T2: Property management to 清理楼道杂物 by 2026-12-07 16:00"),
        ("table_task_done", "T1 done by Power company (gd-17): 已更换"),
        ("table_task_done", "T2 closed by the desk (desk-wang) for Property management: "
                            "现场已核实"),
    ]
    assert [row["raw"] for row in rows] == [e["detail"] for e in timeline]
    assert "Escalated" in {row["label"] for row in rows}


def test_an_english_page_names_whoever_invited_an_agency_to_the_table():
    """The Chinese timeline said 社区窗口邀请… and 供电公司邀请…; the English one said
    "invited by desk" and "invited by power", codes. Now it names the desk and the agency
    as its other steps do ("done by the desk", "供电公司 (gd-12) checked in"), steps
    written with the codes before too."""
    invited = [e for e in every_other_step() if e["step"] == "table_invited"]
    assert [e["detail"] for e in invited] == [
        "自来水公司 invited by the desk", "燃气公司 invited by 供电公司"]
    older = [{**e, "detail": e["detail"].replace("the desk", "desk").replace("供电公司", "power")}
             for e in invited]
    for steps in (invited, older):
        en = views.timeline_rows(steps, EN, names_from_rules(None), "Asia/Shanghai")
        assert [row["detail"] for row in en] == [
            "Water utility invited by the desk", "Gas company invited by Power company"]
        zh = views.timeline_rows(steps, ZH, names_from_rules(None), "Asia/Shanghai")
        assert [row["detail"] for row in zh] == ["社区窗口邀请自来水公司参会", "供电公司邀请燃气公司参会"]


def test_a_date_too_far_ahead_says_the_window_beside_the_field_in_both_languages():
    """A task due past the rules' longest resolve window: the Chinese page said only
    填写有误, the English one "must be within 0.5 days" for a window of 12 hours."""
    error = {"field": "due", "type": "too_far", "within_seconds": 5400,
             "message": "must be within 1 hour 30 minutes (the longest resolve window of the "
                        "rules), by 2026-12-05T10:30:00+00:00: agree a nearer date, or split the work"}
    assert views.field_errors([error], ZH) == {
        "due": "须在1小时30分钟之内（规则中最长的办结时限）：请商定更近的日期，或把事项拆开"}
    # as the page gets it over RPC: nameko sends an error's numbers as text
    assert views.field_errors([{**error, "within_seconds": "43200"}], EN) == {
        "due": "Must be within 12 hours from now (the longest resolve window of the rules): "
               "agree a nearer date, or split the work"}
    # A routing that did not give the window: its own words on an English page, as before.
    older = {k: v for k, v in error.items() if k != "within_seconds"}
    assert views.field_errors([older], EN) == {"due": older["message"]}


def test_an_english_page_gives_a_steps_moments_in_the_desks_time_zone():
    """"closes unrated at 2026-12-13T10:30:00+00:00" was UTC on an English page, beside
    step times in Beijing time."""
    (row,) = views.timeline_rows([{
        "at": NOW.isoformat(), "step": "awaiting_rating",
        "detail": "the resident is asked to rate; closes unrated at 2026-12-13T10:30:00+00:00"}],
        EN, names_from_rules(None), "Asia/Shanghai")
    assert row["detail"] == ("The resident is asked to rate it; it closes unrated at "
                             "2026-12-13 18:30")
    assert views.in_local_time("due 2026-12-13T10:30:00.123456Z, WH-20261213-0001",
                               "Asia/Shanghai") == "due 2026-12-13 18:30, WH-20261213-0001"


def test_without_the_rules_an_escalation_names_the_level():
    from services.web.catalogue import Names

    rows = views.timeline_rows([e for e in every_other_step()
                                if e["step"] in ("escalated", "supervisor_notified")],
                               ZH, Names(), "Asia/Shanghai")
    assert "升级至街道督办" in rows[0]["detail"] and "升级至区督办" in rows[1]["detail"]
    assert "仍由区督办，已再次提醒" in rows[2]["detail"]
    assert rows[3]["detail"] == "致街道督办领导的督办通知消息已送达（邮件）"


def test_a_detail_of_another_shape_stays_as_written_on_a_chinese_page():
    (row,) = views.timeline_rows([{"at": NOW.isoformat(), "step": "escalated",
                                   "detail": "escalated by hand ?token=abc"}], ZH,
                                 names_from_rules(None), "Asia/Shanghai")
    assert row["label"] == "升级督办" and row["detail"] == "escalated by hand ?token=…"


def test_the_english_resident_page_says_the_status_in_english():
    from shared.authz import resident_view

    issue = whole_chain().model_copy(update={"status": IssueStatus.in_progress})
    html = rendered("resident.html", "en", view=resident_view(issue, None, lang="en"),
                    token="t", rated=None)
    assert "being handled" in html and "正在处理" not in html
    assert "抢修班组已出发" not in html and "已剪除飞线" not in html  # notes are internal
    html = rendered("resident.html", "zh", view=resident_view(issue, None, lang="zh"),
                    token="t", rated=None)
    assert "正在处理" in html and "being handled" not in html


def test_an_agency_in_support_sees_who_else_is_on_the_issue():
    """The workspace said "(配合)" and no more: the power company supporting on a dark
    stairwell could not tell which agency it supports. The card names the others."""
    from services.agency.domain import assignment_view

    issue = dispatched_wire(NOW)
    issue.assignments.append(Assignment(agency="property_manager", agency_name="物业公司",
                                        agency_name_en="Property management",
                                        sector="housing", role="support", assigned_at=NOW,
                                        acknowledge_by=NOW + timedelta(hours=2),
                                        resolve_by=NOW + timedelta(days=1)))
    card = assignment_view(issue, "power", NOW)
    for lang, said in (("zh", "同办单位：物业公司"), ("en", "Also on this issue: Property management")):
        html = rendered("agency.html", lang, assignments=[card], total=1,
                        next_deadline=lambda a: a.get("acknowledge_by"),
                        principal=types.SimpleNamespace(agency="power"))
        assert said in html


def test_an_agency_in_support_sees_which_of_the_others_leads():
    """Supporting on a cracked balcony leaking onto wiring, the power company's card
    listed "同办单位：房管所、物业公司、自来水公司": three agencies and no word of which
    one leads, so its staff could not tell whom to coordinate with without calling the
    desk. The card marks the lead among them, in the page's own brackets."""
    from services.agency.domain import assignment_view
    from services.routing import desk
    from services.routing.domain import route_issue
    from services.routing.rules import load_rules

    rules = load_rules()
    text = "阳台开裂了，下雨往楼下渗水，电线都泡水了"
    issue = desk.first_route(record(description=text), route_issue(text, None, rules, NOW),
                             rules, NOW)
    card = assignment_view(issue, "power", NOW)
    assert card["role"] == "support" and card["lead_agency"] == "housing_admin"
    for lang, said in (("zh", "同办单位：房管所（牵头）、物业公司、自来水公司"),
                       ("en", "Also on this issue: Housing administration (lead), "
                              "Property management, Water utility")):
        html = rendered("agency.html", lang, assignments=[card], total=1,
                        next_deadline=lambda a: a.get("acknowledge_by"),
                        principal=types.SimpleNamespace(agency="power"))
        assert said in unescape(html)
    # The lead's own card names the others with no mark: it is the lead itself.
    lead = rendered("agency.html", "zh", assignments=[assignment_view(issue, "housing_admin",
                                                                      NOW)], total=1,
                    next_deadline=lambda a: a.get("acknowledge_by"),
                    principal=types.SimpleNamespace(agency="housing_admin"))
    assert "同办单位：物业公司、供电公司、自来水公司" in unescape(lead)


def test_a_role_after_a_name_is_in_the_pages_own_brackets():
    """Chinese pages wrote "供电公司 (牵头)", half-width brackets and a space in Chinese
    text; English ones keep "Power company (lead)"."""
    from services.agency.domain import assignment_view

    card = assignment_view(dispatched_wire(NOW), "power", NOW)
    for lang, said, not_said in (("zh", "（牵头）", "(牵头)"), ("en", " (lead)", "（")):
        html = rendered("agency.html", lang, assignments=[card], total=1,
                        next_deadline=lambda a: a.get("acknowledge_by"),
                        principal=types.SimpleNamespace(agency="power"))
        assert said in html and not_said not in html


def test_an_agencys_card_says_when_it_is_due_and_that_a_resident_sent_it_back():
    """A reopened issue (民事民评, one level up) came back looking like a fresh one, and the
    card's deadline was only a countdown: staff could not tell they had already
    'resolved' it, who supervises it now, or at what o'clock it is due. The card says so,
    with the deadline in the desk's time zone beside the countdown."""
    from services.agency.domain import assignment_view, finish_part, report_in
    from services.routing import feedback
    from services.routing.rules import load_rules
    from shared.auth import FeedbackGrant
    from shared.contracts import IssueResolved, Rating

    issue, _ = report_in(dispatched_wire(NOW), "power", "gd-12", NOW)
    issue, events = finish_part(issue, "power", "gd-12", "已剪除飞线", NOW)
    resolved = next(e for e in events if isinstance(e, IssueResolved))
    issue = feedback.await_rating(issue, resolved, timedelta(days=7))
    fresh = assignment_view(issue, "power", NOW)
    issue, _ = feedback.rate(issue, FeedbackGrant(reporter_issue_id=issue.issue_id,
                                                  issue_id=issue.issue_id, cycle=0),
                             Rating.unsatisfied, "电线还是很低", load_rules(), LATER)
    card = assignment_view(issue, "power", LATER)
    assert (card["status"], card["reopen_count"], card["escalation_level"]) == (
        "assigned", 1, "street")
    due = datetime.fromisoformat(card["acknowledge_by"]).astimezone(ZoneInfo("Asia/Shanghai"))
    for lang, said in (("zh", ["居民不满意，已重新交办（第 1 次）。", "已升级至街道督办。",
                               f"（截止 {due:%Y-%m-%d %H:%M}）"]),
                       ("en", ["The resident was not satisfied: sent back to you once.",
                               "supervised at street level", f"(due {due:%Y-%m-%d %H:%M})"])):
        html = rendered("agency.html", lang, assignments=[card], total=1,
                        next_deadline=lambda a: a.get("acknowledge_by"),
                        principal=types.SimpleNamespace(agency="power"))
        assert all(text in html for text in said), (lang, html)
        # the resident's comment is theirs and the desk's, never on the agency's card
        assert "电线还是很低" not in html
    html = rendered("agency.html", "zh", assignments=[fresh | {"status": "acknowledged"}],
                    total=1, next_deadline=lambda a: a.get("resolve_by"),
                    principal=types.SimpleNamespace(agency="power"))
    assert "重新交办" not in html and "督办" not in html


@pytest.mark.parametrize(("lang", "n", "said"), [
    ("en", 1, "The resident was not satisfied: sent back to you once."),
    ("en", 2, "The resident was not satisfied: sent back to you twice."),
    ("en", 3, "The resident was not satisfied: sent back to you 3 times."),
    ("en", 11, "sent back to you 11 times."),
    ("zh", 1, "居民不满意，已重新交办（第 1 次）。"),
    ("zh", 2, "居民不满意，已重新交办（第 2 次）。"),
    ("zh", 3, "居民不满意，已重新交办（第 3 次）。"),
])
def test_an_agencys_card_counts_the_times_a_resident_sent_it_back_in_words(lang, n, said):
    """The English card said "sent back to you (time 1)": a label's number, not English.
    It reads "once", "twice", "3 times"; the Chinese 第 n 次 reads as it always did."""
    from services.agency.domain import assignment_view

    card = assignment_view(dispatched_wire(NOW), "power", NOW) | {"reopen_count": n}
    html = rendered("agency.html", lang, assignments=[card], total=1,
                    next_deadline=lambda a: a.get("acknowledge_by"),
                    principal=types.SimpleNamespace(agency="power"))
    assert said in html
    assert "(time" not in html and "{n}" not in html


def test_a_long_workspace_pages_by_deadline_and_a_bad_page_names_the_field():
    """An agency with 205 open assignments saw "显示 100 / 共 205 件" and no way to reach
    the other 105. The workspace pages; a page past the last shows the last (work done
    meanwhile shortens the list); anything but a whole number from 1 is a 422 naming
    ``page``, in the page's language."""
    from shared.errors import InvalidPayload

    first = views.workspace_page(None, 205, 100, ZH)
    assert (first.number, first.last, first.cards) == (1, 3, slice(0, 100))
    third = views.workspace_page("3", 205, 100, ZH)
    assert (third.number, third.cards) == (3, slice(200, 300))
    assert views.workspace_page("99", 205, 100, ZH).number == 3
    assert views.workspace_page("", 0, 100, ZH).last == 1
    for asked in ("0", "-1", "x", "1.5", "２"):
        with pytest.raises(InvalidPayload) as refused:
            views.workspace_page(asked, 205, 100, EN)
        assert [e["field"] for e in refused.value.errors] == ["page"]
        assert "whole number from 1" in refused.value.message

    from services.agency.domain import assignment_view
    card = assignment_view(dispatched_wire(NOW), "power", NOW)
    cards = [card | {"issue_id": f"WH-20261205-{n:04d}"} for n in range(1, 206)]
    for page, shown, links in ((first, "显示第 1–100 件 / 共 205 件", ['rel="next" href="/agency?page=2"']),
                               (third, "显示第 201–205 件 / 共 205 件", ['rel="prev" href="/agency?page=2"'])):
        html = rendered("agency.html", "zh", assignments=cards[page.cards], total=len(cards),
                        page=page, next_deadline=lambda a: a.get("acknowledge_by"),
                        principal=types.SimpleNamespace(agency="power"))
        assert shown in html and f"第 {page.number} / 3 页" in html
        assert all(link in html for link in links)
        assert html.count('class="card assignment') == len(cards[page.cards])
    one = views.workspace_page(None, 1, 100, ZH)
    html = rendered("agency.html", "zh", assignments=[card], total=1, page=one,
                    next_deadline=lambda a: a.get("acknowledge_by"),
                    principal=types.SimpleNamespace(agency="power"))
    assert 'id="pager"' not in html and 'id="shown-of"' not in html


def test_the_call_back_card_shows_while_this_residents_rating_is_awaited():
    """The desk's issue page offers to record a resident's rating only while the issue
    carrying their report waits for a rating they have not given in this cycle; a merged
    neighbour's page asks the issue it joined."""
    due = "2026-12-12T08:00:00+00:00"
    waiting = {"issue_id": "WH-20261205-0001", "status": "resolved", "feedback_due": due,
               "reopen_count": 1, "ratings": [], "contact": {"phone": "138****5678"}}
    assert views.rating_awaited(waiting, waiting) == {"due": due}
    earlier_cycle = {**waiting, "ratings": [{"reporter_issue_id": "WH-20261205-0001",
                                             "cycle": 0}]}
    assert views.rating_awaited(earlier_cycle, earlier_cycle) is not None
    rated = {**waiting, "ratings": [{"reporter_issue_id": "WH-20261205-0001", "cycle": 1}]}
    assert views.rating_awaited(rated, rated) is None
    assert views.rating_awaited(waiting, {**waiting, "status": "closed"}) is None
    neighbour = {"issue_id": "WH-20261205-0002", "status": "merged", "contact": {}}
    assert views.rating_awaited(neighbour, rated) == {"due": due}


RESEND_WORDS = {
    ("zh", "no_contact"): "居民没有留下手机号或邮箱",
    ("zh", "no_channel"): "本系统没有配置短信（webhook）或邮件通道",
    ("zh", "no_match"): "短信或邮件通道都联系不到这位居民",
    ("en", "no_contact"): "the resident gave no phone or email",
    ("en", "no_channel"): "this deployment sends no texts or email",
    ("en", "no_match"): "no text or email channel here reaches this resident",
}


@pytest.mark.parametrize(("lang", "reason"), RESEND_WORDS)
def test_the_resend_button_shows_only_when_a_channel_reaches_the_resident(lang, reason):
    """The page offered "resend the rating link" to every resident with a phone or an
    email, even where no webhook or mail server is configured, and pressing it failed:
    now the button shows only when notify finds a channel that reaches them directly, and
    otherwise the page says why not, and to call them back, in its language."""
    issue = dispatched_wire(NOW).model_dump(mode="json") | {"contact": {"phone": "138****5678"}}
    awaited = {"due": "2026-12-12T08:00:00+00:00"}
    reaches = views.with_reach(awaited, {"channel": "webhook", "unreachable": None})
    assert reaches == {**awaited, "can_resend": True, "unreachable": None}
    html = rendered("issue.html", lang, issue=issue, timeline=[], messages=[], rating=reaches)
    assert 'id="resend-form"' in html and 'id="resend-unavailable"' not in html
    cannot = views.with_reach(awaited, {"channel": None, "unreachable": reason})
    html = rendered("issue.html", lang, issue=issue, timeline=[], messages=[], rating=cannot)
    assert 'id="resend-form"' not in html and 'id="rating-form"' in html
    said = html[html.index('id="resend-unavailable"'):]
    said = said[:said.index("</p>")]
    assert f'data-reason="{reason}"' in said and RESEND_WORDS[lang, reason] in said
    assert ("请电话回访" if lang == "zh" else "back and record their answer") in said


def test_an_issue_page_and_an_agency_card_show_what_was_claimed_done_before_a_reopening():
    """民事民评 reopened the issue: the desk's page and the agency's card show the first
    resolution beside the second, in the page's language."""
    issue = whole_chain()
    desk = issue.model_dump(mode="json") | {"contact": {}}
    [power] = desk["assignments"]
    assert [e["note"] for e in power["earlier_resolutions"]] == ["已剪除飞线"]
    for lang, heading, round_one in (("zh", "此前的办结说明", "第 1 轮"),
                                     ("en", "Claimed done before", "Round 1")):
        html = rendered("issue.html", lang, issue=desk, timeline=[], messages=[])
        row = html[html.index('data-agency="power"'):]
        row = row[:row.index("</tr>")]
        assert heading in row and round_one in row and 'data-cycle="0"' in row
        assert "gd-12" in row and row.count("已剪除飞线") == 2  # the latest, and the first
    from services.agency.domain import assignment_view
    card = assignment_view(issue, "power", NOW)
    html = rendered("agency.html", "zh", assignments=[card], total=1,
                    page=views.workspace_page(None, 1, 100, ZH),
                    next_deadline=lambda a: a.get("acknowledge_by"),
                    principal=types.SimpleNamespace(agency="power"))
    assert "此前的办结说明" in html and 'data-cycle="0"' in html


def test_a_rating_the_desk_recorded_reads_so_on_the_timeline_and_its_refusals_in_chinese():
    from services.routing import feedback
    from services.routing.rules import load_rules
    from shared.auth import FeedbackGrant
    from shared.contracts import Rating, RatingMethod
    from shared.errors import InvalidTransition

    names = names_from_rules(None)
    issue = dispatched_wire(NOW).model_copy(update={
        "status": IssueStatus.resolved, "feedback_due": NOW + timedelta(days=7)})
    grant = FeedbackGrant(reporter_issue_id=issue.issue_id, issue_id=issue.issue_id, cycle=0)
    rated, _ = feedback.rate(issue, grant, Rating.unsatisfied, "还在漏", load_rules(), NOW,
                             on_behalf=feedback.OnBehalf("d-7", RatingMethod.visit))
    rows = views.timeline_rows(rated.model_dump(mode="json")["timeline"], ZH, names,
                               "Asia/Shanghai")
    [row] = [r for r in rows if r["step"] == "rating_recorded"]
    assert row["label"] == "代居民评价"
    assert row["detail"] == f"社区窗口（d-7）上门回访，代 {issue.issue_id} 的反映人登记评价：不满意"
    [row] = [r for r in views.timeline_rows(rated.model_dump(mode="json")["timeline"], EN, names,
                                            "Asia/Shanghai") if r["step"] == "rating_recorded"]
    assert row["detail"] == (f"Recorded by the desk (d-7) on a visit for the reporter of "
                             f"{issue.issue_id}: Not satisfied")
    with pytest.raises(InvalidTransition) as again:
        feedback.rate(rated, grant, Rating.satisfied, None, load_rules(), NOW,
                      on_behalf=feedback.OnBehalf("d-7", RatingMethod.phone))
    assert views.refusal(again.value.message, ZH, names) == \
        "这一次的处理结果已经评价过了（居民本人或社区已登记）"
    assert views.refusal("a rating link was resent for WH-20261205-0001 a moment ago; the "
                         "resident can be sent another in 287 s", ZH, names) == \
        "刚刚已给居民重发过评价链接，287 秒后才能再发"


def _stats_block(by_link: tuple[int, int], by_desk: tuple[int, int]) -> dict:
    """A ``/stats`` block: no assignments, ``by_link`` and ``by_desk`` (rated, satisfied)."""
    from services.intake.stats import rating_figures

    return {"assigned": 0, "response_rate": None, "resolution_rate": None,
            "satisfaction_rate": None, "time_to_acknowledge_s": {"median": None},
            "time_to_resolve_s": {"median": None}, "escalated": 0, "open": 0, "overdue": 0,
            "rated_by": {"resident": rating_figures(*by_link), "desk": rating_figures(*by_desk)}}


@pytest.mark.parametrize("lang, link, desk, counts", [
    ("zh", "居民本人评价（评价链接）", "社区回访代评（电话回访）", ("4 人评价，1 人满意", "2 人评价，2 人满意")),
    ("en", "By the resident's own link", "Recorded by the desk on a call-back (电话回访)",
     ("1 of 4 satisfied", "2 of 2 satisfied")),
])
def test_the_stats_page_splits_satisfaction_by_who_recorded_the_rating(lang, link, desk, counts):
    rows = [(views.Translator(lang)("overall"), _stats_block((4, 1), (2, 2))),
            ("供电公司", _stats_block((0, 0), (1, 0)))]
    older = rendered("stats.html", lang, days=30, charts=[], rows=rows, percent=views.percent,
                     seconds=views.seconds_text, by_rater=False)
    assert "satisfaction-by-rater" not in older  # an intake not splitting them yet
    html = rendered("stats.html", lang, days=30, charts=[], rows=rows, percent=views.percent,
                    seconds=views.seconds_text, by_rater=True)
    table = html[html.index('id="satisfaction-by-rater"'):]
    text = unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", table)))
    assert link in text and desk in text
    assert f"25.0% {counts[0]} 100.0% {counts[1]}" in text
    none = {"zh": "暂无评价", "en": "no ratings yet"}[lang]
    assert f"供电公司 — {none} 0.0%" in text  # no link rating: a dash, not 0%


def test_the_operators_flow_tells_its_clock_in_the_desks_time_zone():
    lines = [{"seq": 1, "time": "2026-12-07T09:51:07.642+00:00", "type": "issue.received"},
             {"seq": 2, "time": "2026-12-07T16:00:00.000005+00:00", "type": "issue.dispatched"}]
    shown = views.flow_lines(lines, "Asia/Shanghai")
    assert [line["clock"] for line in shown] == ["17:51:07.642", "00:00:00.000"]
    assert shown[0]["time"] == lines[0]["time"] and "clock" not in lines[0]


@pytest.mark.parametrize(("asked", "days"), [
    (None, 30), ("", 30), ("1", 1), ("7", 7), ("366", 366),
    ("0", None), ("367", None), ("-3", None), ("abc", None), ("1.5", None), ("７", None),
    ("1_0", None), (" 7", None)])
def test_the_rates_window_is_a_whole_number_of_days_from_1_to_366(asked, days):
    assert views.stats_window(asked) == days


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_page_says_what_went_through_and_only_in_its_own_words(lang):
    t = views.Translator(lang)
    said = {action: t.done(action, issue_id="WH-20261207-0003") for action in (
        "assignment.acknowledge", "issue.triage", "issue.reroute", "rating_link.resend")}
    assert len(set(said.values())) == 4 and t("done_ok") not in said.values()
    assert said["issue.triage"].startswith("WH-20261207-0003 ")
    # An address anyone could send: no words of theirs, and no action's words without
    # what they need (which issue went).
    for asked in ("1", "<b>paid</b>", "issue", "ok_ok", "", None):
        assert t.done(asked) == t("done_ok")
    assert t.done("issue.triage", issue_id=None) == t("done_ok")


def test_a_chinese_page_says_the_default_email_found_no_address_without_a_choice():
    """NOTIFY_CHANNEL=email and a resident who gave no address and chose nothing: the
    desk reads that there was no address, not that the resident chose email."""
    from services.notify.channels import choose_channel

    _, note = choose_channel(None, {"desk", "email"}, has_email=False, default="email",
                             has_phone=True)

    assert views.delivery_note(note, ZH) == "居民没有留邮箱，已改由社区联系转告"


def test_a_reroute_leaving_nothing_to_do_is_not_said_as_resolve_it_yourself():
    """The desk cannot resolve an issue (its agencies do): the page said "请直接办结"."""
    message = ("the new route of issue WH-20261205-0001 leaves no part to do: every agency "
               "it keeps has resolved its part; keep one with work left, or ask the agency "
               "whose part is open to resolve it")
    said = views.refusal(message, views.Translator("zh"), names_from_rules(None))
    assert said == "改派后留下的单位都已办结各自的部分：请保留一个还有工作的单位，或请尚未办结的单位办结其部分"


@pytest.mark.parametrize("lang, said", [
    ("zh", "已归档问题（结案一天以上）的撤回记录暂时无法读取"),
    ("en", "Withdrawals on archived issues (closed over a day ago) cannot be read just now")])
def test_the_withdrawn_list_says_when_the_archived_withdrawals_cannot_be_read(lang, said):
    """PostgreSQL down: the withdrawn list shows the issues still in Redis (none here, or
    one) and says the archived ones are missing, instead of vanishing or failing the page."""
    def page(withdrawn, unavailable):
        return rendered("agency.html", lang, assignments=[], total=0,
                        page=views.workspace_page(None, 0, 100, views.Translator(lang)),
                        next_deadline=lambda a: None, withdrawn=withdrawn, withdrawn_days=30,
                        withdrawn_archive_unavailable=unavailable,
                        principal=types.SimpleNamespace(agency="water"),
                        agency_names=lambda agencies, t, names: ", ".join(agencies))

    card = {"issue_id": "WH-20261205-0003", "withdrawn_at": "2026-12-05T10:00:00Z",
            "withdrawn_by": "desk-wang", "location": {"community": "缤泰社区",
                                                       "address": "丽德花园9号楼"},
            "category": None, "now_with": ["drainage"], "description": "楼上漏水"}
    alone = page([], True)
    assert 'id="withdrawn"' in alone and 'id="withdrawn-archive-unavailable"' in alone
    assert said in alone
    with_hot = page([card], True)
    assert said in with_hot and 'id="w-WH-20261205-0003"' in with_hot
    assert said not in page([card], False)
    assert 'id="withdrawn"' not in page([], False)  # nothing withdrawn, nothing said


def test_a_page_brought_back_by_back_is_fetched_afresh_from_a_page_not_a_forms_address():
    """static/fresh.js fetches a page the browser brings back from its back/forward cache
    again: a page fetched by GET from its own address, a form's answer from the page the
    form was on (its own address takes only a POST), and one with no such page not at all."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.web.pages import reload_to, render

    def request(method: str, path: str) -> Request:
        return Request(EnvironBuilder(method=method, path=path).get_environ())

    assert reload_to(request("GET", "/resident/WH-20261207-0001")) == "self"
    assert reload_to(request("POST", "/desk/relay/" + "a" * 24), "/desk/relay") == "/desk/relay"
    assert reload_to(request("POST", "/resident/WH-20261207-0001/rating")) is None
    page = render(request("GET", "/desk/relay"), "error.html", message_key="not_found",
                  detail="", seconds=None).get_data(as_text=True)
    assert 'data-reload="self"' in page and '<script src="/static/fresh.js" defer>' in page


def test_after_a_reopen_the_issue_page_names_each_level_once():
    """The issue page reads the timeline routing wrote: reopened to the street, the next
    miss goes up to the district (it said "升级至街道督办" again), the one after reminds it."""
    from tests.unit.test_escalation import T0, flying_wire, miss, reopened

    record = reopened(flying_wire(), T0 + timedelta(hours=1))
    record, _ = miss(record)
    record, _ = miss(record)
    timeline = [e.model_dump(mode="json") for e in record.timeline]
    rows = views.timeline_rows(timeline, ZH, names_from_rules(None), "Asia/Shanghai")
    said = [r["detail"] for r in rows if r["step"] in ("reopened", "escalated")]
    assert said[0].endswith("升级至街道督办")
    assert "升级至区政府督办；" in said[1]
    assert "仍由区政府督办，已再次提醒；" in said[2]
    assert not any("街道" in s for s in said[1:])


def test_the_issue_page_of_an_old_rerouted_table_seats_only_the_agencies_on_the_issue():
    """Rerouted before reroutes took withdrawn agencies off the table: the page said power
    and the property manager were invited (power checked in), offered them in the task's
    agency list (recording one was refused: "invite it first") and did not offer to invite
    them again."""
    from shared.authz import desk_view
    from tests.unit.test_table import as_an_old_release_stored_it

    record = IssueRecord.model_validate_json(as_an_old_release_stored_it())
    page = rendered("issue.html", "zh", issue=desk_view(record, None), timeline=[],
                    messages=[])
    start = page.index('id="table-agencies">') + len('id="table-agencies">')
    assert page[start:page.index("</p>", start)] == "已邀请：房管所 · 已到场：—"
    choices = page[page.index('id="task-agency"'):]
    choices = choices[:choices.index("</select>")]
    assert re.findall(r'<option value="(\w+)"', choices) == ["housing_admin"]
    offered = page[page.index('id="inv-agencies"'):]
    offered = offered[:offered.index("</fieldset>")]
    assert 'value="power"' in offered and 'value="property_manager"' in offered


def test_a_merged_report_that_may_no_longer_be_split_says_why_where_the_button_was():
    """Its reporter rated the issue it joined (the desk's call-back: satisfied closed it),
    so routing refuses the split: the page offered the button all the same. It says why
    there now, in the page's language, and the refusal of a page drawn before says it too."""
    from services.routing import feedback, merging
    from services.routing.rules import load_rules
    from shared.auth import FeedbackGrant
    from shared.contracts import IssueResolved, Rating, RatingMethod
    from shared.issue import acknowledge, resolve

    names, neighbour = names_from_rules(None), "WH-20261205-0002"
    wire = merging.join(dispatched_wire(NOW), neighbour, NOW)
    merged = record(issue_id=neighbour, status="merged", merged_into=wire.issue_id)
    page = rendered("issue.html", "zh", issue=merged.model_dump(mode="json") | {"contact": {}},
                    timeline=[], messages=[],
                    split_refused=merging.split_refusal(wire, neighbour))
    assert f'action="/desk/issues/{neighbour}/split"' in page  # open: split as before
    assert 'id="split-refused"' not in page
    done = NOW + timedelta(hours=1)
    wire = resolve(acknowledge(wire, "power", "p-1", done), "power", "p-1", "已剪除", done)
    wire = feedback.await_rating(wire, IssueResolved(
        trace_id=wire.trace_id, issue_id=wire.issue_id, occurred_at=done, agencies=["power"]),
        timedelta(days=7))
    wire, _ = feedback.rate(wire, FeedbackGrant(reporter_issue_id=neighbour,
                                                issue_id=wire.issue_id, cycle=0),
                            Rating.satisfied, None, load_rules(), done,
                            on_behalf=feedback.OnBehalf("d-1", RatingMethod.phone))
    why = merging.split_refusal(wire, neighbour)
    said = "这位居民已经评价过并入的问题（满意使它结案，不满意使它重办），本报告不能再拆分"
    in_english = ("This resident has rated the issue the report joined (satisfied closes it, "
                  "not satisfied reopens it): the report can no longer be split from it")
    assert views.refusal(why, ZH, names) == said and views.refusal(why, EN, names) == in_english
    for lang, shown in (("zh", said), ("en", in_english)):
        page = rendered("issue.html", lang, timeline=[], messages=[], split_refused=why,
                        issue=merged.model_dump(mode="json") | {"contact": {}})
        assert f'action="/desk/issues/{neighbour}/split"' not in page
        assert f">{shown}</p>" in page[page.index('id="split-refused"'):]
    closed = merging.split_refusal(wire, "WH-20261205-0003")  # another reporter's report
    assert views.refusal(closed, ZH, names) == "并入的问题已结案，本报告不能再拆分"
    assert views.refusal(f"{neighbour} was split from issue {wire.issue_id}; it no longer "
                         "rates it", ZH, names) == "本报告已从原问题拆分出来单独办理，不能再评价原问题"


def test_a_part_whistled_below_the_issues_level_says_the_issue_stays_there():
    """The property manager's first miss went to the street office while the water
    company's two had taken the issue to the district (routing.escalation): the page said
    "escalated to Street office" alone, as if the issue had gone down."""
    from services.routing.rules import load_rules
    from shared.contracts import EscalationLevel

    rules = load_rules()
    street = rules.supervisor(EscalationLevel.street).name_en
    district = rules.supervisor(EscalationLevel.district).name_en
    detail = (f"物业公司 did not report in by 2026-12-05T10:00:00+00:00: escalated to {street} "
              f"(street), the issue stays with {district} (district); whistled again, new "
              "deadline 2026-12-05T12:00:00+00:00")
    step = {"at": "2026-12-05T10:01:00+00:00", "service": "routing", "step": "escalated",
            "detail": detail, "agency": "property_manager"}
    names = names_from_rules(None)
    [zh] = views.timeline_rows([step], ZH, names, "Asia/Shanghai")
    [en] = views.timeline_rows([step], EN, names, "Asia/Shanghai")
    assert zh["detail"] == ("物业公司未在2026-12-05 18:00前报到，升级至街道办事处督办，"
                            "问题仍由区政府督办；再次吹哨，新时限2026-12-05 20:00")
    assert en["detail"] == ("Property management did not report in by 2026-12-05 18:00: "
                            "escalated to Street office, the issue stays with District "
                            "government; whistled again, new deadline 2026-12-05 20:00")


def test_an_agencys_card_says_who_presses_its_own_part_and_since_when():
    """三级吹哨 is per agency: the water company's two misses took the pipe leak to the
    district, the property manager's first miss to the street office. The manager's card
    said only "supervised at district level": its staff did not know that the street
    office presses *them*, nor since when. Each card says its own part's level; the
    manager's names neither the water company's level nor when the district took it."""
    from services.agency.domain import assignment_view
    from shared.jsoncodec import utc_moment
    from tests.unit.test_escalation import miss, pipe_leak

    issue, _ = miss(pipe_leak(), "water")
    issue, water_miss = miss(issue, "water")
    issue, manager_miss = miss(issue, "property_manager")
    manager = assignment_view(issue, "property_manager", manager_miss.occurred_at)
    water = assignment_view(issue, "water", manager_miss.occurred_at)
    assert (manager["escalation_level"], manager["level"], manager["level_since"]) == (
        "district", "street", utc_moment(manager_miss.occurred_at))
    assert (water["level"], water["level_since"]) == ("district",
                                                      utc_moment(water_miss.occurred_at))
    since = manager_miss.occurred_at.astimezone(ZoneInfo("Asia/Shanghai"))
    for lang, said in (("zh", [f"你单位的部分：街道办事处自 {since:%Y-%m-%d %H:%M} 起督办（街道级）。",
                               "已升级至区督办。"]),
                       ("en", [f"Your part: Street office presses you (street level) since "
                               f"{since:%Y-%m-%d %H:%M}.",
                               "Escalated: supervised at district level."])):
        html = rendered("agency.html", lang, assignments=[manager], total=1,
                        next_deadline=lambda a: a.get("acknowledge_by"),
                        principal=types.SimpleNamespace(agency="property_manager"))
        assert all(text in html for text in said), (lang, html)
        pressed = re.search(r'<p class="notice pressed"[^>]*>(.*?)</p>', html).group(1)
        assert "区" not in pressed.replace("街道", "") and "District" not in pressed
        water_since = water_miss.occurred_at.astimezone(ZoneInfo("Asia/Shanghai"))
        assert f"{water_since:%Y-%m-%d %H:%M}" not in html
    html = rendered("agency.html", "en", assignments=[water], total=1,
                    next_deadline=lambda a: a.get("acknowledge_by"),
                    principal=types.SimpleNamespace(agency="water"))
    assert "District government presses you (district level) since" in html


def test_an_agencys_part_never_whistled_names_no_one_pressing_it():
    from services.agency.domain import assignment_view
    from tests.unit.test_escalation import miss, pipe_leak

    issue, event = miss(pipe_leak(), "water")
    card = assignment_view(issue, "property_manager", event.occurred_at)
    assert (card["level"], card["level_since"]) == ("community", None)
    html = rendered("agency.html", "zh", assignments=[card], total=1,
                    next_deadline=lambda a: a.get("acknowledge_by"),
                    principal=types.SimpleNamespace(agency="property_manager"))
    assert "已升级至街道督办。" in html and "你单位的部分" not in html

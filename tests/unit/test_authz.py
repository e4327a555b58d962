"""Who may read or change what (shared.authz) and who is calling (shared.auth). Pure."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.auth import (
    Principal,
    Role,
    issue_feedback_token,
    issue_resident_token,
    issue_token,
    principal_from_request,
    refresh_token,
    verify_token,
)
from shared.authz import (
    View,
    agency_view,
    desk_view,
    issue_view,
    load_judged,
    may_act_for_agency,
    may_act_on_assignment,
    may_list_issues,
    may_rate,
    may_read_assignments,
    may_read_events,
    may_read_issue,
    may_read_notifications,
    may_read_stats,
    may_record_rating,
    may_resend_rating_link,
    may_submit,
    may_submit_in,
    must_be_desk,
    notifications_view,
    resident_view,
    visible_in_list,
)
from shared.contracts import (
    AssignmentStatus,
    Channel,
    IssueFilter,
    IssueStatus,
    Language,
    Location,
    Rating,
    Sector,
)
from shared.contracts import (
    Role as AgencyRole,
)
from shared.errors import Forbidden, InvalidTransition, NotFound, Unauthorized
from shared.issue import Assignment, EarlierResolution, IssueRecord, RatingRecord, receive

SECRET = "unit-test-secret-0123456789abcdef-0123456789"
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
OWN, OTHER, NEIGHBOUR = "WH-20261121-0001", "WH-20261121-0002", "WH-20261121-0003"
CONTACT = {"name": "孙建国", "phone": "13812345678", "email": "sun@example.org"}


def assignment(agency: str, role=AgencyRole.lead, status=AssignmentStatus.assigned,
               **fields) -> Assignment:
    return Assignment(agency=agency, agency_name=f"{agency}局", agency_name_en=f"{agency} office",
                      sector=Sector.power, role=role, status=status, assigned_at=T0,
                      acknowledge_by=T0 + timedelta(hours=1), resolve_by=T0 + timedelta(days=1),
                      **fields)


def record(issue_id=OWN, community="缤泰社区", **fields) -> IssueRecord:
    base = receive(issue_id, "trace-0123456789abcdef", "3号楼201门口电线耷拉下来", None,
                   Location(community=community, address="丽德花园3号楼"), Channel.hotline,
                   Language.zh, T0)
    return base.model_copy(update={
        "status": IssueStatus.in_progress, "assignments": [
            assignment("power", status=AssignmentStatus.acknowledged, acknowledged_at=T0,
                       acknowledged_by="p-007", acknowledge_note="报到备注"),
            # finished, or withdrawn by a reroute: it still had an assignment
            assignment("housing", AgencyRole.support, AssignmentStatus.resolved,
                       resolved_at=T0, resolved_by="h-1", resolution_note="内部备注")],
        **fields})


def desk(communities=None) -> Principal:
    return verify_token(issue_token("desk", "d-1", SECRET, communities=communities), SECRET)


def staff(agency: str) -> Principal:
    return verify_token(issue_token(agency, f"{agency}-1", SECRET), SECRET)


def resident(report=OWN, rates=None) -> Principal:
    return Principal(Role.resident, reporter_issue_id=report, rates=rates)


IDENTITIES = {
    "anonymous": Principal.anonymous("10.0.0.1"),
    "desk": desk(),
    "desk of another community": desk(["和平里社区"]),
    "assigned agency": staff("power"),
    "formerly assigned agency": staff("housing"),
    "another agency": staff("water"),
    "resident, own link": resident(OWN),
    "resident, another issue's link": resident(OTHER),
}


def outcome(decide) -> object:
    try:
        result = decide()
    except Unauthorized:
        return 401
    except Forbidden:
        return 403
    return result if isinstance(result, View) else 200


# identity -> (read issue, events, notifications, stats, list, power's assignments, act as power)
TABLE = {
    "anonymous": (401, 401, 401, 401, 401, 401, 401),
    "desk": (View.desk, 200, View.desk, 200, 200, 200, 403),
    "desk of another community": (403, 403, 403, 200, 200, 200, 403),
    "assigned agency": (View.agency, 403, 403, 403, 200, 200, 200),
    "formerly assigned agency": (View.agency, 403, 403, 403, 200, 403, 403),
    "another agency": (403, 403, 403, 403, 200, 403, 403),
    "resident, own link": (View.resident, 403, View.resident, 403, 403, 403, 403),
    "resident, another issue's link": (403, 403, 403, 403, 403, 403, 403),
}


@pytest.mark.parametrize("identity", TABLE)
def test_every_decision_for_every_identity(identity):
    principal, issue = IDENTITIES[identity], record()
    got = (
        outcome(lambda: may_read_issue(principal, issue, OWN)),
        outcome(lambda: may_read_events(principal, issue)),
        outcome(lambda: may_read_notifications(principal, issue, OWN)),
        outcome(lambda: may_read_stats(principal)),
        outcome(lambda: may_list_issues(principal, IssueFilter())),
        outcome(lambda: may_read_assignments(principal, "power")),
        outcome(lambda: may_act_for_agency(principal, "power")),
    )
    assert got == TABLE[identity]


UNKNOWN = "WH-20261121-0999"


def answer(decide) -> tuple[object, str]:
    """What a caller hears: 401/403/404 and the words, or 200."""
    try:
        decide()
    except (Unauthorized, Forbidden, NotFound) as exc:
        return exc.status, str(exc)
    return 200, ""


def nothing_there(issue_id: str) -> IssueRecord:
    raise NotFound(f"no issue {issue_id}")


# Every judge an issue route applies to the record it loads.
JUDGES = {
    "read": lambda p, i: may_read_issue(p, i[0], i[1]),
    "events": lambda p, i: may_read_events(p, i[0]),
    "notifications": lambda p, i: may_read_notifications(p, i[0], i[1]),
    "act as water": lambda p, i: may_act_on_assignment(p, "water", i[0]),
    "record a rating": lambda p, i: may_record_rating(p, i[0]),
    "resend a rating link": lambda p, i: may_resend_rating_link(p, i[0]),
}


@pytest.mark.parametrize("judge", JUDGES)
@pytest.mark.parametrize("identity", ["anonymous", "desk of another community", "another agency",
                                      "resident, another issue's link"])
def test_an_unknown_issue_is_refused_as_one_the_caller_may_not_see(identity, judge):
    """Issue ids are numbered by day: a 404 for an unknown id and a 403 for a known one
    told a desk outside its communities, another agency, or anyone holding one resident's
    link which issues exist elsewhere. ``load_judged`` refuses both in the same words."""
    principal, decide = IDENTITIES[identity], JUDGES[judge]
    known_issue = record(NEIGHBOUR, status=IssueStatus.resolved,  # awaiting its rating
                         feedback_due=T0 + timedelta(days=7))
    known = answer(lambda: load_judged(lambda _: known_issue, NEIGHBOUR,
                                       lambda r: decide(principal, (r, NEIGHBOUR))))
    unknown = answer(lambda: load_judged(nothing_there, UNKNOWN,
                                         lambda r: decide(principal, (r, UNKNOWN))))
    assert known[0] in (401, 403)
    assert unknown == (known[0], known[1].replace(NEIGHBOUR, UNKNOWN))


def test_an_unknown_issue_is_a_404_for_whom_it_would_not_refuse():
    """The unscoped desk reads every issue and a resident's link their own report: to
    them an id that names no issue is a 404, and a known one is loaded and judged."""
    for principal in (desk(), resident(UNKNOWN)):
        with pytest.raises(NotFound, match=UNKNOWN):
            load_judged(nothing_there, UNKNOWN, lambda r, p=principal: may_read_issue(p, r))
    assert load_judged(lambda _: record(), OWN,
                       lambda r: may_read_issue(desk(), r))[1] is View.desk


@pytest.mark.parametrize("typed", ["13812345678", "WH-1\x00", 7, None])
def test_what_no_issue_id_could_be_is_a_404_to_anyone_and_not_repeated(typed):
    """No issue has such an id, so its 404 says nothing; a refusal would read back what
    was typed (a phone number, a NUL)."""
    def malformed(_):
        raise NotFound("no such issue (issue ids look like WH-20261121-0001)")
    for principal in (staff("water"), desk(["和平里社区"]), resident(OTHER)):
        with pytest.raises(NotFound, match="look like"):
            load_judged(malformed, typed, lambda r, p=principal: may_read_issue(p, r))


def test_desk_only_actions_refuse_everyone_else():
    for name, principal in IDENTITIES.items():
        expected = 200 if name.startswith("desk") else (
            401 if name == "anonymous" else 403)
        assert outcome(lambda p=principal: must_be_desk(p)) == expected, name


def test_lists_are_narrowed_to_the_callers_scope():
    assert may_list_issues(desk(), IssueFilter(status="dispatched")) == [
        IssueFilter(status="dispatched")]
    assert [q.community for q in may_list_issues(desk(["b", "a"]), IssueFilter())] == ["a", "b"]
    with pytest.raises(Forbidden):
        may_list_issues(desk(["a"]), IssueFilter(community="b"))
    assert may_list_issues(staff("power"), IssueFilter())[0].agency == "power"
    with pytest.raises(Forbidden, match="only their own agency"):
        may_list_issues(staff("power"), IssueFilter(agency="water"))
    issue = record()
    assert visible_in_list(staff("housing"), issue) and not visible_in_list(staff("water"), issue)
    assert visible_in_list(desk(), issue) and not visible_in_list(desk(["和平里社区"]), issue)
    assert not visible_in_list(resident(), issue)


def test_a_scoped_desk_lists_an_agencys_assignments_only_in_its_communities():
    """GET /agencies/{a}/assignments: the desk may read the list, narrowed like GET /issues
    (per community) and checked again per record, so another community's issue never
    shows."""
    scoped = desk(["和平里社区"])
    may_read_assignments(scoped, "power")
    assert may_list_issues(scoped, IssueFilter(agency="power", limit=500)) == [
        IssueFilter(agency="power", community="和平里社区", limit=500)]
    assert not visible_in_list(scoped, record())
    assert visible_in_list(scoped, record(community="和平里社区"))
    assert visible_in_list(desk(), record())


@pytest.mark.parametrize(("scope", "written"), [
    ("缤泰社区", "缤泰社區"),  # the token simplified, the report traditional
    ("缤泰社區", "缤泰社区"),  # the token traditional, the report simplified
    ("ＡＢＣ社区", "abc社區"),  # full-width and capitals on one side
])
def test_a_scoped_desk_reaches_its_community_however_either_side_writes_it(scope, written):
    """A desk token's communities were compared as written: 缤泰社區 counted as another
    community than the 缤泰社区 the token names. Both sides are folded (NFKC, case,
    traditional characters as simplified) for every scope check."""
    scoped = desk([scope])
    issue = record(community=written)
    assert may_read_issue(scoped, issue) is View.desk
    assert visible_in_list(scoped, issue)
    may_read_events(scoped, issue)
    may_read_notifications(scoped, issue)
    may_submit_in(scoped, written)
    assert may_list_issues(scoped, IssueFilter(community=written)) == [
        IssueFilter(community=written)]


def test_folding_a_community_widens_no_scope():
    """Another community stays forbidden, in either script; so do look-alikes that only
    share characters with it."""
    scoped = desk(["缤泰社區"])
    for elsewhere in ("和平里社区", "和平里社區", "缤泰", "缤泰社区东区"):
        issue = record(community=elsewhere)
        with pytest.raises(Forbidden, match="outside your communities"):
            may_read_issue(scoped, issue)
        assert not visible_in_list(scoped, issue)
        with pytest.raises(Forbidden):
            may_submit_in(scoped, elsewhere)
        with pytest.raises(Forbidden):
            may_list_issues(scoped, IssueFilter(community=elsewhere))


def test_an_agency_acts_only_on_an_assignment_it_has_judged_before_any_body():
    """报到/resolve: the token's own agency, with a part in the issue now (a withdrawn
    part is gone); anyone else 403, whatever they send."""
    issue = record(withdrawn=[assignment("water", status=AssignmentStatus.withdrawn)])
    may_act_on_assignment(staff("power"), "power", issue)
    may_act_on_assignment(staff("housing"), "housing", issue)  # finished: the store says 409
    for principal, agency in ((staff("water"), "water"), (staff("gas"), "gas"),
                              (staff("water"), "power"), (desk(), "power"),
                              (resident(OWN), "power")):
        with pytest.raises(Forbidden):
            may_act_on_assignment(principal, agency, issue)
    with pytest.raises(Unauthorized):
        may_act_on_assignment(IDENTITIES["anonymous"], "power", issue)


def test_stats_scope_is_the_desk_tokens_communities():
    assert may_read_stats(desk()) is None
    assert may_read_stats(desk(["缤泰社区"])) == {"缤泰社区"}


def test_submission_is_open_to_staff_and_to_anonymous_callers_only_when_allowed():
    for principal in (desk(), staff("power")):
        may_submit(principal, anonymous_allowed=False)
    may_submit(Principal.anonymous(), anonymous_allowed=True)
    may_submit(resident(), anonymous_allowed=True)  # a link is for reading, counted as such
    with pytest.raises(Unauthorized, match="anonymous submission is off"):
        may_submit(Principal.anonymous(), anonymous_allowed=False)


def test_only_the_residents_own_rating_link_rates():
    grant = may_rate(resident(OWN, rates=(OWN, 1)), OWN)
    assert (grant.reporter_issue_id, grant.issue_id, grant.cycle) == (OWN, OWN, 1)
    merged = may_rate(resident(NEIGHBOUR, rates=(OWN, 0)), NEIGHBOUR)
    assert merged.issue_id == OWN  # a merged report rates the issue it joined
    with pytest.raises(Forbidden, match="not for issue"):
        may_rate(resident(OTHER, rates=(OTHER, 0)), OWN)
    with pytest.raises(Forbidden, match="rating link"):
        may_rate(resident(OWN), OWN)  # a progress link reads, it does not rate
    with pytest.raises(Forbidden):
        may_rate(desk(), OWN)  # nor can staff rate for a resident
    with pytest.raises(Unauthorized):
        may_rate(Principal.anonymous(), OWN)


def test_the_desk_resends_a_rating_link_only_while_a_rating_is_awaited():
    waiting = record(status=IssueStatus.resolved, feedback_due=T0 + timedelta(days=7))
    may_resend_rating_link(desk(), waiting)
    with pytest.raises(InvalidTransition, match="not waiting for a rating"):
        may_resend_rating_link(desk(), record())
    with pytest.raises(Forbidden):
        may_resend_rating_link(staff("power"), waiting)


def test_only_the_desk_records_a_residents_rating_and_a_scoped_desk_only_at_home():
    waiting = record(status=IssueStatus.resolved, feedback_due=T0 + timedelta(days=7))
    may_record_rating(desk(), waiting)
    may_record_rating(desk(communities=["缤泰社区"]), waiting)
    with pytest.raises(Forbidden, match="outside your communities"):
        may_record_rating(desk(communities=["和平里社区"]), waiting)
    for somebody in (staff("power"), resident(rates=(OWN, 0))):
        with pytest.raises(Forbidden):
            may_record_rating(somebody, waiting)
    with pytest.raises(Unauthorized):
        may_record_rating(IDENTITIES["anonymous"], waiting)


# ------------------------------------------------------------------- views


def test_the_desk_sees_everything_but_the_contact_unmasked():
    view = issue_view(View.desk, record(reporters=[NEIGHBOUR]), CONTACT)
    assert view["reporters"] == [NEIGHBOUR]
    assert view["assignments"][0]["acknowledge_note"] == "报到备注"
    assert view["contact"] == {"name": "孙**", "phone": "138****5678",
                               "email": "s**@example.org", "preferred_channel": None}


def test_an_agency_sees_the_work_and_no_reporters_ratings_or_messages():
    issue = record(reporters=[NEIGHBOUR], ratings=[RatingRecord(
        reporter_issue_id=OWN, cycle=0, rating=Rating.unsatisfied, comment="x", at=T0)])
    issue.step(T0, "notify", "resident_notified", "received message sent by desk")
    view = agency_view(issue, CONTACT, "power")
    assert "reporters" not in view and "ratings" not in view and "trace_id" not in view
    assert not any(e["service"] == "notify" for e in view["timeline"])
    assert [a["yours"] for a in view["assignments"]] == [True, False]
    assert view["assignments"][0]["acknowledge_note"] == "报到备注"  # internal, not secret
    assert view["description"] and view["location"]["address"] == "丽德花园3号楼"
    assert view["contact"]["phone"] == "138****5678"


def test_the_flat_is_for_the_agencies_with_a_part_not_for_one_a_reroute_withdrew():
    home = Location(community="缤泰社区", address="丽德花园3号楼2单元501")
    issue = record(location=home, withdrawn=[
        assignment("water", status=AssignmentStatus.withdrawn)])
    # The lead, and one whose part is finished (a reopening sends it back): the flat.
    for agency in ("power", "housing"):
        assert agency_view(issue, CONTACT, agency)["location"]["address"] == home.address
    assert desk_view(issue, CONTACT)["location"]["address"] == home.address
    # Withdrawn: it no longer goes there.
    assert agency_view(issue, CONTACT, "water")["location"]["address"] == "丽德花园3号楼"
    # Withdrawn, then given a part again: it goes there once more.
    issue.assignments.append(assignment("water", AgencyRole.support))
    assert agency_view(issue, CONTACT, "water")["location"]["address"] == home.address
    assert issue.location.address == home.address  # the record itself is untouched


def test_a_rating_comment_is_the_desks_masked_and_never_the_agencys():
    """The agency view quotes no resident's comment; the desk's masks phones and the
    resident's name in it, also in records rated before comments were masked."""
    comment = "还是漏，联系我13900001111，孙建国"
    issue = record(ratings=[RatingRecord(reporter_issue_id=OWN, cycle=0,
                                         rating=Rating.unsatisfied, comment=comment, at=T0)])
    issue.step(T0, "routing", "rated", f"the resident is not satisfied: {comment}")
    issue.step(T0, "routing", "reopened", f"the resident is not satisfied: {comment}; back "
                                          "to power, escalated to street")
    as_agency = agency_view(issue, CONTACT, "power")
    assert "联系我" not in str(as_agency) and "1111" not in str(as_agency)
    assert [e["detail"] for e in as_agency["timeline"][-2:]] == [
        "the resident is not satisfied",
        "the resident is not satisfied; back to power, escalated to street"]
    as_desk = issue_view(View.desk, issue, CONTACT)
    masked = "还是漏，联系我139****1111，孙**"
    assert as_desk["ratings"][0]["comment"] == masked
    assert masked in as_desk["timeline"][-1]["detail"]
    assert "13900001111" not in str(as_desk) and "孙建国" not in str(as_desk)


def test_the_agency_view_cuts_comments_by_the_steps_shape_not_their_text():
    """A comment quoted differently from how it is stored (masked later), one that holds
    "; back to", and one that equals other text: none reaches the agency, nothing else
    is cut."""
    stored = "还是漏，联系我139****1111"
    issue = record(ratings=[RatingRecord(reporter_issue_id=OWN, cycle=0,
                                         rating=Rating.unsatisfied, comment=stored, at=T0),
                            RatingRecord(reporter_issue_id=OWN, cycle=1,
                                         rating=Rating.satisfied, comment="power", at=T0)])
    issue.step(T0, "routing", "reopened", "the resident is not satisfied: 还是漏，联系我"
                                          "13900001111; back to power, escalated to street")
    issue.step(T0, "routing", "reopened", "the resident is not satisfied: 又漏了; back to me"
                                          "; back to power, escalated to district")
    issue.step(T0, "routing", "rated", "the resident is satisfied: power")
    issue.step(T0, "routing", "rated", "the resident is satisfied")
    issue.step(T0, "routing", "rated", "something else entirely: 联系我13900001111")
    as_agency = agency_view(issue, CONTACT, "power")
    assert [e["detail"] for e in as_agency["timeline"][-5:]] == [
        "the resident is not satisfied; back to power, escalated to street",
        "the resident is not satisfied; back to power, escalated to district",
        "the resident is satisfied",
        "the resident is satisfied",
        "rated"]
    assert "联系我" not in str(as_agency) and "back to me" not in str(as_agency)


def test_earlier_resolutions_are_seen_as_resolution_notes_are_and_by_no_one_else():
    """What an agency claimed done before a reopening: the desk reads it as it reads the
    latest note, an agency masked as its other notes, a resident never."""
    claimed = "已联系孙建国13812345678，更换了插座"
    issue = record()
    issue.assignments[1].earlier_resolutions = [EarlierResolution(
        cycle=0, note=claimed, resolved_by="h-0", resolved_at=T0)]
    [as_desk] = issue_view(View.desk, issue, CONTACT)["assignments"][1]["earlier_resolutions"]
    assert (as_desk["cycle"], as_desk["note"], as_desk["resolved_by"]) == (0, claimed, "h-0")
    [as_agency] = agency_view(issue, CONTACT, "power")["assignments"][1]["earlier_resolutions"]
    assert as_agency["note"] == "已联系孙**138****5678，更换了插座"
    as_resident = str(resident_view(issue, CONTACT))
    assert "更换了插座" not in as_resident and "h-0" not in as_resident


def test_a_resident_sees_progress_in_plain_words_and_nothing_internal():
    issue = record()
    issue.step(T0 + timedelta(minutes=1), "routing", "dispatched", "rule flying_wire: internal")
    view = resident_view(issue, CONTACT)
    text = str(view)
    for internal in ("p-007", "h-1", "内部备注", "报到备注", "rule flying_wire", "trace-",
                     "13812345678", "孙建国"):
        assert internal not in text, internal
    assert view["status_text"] == "正在处理"
    assert [p["text"] for p in view["progress"]] == [
        "您的问题已受理", "power局已报到", "housing局已完成", "已派给：power局、housing局"]
    assert view["contact"]["phone"] == "138****5678" and view["can_rate"] is False


def test_all_done_reads_after_the_last_agencys_part_done_at_the_same_moment():
    """The last agency finishing resolves the issue in the same change, so both steps
    carry the same time: the issue's conclusion must come second."""
    issue = record(status=IssueStatus.resolved)
    done = T0 + timedelta(hours=2)
    issue.assignments[0].status, issue.assignments[0].resolved_at = AssignmentStatus.resolved, done
    issue.step(T0 + timedelta(minutes=1), "routing", "dispatched", "rule flying_wire")
    issue.step(done, "agency", "resolved", "every agency has finished")
    assert [p["text"] for p in resident_view(issue, CONTACT)["progress"]][-2:] == [
        "power局已完成", "各单位均已办结"]


def test_each_rating_reads_before_the_reopening_or_closing_it_caused():
    """Not satisfied, then satisfied after the reopening: the page showed one "rated", the
    last, after "closed" (the two share a moment), and nothing of the rating that sent the
    issue back."""
    issue = record(status=IssueStatus.closed, reopen_count=1)
    first, second = T0 + timedelta(hours=2), T0 + timedelta(hours=5)
    issue.step(T0 + timedelta(minutes=1), "routing", "dispatched", "rule flying_wire")
    issue.step(T0 + timedelta(hours=1), "agency", "resolved", "every agency has finished")
    issue.step(first, "routing", "reopened", "the resident is not satisfied: 还在漏; back to "
               "power, escalated to street")
    issue.step(T0 + timedelta(hours=4), "agency", "resolved", "every agency has finished")
    issue.step(second, "routing", "closed", "closed: the resident is satisfied")
    issue.ratings = [
        RatingRecord(reporter_issue_id=OWN, cycle=0, rating=Rating.unsatisfied, at=first),
        RatingRecord(reporter_issue_id=OWN, cycle=1, rating=Rating.satisfied, at=second)]
    texts = [p["text"] for p in resident_view(issue, CONTACT)["progress"]]
    assert texts[-6:] == ["各单位均已办结", "您已评价", "重新交办，提级督办",
                          "各单位均已办结", "您已评价", "已结案"], texts

def test_a_resident_reads_their_page_in_the_language_they_asked_for():
    issue = record()  # reported in Chinese
    view = resident_view(issue, CONTACT, lang="en")
    assert view["language"] == "en" and view["status_text"] == "being handled"
    assert view["progress"][0]["text"] == "your report was received"
    assert view["agencies"][0]["name"] == "power office"
    assert resident_view(issue, CONTACT, lang="fr")["status_text"] == "正在处理"


def test_a_merged_resident_sees_the_joined_issues_progress_not_its_reporter():
    primary = record(reporters=[NEIGHBOUR], status=IssueStatus.resolved,
                     feedback_due=T0 + timedelta(days=7))
    own = receive(NEIGHBOUR, "trace-fedcba9876543210", "Wire hanging by my door", None,
                  Location(community="缤泰社区", address="丽德花园3号楼"), Channel.app,
                  Language.en, T0).model_copy(update={"status": IssueStatus.merged,
                                                      "merged_into": OWN})
    own.step(T0, "routing", "merged", f"same problem as {OWN}")
    view = resident_view(own, {"phone": "13700001111"}, primary, rates=(OWN, 0))
    text = str(view)
    assert OWN not in text and "3号楼201" not in text  # the other report's id and words
    assert view["description"] == "Wire hanging by my door" and view["status"] == "resolved"
    assert view["can_rate"] is True and view["language"] == "en"
    assert "handled together with the same problem reported by neighbours" in text


def test_a_merged_resident_reads_their_own_flat_never_the_neighbours():
    primary = record(location=Location(community="缤泰社区", address="丽德花园3号楼2单元501"))
    own = receive(NEIGHBOUR, "trace-fedcba9876543210", "楼上漏水", None,
                  Location(community="缤泰社区", address="丽德花园3号楼2单元401"), Channel.app,
                  Language.zh, T0).model_copy(update={"status": IssueStatus.merged,
                                                      "merged_into": OWN})
    view = resident_view(own, None, primary)
    assert view["address"] == "丽德花园3号楼2单元401" and "501" not in str(view)


def test_a_resident_cannot_rate_twice_or_an_old_cycle():
    rated = record(status=IssueStatus.resolved, ratings=[RatingRecord(
        reporter_issue_id=OWN, cycle=0, rating=Rating.satisfied, at=T0)])
    assert resident_view(rated, None, rates=(OWN, 0))["can_rate"] is False
    assert resident_view(record(status=IssueStatus.resolved, reopen_count=1), None,
                         rates=(OWN, 0))["can_rate"] is False


def test_a_residents_page_says_why_it_cannot_rate_now():
    """The progress link rates nothing: under "resolved, please rate" the page used to say
    "once the issue is resolved you can rate it here", with no form. It now says which
    link rates it, or that it was rated, is closed, or is not resolved yet."""
    resolved = record(status=IssueStatus.resolved, feedback_due=T0 + timedelta(days=7))
    assert resident_view(resolved, None, rates=(OWN, 0))["rate_state"] == "open"
    assert resident_view(resolved, None)["rate_state"] == "use_rating_link"  # progress link
    again = record(status=IssueStatus.resolved, reopen_count=1)
    assert resident_view(again, None, rates=(OWN, 0))["rate_state"] == "use_rating_link"
    assert resident_view(record(), None, rates=(OWN, 0))["rate_state"] == "later"
    assert resident_view(record(status=IssueStatus.closed), None)["rate_state"] == "closed"
    rated = record(status=IssueStatus.closed, ratings=[RatingRecord(
        reporter_issue_id=OWN, cycle=0, rating=Rating.satisfied, at=T0)])
    assert resident_view(rated, None)["rate_state"] == "rated"
    assert resident_view(rated, None, rates=(OWN, 0))["rate_state"] == "rated"


def test_a_resident_reads_only_their_own_messages():
    records = [{"kind": "received", "audience": "resident", "text": "t", "status": "sent",
                "recipient": {"phone": "138****5678"}, "channel": "desk"},
               {"kind": "escalation_notice", "audience": "supervisor", "text": "s"}]
    assert notifications_view(View.desk, records) == records
    mine = notifications_view(View.resident, records)
    assert [m["kind"] for m in mine] == ["received"] and "recipient" not in mine[0]


# ---------------------------------------------------------- from a request


def test_a_request_becomes_a_principal():
    bearer = {"Authorization": f"Bearer {issue_token('power', 'p-1', SECRET)}"}
    assert principal_from_request(bearer, {}, SECRET).role is Role.agency
    anonymous = principal_from_request({}, {}, SECRET, address="10.0.0.9")
    assert anonymous.role is Role.anonymous and anonymous.client == "addr:10.0.0.9"
    link = issue_resident_token(OWN, SECRET)
    assert principal_from_request({}, {"token": link}, SECRET).reporter_issue_id == OWN
    rating = issue_feedback_token(NEIGHBOUR, OWN, 2, SECRET, ttl_s=600)
    by_header = principal_from_request({"Authorization": f"Bearer {rating}"}, {}, SECRET)
    assert by_header.rates == (OWN, 2) and by_header.client == f"resident:{NEIGHBOUR}"


@pytest.mark.parametrize("headers, args", [
    ({"Authorization": "Bearer not.a.token"}, {}),
    ({}, {"token": "not.a.token"}),
    ({}, {"token": issue_token("power", "p-1", SECRET)}),  # a staff token is no resident link
    ({"Authorization": f"Bearer {issue_token('power', 'p-1', 'another-secret' * 3)}"}, {}),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, {}),
])
def test_a_bad_token_is_401_never_anonymous(headers, args):
    with pytest.raises(Unauthorized):
        principal_from_request(headers, args, SECRET)


def test_refresh_keeps_the_claims_with_a_new_jti_within_the_session():
    start = time.time() - 3600
    old = verify_token(issue_token("desk", "d-1", SECRET, communities=["a"], now=start), SECRET)
    new = verify_token(refresh_token(old, SECRET), SECRET)
    assert new.jti != old.jti and new.communities == {"a"} and new.auth_time == int(start)
    assert (new.role, new.staff_id) == (old.role, old.staff_id)
    late = verify_token(refresh_token(old, SECRET, max_age_s=3600 + 60), SECRET)
    assert late.expires_at <= int(start) + 3600 + 60  # never past the session's end
    with pytest.raises(Forbidden, match="session is over"):
        refresh_token(old, SECRET, max_age_s=1800)
    with pytest.raises(Forbidden):
        refresh_token(resident(), SECRET)


def test_audit_fields_name_who_and_never_the_token():
    token = issue_token("power", "p-1", SECRET)
    fields = verify_token(token, SECRET).audit_fields()
    assert fields.keys() == {"role", "jti", "staff_id", "agency"}
    assert token not in str(fields)


def test_the_guard_verifies_a_staff_token_once_and_never_past_its_expiry():
    from types import SimpleNamespace

    from shared import config as cfg
    from shared.guard import Guard

    guard = Guard()
    guard.container = SimpleNamespace(config=cfg.config_from_env({}, **{cfg.SECRET: SECRET}))
    guard.setup()  # builds its Redis client; nothing here talks to Redis

    def request(token):
        return SimpleNamespace(headers={"Authorization": f"Bearer {token}"}, args={},
                               remote_addr="10.0.0.1")

    token = issue_token("desk", "d-1", SECRET)
    first = guard.principal(request(token))
    assert guard.principal(request(token)) is first  # remembered: no second signature check
    short = issue_token("power", "p-1", SECRET, ttl_s=1, now=time.time() - 40)  # past skew
    with pytest.raises(Unauthorized, match="expired"):
        guard.principal(request(short))
    # A remembered principal whose token has since expired is verified afresh (and refused).
    guard._verified[f"Bearer {short}"] = Principal(
        Role.agency, agency="power", staff_id="p-1", jti="j", issued_at=0, expires_at=0)
    with pytest.raises(Unauthorized, match="expired"):
        guard.principal(request(short))
    guard.stop()


@pytest.mark.parametrize(("path_id", "recorded"), [
    ("WH-20261121-0001", "WH-20261121-0001"),
    ("13812345678", "(not an issue id)"),
    ("WH-13812345678", "(not an issue id)"),
    ("WH-20261121-0001x", "(not an issue id)"),
    ("", "(not an issue id)"),
])
def test_the_audit_log_names_an_issue_only_when_the_path_holds_an_issue_id(path_id, recorded):
    """A path parameter is what the caller typed (POST /issues/13812345678/rating-link):
    the audit entry keeps it only when it is shaped like an issue id, and is scrubbed."""
    from types import SimpleNamespace

    from shared import config as cfg
    from shared.guard import Guard, GuardAccess

    class Stream:
        def __init__(self):
            self.entries = []

        def xadd(self, key, fields, **_):
            self.entries.append(fields)

    guard = Guard()
    guard.container = SimpleNamespace(config=cfg.config_from_env({}, **{cfg.SECRET: SECRET}))
    guard.setup()  # builds its Redis client; nothing here talks to Redis
    guard.client.close()
    guard.client = stream = Stream()
    desk = verify_token(issue_token("desk", "13900001111", SECRET), SECRET)
    worker = object()
    GuardAccess(guard, worker).record(desk, "rating_link.resend", path_id)
    guard.worker_result(worker, result=(404, "{}"))
    [entry] = stream.entries
    assert entry.get("issue_id", "(not an issue id)") == recorded
    assert entry["status"] == "404" and "13900001111" not in str(entry)


def test_a_resident_still_sees_an_agencys_first_report_in_after_sending_it_back():
    """Not satisfied, the resident sent it back: the agency reported in again. Their page
    showed only the latest 报到 (the assignment's own time): the first one, before the
    first "every agency has finished", was gone from the progress they had read."""
    issue = record(status=IssueStatus.in_progress, reopen_count=1)
    power = issue.assignments[0]
    first, done, again = (T0 + timedelta(minutes=m) for m in (10, 60, 120))
    issue.step(T0 + timedelta(minutes=1), "routing", "dispatched", "rule flying_wire")
    issue.step(first, "agency", "acknowledged", "power局 (p-007) reported in: 报到备注",
               agency="power")
    issue.step(done, "agency", "resolved", "every agency has finished its part")
    issue.step(done + timedelta(minutes=5), "routing", "reopened",
               "the resident is not satisfied; back to power, escalated to street")
    issue.step(again, "agency", "acknowledged", "power局 (p-007) reported in", agency="power")
    power.acknowledged_at = again
    progress = [(p["at"], p["text"]) for p in resident_view(issue, CONTACT)["progress"]]
    acks = [at for at, text in progress if text == "power局已报到"]
    assert acks == [first.isoformat().replace("+00:00", "Z"),
                    again.isoformat().replace("+00:00", "Z")], progress
    assert "报到备注" not in str(progress) and "p-007" not in str(progress)


def test_a_satisfied_rating_reads_before_the_closing_it_caused():
    """Satisfied, the resident closes the issue in the same change: both steps carry the
    same time, and the page read "closed", then "you rated it", the wrong way round."""
    issue = record(status=IssueStatus.closed, ratings=[RatingRecord(
        reporter_issue_id=OWN, cycle=0, rating=Rating.satisfied, at=T0 + timedelta(hours=3))])
    issue.step(T0 + timedelta(hours=3), "routing", "closed", "the resident is satisfied")
    assert [p["text"] for p in resident_view(issue, CONTACT)["progress"]][-2:] == [
        "您已评价", "已结案"]

"""共性问题统筹: duplicate reports merge into the open issue (services.routing.merging).

Neighbours in 丽德花园 report the same dangling cable: the first report is routed, the
others are folded into it and their residents get its updates; the desk can split a
wrong merge, and the report is routed on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.routing import feedback
from services.routing.merging import (
    PrimaryClosed,
    buckets,
    can_join,
    fold,
    join,
    leave,
    must_be_merged,
    normalise_address,
    split_refusal,
    unfold,
)
from services.routing.rules import load_rules
from shared.auth import FeedbackGrant
from shared.contracts import (
    Channel,
    IssueMerged,
    IssueReceived,
    IssueStatus,
    Language,
    Location,
    Priority,
    Rating,
    Role,
)
from shared.errors import InvalidTransition
from shared.issue import (
    Assignment,
    IssueRecord,
    Routing,
    acknowledge,
    dispatch,
    merged_group,
    receive,
    resolve,
)

RULES = load_rules()
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
PRIMARY_ID = "WH-20261121-0001"
NEWCOMER_ID = "WH-20261121-0002"
PRIMARY_TRACE = "trace-primary-00000001"
NEWCOMER_TRACE = "trace-newcomer-0000002"
PLACE = Location(community="缤泰社区", address="丽德花园3号楼", grid="3-1")
NEIGHBOUR_PLACE = Location(community="缤泰社区", address="丽德花园 3号楼", grid="3-1")
LATER = T0 + timedelta(minutes=20)


def primary_received() -> IssueRecord:
    return receive(PRIMARY_ID, PRIMARY_TRACE, "楼道里有根电线耷拉下来，不知道有没有电", None,
                   PLACE, Channel.hotline, Language.zh, T0)


def primary_dispatched() -> IssueRecord:
    power = RULES.agency("power")
    window = RULES.window(Priority.urgent)
    assignment = Assignment(agency="power", agency_name=power.name, agency_name_en=power.name_en,
                            sector=power.sector, role=Role.lead, assigned_at=T0,
                            acknowledge_by=T0 + window.acknowledge,
                            resolve_by=T0 + window.resolve)
    return dispatch(primary_received(), "flying_wire", Priority.urgent,
                    Routing(rule="flying_wire", keywords=["电线耷拉"], category_source="keywords"),
                    [assignment], T0)


def newcomer(channel: Channel = Channel.app, language: Language = Language.en) -> IssueRecord:
    return receive(NEWCOMER_ID, NEWCOMER_TRACE,
                   "A cable is hanging down by building 3, not sure if it's live", None,
                   NEIGHBOUR_PLACE, channel, language, LATER)


def received_event(record: IssueRecord, has_contact: bool = True) -> IssueReceived:
    return IssueReceived(trace_id=record.trace_id, issue_id=record.issue_id,
                         occurred_at=record.received_at, description=record.description,
                         category=record.category, location=record.location,
                         channel=record.channel, language=record.language,
                         has_contact=has_contact)


def folded() -> tuple[IssueRecord, IssueRecord]:
    """(the newcomer folded into the primary, the primary with the newcomer as reporter)."""
    primary = primary_dispatched()
    report = newcomer()
    merged, _ = fold(report, primary, primary.category, received_event(report), LATER)
    return merged, join(primary, NEWCOMER_ID, LATER)


# ------------------------------------------------------------------ normalise_address


@pytest.mark.parametrize("address", [
    "丽德花园3号楼", "丽德花园 3号楼", "丽德花园３号楼", "丽德花园　３号楼", " 丽德花园3号楼 ",
    "丽德花园-3号楼", "丽德花园，3号楼", "丽德花园（3号楼）",
    "麗德花園3號樓", "麗德花園 ３號樓",  # traditional characters: the same building
])
def test_spacing_punctuation_full_width_and_traditional_forms_are_one_place(address):
    assert normalise_address(address) == "丽德花园3号楼"


def test_latin_addresses_ignore_case_and_full_width():
    assert normalise_address("Building 3, Lide Garden") == normalise_address("ＢＵＩＬＤＩＮＧ３ lide garden")
    assert normalise_address("Building 3, Lide Garden") == "building3lidegarden"


def test_different_buildings_stay_apart():
    assert normalise_address("丽德花园3号楼") != normalise_address("丽德花园5号楼")


def test_separators_between_numbers_are_not_dropped():
    assert normalise_address("丽德花园1-1-101") != normalise_address("丽德花园11-101")


# ------------------------------------------------------------------------------ buckets


def test_address_bucket_first_then_grid_bucket():
    assert buckets("flying_wire", NEIGHBOUR_PLACE) == [
        ("flying_wire", "缤泰社区:addr:丽德花园3号楼"),
        ("flying_wire", "缤泰社区:grid:3-1"),
    ]


def test_neighbours_share_buckets():
    assert buckets("flying_wire", PLACE) == buckets("flying_wire", NEIGHBOUR_PLACE)


def test_no_grid_no_grid_bucket():
    place = Location(community="和平里社区", address="7号楼1单元")
    assert buckets("pipe_leak", place) == [("pipe_leak", "和平里社区:addr:7号楼1单元")]


def test_category_is_part_of_the_bucket():
    wire = buckets("flying_wire", PLACE)
    light = buckets("stairwell_light", PLACE)
    assert [scope for _, scope in wire] == [scope for _, scope in light]
    assert set(wire).isdisjoint(light)


def test_community_is_part_of_the_bucket():
    elsewhere = Location(community="和平里社区", address="丽德花园3号楼", grid="3-1")
    assert set(buckets("flying_wire", PLACE)).isdisjoint(buckets("flying_wire", elsewhere))


# ----------------------------------------------------------------------------- can_join


def _in_progress() -> IssueRecord:
    return acknowledge(primary_dispatched(), "power", "gd-017", T0 + timedelta(minutes=10))


def _resolved() -> IssueRecord:
    return resolve(_in_progress(), "power", "gd-017", "已剪除飞线", T0 + timedelta(hours=1))


@pytest.mark.parametrize("make, status, joinable", [
    (primary_received, IssueStatus.received, True),
    (primary_dispatched, IssueStatus.dispatched, True),
    (_in_progress, IssueStatus.in_progress, True),
    (_resolved, IssueStatus.resolved, False),
    (lambda: folded()[0], IssueStatus.merged, False),
])
def test_can_join_only_an_open_issue(make, status, joinable):
    record = make()
    assert record.status is status
    assert can_join(record) is joinable


def test_cannot_join_an_issue_that_points_elsewhere():
    record = primary_dispatched().model_copy(update={"merged_into": "WH-20261120-0042"})
    assert can_join(record) is False


# --------------------------------------------------------------------------------- join


def test_join_adds_the_reporter_and_a_timeline_step():
    primary = primary_dispatched()
    new = join(primary, NEWCOMER_ID, LATER)
    assert new.reporters == [NEWCOMER_ID]
    assert primary.reporters == []  # pure
    step = new.timeline[-1]
    assert (step.step, step.service, step.at) == ("reporter_joined", "routing", LATER)
    assert step.detail == (
        "WH-20261121-0002 reported the same problem and was merged into this issue")
    assert new.status is IssueStatus.dispatched


def test_join_is_idempotent():
    once = join(primary_dispatched(), NEWCOMER_ID, LATER)
    twice = join(once, NEWCOMER_ID, LATER + timedelta(seconds=5))
    assert twice is once
    assert twice.reporters == [NEWCOMER_ID]
    assert [e.step for e in twice.timeline].count("reporter_joined") == 1


def test_join_refuses_an_issue_closed_since_it_was_found_open():
    # can_join read the issue before; it was resolved by the time the join applies.
    with pytest.raises(PrimaryClosed, match="takes no new reporters"):
        join(_resolved(), NEWCOMER_ID, LATER)


def test_join_stays_idempotent_once_the_issue_has_closed():
    joined = join(primary_dispatched(), NEWCOMER_ID, LATER)
    closed = joined.model_copy(update={"status": IssueStatus.resolved})
    assert join(closed, NEWCOMER_ID, LATER) is closed  # a redelivered join changes nothing


def test_join_keeps_every_reporter_in_order():
    record = join(primary_dispatched(), NEWCOMER_ID, LATER)
    record = join(record, "WH-20261121-0005", LATER + timedelta(minutes=3))
    assert record.reporters == [NEWCOMER_ID, "WH-20261121-0005"]


# --------------------------------------------------------------------------------- fold


def test_fold_merges_the_newcomer_into_the_primary():
    primary = primary_dispatched()
    report = newcomer()
    cause = received_event(report)
    new, events = fold(report, primary, primary.category, cause, LATER)

    assert new.status is IssueStatus.merged
    assert new.merged_into == PRIMARY_ID
    assert new.category == "flying_wire"
    assert new.priority is Priority.urgent
    assert new.assignments == []
    assert report.status is IssueStatus.received  # pure
    step = new.timeline[-1]
    assert (step.step, step.service, step.at) == ("merged", "routing", LATER)
    assert step.detail == "same flying_wire problem as WH-20261121-0001: merged (共性问题统筹)"

    [event] = events
    assert isinstance(event, IssueMerged)
    assert event.causation_id == cause.event_id
    assert event.trace_id == NEWCOMER_TRACE
    assert event.issue_id == NEWCOMER_ID
    assert event.into_issue_id == PRIMARY_ID
    assert event.category == "flying_wire"
    assert event.occurred_at == LATER


@pytest.mark.parametrize("make", [primary_dispatched, lambda: folded()[0]])
def test_fold_needs_a_received_newcomer(make):
    report = make()
    with pytest.raises(InvalidTransition, match="already"):
        fold(report, primary_dispatched(), "pipe_leak", received_event(newcomer()), LATER)


def test_fold_into_a_primary_not_yet_dispatched():
    # Two neighbours report at once: the first claimed the buckets and is not routed yet.
    primary = primary_received()
    assert primary.category is None
    if not can_join(primary):  # a fix that refuses to join it is fine too
        return
    report = newcomer()
    new, [event] = fold(report, primary, "pipe_leak", received_event(report), LATER,
                        own_priority=Priority.high)
    assert new.category == event.category == "pipe_leak"
    assert new.priority is Priority.high  # the primary has none yet: its own routing's
    assert new.status is IssueStatus.merged
    assert new.merged_into == event.into_issue_id == PRIMARY_ID


# -------------------------------------------------------------------------------- leave


def test_leave_removes_the_reporter_only():
    record = join(primary_dispatched(), NEWCOMER_ID, LATER)
    record = join(record, "WH-20261121-0005", LATER)
    split_at = LATER + timedelta(hours=1)
    new = leave(record, NEWCOMER_ID, split_at)
    assert new.reporters == ["WH-20261121-0005"]
    assert record.reporters == [NEWCOMER_ID, "WH-20261121-0005"]  # pure
    step = new.timeline[-1]
    assert (step.step, step.at, step.detail) == (
        "reporter_split", split_at, "WH-20261121-0002 was split off by the desk")


def test_leave_is_a_no_op_once_the_report_is_off_the_issue():
    """The split takes the report off the issue it joined before it unfolds the report: a
    split that stopped in between is finished by splitting again, with no second step."""
    record = leave(join(primary_dispatched(), NEWCOMER_ID, LATER), NEWCOMER_ID, LATER)
    assert leave(record, NEWCOMER_ID, LATER + timedelta(hours=2)) is record


def _awaiting_rating() -> IssueRecord:
    """:func:`_resolved` with the newcomer joined, its rating window open."""
    record = join(_in_progress(), NEWCOMER_ID, LATER)
    record = resolve(record, "power", "gd-017", "已剪除飞线", T0 + timedelta(hours=1))
    return record.model_copy(update={"feedback_due": T0 + timedelta(days=7)})


def _rated_by(reporter: str, rating: Rating) -> IssueRecord:
    record = _awaiting_rating()
    rated, _ = feedback.rate(record, FeedbackGrant(reporter_issue_id=reporter,
                                                   issue_id=PRIMARY_ID, cycle=0),
                             rating, None, RULES, T0 + timedelta(hours=2))
    return rated


@pytest.mark.parametrize("make, why", [
    # The tester's case: the neighbour's "satisfied" closed the issue.
    (lambda: _rated_by(NEWCOMER_ID, Rating.satisfied),
     f"the reporter of {NEWCOMER_ID} has rated issue {PRIMARY_ID}; "
     "the report can no longer be split from it"),
    # Their "not satisfied" sent power back: the redo is done for them.
    (lambda: _rated_by(NEWCOMER_ID, Rating.unsatisfied),
     f"the reporter of {NEWCOMER_ID} has rated issue {PRIMARY_ID}; "
     "the report can no longer be split from it"),
    # Closed on the first reporter's word: the closure rests on the work done for all.
    (lambda: _rated_by(PRIMARY_ID, Rating.satisfied),
     f"issue {PRIMARY_ID} is closed; {NEWCOMER_ID} can no longer be split from it"),
])
def test_a_report_whose_reporter_rated_or_of_a_closed_issue_is_not_split(make, why):
    primary = make()
    assert split_refusal(primary, NEWCOMER_ID) == why
    with pytest.raises(InvalidTransition) as refused:
        leave(primary, NEWCOMER_ID, T0 + timedelta(hours=3))
    assert str(refused.value) == why
    assert NEWCOMER_ID in primary.reporters


@pytest.mark.parametrize("make", [primary_dispatched, _in_progress, _awaiting_rating,
                                  lambda: _rated_by(PRIMARY_ID, Rating.unsatisfied)])
def test_a_report_of_an_open_or_resolved_issue_it_has_not_rated_is_split_as_before(make):
    """Open, resolved and waiting for ratings, or reopened by another reporter's answer."""
    primary = join(make(), NEWCOMER_ID, LATER)
    assert split_refusal(primary, NEWCOMER_ID) is None
    assert leave(primary, NEWCOMER_ID, T0 + timedelta(hours=3)).reporters == []


# ------------------------------------------------------------------------------- unfold


@pytest.mark.parametrize("has_contact", [True, False])
def test_unfold_sends_the_report_back_to_routing_on_its_own(has_contact):
    merged, _ = folded()
    split_at = LATER + timedelta(hours=1)
    new, again = unfold(merged, has_contact, split_at)

    assert new.status is IssueStatus.received
    assert new.merged_into is None
    assert new.priority is None
    assert merged.status is IssueStatus.merged  # pure
    step = new.timeline[-1]
    assert (step.step, step.service, step.at) == ("split", "routing", split_at)
    assert step.detail == "split from WH-20261121-0001 by the desk; routed on its own"

    assert isinstance(again, IssueReceived)
    assert again.allow_merge is False
    assert again.trace_id == NEWCOMER_TRACE
    assert again.issue_id == NEWCOMER_ID
    assert again.has_contact is has_contact
    assert again.category is None
    assert again.description == "A cable is hanging down by building 3, not sure if it's live"
    assert again.location == NEIGHBOUR_PLACE
    assert (again.channel, again.language) == (Channel.app, Language.en)
    assert again.occurred_at == split_at


def test_unfold_gives_a_fresh_event_id():
    report = newcomer()
    cause = received_event(report)
    merged, _ = fold(report, primary_dispatched(), "pipe_leak", cause, LATER)
    _, again = unfold(merged, True, LATER + timedelta(hours=1))
    assert again.event_id != cause.event_id


@pytest.mark.parametrize("make", [newcomer, primary_dispatched, _resolved])
def test_unfold_needs_a_merged_issue(make):
    with pytest.raises(InvalidTransition, match="not merged"):
        unfold(make(), True, LATER)
    with pytest.raises(InvalidTransition, match="not merged"):
        must_be_merged(make())


def test_a_merged_group_is_the_same_whichever_report_it_is_read_from():
    # each report has its own resident, and whoever masks one report's text masks them all
    merged, primary = folded()
    third = "WH-20261121-0003"
    primary = join(primary, third, LATER)
    group = {PRIMARY_ID, NEWCOMER_ID, third}
    assert merged_group(primary, None) == group
    assert merged_group(merged, primary) == group
    assert merged_group(newcomer(), None) == {NEWCOMER_ID}


def test_a_split_report_keeps_the_category_the_desk_gave_it():
    # The desk filed the newcomer as pipe_leak itself (a category on POST /issues wins over
    # the model); a wrong merge undone must not hand that report back to the model.
    report = receive(NEWCOMER_ID, NEWCOMER_TRACE, "楼道灯坏了", "pipe_leak", NEIGHBOUR_PLACE,
                     Channel.desk, Language.zh, LATER)
    given = Routing(rule="pipe_leak", category_source="given")
    merged, _ = fold(report, primary_dispatched(), "pipe_leak", received_event(report), LATER,
                     routing=given)
    assert merged.routing == given
    _, again = unfold(merged, True, LATER + timedelta(hours=1))
    assert again.category == "pipe_leak"


def test_a_split_report_the_model_read_is_read_again():
    report = newcomer()
    read = Routing(rule="flying_wire", category_source="model", confidence=0.97)
    merged, _ = fold(report, primary_dispatched(), "flying_wire", received_event(report), LATER,
                     routing=read)
    _, again = unfold(merged, True, LATER + timedelta(hours=1))
    assert again.category is None

"""The desk's call-back (电话回访) for a merged neighbour, on the real services (RabbitMQ,
Redis, PostgreSQL) and the desk's pages.

A tester reported two flying-wire reports from two residents, both through the desk
channel (the second merged into the first), resolved by power; the desk recorded the
neighbour's 满意, which closed the issue. Then:

- the first reporter's card on the relay list (待转告) still said to ask whether they were
  satisfied, an answer nothing could record any more, and the neighbour's card asked them
  the question they had just answered;
- 拆分 on the neighbour's report still split it, sending power a fresh job while the
  closure rested on that neighbour's rating.
"""

from __future__ import annotations

import re

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.relays import MOOT_NOTE
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from services.web.service import WebService
from shared import config as cfg
from shared.auth import issue_token
from tests.support.auth import staff_headers
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
WIRE = {"description": "楼道口有根电线耷拉下来，不知道有没有电",
        "location": {"community": "缤泰社区", "address": "丽德花园6号楼"}}
FIRST = {"name": "孙大爷", "phone": "13812345678"}  # both hear back through the desk
NEIGHBOUR = {"name": "钱阿姨", "phone": "13912345678"}
REFUSED = "这位居民已经评价过并入的问题（满意使它结案，不满意使它重办），本报告不能再拆分"


def signed_in(base: str, secret: str) -> requests.Session:
    desk = requests.Session()
    form = desk.get(f"{base}/signin", timeout=5).text
    signed = desk.post(f"{base}/signin", timeout=5, allow_redirects=False, data={
        "token": issue_token("desk", "d-1", secret), "csrf": CSRF.search(form).group(1)})
    assert signed.status_code == 303, signed.text
    return desk


def card_of(page: str, issue_id: str) -> str:
    """The relay page's card for ``issue_id`` (one card each here: one resident each)."""
    [card] = re.findall(rf'<article [^>]*data-issue="{issue_id}">.*?</article>', page, re.S)
    return card


def messages_on(card: str) -> dict[str, str | None]:
    """Each message on a card by its kind's label: why it needs no asking, or None."""
    return {kind: moot or None for moot, kind in re.findall(
        r'<li id="m-[0-9a-f]{24}"(?: class="relay-moot" data-moot="(\w+)")?>'
        r'<span class="relay-kind">([^<]+)</span>', card)}


def test_a_closed_issues_rating_requests_leave_with_their_cards_and_the_rater_is_not_split(
        runner_factory, whistle_config):
    runner_factory(whistle_config, IntakeService, RoutingService, AgencyService,
                   NotifyService, WebService).start()
    base, secret = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}", whistle_config[cfg.SECRET]
    api, power = staff_headers("desk", "d-1", secret), staff_headers("power", "p-1", secret)

    def issue(issue_id):
        return requests.get(f"{base}/issues/{issue_id}", headers=api, timeout=10).json()

    def submit(contact):
        made = requests.post(f"{base}/issues", json={**WIRE, "contact": contact}, headers=api,
                             timeout=10)
        assert made.status_code == 201, made.text
        return made.json()["issue_id"]

    first = submit(FIRST)
    wait_for(lambda: issue(first)["status"], lambda s: s == "dispatched")
    neighbour = submit(NEIGHBOUR)
    wait_for(lambda: issue(neighbour)["merged_into"], lambda into: into == first)
    for step, body in (("acknowledge", None), ("resolve", {"note": "已剪除飞线"})):
        done = requests.post(f"{base}/agencies/power/assignments/{first}/{step}",
                             headers=power, json=body, timeout=10)
        assert done.status_code == 200, done.text
    desk_token = issue_token("desk", "d-1", secret)
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        def waiting(kind):
            return {i["issue_id"] for i in rpc.notify.desk_relays(desk_token)
                    if i["kind"] == kind}

        wait_for(lambda: waiting("rating_request"), lambda ids: ids == {first, neighbour})
        desk = signed_in(base, secret)
        page = desk.get(f"{base}/desk/relay", timeout=10).text
        # Both still to ask: the issue waits for their ratings.
        assert messages_on(card_of(page, first))["邀请评价"] is None
        assert messages_on(card_of(page, neighbour))["邀请评价"] is None

        # The desk calls the neighbour back and records their 满意 on their report's page.
        form = desk.get(f"{base}/desk/issues/{neighbour}", timeout=10).text
        assert f'action="/desk/issues/{neighbour}/split"' in form  # resolved, not rated
        recorded = desk.post(f"{base}/desk/issues/{neighbour}/rating", timeout=10,
                             allow_redirects=False, data={
                                 "csrf": CSRF.search(form).group(1), "rating": "satisfied",
                                 "method": "phone"})
        assert recorded.status_code == 303, recorded.text
        assert issue(first)["status"] == "closed"
        wait_for(lambda: waiting("closed"), lambda ids: ids == {first, neighbour})

        page = desk.get(f"{base}/desk/relay", timeout=10).text
        card = card_of(page, first)
        said = messages_on(card)
        # Every message still to say is there; the question is said to need no asking.
        assert said == {"受理": None, "派单": None, "报到": None, "办结": None,
                        "邀请评价": "closed", "结案": None}, said
        assert "不必再问：问题已结案，评价已无法登记。" in card
        assert "已转告（5 条）" in card
        assert messages_on(card_of(page, neighbour))["邀请评价"] == "rated"
        assert "不必再问：这位居民已经评价过了" in card_of(page, neighbour)

        # Relayed, the card leaves the list whole: nothing of it is left to relay, and the
        # question's record says it was not asked; the others carry the desk's note only.
        action = re.search(r'<form method="post" action="([^"]+)"', card).group(1)
        relayed = desk.post(f"{base}{action}", timeout=10, allow_redirects=False, data={
            "csrf": CSRF.search(page).group(1), "note": "已电话告知",
            "also": re.findall(r'name="also" value="(\w+)"', card),
            "moot": re.findall(r'name="moot" value="(\w+)"', card)})
        assert relayed.status_code == 303, relayed.text
        assert not [i for i in rpc.notify.desk_relays(desk_token) if i["issue_id"] == first]
        notes = {r["kind"]: r.get("relay_note") for r in rpc.notify.list_notifications(first)}
        assert notes["rating_request"] == f"{MOOT_NOTE}；已电话告知"
        assert notes["closed"] == notes["received"] == "已电话告知"

        # The neighbour's report can no longer be split: the page says why instead of the
        # button, a page drawn before gets the refusal, and so does the API.
        form = desk.get(f"{base}/desk/issues/{neighbour}", timeout=10).text
        assert f'action="/desk/issues/{neighbour}/split"' not in form
        assert f">{REFUSED}</p>" in form[form.index('id="split-refused"'):]
        split = desk.post(f"{base}/desk/issues/{neighbour}/split", timeout=10,
                          allow_redirects=False, data={"csrf": CSRF.search(form).group(1)})
        assert split.status_code == 409 and REFUSED in split.text
        split = requests.post(f"{base}/issues/{neighbour}/split", headers=api, timeout=10)
        assert split.status_code == 409, split.text
        assert split.json()["error"] == {
            "code": "invalid_transition",
            "message": f"the reporter of {neighbour} has rated issue {first}; "
                       "the report can no longer be split from it"}
    assert (issue(neighbour)["status"], issue(neighbour)["merged_into"]) == ("merged", first)
    assert issue(first)["reporters"] == [neighbour]
    assert [a["agency"] for a in issue(first)["assignments"]] == ["power"]

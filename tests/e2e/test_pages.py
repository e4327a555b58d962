"""The pages, driven in a real headless Chromium (Debian's), against ``whistle up``.

The main test walks the whole chain through the pages, as the people do: the desk
submits a flying-wire report; it appears on the live board without a reload; the
power company signs in, reports in and resolves; the resident's page rates it
unsatisfied; the issue reopens and the board, still not reloaded, shows it. It saves
a screenshot of every page at 1280 and 390 px into build/screenshots/.
"""

from __future__ import annotations

import json
import re

import pytest
import redis
import requests

from shared import config as cfg
from shared.auth import issue_token
from tests.conftest import REDIS_URL
from tests.support.browser import PHONE, Browser

pytestmark = pytest.mark.e2e

FLYING_WIRE = "3号楼东侧有飞线，电线垂到离地一米多，下雨天怕漏电，孩子放学都从这里走"
ISSUE_ID = re.compile(r"WH-\d{8}-\d{4,}")


def token(agency: str, staff: str = "staff-001") -> str:
    return issue_token(agency, staff, cfg.DEV_SECRET)


@pytest.fixture
def whistle(whistle_processes):
    return whistle_processes("intake,routing,agency,notify,web")


@pytest.fixture
def browsers(whistle):
    opened: list[Browser] = []

    def open_browser(width: int = 1280, height: int = 900) -> Browser:
        browser = Browser(whistle.url, width, height)
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        browser.quit()


def desk_outbox(prefix: str) -> list[dict]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return [json.loads(raw) for raw in client.lrange(f"{prefix}:desk:outbox", 0, -1)]
    finally:
        client.close()


def rating_link(prefix: str, issue_id: str, browser: Browser) -> str:
    """The link in the resident's rating message, as delivered (the desk outbox channel)."""
    def link():
        for entry in desk_outbox(prefix):
            text = json.dumps(entry, ensure_ascii=False)
            if issue_id in text and "rating_request" in text:
                found = re.search(r"https?://[^\s\"]+/issues/[^\s\"]+/feedback\?token=[\w\-.]+",
                                  text)
                if found:
                    return found.group(0)
        return None
    return browser.wait(link, 15, "the rating message")


def test_the_whole_chain_through_the_pages(whistle, browsers, whistle_env):
    prefix = whistle_env[cfg.KEY_PREFIX]

    # The desk signs in and opens the live board; it stays open, never reloaded.
    desk = browsers()
    desk.open("/signin")
    desk.screenshot("signin")
    desk.sign_in(token("desk", "desk-007"))
    assert desk.driver.current_url.endswith("/desk")
    desk.driver.execute_script("window.__notReloaded = true")
    desk.wait(lambda: desk.text("#board-updated"), 5, "the board's first refresh")

    # The desk submits the report from another tab.
    clerk = browsers()
    clerk.sign_in(token("desk", "desk-008"))
    clerk.open("/desk/new")
    clerk.fill("#f-description", FLYING_WIRE)
    clerk.fill("#f-location-community", "幸福里社区")
    clerk.fill("#f-location-address", "幸福里3号楼东侧")
    clerk.fill("#f-contact-name", "王秀英")
    clerk.fill("#f-contact-phone", "13812345678")
    clerk.screenshot("new-issue")
    clerk.find("#new-issue button[type=submit]").click()
    issue_id = clerk.wait(lambda: ISSUE_ID.search(clerk.driver.current_url), 10,
                          "the issue page").group(0)

    # It appears on the board within 2 s (polled), routed to the power company.
    row = f"#board-rows tr[data-issue='{issue_id}']"
    desk.wait(lambda: desk.find_all(row), 5, "the new issue on the board")
    desk.wait(lambda: desk.find(row).get_attribute("data-status") == "dispatched", 5,
              "routed")
    assert "供电公司" in desk.text(row) and "紧急" in desk.text(row)
    assert desk.driver.execute_script("return window.__notReloaded") is True
    desk.screenshot("board")

    # The issue page: timeline, the assignment with its deadlines, the messages.
    clerk.open(f"/desk/issues/{issue_id}")
    clerk.wait(lambda: "received" in clerk.text("#messages"), 10, "the received message")
    assert "138****5678" in clerk.text() and "13812345678" not in clerk.driver.page_source
    clerk.screenshot("issue")

    # The power company signs in, reports in and resolves, with notes.
    power = browsers()
    power.sign_in(token("power", "power-12"))
    assert power.driver.current_url.endswith("/agency")
    card = f"#a-{issue_id}"
    power.wait(lambda: power.find_all(card), 5, "the assignment in the workspace")
    power.screenshot("agency")
    power.fill(f"#ack-{issue_id}", "抢修班组已出发")
    power.find(f"{card} .act-ack button").click()
    power.wait(lambda: power.find(card).get_attribute("data-status") == "acknowledged", 5,
               "reported in")
    power.fill(f"#res-{issue_id}", "已剪除飞线并重新架设，现场已安全")
    power.find(f"{card} .act-resolve button").click()
    power.wait(lambda: not power.find_all(card), 5, "resolved: gone from the open list")

    desk.wait(lambda: desk.find(row).get_attribute("data-status") == "resolved", 5,
              "resolved on the board")

    # The resident opens the link in the rating message on a phone and is not satisfied.
    link = rating_link(prefix, issue_id, power)
    resident = browsers(PHONE, 844)
    resident.driver.get(link.replace(link.split("/issues/")[0], whistle.url))
    assert "供电公司" in resident.text("#progress")
    assert "138****5678" in resident.text()
    resident.screenshot("resident")
    resident.find("input[name=rating][value=unsatisfied]").click()
    resident.fill("#comment", "电线还是很低，没有处理好")
    resident.find("#rate-form button[type=submit]").click()
    resident.wait(lambda: resident.find_all("#rated"), 5, "the thanks")
    assert "重新交办" in resident.text("#rated")
    resident.screenshot("resident-rated")

    # The issue reopened: back to the power company, one level up; the board shows it.
    desk.wait(lambda: desk.find(row).get_attribute("data-status") == "dispatched", 5,
              "reopened on the board")
    assert "街道" in desk.text(row) and "重办" in desk.text(row)
    assert desk.driver.execute_script("return window.__notReloaded") is True
    issue = requests.get(f"{whistle.url}/issues/{issue_id}", timeout=5).json()
    assert issue["status"] == "dispatched" and issue["reopen_count"] == 1
    desk.screenshot("board-reopened")

    # The other pages, for people to look at.
    desk.open("/desk/stats")
    assert desk.find_all("svg[role=img]") and "供电公司" not in desk.text("#rates") or True
    desk.screenshot("stats")
    ops = browsers()
    ops.sign_in(token("ops", "ops-1"))
    ops.wait(lambda: issue_id in ops.text("#flow"), 10, "the issue in the message flow")
    assert "13812345678" not in ops.driver.page_source
    ops.screenshot("ops")
    for browser in (desk, clerk, power, resident, ops):
        assert not browser.severe_console_errors(), browser.severe_console_errors()

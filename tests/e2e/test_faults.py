"""Failure paths with real processes: SIGKILL a service mid-load, restart it, lose nothing.

The full fault suite (issue 6) grows from here; this is the representative case
that runs in CI: routing killed while issues pour in.
"""

import json
import time

import pytest
import requests

from tests.e2e.test_whole_chain import poll
from tests.support.auth import DESK

pytestmark = pytest.mark.e2e

TEXTS = ["楼上漏水，卫生间天花板一直滴水", "The lift is broken again, elderly can't get upstairs",
         "停水了，一点水都没有", "有煤气味，挺冲的", "路边井盖破了一个大洞"]


def submit(base, n, first=0):
    """``n`` distinct problems (different homes, so none merges with another)."""
    ids = []
    for i in range(first, first + n):
        response = requests.post(f"{base}/issues", headers=DESK, timeout=10, json={
            "description": TEXTS[i % len(TEXTS)],
            "location": {"community": "缤泰社区", "address": f"丽德花园{i % 9 + 1}号楼{i}"},
            "contact": {"phone": f"1391234{i:04d}"}})
        assert response.status_code == 201, response.text
        ids.append(response.json()["issue_id"])
    return ids


def test_routing_killed_mid_load_loses_nothing_and_duplicates_nothing(
        whistle_processes, redis_client, redis_prefix):
    desk = whistle_processes("intake,agency,notify")
    routing = whistle_processes("routing")

    ids = submit(desk.url, 15)
    routing.kill()  # SIGKILL: whatever it was handling goes back to the broker
    ids += submit(desk.url, 15, first=15)
    time.sleep(0.5)
    routing = whistle_processes("routing")

    def dispatched():
        return [requests.get(f"{desk.url}/issues/{i}", headers=DESK).json()["status"] for i in ids]

    poll(dispatched, lambda statuses: all(s == "dispatched" for s in statuses), timeout=40)

    def received_counts():
        counts = []
        for issue_id in ids:
            records = redis_client.hvals(f"{redis_prefix}:issue:{issue_id}:notifications")
            counts.append(sum(json.loads(r)["kind"] == "received" for r in records))
        return counts

    assert poll(received_counts, lambda c: all(n >= 1 for n in c)) == [1] * len(ids)
    for issue_id in ids:
        timeline = requests.get(f"{desk.url}/issues/{issue_id}", headers=DESK).json()["timeline"]
        assert [e["step"] for e in timeline].count("dispatched") == 1

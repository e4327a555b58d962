"""Deadlines across process lifetimes: a restart, and two routing instances."""

import time
from collections import Counter
from datetime import datetime

import pytest
import requests

from shared import config as cfg
from tests.e2e.test_faults import submit
from tests.e2e.test_whole_chain import poll
from tests.support.auth import DESK
from tests.support.rules import fast_rules

pytestmark = pytest.mark.e2e


def escalations(base, issue_id):
    events = requests.get(f"{base}/issues/{issue_id}/events", headers=DESK).json()["events"]
    return [(e["agency"]["agency"], e["deadline"], e["missed"]) for e in events
            if e["event_type"] == "issue.escalated"]


def test_deadline_passed_while_routing_was_down_escalates_when_it_is_back(
        whistle_processes, whistle_env, tmp_path):
    whistle_env[cfg.RULES_FILE] = str(fast_rules(tmp_path, acknowledge="3s"))
    desk = whistle_processes("intake,agency,notify")
    routing = whistle_processes("routing")
    [issue_id] = submit(desk.url, 1)
    dispatched = poll(lambda: requests.get(f"{desk.url}/issues/{issue_id}", headers=DESK).json(),
                      lambda i: i["status"] == "dispatched")
    first_deadline = dispatched["assignments"][0]["acknowledge_by"]
    routing.stop()
    time.sleep(4)  # the acknowledge deadline passes while nobody watches
    assert escalations(desk.url, issue_id) == []

    restarted_at = time.time()
    whistle_processes("routing")
    seen = poll(lambda: escalations(desk.url, issue_id), lambda e: len(e) >= 1, timeout=10)
    agency, kind, missed = seen[0]
    assert (kind, missed.replace("+00:00", "Z")) == ("acknowledge",
                                                     first_deadline.replace("+00:00", "Z"))
    assert max(Counter(seen).values()) == 1  # each (agency, deadline) escalated once
    events = requests.get(f"{desk.url}/issues/{issue_id}/events", headers=DESK).json()["events"]
    first = next(e for e in events if e["event_type"] == "issue.escalated")
    assert first["level"] == "street"
    assert datetime.fromisoformat(first["occurred_at"]).timestamp() >= restarted_at


def test_two_routing_instances_escalate_each_deadline_once(whistle_processes, whistle_env,
                                                           tmp_path):
    whistle_env[cfg.RULES_FILE] = str(fast_rules(tmp_path, acknowledge="2s"))
    desk = whistle_processes("intake,agency,notify")
    whistle_processes("routing")
    whistle_processes("routing")
    ids = submit(desk.url, 8, first=50)

    def levels():
        return [requests.get(f"{desk.url}/issues/{i}", headers=DESK).json()["escalation_level"] for i in ids]

    poll(levels, lambda lv: all(level == "district" for level in lv), timeout=30)
    for issue_id in ids:
        seen = Counter(escalations(desk.url, issue_id))
        assert seen and max(seen.values()) == 1, seen
        timeline = requests.get(f"{desk.url}/issues/{issue_id}", headers=DESK).json()["timeline"]
        assert sum(e["step"] == "escalated" for e in timeline) == len(seen)

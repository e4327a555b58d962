"""One reload call reaches every routing process, not only the one that took the RPC.

Two ``whistle up --services routing`` processes share routing's queue. The rules file
gains a keyword; ``whistle routing reload --rules`` is run once; every report submitted
afterwards is routed by the new rules, whichever process takes it
(``services/routing/reloads.py``). A broken file is refused by the command, and both
processes keep the rules they have.
"""

import subprocess

import pytest
import requests

from shared import config as cfg
from tests.e2e.conftest import WHISTLE
from tests.e2e.test_whole_chain import poll
from tests.integration.test_rules_reload import NEW_KEYWORD_TEXT, shipped_copy
from tests.support.auth import DESK

pytestmark = pytest.mark.e2e

REPORTS = 12


def submit(base: str, n: int, first: int) -> list[str]:
    ids = []
    for i in range(first, first + n):
        response = requests.post(f"{base}/issues", headers=DESK, timeout=10, json={
            "description": NEW_KEYWORD_TEXT,
            "location": {"community": "缤泰社区", "address": f"丽德花园{i % 9 + 1}号楼{i}"}})
        assert response.status_code == 201, response.text
        ids.append(response.json()["issue_id"])
    return ids


def routed(base: str, ids: list[str]) -> list[tuple[str, str | None]]:
    """(status, category) of each issue."""
    issues = [requests.get(f"{base}/issues/{i}", headers=DESK, timeout=10).json() for i in ids]
    return [(issue["status"], issue["category"]) for issue in issues]


def all_routed(base: str, ids: list[str]) -> list[str | None]:
    """The categories, once routing has decided on every issue."""
    decided = poll(lambda: routed(base, ids),
                   lambda issues: all(status != "received" for status, _ in issues))
    return [category for _, category in decided]


def reload_rules(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([WHISTLE, "routing", "reload", "--rules"], env=env, text=True,
                          capture_output=True, timeout=60)


def test_one_reload_call_reloads_every_routing_process(whistle_processes, whistle_env,
                                                       tmp_path):
    rules = shipped_copy(tmp_path / "rules.yaml")
    whistle_env.update({cfg.RULES_FILE: str(rules), cfg.ROUTING_MODEL: "keywords"})
    desk = whistle_processes("intake,agency,notify")
    routers = [whistle_processes("routing"), whistle_processes("routing")]
    before = submit(desk.url, 4, first=0)
    assert "gas_leak" not in all_routed(desk.url, before)  # the keyword is not there yet

    shipped_copy(rules, new_keyword=True, bad=True)
    refused = reload_rules(whistle_env)
    assert refused.returncode == 1 and "unknown agency 'gaz'" in refused.stderr, refused
    assert "gas_leak" not in all_routed(desk.url, submit(desk.url, 2, first=50))

    shipped_copy(rules, new_keyword=True)
    done = reload_rules(whistle_env)
    assert done.returncode == 0, done.stderr
    assert "every other routing process follows" in done.stdout
    # Each process says so in its log: the one asked at once, the other when it follows.
    poll(lambda: [r.log().count("rules reloaded from") for r in routers],
         lambda counts: all(n >= 1 for n in counts), timeout=15)

    after = submit(desk.url, REPORTS, first=100)
    assert all_routed(desk.url, after) == ["gas_leak"] * REPORTS
    # Both processes routed some of them: both reloaded, not just one.
    taken = [sum(i in r.log() for i in after) for r in routers]
    assert all(n >= 1 for n in taken), taken

"""No token anywhere: a resolved, rated issue leaves no token, phone or name in anything
people can read (every notification, event, log line, `whistle tail` and `whistle trace`
line, the audit log, and the desk's and the agency's views, a rating comment holding the
resident's name and number included) and no token in the desk's outbox (which holds the numbers the
desk calls back), while the residents' own channel did carry their links."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import redis
import requests

from shared import config as cfg
from shared.auth import issue_token
from tests.conftest import REDIS_URL
from tests.e2e import test_operators
from tests.e2e.conftest import WHISTLE
from tests.e2e.test_whole_chain import poll
from tests.integration import test_notify_channels
from tests.support.auth import DESK

gateway = test_notify_channels.gateway  # the residents' phones: a real webhook receiver
tail_process = test_operators.tail_process
pytestmark = pytest.mark.e2e

PHONES = ("13812345678", "13987654321")
NAMES = ("孙建国", "李秀英")
JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")
LINK = re.compile(r"/issues/(WH-\d{8}-\d{4,})/feedback\?token=([\w\-.]+)")
WIRE = "丽德花园3号楼前面有根电线耷拉下来，离地不到两米，不知道有没有电"
PLACE = {"community": "缤泰社区", "address": "丽德花园3号楼南侧"}


def links(phone) -> list[tuple[str, str]]:
    """(report, token) of every rating link the residents' phones received."""
    found = []
    for request in phone.requests:
        message = json.loads(request.body)
        found += LINK.findall(message["text"])
    return found


def test_a_resolved_issue_leaves_no_token_phone_or_name_in_readable_text(
        whistle_processes, whistle_env, gateway, tail_process, tmp_path):
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    whistle_env[cfg.NOTIFY_WEBHOOK_URL] = gateway.url
    app = whistle_processes()
    tail, tail_out = tail_process("--json")
    base = app.url
    # One resident hears by SMS (the webhook); a neighbour reporting the same wire, merged
    # into the issue, hears through the desk.
    own = requests.post(f"{base}/issues", headers=DESK, json={
        "description": WIRE, "location": PLACE, "channel": "hotline",
        "contact": {"name": NAMES[0], "phone": PHONES[0], "preferred_channel": "webhook"}})
    issue_id = own.json()["issue_id"]
    poll(lambda: requests.get(f"{base}/issues/{issue_id}", headers=DESK).json()["status"],
         lambda s: s == "dispatched")
    neighbour_id = requests.post(f"{base}/issues", headers=DESK, json={
        "description": "3号楼南边电线垂下来了", "location": PLACE, "channel": "desk",
        "contact": {"name": NAMES[1], "phone": PHONES[1]}}).json()["issue_id"]
    poll(lambda: requests.get(f"{base}/issues/{neighbour_id}", headers=DESK).json()["status"],
         lambda s: s == "merged")
    issue = requests.get(f"{base}/issues/{issue_id}", headers=DESK).json()
    for agency in [a["agency"] for a in issue["assignments"]]:
        auth = {"Authorization": f"Bearer {issue_token(agency, agency + '-1', cfg.DEV_SECRET)}"}
        url = f"{base}/agencies/{agency}/assignments/{issue_id}"
        assert requests.post(f"{url}/acknowledge", headers=auth).status_code == 200
        assert requests.post(f"{url}/resolve", headers=auth,
                             json={"note": "已剪除飞线"}).status_code == 200

    # The resident's phone gets the link; the desk resends it without seeing it.
    first = poll(lambda: links(gateway), lambda found: len(found) >= 1)
    resent = subprocess.run([WHISTLE, "rating-link", "resend", issue_id, "--url", base],
                            env=whistle_env, capture_output=True, text=True, timeout=60)
    assert resent.returncode == 0, resent.stderr
    assert "via webhook" in resent.stdout
    received = poll(lambda: links(gateway), lambda found: len(found) >= 2)
    tokens = [token for _, token in received]
    assert len(set(tokens)) == 2 and first[0][0] == issue_id
    # The neighbour hears through the desk, whose copy has no usable link; the desk has
    # one sent to their phone instead.
    resent = subprocess.run([WHISTLE, "rating-link", "resend", neighbour_id, "--url", base],
                            env=whistle_env, capture_output=True, text=True, timeout=60)
    assert resent.returncode == 0 and "via webhook" in resent.stdout, resent.stderr
    received = poll(lambda: links(gateway), lambda found: len(found) >= 3)
    assert received[2][0] == neighbour_id
    tokens = [token for _, token in received]
    rated = requests.post(f"{base}/issues/{issue_id}/feedback?token={tokens[1]}",
                          json={"rating": "satisfied",  # a comment with their name and number
                                "comment": f"处理得很及时，我是{NAMES[0]}，电话{PHONES[0]}"})
    assert rated.status_code == 200 and rated.json()["status"] == "closed"
    told = poll(lambda: requests.get(f"{base}/issues/{issue_id}/notifications",
                                     headers=DESK).json()["notifications"],
                lambda n: n and n[-1]["kind"] == "closed" and all(m["status"] == "sent"
                                                                  for m in n))
    assert any("feedback?token=[redacted]" in m["text"] for m in told)

    # Everything people can read about it.
    readable = {}
    for report in (issue_id, neighbour_id):
        for path in ("", "/notifications", "/events"):
            readable[f"GET /issues/{report}{path}"] = requests.get(
                f"{base}/issues/{report}{path}", headers=DESK).text
    # The agency's view has no resident's comment at all; the desk's has it, masked.
    power = {"Authorization": f"Bearer {issue_token('power', 'power-1', cfg.DEV_SECRET)}"}
    readable["GET /issues/{id} as the agency"] = requests.get(
        f"{base}/issues/{issue_id}", headers=power).text
    assert "处理得很及时" not in readable["GET /issues/{id} as the agency"]
    assert "处理得很及时" in readable[f"GET /issues/{issue_id}"]
    for args in ([], ["--json"]):
        trace = subprocess.run([WHISTLE, "trace", issue_id, "--url", base, *args],
                               env=whistle_env, capture_output=True, text=True, timeout=60)
        assert trace.returncode == 0, trace.stderr
        readable[f"whistle trace {args}"] = trace.stdout + trace.stderr
    audit = subprocess.run([WHISTLE, "audit", "--json", "--limit", "1000"], env=whistle_env,
                           capture_output=True, text=True, timeout=60)
    readable["whistle audit"] = audit.stdout
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        readable["the desk outbox"] = json.dumps(client.lrange(
            f"{whistle_env[cfg.KEY_PREFIX]}:desk:outbox", 0, -1), ensure_ascii=False)
    finally:
        client.close()
    poll(lambda: tail_out.read_text(), lambda text: "issue.closed" in text)
    readable["whistle tail"] = tail_out.read_text()
    readable["the services' log"] = app.log_path.read_text(errors="replace")
    assert all(readable.values())
    assert issue_id in readable["whistle tail"] and "rating_link.resend" in readable[
        "whistle audit"]

    for where, text in readable.items():
        for token in tokens:
            assert token not in text, f"a rating token in {where}"
        assert not JWT.search(text), f"a token in {where}: {JWT.search(text).group(0)[:20]}…"
        if where == "the desk outbox":
            continue  # the desk calls the residents back: it holds their numbers, no token
        assert not test_operators.PHONE_ANYWHERE.search(text), f"a phone number in {where}"
        for secret in (*PHONES, *NAMES):
            assert secret not in text, f"{secret} in {where}"
    # The desk saw that the neighbour was asked to rate, without a link it could use.
    neighbour_told = json.loads(readable[f"GET /issues/{neighbour_id}/notifications"])
    asked = [m for m in neighbour_told["notifications"] if m["kind"] == "rating_request"]
    # (The desk's own copy, relayed by phone, has no link at all; one resent to their
    # phone shows it redacted.)
    assert asked and all("http" not in m["text"] if m["channel"] == "desk"
                         else "token=[redacted]" in m["text"] for m in asked)
    tail.terminate()

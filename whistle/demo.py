"""``whistle demo``: realistic problems through a running Whistle, over HTTP only.

Each case is submitted as the desk would, every assigned agency reports in and
resolves with its own token, and the messages each resident received are shown.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from shared.auth import issue_token
from whistle.web_client import call

# Cases from practice.md, in the residents' own (colloquial, sometimes mixed) words.
DEMO_CASES: list[dict[str, Any]] = [
    {
        "title": "Flying wire (urgent, power)",
        "description": "丽德花园3号楼前面有根电线耷拉下来，离地不到两米，不知道有没有电，孩子放学都从这儿过！",
        "location": {"community": "缤泰社区", "address": "丽德花园3号楼南侧"},
        "contact": {"name": "孙建国", "phone": "13812345678"},
        "channel": "hotline",
    },
    {
        "title": "Cracked balcony leaking onto wiring (multi-agency)",
        "description": "我家阳台开裂了，下雨就往楼下渗水，楼下邻居家的电线都泡水了，怕出事。",
        "location": {"community": "缤泰社区", "address": "丽德花园7号楼2单元502"},
        "contact": {"name": "李秀英", "phone": "13987654321"},
        "channel": "desk",
    },
    {
        "title": "Radiator cold (English)",
        "description": "Our radiator has been cold for three days and the heating is not working at all.",
        "location": {"community": "缤泰社区", "address": "Lide Garden Bldg 5, Flat 301"},
        "contact": {"name": "Tom Baker", "phone": "13700001111"},
        "channel": "app",
        "language": "en",
    },
    {
        "title": "Water through the ceiling",
        "description": "楼上漏水，卫生间天花板一直在滴水，找了楼上好几次都没人。",
        "location": {"community": "缤泰社区", "address": "丽德花园2号楼1单元201"},
        "channel": "grid_patrol",
    },
]


class DemoError(ConnectionError):
    pass


def _wait_for(fetch, done, timeout_s: float = 30.0, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def run_case(base: str, secret: str, case: dict[str, Any]) -> dict[str, Any]:
    http = requests.Session()
    # The desk submits and reads (a desk token); each agency acts with its own below.
    http.headers["Authorization"] = f"Bearer {issue_token('desk', 'desk-demo', secret, 600)}"
    body = {k: v for k, v in case.items() if k != "title"}
    issue_id = call("POST", base, "/issues", ok=(200, 201, 202), session=http, json=body,
                    timeout=10)["issue_id"]

    def issue() -> dict:
        return call("GET", base, f"/issues/{issue_id}", session=http, timeout=10)

    routed = _wait_for(issue, lambda i: i["status"] != "received")
    for assignment in routed["assignments"]:
        agency = assignment["agency"]
        auth = {"Authorization": f"Bearer {issue_token(agency, f'{agency}-demo', secret, 600)}"}
        path = f"/agencies/{agency}/assignments/{issue_id}"
        call("POST", base, f"{path}/acknowledge", session=http, headers=auth, timeout=10)
        call("POST", base, f"{path}/resolve", session=http, headers=auth, timeout=10,
             json={"note": "已到现场处理完毕 / fixed on site"})

    def notifications() -> list[dict]:
        return call("GET", base, f"/issues/{issue_id}/notifications", session=http,
                    timeout=10)["notifications"]

    # The rating request is the last message of the chain: wait for the whole story.
    told = _wait_for(notifications, lambda n: any(m["kind"] == "rating_request" for m in n))
    final = issue()
    return {"title": case["title"], "issue_id": issue_id, "status": final["status"],
            "category": final["category"], "priority": final["priority"],
            "agencies": [(a["agency"], a["role"]) for a in final["assignments"]],
            "messages": [n["text"] for n in told]}


def case_panel(result: dict[str, Any]) -> Panel:
    """One case for the console. What the service answered is data, not rich markup: a
    message's "?token=[redacted]" would otherwise be read as a markup tag and vanish."""
    table = Table(show_header=False, box=None)
    table.add_row("issue", escape(f"{result['issue_id']}  ({result['status']})"))
    table.add_row("routed", escape(f"{result['category']}, {result['priority']}: " + ", ".join(
        f"{agency} ({role})" for agency, role in result["agencies"])))
    for text in result["messages"]:
        table.add_row("resident told", escape(text))
    return Panel(table, title=escape(result["title"]), expand=False)


def run_demo(base: str, secret: str, console: Console | None = None) -> list[dict[str, Any]]:
    try:
        requests.get(f"{base}/health", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        from whistle.ops import short_reason

        raise DemoError(f"Whistle is not answering at {base} ({short_reason(exc)}); "
                        "start it with `make up` or `whistle up`") from None
    results = []
    for case in DEMO_CASES:
        result = run_case(base, secret, case)
        results.append(result)
        if console is not None:
            console.print(case_panel(result))
    return results

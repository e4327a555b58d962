"""Page weight and time to first render of every page, in Chromium, at N open issues.

    python -m bench.pages                  # 100 and 5,000 open issues
    python -m bench.pages --issues 100     # one size

For each size: a throwaway vhost and Redis prefix (``bench.infra``), one ``whistle up``
running every service with the pages, N reports submitted over HTTP (varied problems,
agencies and communities; open: dispatched and not yet resolved), then each page loaded
in a fresh Chromium profile (so its CSS and script are transferred too, as on a first
visit) and measured by the browser itself (Navigation and Resource Timing, Paint
Timing): bytes transferred (``transferSize``: headers and body, as on the wire) and
first contentful paint. The board's live poll (``/desk/board.json``) is measured on
its own: what every second of an open board costs. The median of ``--repeat`` loads is
printed as a Markdown table (docs/pages.md keeps the figures).
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import click
import requests

from bench.cluster import ServiceProcess
from bench.infra import BenchSandbox
from shared import config as cfg
from shared.auth import issue_resident_token, issue_token

PROBLEMS = [
    ("楼道外有飞线，电线垂下来了", "power"),
    ("家里暖气不热，整栋楼都冰凉", "heating"),
    ("楼上漏水，天花板一直滴水", "water"),
    ("小区门口井盖破了，晚上很危险", "municipal_roads"),
    ("电梯坏了三天了，老人上不了楼", "property_manager"),
    ("楼道灯不亮，晚上看不见台阶", "property_manager"),
    ("下水道堵了，一股臭味", "drainage"),
    ("小区里有僵尸车占着消防通道", "urban_management"),
]
COMMUNITIES = ["幸福里社区", "光明社区", "和平社区", "长安社区", "建设社区"]


def seed(url: str, count: int) -> list[str]:
    """``count`` reports, each at its own address (none merges), over HTTP."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {issue_token('desk', 'bench', cfg.DEV_SECRET)}"
    ids = []
    for i in range(count):
        text, _ = PROBLEMS[i % len(PROBLEMS)]
        response = session.post(f"{url}/issues", timeout=10, json={
            "description": text, "contact": {"phone": f"1380000{i:04d}"},
            "location": {"community": COMMUNITIES[i % len(COMMUNITIES)],
                         "address": f"{i // 10 + 1}号楼{i % 10 + 1}单元"}})
        response.raise_for_status()
        ids.append(response.json()["issue_id"])
    return ids


def wait_routed(url: str, ids: list[str], timeout_s: float = 600) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {issue_token('desk', 'bench', cfg.DEV_SECRET)}"
    deadline = time.monotonic() + timeout_s
    last = ids[-1]
    while time.monotonic() < deadline:
        if session.get(f"{url}/issues/{last}", timeout=10).json()["status"] == "dispatched":
            return
        time.sleep(0.5)
    raise RuntimeError("the reports were not all routed in time")


MEASURE = """
const nav = performance.getEntriesByType('navigation')[0];
const res = performance.getEntriesByType('resource');
const fcp = performance.getEntriesByName('first-contentful-paint')[0];
const polls = res.filter(r => r.name.includes('.json'));
// The first poll fetches the board; later ones are 304s while nothing changes.
return {
  document: nav.transferSize,
  assets: res.filter(r => !r.name.includes('.json')).reduce((s, r) => s + r.transferSize, 0),
  fcp_ms: fcp ? fcp.startTime : null,
  poll: polls.length ? polls[0].transferSize : null,
  poll_idle: polls.length > 1 ? polls[polls.length - 1].transferSize : null,
  poll_ms: polls.length ? polls[polls.length - 1].duration : null,
};
"""


def measure(url: str, path: str, token: str | None, width: int) -> dict:
    from tests.support.browser import Browser  # the tests' own Chromium harness

    browser = Browser(url, width, 900)
    try:
        if token:
            browser.sign_in(token)
        # A first visit: nothing cached from the sign-in (the cookie stays).
        browser.driver.execute_cdp_cmd("Network.clearBrowserCache", {})
        browser.open(path)
        if "board" in path or path == "/desk":
            browser.wait(lambda: browser.driver.execute_script(
                "return performance.getEntriesByType('resource')"
                ".filter(r => r.name.includes('.json')).length >= 2"), 10, "two polls")
        time.sleep(0.3)  # paint timing entries are queued after load
        return browser.driver.execute_script(MEASURE)
    finally:
        browser.quit()


def pages(url: str, ids: list[str]) -> list[tuple[str, str, str | None]]:
    desk = issue_token("desk", "bench-desk", cfg.DEV_SECRET)
    power = issue_token("power", "bench-power", cfg.DEV_SECRET)
    link = issue_resident_token(ids[0], cfg.DEV_SECRET)
    return [("sign-in", "/signin", None), ("board", "/desk", desk),
            ("new issue", "/desk/new", desk), ("issue", f"/desk/issues/{ids[0]}", desk),
            ("triage", "/desk/triage", desk), ("three rates", "/desk/stats", desk),
            ("agency workspace (power)", "/agency", power),
            ("resident", f"/resident/{ids[0]}?token={link}", None),
            ("operators", "/ops", desk)]


def run_size(count: int, repeat: int, width: int) -> list[dict]:
    env_base = cfg.config_from_env()
    with BenchSandbox(env_base[cfg.AMQP_URI], env_base[cfg.REDIS_URL],
                      str(cfg.get(env_base, cfg.RABBIT_API_URL))) as sandbox, \
            tempfile.TemporaryDirectory() as logs:
        import os

        env = dict(os.environ)
        env.update({cfg.AMQP_URI: sandbox.amqp_uri, cfg.REDIS_URL: sandbox.redis_url,
                    cfg.KEY_PREFIX: sandbox.prefix, cfg.LOG_FORMAT: "json",
                    cfg.RATE_SUBMIT: "0", cfg.RATE_READ: "0",
                    cfg.RABBIT_API_URL: str(cfg.get(env_base, cfg.RABBIT_API_URL)),
                    "PYTHONWARNINGS": "ignore"})
        process = ServiceProcess("intake,routing,agency,notify,web", 1, env,
                                 Path(logs) / "whistle.log")
        process.spawn()
        try:
            process.wait_healthy(60)
            started = time.monotonic()
            ids = seed(process.url, count)
            wait_routed(process.url, ids)
            click.echo(f"  {count} open issues seeded in {time.monotonic() - started:.0f} s",
                       err=True)
            rows = []
            for name, path, token in pages(process.url, ids):
                samples = [measure(process.url, path, token, width) for _ in range(repeat)]
                row = {"issues": count, "page": name, "path": re.sub(r"token=.*", "token=…", path)}
                for key in ("document", "assets", "fcp_ms", "poll", "poll_idle", "poll_ms"):
                    values = [s[key] for s in samples if s[key] is not None]
                    row[key] = statistics.median(values) if values else None
                rows.append(row)
                click.echo(f"  {name}: {json.dumps(row, ensure_ascii=False)}", err=True)
            return rows
        finally:
            process.stop()


def table(rows: list[dict]) -> str:
    def kb(value):
        return "—" if value is None else f"{value / 1024:.1f}"

    def ms(value):
        return "—" if value is None else f"{value:.0f}"

    lines = ["| open issues | page | document KiB | CSS+JS KiB | total KiB | first paint ms "
             "| poll KiB (first / unchanged) | poll ms |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        total = (r["document"] or 0) + (r["assets"] or 0)
        lines.append(f"| {r['issues']:,} | {r['page']} | {kb(r['document'])} | "
                     f"{kb(r['assets'])} | {kb(total)} | {ms(r['fcp_ms'])} | "
                     f"{kb(r['poll'])} / {kb(r['poll_idle'])} "
                     f"| {ms(r['poll_ms'])} |")
    return "\n".join(lines)


@click.command()
@click.option("--issues", "sizes", multiple=True, type=int, default=(100, 5000),
              show_default=True, help="Open issues to measure at (repeatable).")
@click.option("--repeat", default=3, show_default=True, help="Loads per page (median).")
@click.option("--width", default=1280, show_default=True, help="Window width, px.")
def main(sizes: tuple[int, ...], repeat: int, width: int) -> None:
    """Page weight and first contentful paint of every page, in Chromium."""
    rows = []
    for count in sizes:
        click.echo(f"measuring at {count} open issues", err=True)
        rows += run_size(count, repeat, width)
    click.echo(table(rows))


if __name__ == "__main__":
    main()

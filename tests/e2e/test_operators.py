"""Operators' tools against a running Whistle: tail, trace, and logs without personal data."""

import json
import re
import signal
import subprocess
import time

import pytest
import requests
from kombu import Connection, Producer
from nameko.standalone.rpc import ClusterRpcProxy

from shared import config as cfg
from shared.auth import issue_token
from shared.topology import EVENTS_EXCHANGE, declare_topology
from tests.e2e.conftest import WHISTLE
from tests.e2e.test_whole_chain import BALCONY, poll
from tests.support.auth import DESK

pytestmark = pytest.mark.e2e

PHONE = "13912345678"
# A mobile number not embedded in a longer hex/digit run (trace ids are hex).
PHONE_ANYWHERE = re.compile(r"(?<![0-9a-f])1[3-9]\d[\s\-]?\d{4}[\s\-]?\d{4}(?![0-9a-f])")


def resolve_all(base, env, issue_id, agencies):
    for agency in agencies:
        auth = {"Authorization": f"Bearer {issue_token(agency, agency + '-1', env[cfg.SECRET])}"}
        url = f"{base}/agencies/{agency}/assignments/{issue_id}"
        assert requests.post(f"{url}/acknowledge", headers=auth).ok
        assert requests.post(f"{url}/resolve", headers=auth, json={"note": "已处理"}).ok


@pytest.fixture
def tail_process(whistle_env, tmp_path):
    started = []

    def start(*args):
        out = open(tmp_path / f"tail{len(started)}.out", "wb")  # noqa: SIM115 - the child's
        err = tmp_path / f"tail{len(started)}.err"
        proc = subprocess.Popen([WHISTLE, "tail", *args], env=whistle_env, stdout=out,
                                stderr=open(err, "wb"))  # noqa: SIM115
        started.append(proc)
        poll(lambda: err.read_text(), lambda text: "following" in text, timeout=15)
        return proc, tmp_path / f"tail{len(started) - 1}.out"

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()


def test_tail_shows_every_message_in_order_and_nothing_personal(whistle_processes, whistle_env,
                                                                 tail_process):
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    app = whistle_processes()
    tail, out = tail_process("--json")
    started = time.monotonic()
    body = {**BALCONY, "description": BALCONY["description"] + f" 请回电{PHONE}",
            "contact": {"name": "李秀英", "phone": PHONE}}
    issue_id = requests.post(f"{app.url}/issues", headers=DESK, json=body).json()["issue_id"]
    issue = poll(lambda: requests.get(f"{app.url}/issues/{issue_id}", headers=DESK).json(),
                 lambda i: i["status"] == "dispatched")
    agencies = [a["agency"] for a in issue["assignments"]]
    resolve_all(app.url, whistle_env, issue_id, agencies)
    with ClusterRpcProxy({"AMQP_URI": whistle_env[cfg.AMQP_URI]}, timeout=10) as rpc:
        assert rpc.intake.get_issue(issue_id)["contact"]["phone"] == "139****5678"

    def lines():
        return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]

    seen = poll(lines, lambda ls: any(x["type"] == "issue.resolved" for x in ls), timeout=20)
    assert time.monotonic() - started < 20
    events = [x for x in seen if x["kind"] == "event" and x["issue"] == issue_id]
    types = [x["type"] for x in events]
    assert types[0] == "issue.received" and types[-1] == "issue.resolved"
    assert types.index("issue.dispatched") < types.index("assignment.acknowledged")
    # the dispatch carries every assignment: no assignment.created unless one is added later
    assert types.count("issue.dispatched") == 1 and "assignment.created" not in types
    assert sorted(x["agency"] for x in events if x["type"] == "assignment.resolved") == sorted(
        agencies)
    assert {x["service"] for x in events} >= {"intake", "routing", "agency"}
    assert all(x["since_received_s"] is not None and x["since_received_s"] >= 0 for x in events)
    assert all(x["trace_id"] == issue["trace_id"] for x in events)
    rpc_lines = [x for x in seen if x["kind"] in ("rpc", "reply")]
    assert any(x["type"] == "rpc intake.get_issue" and x["issue"] == issue_id for x in rpc_lines)
    # the services still got every message: the tail took none
    told = poll(lambda: requests.get(f"{app.url}/issues/{issue_id}/notifications", headers=DESK).json()
                ["notifications"], lambda n: any(m["kind"] == "resolved" for m in n))
    assert told[0]["kind"] == "received"
    raw = out.read_text()
    assert PHONE not in raw and "李秀英" not in raw and not PHONE_ANYWHERE.search(raw)

    # filters, and Ctrl-C exits cleanly
    filtered, filtered_out = tail_process("--issue", issue_id, "--type", "assignment.*")
    other = requests.post(f"{app.url}/issues", headers=DESK, json={
        "description": "路灯不亮", "location": {"community": "缤泰社区", "address": "南门"}})
    assert other.status_code == 201
    time.sleep(1.5)
    filtered.send_signal(signal.SIGINT)
    assert filtered.wait(10) == 0
    assert other.json()["issue_id"] not in filtered_out.read_text()
    tail.send_signal(signal.SIGTERM)  # as a process manager stops it
    assert tail.wait(10) == 0


def test_trace_shows_a_multi_agency_issue_step_by_step(whistle_processes, whistle_env):
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    app = whistle_processes()
    issue_id = requests.post(f"{app.url}/issues", headers=DESK, json=BALCONY).json()["issue_id"]
    issue = poll(lambda: requests.get(f"{app.url}/issues/{issue_id}", headers=DESK).json(),
                 lambda i: i["status"] == "dispatched")
    agencies = [a["agency"] for a in issue["assignments"]]
    time.sleep(0.3)  # staff take a moment: waiting, not processing
    resolve_all(app.url, whistle_env, issue_id, agencies)
    poll(lambda: requests.get(f"{app.url}/issues/{issue_id}/events", headers=DESK).json()["events"],
         lambda e: any(x["event_type"] == "issue.resolved" for x in e))

    as_json = subprocess.run([WHISTLE, "trace", issue_id, "--url", app.url, "--json"],
                             capture_output=True, text=True, env=whistle_env, timeout=30)
    assert as_json.returncode == 0, as_json.stderr
    trace = json.loads(as_json.stdout)
    steps = [s for s in trace["steps"] if s["service"] != "notify"]
    assert steps[0]["type"] == "issue.received" and steps[0]["kind"] == "start"
    assert steps[0]["entrypoint"] == "submit_issue_http"
    dispatched = next(s for s in steps if s["type"] == "issue.dispatched")
    assert (dispatched["service"], dispatched["entrypoint"], dispatched["kind"]) == (
        "routing", "route_issue", "processing")
    assert dispatched["call_id"].startswith("routing.route_issue.")
    acks = [s for s in steps if s["type"] == "assignment.acknowledged"]
    assert sorted(s["agency"] for s in acks) == sorted(agencies)
    assert all(s["kind"] == "waiting (people)" for s in acks)
    assert acks[0]["since_start_s"] - dispatched["since_start_s"] >= 0.3
    assert trace["totals_s"]["waiting (people)"] >= 0.3
    assert trace["totals_s"]["processing"] < trace["totals_s"]["waiting (people)"]
    times = [s["since_start_s"] for s in trace["steps"]]
    assert times == sorted(times)

    text = subprocess.run([WHISTLE, "trace", issue_id, "--url", app.url], capture_output=True,
                          text=True, env=whistle_env, timeout=30).stdout
    assert issue_id in text and "waiting (people)" in text and "route_issue" in text


def test_failing_requests_with_a_phone_number_leave_no_number_in_any_log(
        whistle_processes, whistle_env):
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    app = whistle_processes()
    spaced = "139 1234 5678"
    desk = issue_token("desk", "desk-1", whistle_env[cfg.SECRET])
    # intake over HTTP: invalid fields next to a phone number
    bad = requests.post(f"{app.url}/issues", headers=DESK, json={
        "description": f"电话{PHONE}" * 1000, "location": {"community": "缤泰社区"},
        "contact": {"name": "王建国", "phone": f"{PHONE}x"}})
    assert bad.status_code == 422 and PHONE not in bad.text
    # agency and routing over RPC and HTTP: refused requests carrying the number
    with ClusterRpcProxy({"AMQP_URI": whistle_env[cfg.AMQP_URI]}, timeout=10) as rpc:
        for call in (lambda: rpc.intake.submit_issue({"description": spaced, "contact": {
                         "phone": PHONE, "name": "王建国"}, "location": {"address": PHONE}}),
                     lambda: rpc.agency.resolve("bad-token", "power", "WH-20261121-0001",
                                                {"note": PHONE}),
                     lambda: rpc.routing.explain_route(desk, {"text": PHONE * 900}),
                     lambda: rpc.notify.list_notifications(f"WH-{PHONE}")):
            with pytest.raises(Exception) as raised:
                call()
            assert PHONE not in str(raised.value)
    assert requests.post(f"{app.url}/routing/explain", json={"txt": PHONE},
                         headers={"Authorization": f"Bearer {desk}"}).status_code == 422
    # a poison event whose body carries the number, straight onto the bus
    with Connection(whistle_env[cfg.AMQP_URI]) as connection:
        declare_topology(connection)
        Producer(connection.channel()).publish(
            {"issue_id": "WH-20261121-0009", "description": f"打{PHONE}", "trace_id": PHONE},
            exchange=EVENTS_EXCHANGE, routing_key="issue.received")
        Producer(connection.channel()).publish(
            f'{{"broken": "{PHONE}'.encode(), exchange=EVENTS_EXCHANGE,
            routing_key="issue.received", content_type="application/json",
            content_encoding="utf-8")
    poll(app.log, lambda text: text.count("dead-lettered") >= 2, timeout=20)
    log = app.log()
    assert "王建国" not in log
    leaks = [m.group(0) for m in PHONE_ANYWHERE.finditer(log)]
    assert leaks == [], leaks[:3]
    # every failure did reach the log, without the number
    assert log.count("dead-lettered") >= 2 and "token is invalid" in log

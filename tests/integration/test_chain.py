"""The whole chain in one process: four real containers on RabbitMQ and Redis."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.service import AgencyService
from services.intake.service import IntakeService
from services.notify.channels import verify_webhook_signature
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_token
from tests.support.auth import DESK, staff_headers
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def whistle(runner_factory, whistle_config):
    runner = runner_factory(whistle_config, IntakeService, RoutingService, AgencyService,
                            NotifyService)
    runner.start()
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"


def report_flying_wire(whistle: str) -> requests.Response:
    return requests.post(f"{whistle}/issues", headers=DESK, json={
        "description": "小区门口有根电线耷拉下来，不知道有没有电",
        "location": {"community": "缤泰社区", "address": "丽德花园北门"},
        "contact": {"name": "孙大爷", "phone": "13812345678"},
        "channel": "hotline",
    }, timeout=5)


def test_flying_wire_goes_to_power_and_resident_is_told(whistle, whistle_config):
    receipt = report_flying_wire(whistle)
    assert receipt.status_code == 201, receipt.text
    issue_id = receipt.json()["issue_id"]

    issue = wait_until(lambda: (i := requests.get(f"{whistle}/issues/{issue_id}", headers=DESK).json())
                       ["status"] == "dispatched" and i)
    assert issue["priority"] == "urgent"
    assert [(a["agency"], a["role"]) for a in issue["assignments"]] == [("power", "lead")]
    assert issue["contact"]["phone"] == "138****5678"

    token = issue_token("power", "p-007", whistle_config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        open_items = rpc.agency.list_assignments(token, "power")
        assert [a["issue_id"] for a in open_items] == [issue_id]
        rpc.agency.acknowledge(token, "power", issue_id)
        done = rpc.agency.resolve(token, "power", issue_id, {"note": "已断电并重新架设"})
    assert done["issue_status"] == "resolved"

    kinds = wait_until(lambda: len(n := requests.get(
        f"{whistle}/issues/{issue_id}/notifications", headers=DESK).json()["notifications"]) == 5 and n)
    assert [n["kind"] for n in kinds] == ["received", "dispatched", "acknowledged", "resolved",
                                          "rating_request"]
    assert all(n["status"] == "sent" for n in kinds)
    assert issue_id in kinds[0]["text"]
    # No webhook or email here: the desk relays it, and its copy asks rather than links.
    assert "满意吗" in kinds[-1]["text"] and "token" not in kinds[-1]["text"]


class _Receiver(BaseHTTPRequestHandler):
    received: list = []
    secret = ""

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert verify_webhook_signature(type(self).secret, self.headers["X-Whistle-Timestamp"],
                                        body, self.headers["X-Whistle-Signature"])
        type(self).received.append((self.headers["Idempotency-Key"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_channel_posts_every_message_to_the_configured_url(runner_factory,
                                                                   whistle_config):
    _Receiver.received = []
    _Receiver.secret = whistle_config[cfg.SECRET]  # NOTIFY_WEBHOOK_SECRET unset
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    whistle_config[cfg.NOTIFY_CHANNEL] = "webhook"
    whistle_config[cfg.NOTIFY_WEBHOOK_URL] = f"http://127.0.0.1:{server.server_port}/sms"
    runner_factory(whistle_config, IntakeService, RoutingService, NotifyService).start()
    base = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"
    try:
        issue_id = requests.post(f"{base}/issues", headers=DESK, json={
            "description": "Smell gas in the stairwell, really strong",
            "location": {"community": "Bintai", "address": "Lide Garden 9"},
            "contact": {"name": "Tom Baker", "phone": "13700001111",
                        "preferred_channel": "webhook"}, "language": "en",
        }, timeout=5).json()["issue_id"]
        wait_until(lambda: len(_Receiver.received) >= 2)
    finally:
        server.shutdown()
    kinds = [body["kind"] for _, body in _Receiver.received]
    assert kinds == ["received", "dispatched"]
    key, first = _Receiver.received[0]
    assert key == first["notification_id"]
    assert first["issue_id"] == issue_id and first["language"] == "en"
    assert first["recipient"] == {"name": "Tom Baker", "phone": "13700001111"}
    assert "Gas company" in _Receiver.received[1][1]["text"]
    history = requests.get(f"{base}/issues/{issue_id}/notifications", headers=DESK).json()["notifications"]
    assert [(n["channel"], n["status"]) for n in history] == [("webhook", "sent")] * 2
    assert history[0]["recipient"] == {"name": "T********", "phone": "137****1111", "email": None}


# An ISO 8601 moment with its zone, however it is spelled.
_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _moments(value) -> list[str]:
    """Every moment anywhere in a JSON answer (event texts that quote one are prose)."""
    if isinstance(value, dict):
        return [m for v in value.values() for m in _moments(v)]
    if isinstance(value, list):
        return [m for v in value for m in _moments(v)]
    return [value] if isinstance(value, str) and _MOMENT.fullmatch(value) else []


def test_every_answer_spells_a_utc_moment_with_z(whistle):
    """pydantic's answers wrote Z and the others +00:00 (the list, the notification
    records, the journal's recorded_at, the routing explanation): one spelling now."""
    receipt = report_flying_wire(whistle)
    issue_id = receipt.json()["issue_id"]
    wait_until(lambda: requests.get(f"{whistle}/issues/{issue_id}", headers=DESK).json()
               ["status"] == "dispatched")
    wait_until(lambda: len(requests.get(f"{whistle}/issues/{issue_id}/notifications",
                                        headers=DESK).json()["notifications"]) == 2)
    power = staff_headers("power", "p-007")
    answers = {
        "receipt": receipt.json(),
        "desk view": requests.get(f"{whistle}/issues/{issue_id}", headers=DESK).json(),
        "list": requests.get(f"{whistle}/issues", headers=DESK).json(),
        "notifications": requests.get(f"{whistle}/issues/{issue_id}/notifications",
                                      headers=DESK).json(),
        "events": requests.get(f"{whistle}/issues/{issue_id}/events", headers=DESK).json(),
        "assignments": requests.get(f"{whistle}/agencies/power/assignments",
                                    headers=power).json(),
        "stats": requests.get(f"{whistle}/stats", headers=DESK).json(),
        "explain": requests.post(f"{whistle}/routing/explain", headers=DESK,
                                 json={"text": "电线耷拉下来了"}).json(),
    }
    for name, answer in answers.items():
        moments = _moments(answer)
        assert moments, f"{name}: no moment in {answer}"
        assert all(m.endswith("Z") for m in moments), (name, moments)
    (listed,) = [i for i in answers["list"]["issues"] if i["issue_id"] == issue_id]
    assert listed["received_at"] == answers["desk view"]["received_at"]
    assert all(e["recorded_at"].endswith("Z") for e in answers["events"]["events"])
    assert all(n["created_at"].endswith("Z") and n["sent_at"].endswith("Z")
               for n in answers["notifications"]["notifications"])

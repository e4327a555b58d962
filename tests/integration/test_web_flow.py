"""The operator page's live flow (``/ops/flow.json``, ``services.web.flow.FlowTap``)
against the real RabbitMQ: the poison a service dead-letters is a line, and the flow
goes on."""

import re

import pytest
import requests
from kombu import Connection, Producer

from services.web.service import WebService
from shared import config as cfg
from shared.auth import issue_token
from shared.topology import EVENTS_EXCHANGE, declare_topology
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
CSRF = re.compile(r'name="csrf" value="([^"]+)"')

EVENT = {"event_id": "ev-0401", "trace_id": "trace-0401", "causation_id": None,
         "occurred_at": "2026-11-21T08:00:00+00:00", "schema_version": 1,
         "issue_id": "WH-20261121-0401", "description": "楼上漏水", "channel": "hotline",
         "location": {"community": "缤泰社区", "address": "丽德花园5号楼"},
         "language": "zh", "has_contact": False}


def test_the_flow_shows_poison_as_lines_and_keeps_following(runner_factory, whistle_config,
                                                            caplog):
    # An undecodable body, or JSON that is no event (no occurred_at), ended the tap's
    # consumer ("ops flow tap reconnecting: DecodeError" / "KeyError"); what came in the
    # 2 s before it had bound a new queue was never shown
    runner_factory(whistle_config, WebService).start()
    base = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"
    desk = requests.Session()  # the operator's page: a desk session, signed in
    form = desk.get(f"{base}/signin", timeout=5).text
    signed = desk.post(f"{base}/signin", timeout=5, allow_redirects=False, data={
        "token": issue_token("desk", "desk-1", whistle_config[cfg.SECRET]),
        "csrf": CSRF.search(form).group(1)})
    assert signed.status_code == 303, signed.text

    def lines():
        answer = desk.get(f"{base}/ops/flow.json", timeout=5)
        assert answer.status_code == 200, answer.text
        return answer.json()["lines"]

    with Connection(whistle_config[cfg.AMQP_URI]) as connection:
        declare_topology(connection)
        producer = Producer(connection.channel())
        # the tap is bound once a first event shows
        wait_until(lambda: producer.publish(EVENT, exchange=EVENTS_EXCHANGE,
                                            routing_key="issue.received") or lines(),
                   timeout=20)
        producer.publish(b"\xff\xfe{not json 13987654321", exchange=EVENTS_EXCHANGE,
                         routing_key="issue.received", content_type="application/json",
                         content_encoding="utf-8")
        producer.publish({"issue_id": "WH-20261121-0402", "unexpected": True},
                         exchange=EVENTS_EXCHANGE, routing_key="issue.received")
        producer.publish({**EVENT, "event_id": "ev-0403", "issue_id": "WH-20261121-0403"},
                         exchange=EVENTS_EXCHANGE, routing_key="issue.received")
    seen = wait_until(lambda: (found := lines()) and any(
        line.get("issue") == "WH-20261121-0403" for line in found) and found, timeout=10)
    assert any(line.get("detail") == "undecodable message: DecodeError" for line in seen), [(x.get("issue"), x.get("detail"), x.get("type")) for x in seen]
    assert any(line.get("issue") == "WH-20261121-0402" for line in seen)
    assert "13987654321" not in str(seen)
    assert "reconnecting" not in caplog.text

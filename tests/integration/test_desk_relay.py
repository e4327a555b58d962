"""The desk's relay list (待转告) against the real services (RabbitMQ, Redis, PostgreSQL).

With the default channel (the desk), a resident's messages went onto the desk's outbox
and nothing in Whistle read it: the desk could not find whom to call. notify's
``desk_relays`` reads it out for the desk of the issue's community (the contact in
full, the read audited); ``mark_relayed`` takes one off the list, once.
"""

from __future__ import annotations

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.intake.service import IntakeService
from services.notify.service import NotifyService
from shared import config as cfg
from shared.auth import issue_token
from shared.errors import Forbidden, InvalidPayload, NotFound
from shared.guard import audit_entries
from shared.jsoncodec import dumps
from tests.support.auth import staff_headers
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

PHONE, NAME = "13812345678", "孙建国"
REPORT = {"description": "小区里有根电线耷拉下来了，不知道有没有电",
          "location": {"community": "缤泰社区", "address": "丽德花园9号楼"},
          "contact": {"name": NAME, "phone": PHONE}}


def test_the_desk_of_its_community_reads_whom_to_call_and_marks_it_relayed_once(
        runner_factory, whistle_config, redis_client):
    runner_factory(whistle_config, IntakeService, NotifyService).start()
    base, secret = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}", whistle_config[cfg.SECRET]
    made = requests.post(f"{base}/issues", json=REPORT, headers=staff_headers("desk", "d-1",
                                                                               secret),
                         timeout=10)
    assert made.status_code == 201, made.text
    issue_id = made.json()["issue_id"]
    own = issue_token("desk", "d-1", secret, communities=["缤泰社区"])
    elsewhere = issue_token("desk", "d-2", secret, communities=["和平里社区"])
    unscoped = issue_token("desk", "d-3", secret)
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        [item] = wait_for(lambda: rpc.notify.desk_relays(own), bool)
        assert item["issue_id"] == issue_id and item["kind"] == "received"
        assert item["audience"] == "resident"
        assert item["resident"] == {"name": NAME, "phone": PHONE, "email": None}
        assert issue_id in item["text"] and "token=ey" not in item["text"]
        assert rpc.notify.desk_relays(elsewhere) == []  # another community's desk
        nid = item["notification_id"]
        # Refused alike whether the message is elsewhere or nowhere; only an unscoped
        # desk hears that an id names nothing.
        for token, asked, refusal in (
                (elsewhere, nid, Forbidden), (elsewhere, "0" * 24, Forbidden),
                (issue_token("power", "p-1", secret), nid, Forbidden),
                (unscoped, "0" * 24, NotFound), (own, "not-an-id", InvalidPayload)):
            with pytest.raises(refusal):
                rpc.notify.mark_relayed(token, asked)
        with pytest.raises(InvalidPayload):
            rpc.notify.mark_relayed(own, nid, {"note": "x" * 301})
        first = rpc.notify.mark_relayed(own, nid, {"note": f"已电话告知 {PHONE}"})
        again = rpc.notify.mark_relayed(own, nid)
        assert again == first and first["relayed_by"] == "d-1"
        assert rpc.notify.desk_relays(own) == [] and rpc.notify.desk_relays(unscoped) == []
        [record] = [r for r in rpc.notify.list_notifications(issue_id)
                    if r["notification_id"] == nid]
        assert (record["relayed_by"], record["relayed_at"]) == ("d-1", first["relayed_at"])
        assert PHONE not in dumps(record) and NAME not in dumps(record)
        notes = [e["detail"] for e in rpc.intake.get_issue(issue_id)["timeline"]
                 if e["step"] == "relayed"]
        assert notes == ["社区已转告居民：received"]
    # Each read of the list is audited as a read of the issues whose contacts it showed.
    reads = [e for e in audit_entries(redis_client, whistle_config[cfg.KEY_PREFIX], 100)
             if e.get("action") == "relay.read" and e.get("staff_id") == "d-1"]
    assert any(e.get("issue_ids") == issue_id for e in reads), reads
    assert all(PHONE not in dumps(e) for e in audit_entries(
        redis_client, whistle_config[cfg.KEY_PREFIX], 100))

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
from services.notify.channels import DeskOutboxChannel, OutgoingMessage
from services.notify.relays import RELAY_LIST_LIMIT
from services.notify.service import RELAY_READ_CHUNK, NotifyService
from shared import config as cfg
from shared.auth import issue_token
from shared.errors import Forbidden, InvalidPayload, NotFound
from shared.guard import audit_entries
from shared.jsoncodec import dumps, loads
from shared.store import RELAYED_KEPT_S, IssueStore
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
        # Whatever the body: another community's desk learns nothing from what is wrong
        # with it (it heard InvalidPayload for its note before its scope was judged).
        for asked in (nid, "0" * 24):
            with pytest.raises(Forbidden):
                rpc.notify.mark_relayed(elsewhere, asked, {"note": "x" * 301})
        with pytest.raises(InvalidPayload):
            rpc.notify.mark_relayed(own, nid, {"note": "x" * 301})
        first = rpc.notify.mark_relayed(own, nid, {"note": f"已电话告知 {PHONE}"})
        again = rpc.notify.mark_relayed(own, nid)
        assert again == first and first["relayed_by"] == "d-1"
        # The relay took the entry off the outbox: the list reads only what is left.
        outbox = redis_client.lrange(f"{whistle_config[cfg.KEY_PREFIX]}:desk:outbox", 0, -1)
        assert not any(nid in raw for raw in outbox)
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


def pushed(redis_client, prefix, count, start=0, day="20261201"):
    """``count`` messages through the desk channel, oldest first, each of its own issue
    (ids no issue index knows: in no desk's communities, seen by an unscoped desk)."""
    channel = DeskOutboxChannel(redis_client, prefix)
    nids = []
    for n in range(start, start + count):
        nid = f"{n:024x}"
        channel.deliver(OutgoingMessage(nid, f"WH-{day}-{n + 1:04d}", "received", "zh",
                                        f"您反映的问题已受理 {n}", {"name": NAME, "phone": PHONE}))
        nids.append(nid)
    return nids


def test_the_list_is_the_oldest_messages_still_to_relay_read_a_chunk_at_a_time(
        runner_factory, whistle_config, redis_client):
    """Each view read the whole outbox (up to 10,000 entries, relayed or not) and showed
    all of it: the list shows the oldest ``RELAY_LIST_LIMIT``, and a scoped desk still
    finds its own message behind more than a chunk of other communities' ones."""
    prefix, secret = whistle_config[cfg.KEY_PREFIX], whistle_config[cfg.SECRET]
    others = pushed(redis_client, prefix, RELAY_READ_CHUNK + RELAY_LIST_LIMIT // 4)
    runner_factory(whistle_config, IntakeService, NotifyService).start()
    base = f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"
    made = requests.post(f"{base}/issues", json=REPORT, headers=staff_headers("desk", "d-1",
                                                                               secret),
                         timeout=10)
    assert made.status_code == 201, made.text
    own = issue_token("desk", "d-1", secret, communities=["缤泰社区"])
    unscoped = issue_token("desk", "d-3", secret)
    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        [mine] = wait_for(lambda: rpc.notify.desk_relays(own), bool)
        assert mine["issue_id"] == made.json()["issue_id"]
        listed = rpc.notify.desk_relays(unscoped)
        assert [i["notification_id"] for i in listed] == others[:RELAY_LIST_LIMIT]
        # Relaying the oldest brings on the next.
        rpc.notify.mark_relayed(unscoped, others[0])
        again = [i["notification_id"] for i in rpc.notify.desk_relays(unscoped)]
        assert again == others[1:RELAY_LIST_LIMIT + 1]


def test_a_relay_is_remembered_once_and_forgotten_after_a_week(redis_client, redis_prefix):
    """The record of what was relayed grew for ever: now each relay forgets those older
    than ``RELAYED_KEPT_S`` (its issue's archive forgets them sooner)."""
    store = IssueStore(redis_client, redis_prefix)
    old, new = pushed(redis_client, redis_prefix, 2)
    raw_old, _ = store.desk_message(old)
    first = store.relay_desk_message(old, dumps({"relayed_by": "d-1"}), raw_old, 1000.0)
    again = store.relay_desk_message(old, dumps({"relayed_by": "d-2"}), raw_old, 1001.0)
    assert loads(first) == loads(again) == {"relayed_by": "d-1"}  # the first wins
    assert store.desk_message(old) is None and store.desk_message(new) is not None
    later = 1000.0 + RELAYED_KEPT_S + 1
    store.relay_desk_message(new, dumps({"relayed_by": "d-1"}), store.desk_message(new)[0],
                             later)
    assert store.relays([old, new]) == {new: dumps({"relayed_by": "d-1"})}
    assert redis_client.zrange(store.keys.desk_relayed_at, 0, -1) == [new]
    assert redis_client.llen(store.keys.desk_outbox) == 0


def test_an_earlier_release_s_relayed_entries_leave_the_outbox_once(redis_client,
                                                                    redis_prefix):
    """An earlier release kept relayed entries in the outbox; their relays are forgotten
    now, which would bring them back onto the desk's list: the upgrade takes them off."""
    store = IssueStore(redis_client, redis_prefix)
    relayed, waiting, also_relayed = pushed(redis_client, redis_prefix, 3)
    redis_client.hset(store.keys.desk_relayed, mapping={relayed: "{}", also_relayed: "{}"})
    assert store.desk_outbox_pending_only(5000.0) == 2
    assert [loads(raw)["notification_id"] for raw in
            redis_client.lrange(store.keys.desk_outbox, 0, -1)] == [waiting]
    assert dict(redis_client.zrange(store.keys.desk_relayed_at, 0, -1, withscores=True)) == {
        relayed: 5000.0, also_relayed: 5000.0}
    assert store.desk_outbox_pending_only(6000.0) is None  # once

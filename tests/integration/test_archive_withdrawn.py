"""An agency's "withdrawn from us" list reaches its 30 days into the archive: the index of
archived withdrawals (migration 0007, archived_withdrawal) against the real PostgreSQL,
and the list through the running services, hot and archived issues together, for that
agency's staff only, and what it says with the archive down."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.agency.domain import latest_withdrawal
from services.intake.archiver import Archiver
from services.routing import desk as routing_desk
from services.routing.rules import load_rules
from shared import config as cfg
from shared.archive import Bundle, upgrade
from shared.auth import issue_feedback_token, issue_token
from shared.contracts import Channel, Language, Location, Reroute
from shared.errors import Forbidden, Unavailable
from shared.issue import IssueRecord, receive
from shared.store import WITHDRAWN_INDEX_FILLED, run_script
from tests.integration.test_archive_stats import archive_before
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
RULES = load_rules()


def rows(archive) -> list[tuple]:
    with archive.connection() as conn:
        return conn.execute("SELECT issue_id, agency, withdrawn_at FROM archived_withdrawal "
                            "ORDER BY 1, 2").fetchall()


def rerouted(issue_id: str, *changes: tuple[str, datetime]) -> IssueRecord:
    """A report of a leak (water leads, the property manager supports), received a month
    and a half ago and rerouted to each category of ``changes`` at its time."""
    received = NOW - timedelta(days=45)
    record = receive(issue_id, f"trace-{issue_id}", "楼上漏水，天花板滴水", None,
                     Location(community="缤泰社区", address="丽德花园9号楼"), Channel.desk,
                     Language.zh, received)
    from services.routing.domain import route_issue

    record = routing_desk.first_route(record, route_issue(record.description, None, RULES,
                                                          received), RULES, received)
    for category, at in changes:
        record = routing_desk.reroute(record, Reroute(category=category, reason="再看"), "再看",
                                      "desk-wang", RULES, at).record
    return record


def bundle(record: IssueRecord) -> Bundle:
    return Bundle(record.model_dump_json())


WATER_AWAY = NOW - timedelta(days=3)


def some_records() -> dict[str, IssueRecord]:
    return {
        # water withdrawn three days ago (recent) and ...
        "recent": rerouted("WH-20261101-0001", ("sewage_blocked", WATER_AWAY)),
        # ... 40 days ago (past the list's reach, kept all the same)
        "old": rerouted("WH-20261101-0002", ("sewage_blocked", NOW - timedelta(days=40))),
        # withdrawn, given back, withdrawn again: the latest withdrawal counts
        "twice": rerouted("WH-20261101-0003", ("sewage_blocked", NOW - timedelta(days=20)),
                          ("pipe_leak", NOW - timedelta(days=19)),
                          ("sewage_blocked", NOW - timedelta(days=2))),
        # withdrawn and given back: water's work again, not withdrawn
        "back": rerouted("WH-20261101-0004", ("sewage_blocked", NOW - timedelta(days=5)),
                         ("pipe_leak", NOW - timedelta(days=4))),
        "never": rerouted("WH-20261101-0005"),
    }


def expected_rows(records) -> list[tuple]:
    """What the agency service makes of the records (services.agency.domain)."""
    return sorted((r.issue_id, agency, part.withdrawn_at) for r in records
                  for agency in {w.agency for w in r.withdrawn}
                  if (part := latest_withdrawal(r, agency)) is not None)


def test_archived_withdrawals_are_indexed_as_issues_are_archived_and_read_by_agency(archive):
    records = some_records()
    assert rows(archive) == []
    archive.store_bundles(bundle(r) for r in records.values())
    expected = expected_rows(records.values())
    assert rows(archive) == expected
    water = [(issue_id, at) for issue_id, agency, at in expected if agency == "water"]
    assert water == [("WH-20261101-0001", WATER_AWAY),
                     ("WH-20261101-0002", NOW - timedelta(days=40)),
                     ("WH-20261101-0003", NOW - timedelta(days=2))]  # the latest
    # Given back to water, the last reroute took drainage away instead.
    assert ("WH-20261101-0004", "drainage", NOW - timedelta(days=4)) in expected
    # The list's read: one agency, since a moment, latest withdrawal first.
    since = NOW - timedelta(days=30)
    assert [r.issue_id for r in archive.withdrawn_from_agency("water", since)] == [
        "WH-20261101-0003", "WH-20261101-0001"]
    assert archive.withdrawn_from_agency("water", since)[0] == records["twice"]
    assert [r.issue_id for r in archive.withdrawn_from_agency("drainage", since)] == [
        "WH-20261101-0004"]
    assert archive.withdrawn_from_agency("power", since) == []
    # Archived again (its record written again, ON CONFLICT DO UPDATE) or twice at once:
    # the same rows. An erasure rewrites the record and changes none either.
    archive.store_bundles(bundle(r) for r in records.values())
    assert rows(archive) == expected
    with archive.connection() as conn:
        conn.execute("UPDATE archived_issue SET record = record WHERE issue_id = %s",
                     ("WH-20261101-0001",))
    assert rows(archive) == expected


def test_archived_withdrawal_is_read_through_its_index(archive):
    """The list's statement reads one range of archived_withdrawal_recent, not every
    archived issue (nor every withdrawal)."""
    archive.store_bundles(bundle(r) for r in some_records().values())
    with archive.connection() as conn:
        conn.execute("SET enable_seqscan = off")  # the tables are tiny here
        plan = "\n".join(line for (line,) in conn.execute(
            "EXPLAIN SELECT a.record::text FROM archived_withdrawal w "
            "JOIN archived_issue a ON a.issue_id = w.issue_id "
            "WHERE w.agency = 'water' AND w.withdrawn_at >= now() - interval '30 days' "
            "ORDER BY w.withdrawn_at DESC, w.issue_id DESC").fetchall())
    assert "archived_withdrawal_recent" in plan, plan


def test_migration_0007_indexes_the_withdrawals_of_issues_archived_before_it():
    """The records archived before 0007 keep each withdrawn part with its time: the
    migration indexes them (a backfill), and an archiver of older code still running after
    it is followed by the trigger."""
    with archive_before("0007") as (url, archive):
        records = list(some_records().values())
        archive.store_bundles(bundle(r) for r in records[:3])
        assert upgrade(url) == ["0007_archived_withdrawal"]
        archive.store_bundles(bundle(r) for r in records[3:])  # as any code writes them
        assert rows(archive) == expected_rows(records)


# ----------------------------------------------------------- through the services


@pytest.fixture
def config(whistle_config, fresh_database_url):
    return {**whistle_config, cfg.DATABASE_URL: fresh_database_url,
            cfg.ROUTING_MODEL: "keywords"}  # what these reports match is known


def auth(config, agency, **claims):
    return {"Authorization": f"Bearer {issue_token(agency, 's-1', config[cfg.SECRET], **claims)}"}


def submit(base, config, description, address) -> str:
    answer = requests.post(f"{base}/issues", headers=auth(config, "desk"), timeout=5, json={
        "description": description, "location": {"community": "缤泰社区", "address": address},
        "contact": {"name": "孙大爷", "phone": "13812345678"}})
    assert answer.status_code == 201, answer.text
    return answer.json()["issue_id"]


def status_of(base, config, issue_id) -> str:
    return requests.get(f"{base}/issues/{issue_id}", headers=auth(config, "desk"),
                        timeout=5).json()["status"]


def taken_from_water(base, config, address) -> str:
    """A leak routed to water, then rerouted by the desk to drainage: water withdrawn."""
    issue_id = submit(base, config, "楼上漏水，卫生间地漏往上冒水", address)
    wait_until(lambda: status_of(base, config, issue_id) == "dispatched")
    answer = requests.post(f"{base}/issues/{issue_id}/reroute", headers=auth(config, "desk"),
                           timeout=5, json={"category": "sewage_blocked",
                                            "reason": "是下水道返水，不是水管漏"})
    assert answer.status_code == 200, answer.text
    return issue_id


def closed(base, config, issue_id) -> None:
    """Each agency's part 报到 and resolved, and the resident satisfied: closed."""
    detail = requests.get(f"{base}/issues/{issue_id}", headers=auth(config, "desk"),
                          timeout=5).json()
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        for part in detail["assignments"]:
            token = issue_token(part["agency"], "s-1", config[cfg.SECRET])
            rpc.agency.acknowledge(token, part["agency"], issue_id)
            rpc.agency.resolve(token, part["agency"], issue_id, {"note": "已疏通"})
    wait_until(lambda: status_of(base, config, issue_id) == "resolved")
    rated = requests.post(f"{base}/issues/{issue_id}/feedback", json={"rating": "satisfied"},
                          params={"token": issue_feedback_token(issue_id, issue_id, 0,
                                                                config[cfg.SECRET], 3600)},
                          timeout=5)
    assert rated.status_code == 200, rated.text
    wait_until(lambda: status_of(base, config, issue_id) == "closed")


def withdrawn(base, headers, agency) -> requests.Response:
    return requests.get(f"{base}/agencies/{agency}/assignments", headers=headers, timeout=10,
                        params={"status": "withdrawn"})


def listed(base, headers, agency) -> list[str]:
    answer = withdrawn(base, headers, agency)
    assert answer.status_code == 200, answer.text
    assert answer.json()["archive_unavailable"] is False
    return [a["issue_id"] for a in answer.json()["assignments"]]


def test_an_archived_issue_stays_in_the_withdrawn_list_of_that_agency_only(whistle, config,
                                                                           store, archive):
    """Before 0007 an issue left the list with Redis, a day after it closed."""
    archived = taken_from_water(whistle, config, "丽德花园9号楼2单元501")
    closed(whistle, config, archived)
    hot = taken_from_water(whistle, config, "丽德花园3号楼")  # still open, withdrawn later
    water = auth(config, "water")
    assert listed(whistle, water, "water") == [hot, archived]

    wait_for(lambda: (Archiver(store, archive, retention_s=0).run_until_idle(now_ts=9e9),
                      archive.has(archived))[1], bool)
    assert not store.redis.exists(store.keys.issue(archived))  # only the archive has it
    assert not store.redis.sismember(store.keys.withdrawn_from_agency("water"), archived)
    answer = withdrawn(whistle, water, "water").json()
    assert [a["issue_id"] for a in answer["assignments"]] == [hot, archived]
    card = answer["assignments"][1]
    assert (card["status"], card["issue_status"], card["now_with"]) == (
        "withdrawn", "closed", ["drainage"])
    assert card["location"]["address"] == "丽德花园9号楼"  # cut to the building, as when hot
    assert "13812345678" not in withdrawn(whistle, water, "water").text

    # The same authorization as the hot list: another agency is refused, its own list
    # holds nothing of water's; the desk lists it, a desk of other communities does not.
    drainage = auth(config, "drainage")
    assert withdrawn(whistle, drainage, "water").status_code == 403
    assert listed(whistle, drainage, "drainage") == []
    assert listed(whistle, auth(config, "desk"), "water") == [hot, archived]
    assert listed(whistle, auth(config, "desk", communities=["和平里社区"]), "water") == []
    water_token = issue_token("water", "w-1", config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        assert [a["issue_id"] for a in rpc.agency.list_assignments(
            water_token, "water", "withdrawn")] == [hot, archived]
        both = rpc.agency.list_withdrawn(water_token, "water")
        assert [a["issue_id"] for a in both["assignments"]] == [hot, archived]
        assert both["archive_unavailable"] is False
        with pytest.raises(Forbidden):
            rpc.agency.list_withdrawn(issue_token("drainage", "d-1", config[cfg.SECRET]),
                                      "water")


@pytest.fixture
def unreachable_database(whistle_config):
    """The services with PostgreSQL out of reach (nothing listens on port 1)."""
    return {**whistle_config, cfg.DATABASE_URL: "postgresql://postgres@127.0.0.1:1/whistle",
            cfg.ROUTING_MODEL: "keywords"}


def test_with_the_archive_down_the_withdrawn_list_still_shows_the_hot_issues_and_says_so(
        runner_factory, unreachable_database):
    from services.agency.service import AgencyService
    from services.intake.service import IntakeService
    from services.notify.service import NotifyService
    from services.routing.service import RoutingService

    config = unreachable_database
    runner_factory(config, IntakeService, RoutingService, AgencyService, NotifyService).start()
    base = f"http://{config[cfg.WEB_SERVER_ADDRESS]}"
    hot = taken_from_water(base, config, "丽德花园3号楼")
    started = time.monotonic()
    answer = withdrawn(base, auth(config, "water"), "water")
    # Not the pool's 5 s wait on every view of the workspace: a second.
    assert time.monotonic() - started < 4
    assert answer.status_code == 200, answer.text
    assert [a["issue_id"] for a in answer.json()["assignments"]] == [hot]
    assert answer.json()["archive_unavailable"] is True
    # Authorization comes first, archive or not.
    assert withdrawn(base, auth(config, "drainage"), "water").status_code == 403
    water_token = issue_token("water", "w-1", config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=15) as rpc:
        partial = rpc.agency.list_withdrawn(water_token, "water")
        assert [a["issue_id"] for a in partial["assignments"]] == [hot]
        assert partial["archive_unavailable"] is True
        with pytest.raises(Unavailable, match="archive unavailable"):
            # A bare list cannot say it lacks the archived part: refused as other lists are.
            rpc.agency.list_assignments(water_token, "water", "withdrawn")


# ------------------------------------------------------ hot issues of an earlier release


def as_an_earlier_release_indexed(store, record: IssueRecord) -> None:
    """A hot issue written with every index but the withdrawn one (which that release
    did not have)."""
    assert store.create(record, {}, "intake", {})
    for key in store.index_sets(record):
        if key.endswith(":withdrawn"):
            assert store.redis.srem(key, record.issue_id)


def test_intake_indexes_the_hot_parts_withdrawn_before_the_withdrawn_index_existed(
        runner_factory, config, store):
    """The withdrawn index moves by difference from the record an apply read: a part
    withdrawn before it existed was never added, and the issue stayed out of the
    agency's list as long as it was hot. Intake fills it when it starts, once."""
    from services.agency.service import AgencyService
    from services.intake.service import IntakeService

    records = some_records()
    for record in records.values():
        as_an_earlier_release_indexed(store, record)
    water = store.keys.withdrawn_from_agency("water")
    assert store.redis.smembers(water) == set()
    runner_factory(config, IntakeService, AgencyService).start()
    base = f"http://{config[cfg.WEB_SERVER_ADDRESS]}"
    assert store.redis.smembers(water) == {"WH-20261101-0001", "WH-20261101-0002",
                                           "WH-20261101-0003"}
    assert store.redis.smembers(store.keys.withdrawn_from_agency("drainage")) == {
        "WH-20261101-0004"}
    assert store.redis.sismember(store.keys.upgrades, WITHDRAWN_INDEX_FILLED)
    # The list shows the recent ones (the one of 40 days ago is past its reach).
    assert listed(base, auth(config, "water"), "water") == ["WH-20261101-0003",
                                                           "WH-20261101-0001"]
    assert store.fill_withdrawn_index() is None  # done: one command
    store.redis.delete(store.keys.upgrades)  # the mark lost: again, nothing doubled
    assert store.fill_withdrawn_index(count=2) == 4
    assert store.redis.scard(water) == 3


def test_filling_the_withdrawn_index_leaves_a_record_that_changed_since_it_was_read(store):
    """A part given back between the read and the write must not be indexed as withdrawn:
    the apply that gave it back removed it from the index (by difference) already."""
    record = some_records()["recent"]
    as_an_earlier_release_indexed(store, record)
    raw = store.redis.get(store.keys.issue(record.issue_id))
    water = store.keys.withdrawn_from_agency("water")
    store.redis.set(store.keys.issue(record.issue_id), raw.replace("再看", "再看看"))
    assert store._call(run_script, store._add_if_unchanged,
                       [store.keys.issue(record.issue_id), water], [raw, record.issue_id]) == 0
    assert not store.redis.sismember(water, record.issue_id)

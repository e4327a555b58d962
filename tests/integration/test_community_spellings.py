"""A community is one however it is written: a desk token for 缤泰社区 lists, puts on its
board and counts the reports written 缤泰社區, hot in Redis and archived in PostgreSQL,
and never another community's. Its reads of one issue compared the names folded
already (``shared.authz.in_communities``); these are the reads that narrow through the
community index (Redis) and the archive's ``community`` columns. Also: the index an
earlier release keyed by the name as written is moved to the folded names when intake
starts. Against the real services (RabbitMQ, Redis, PostgreSQL), over HTTP and RPC."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.intake.service import IntakeService
from shared import config as cfg
from shared.archive import Archive, Bundle
from shared.contracts import Channel, Language, Location, utcnow
from shared.issue import receive
from shared.store import COMMUNITY_INDEX_FOLDED, IssueStore
from tests.support.auth import DESK, staff_headers

pytestmark = pytest.mark.integration

BINTAI = "缤泰社区"
BINTAI_TRADITIONAL = "缤泰社區"  # the same community, its last character traditional
HEPINGLI = "和平里社区"
BINTAI_DESK = staff_headers("desk", "desk-bintai", communities=[BINTAI])


@pytest.fixture
def config(whistle_config, fresh_database_url):
    return {**whistle_config, cfg.DATABASE_URL: fresh_database_url}


@pytest.fixture
def intake(runner_factory, config):
    runner_factory(config, IntakeService).start()
    return f"http://{config[cfg.WEB_SERVER_ADDRESS]}"


def submitted(base: str, community: str) -> str:
    """A report filed at the desk (a token for every community), as ``community`` is written."""
    made = requests.post(f"{base}/issues", headers=DESK, timeout=10, json={
        "description": "楼道灯不亮", "location": {"community": community, "address": "3号楼"}})
    assert made.status_code == 201, made.text
    return made.json()["issue_id"]


def archived(archive: Archive, community: str, number: int) -> str:
    """A report received yesterday and already in the archive (gone from Redis)."""
    received_at = utcnow() - timedelta(days=1)
    issue_id = f"WH-{received_at:%Y%m%d}-{9000 + number}"
    record = receive(issue_id, f"trace-{issue_id}", "楼道灯不亮", None,
                     Location(community=community, address="3号楼"), Channel.desk,
                     Language.zh, received_at)
    assert archive.store_bundles([Bundle(record.model_dump_json())]) == 1
    return issue_id


def old_release_issue(store: IssueStore, community: str) -> str:
    """A hot report as an earlier release indexed it: under its community as written."""
    issue_id = f"WH-{utcnow():%Y%m%d}-0901"
    record = receive(issue_id, f"trace-{issue_id}", "楼道灯不亮", None,
                     Location(community=community, address="3号楼"), Channel.desk,
                     Language.zh, utcnow())
    assert store.create(record, {}, "intake", {})
    as_written = f"{store.keys.prefix}:idx:community:{community}"
    assert store.redis.smove(store.keys.by_community(community), as_written, issue_id)
    return issue_id


def listed(base: str, headers: dict, **params) -> dict[str, str]:
    """``GET /issues``: each issue listed, with its community as shown."""
    response = requests.get(f"{base}/issues", headers=headers, params=params, timeout=5)
    assert response.status_code == 200, response.text
    return {e["issue_id"]: e["community"] for e in response.json()["issues"]}


def test_a_desk_lists_its_community_however_a_report_wrote_it_hot_and_archived(intake, archive):
    hot = submitted(intake, BINTAI_TRADITIONAL)
    hot_elsewhere = submitted(intake, HEPINGLI)
    cold = archived(archive, BINTAI_TRADITIONAL, 1)
    archived(archive, HEPINGLI, 2)
    # Shown as the resident wrote it; only the comparison folds.
    ours = {hot: BINTAI_TRADITIONAL, cold: BINTAI_TRADITIONAL}
    assert listed(intake, BINTAI_DESK) == ours
    # A list that names the community, in either spelling, by either desk.
    assert listed(intake, BINTAI_DESK, community=BINTAI_TRADITIONAL) == ours
    assert listed(intake, DESK, community=BINTAI) == ours
    assert listed(intake, DESK, community=BINTAI_TRADITIONAL) == ours
    assert hot_elsewhere in listed(intake, DESK, community=HEPINGLI)


def test_a_desks_board_holds_its_community_however_a_report_wrote_it(intake, config):
    ours = submitted(intake, BINTAI_TRADITIONAL)
    elsewhere = submitted(intake, HEPINGLI)
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        scoped = rpc.intake.board({"communities": [BINTAI]})
        named = rpc.intake.board({"community": BINTAI})
        other = rpc.intake.board({"communities": [HEPINGLI]})
    assert [(r["issue_id"], r["community"]) for r in scoped["rows"]] == [
        (ours, BINTAI_TRADITIONAL)]
    assert scoped["total"] == 1
    assert [r["issue_id"] for r in named["rows"]] == [ours]
    assert [r["issue_id"] for r in other["rows"]] == [elsewhere]


def test_a_desks_stats_count_its_community_however_a_report_wrote_it(intake, config,
                                                                     archive):
    submitted(intake, BINTAI_TRADITIONAL)
    submitted(intake, BINTAI)
    submitted(intake, HEPINGLI)
    archived(archive, BINTAI_TRADITIONAL, 1)
    archived(archive, HEPINGLI, 2)

    def issues_counted(headers: dict) -> int:
        response = requests.get(f"{intake}/stats", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["window"]["issues"]

    assert issues_counted(BINTAI_DESK) == 3  # two hot, one archived; not 和平里社区's
    assert issues_counted(staff_headers("desk", "desk-h", communities=[HEPINGLI])) == 2
    assert issues_counted(DESK) == 5
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        assert rpc.intake.stats(None, [BINTAI_TRADITIONAL])["window"]["issues"] == 3


def test_intake_moves_an_earlier_releases_community_index_to_the_folded_names(
        runner_factory, config, store):
    """Before this release the index was keyed by the name as written; intake merges each
    such set into its folded name's when it starts, once (``{p}:upgrades``)."""
    old = old_release_issue(store, BINTAI_TRADITIONAL)
    as_written = f"{store.keys.prefix}:idx:community:{BINTAI_TRADITIONAL}"
    assert store.redis.smembers(as_written) == {old}
    runner_factory(config, IntakeService).start()
    base = f"http://{config[cfg.WEB_SERVER_ADDRESS]}"
    new = submitted(base, BINTAI)
    assert listed(base, BINTAI_DESK) == {old: BINTAI_TRADITIONAL, new: BINTAI}
    assert not store.redis.exists(as_written)
    assert store.redis.smembers(store.keys.by_community(BINTAI)) == {old, new}
    assert store.redis.sismember(store.keys.upgrades, COMMUNITY_INDEX_FOLDED)


def test_folding_the_community_index_merges_each_spelling_once_and_only_once(store):
    prefix = store.keys.prefix
    store.redis.sadd(f"{prefix}:idx:community:{BINTAI_TRADITIONAL}", "WH-20261201-0001")
    store.redis.sadd(f"{prefix}:idx:community:ＢＩＮＴＡＩ", "WH-20261201-0002")  # full-width
    store.redis.sadd(f"{prefix}:idx:community:{BINTAI}", "WH-20261201-0003")
    store.redis.sadd(f"{prefix}:idx:community:{HEPINGLI}", "WH-20261201-0004")
    assert store.fold_community_index(count=2) == 2
    assert store.redis.smembers(store.keys.by_community(BINTAI)) == {
        "WH-20261201-0001", "WH-20261201-0003"}
    assert store.redis.smembers(f"{prefix}:idx:community:bintai") == {"WH-20261201-0002"}
    assert store.redis.smembers(store.keys.by_community(HEPINGLI)) == {"WH-20261201-0004"}
    assert sorted(store.redis.scan_iter(f"{prefix}:idx:community:*")) == sorted([
        f"{prefix}:idx:community:{BINTAI}", f"{prefix}:idx:community:bintai",
        f"{prefix}:idx:community:{HEPINGLI}"])
    assert store.fold_community_index() is None  # done: one command, no SCAN
    # Run again all the same (the mark lost, say): nothing left to merge, nothing lost.
    store.redis.delete(store.keys.upgrades)
    assert store.fold_community_index() == 0
    assert store.redis.scard(store.keys.by_community(BINTAI_TRADITIONAL)) == 2

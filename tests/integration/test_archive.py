"""The archive against the real PostgreSQL: an issue answers the same before and after it
leaves Redis; archiving twice, or racing, changes nothing; erasure; migrations."""

import uuid

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.intake.archiver import Archiver, Pass
from shared import config as cfg
from shared.archive import Archive, SchemaBehind, check_schema, pending_migrations, upgrade
from shared.auth import issue_feedback_token, issue_token
from shared.contracts import encode_cursor, utcnow
from shared.jsoncodec import loads
from tests.conftest import create_database, drop_database
from tests.support.chain import resolve_and_rate_satisfied
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def config(whistle_config, fresh_database_url):
    return {**whistle_config, cfg.DATABASE_URL: fresh_database_url}


def closed_issue(whistle, config, phone="13812345678", address="丽德花园北门") -> str:
    """An issue taken through the whole chain: reported, dispatched, 报到, resolved, rated
    satisfied (closed), with every resident message sent."""
    receipt = desk(config).post(f"{whistle}/issues", json={
        "description": "小区门口有根电线耷拉下来，不知道有没有电",
        "location": {"community": "缤泰社区", "address": address},
        "contact": {"name": "孙大爷", "phone": phone}, "channel": "hotline"}, timeout=5)
    assert receipt.status_code == 201, receipt.text
    issue_id = receipt.json()["issue_id"]
    wait_until(lambda: desk(config).get(f"{whistle}/issues/{issue_id}").json()["status"]
               == "dispatched")
    token = issue_token("power", "p-007", config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        rpc.agency.acknowledge(token, "power", issue_id)
        rpc.agency.resolve(token, "power", issue_id, {"note": "已断电并重新架设"})
    wait_until(lambda: len(desk(config).get(f"{whistle}/issues/{issue_id}/notifications")
                           .json()["notifications"]) == 5)
    rated = requests.post(f"{whistle}/issues/{issue_id}/feedback",
                          params={"token": rating_token(config, issue_id)},
                          json={"rating": "satisfied"}, timeout=5)
    assert rated.status_code == 200, rated.text
    wait_until(lambda: len(desk(config).get(f"{whistle}/issues/{issue_id}/notifications")
                           .json()["notifications"]) == 6
               and all(n["status"] == "sent" for n in desk(config).get(
                   f"{whistle}/issues/{issue_id}/notifications").json()["notifications"]))
    return issue_id


def desk(config) -> requests.Session:
    """HTTP as the desk (every community): what the desk reads is what must not change."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {issue_token('desk', 'd-001', config[cfg.SECRET])}"
    return session


def rating_token(config, issue_id: str) -> str:
    return issue_feedback_token(issue_id, issue_id, 0, config[cfg.SECRET], 3600)


def answers(whistle, config, issue_id: str) -> dict:
    """Everything a reader can ask about the issue, as they get it."""
    def get(path, **params):
        response = desk(config).get(f"{whistle}{path}", params=params, timeout=5)
        return response.status_code, response.json()

    rating = requests.post(f"{whistle}/issues/{issue_id}/feedback",
                           params={"token": rating_token(config, issue_id)},
                           json={"rating": "unsatisfied"}, timeout=5)
    listed = get("/issues", limit=500)
    power = {"Authorization": f"Bearer {issue_token('power', 'p-007', config[cfg.SECRET])}"}
    worked = requests.get(f"{whistle}/agencies/power/assignments", params={"status": "all"},
                          headers=power, timeout=5).json()["assignments"]
    resend = desk(config).post(f"{whistle}/issues/{issue_id}/rating-link", timeout=5)
    return {
        "rating_link": (resend.status_code, resend.json()),
        "issue": get(f"/issues/{issue_id}"),
        "events": get(f"/issues/{issue_id}/events"),
        "notifications": get(f"/issues/{issue_id}/notifications"),
        "rating_again": (rating.status_code, rating.json()),
        "listed": [e for e in listed[1]["issues"] if e["issue_id"] == issue_id],
        "the agency's": [a for a in worked if a["issue_id"] == issue_id],
    }


def test_an_archived_issue_answers_as_it_did_when_hot(whistle, config, store, archive):
    issue_id = closed_issue(whistle, config)
    hot = answers(whistle, config, issue_id)
    assert hot["issue"][1]["status"] == "closed"
    assert hot["issue"][1]["contact"]["phone"] == "138****5678"
    assert hot["rating_again"][0] == 409  # already rated: the same answer either way
    assert len(hot["listed"]) == 1 and len(hot["the agency's"]) == 1

    done = Archiver(store, archive, retention_s=0).run_until_idle(now_ts=9e9)
    assert done.archived == [issue_id]
    keys = [k for k in store.redis.keys(f"{config[cfg.KEY_PREFIX]}:*{issue_id}*")
            if ":rl:" not in k]  # rate limits by reporter expire by themselves
    assert keys == [], keys  # record, contact, notes, journal, deliveries, applied: gone
    prefix = config[cfg.KEY_PREFIX]
    for index in (f"{prefix}:issues", f"{prefix}:idx:closed"):
        assert store.redis.zscore(index, issue_id) is None
    for index in (f"{prefix}:idx:status:closed", f"{prefix}:idx:community:缤泰社区",
                  f"{prefix}:idx:agency:power"):
        assert not store.redis.sismember(index, issue_id)
    assert not any(store.redis.get(k) == issue_id for k in store.redis.scan_iter(
        f"{prefix}:dedupe:*"))

    assert answers(whistle, config, issue_id) == hot
    assert archive.count() == 1


def test_archiving_again_or_twice_at_once_changes_nothing(whistle, config, store, archive):
    first = closed_issue(whistle, config)
    second = closed_issue(whistle, config, phone="13900001111", address="丽德花园南门")
    before = {i: answers(whistle, config, i) for i in (first, second)}
    batch = store.redis.zrange(f"{config[cfg.KEY_PREFIX]}:idx:closed", 0, -1)
    bundles = Archiver(store, archive, 0)._claim_all(batch, "test-token", Pass())
    # A crash after the commit and before the removal, then a rerun: the same rows again.
    archive.store_bundles(b.bundle for b in bundles)
    archive.store_bundles(b.bundle for b in bundles)
    store.redis.delete(*(store.keys.archive_lease(i) for i in batch))  # the lease expired
    a, b = (Archiver(store, archive, 0, batch=1) for _ in range(2))
    results = [a.run_once(9e9), b.run_once(9e9), a.run_once(9e9), b.run_once(9e9)]
    archived = sorted(i for r in results for i in r.archived)
    assert archived == sorted([first, second])
    with archive.connection() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM archived_issue), (SELECT count(*) FROM issue_event),"
            " (SELECT count(DISTINCT (issue_id, seq)) FROM issue_event),"
            " (SELECT count(*) FROM issue_notification)").fetchone()
    events = sum(len(before[i]["events"][1]["events"]) for i in before)
    assert counts == (2, events, events, 12)
    assert {i: answers(whistle, config, i) for i in before} == before


def test_an_issue_that_changed_after_it_was_read_stays_in_redis(whistle, config, store,
                                                                archive):
    issue_id = closed_issue(whistle, config)
    archiver = Archiver(store, archive, 0)
    claimed = archiver._claim_all([issue_id], "token-1", Pass())
    archive.store_bundles(c.bundle for c in claimed)
    store.redis.hset(store.keys.notes(issue_id), "late-note", claimed[0].bundle.notes[
        next(iter(claimed[0].bundle.notes))])  # a late write after the read
    done = Pass()
    archiver._remove_all(claimed, "token-1", done)
    assert done.changed == [issue_id] and store.redis.exists(store.keys.issue(issue_id))
    # The next pass archives it afresh, late note and all.
    assert archiver.run_until_idle(9e9).archived == [issue_id]
    with archive.connection() as conn:
        assert conn.execute("SELECT count(*) FROM issue_note WHERE issue_id = %s AND "
                            "note_id = 'late-note'", (issue_id,)).fetchone()[0] == 1


def test_erasure_keeps_only_the_masked_contact(whistle, config, store, archive):
    issue_id = closed_issue(whistle, config)
    Archiver(store, archive, 0).run_until_idle(9e9)
    before = desk(config).get(f"{whistle}/issues/{issue_id}", timeout=5).json()
    assert archive.contact(issue_id)["phone"] == "13812345678"

    assert archive.erase_contact(issue_id) is True
    assert archive.erase_contact(issue_id) is False
    with archive.connection() as conn:
        row = conn.execute("SELECT contact, masked, erased_at IS NOT NULL FROM issue_contact "
                           "WHERE issue_id = %s", (issue_id,)).fetchone()
        dump = conn.execute("SELECT string_agg(t::text, '') FROM (SELECT * FROM issue_contact "
                            "UNION ALL SELECT * FROM issue_contact) t").fetchone()[0]
    assert row[0] is None and row[2] is True
    assert row[1]["phone"] == "138****5678" and row[1]["name"] == "孙**"
    assert "13812345678" not in dump and "孙大爷" not in dump
    after = desk(config).get(f"{whistle}/issues/{issue_id}", timeout=5).json()
    assert after == before  # the desk saw the masked form before, and still does


def test_erase_command_refuses_a_hot_issue_and_erases_an_archived_one(whistle, config, store,
                                                                      archive):
    from click.testing import CliRunner

    from whistle.cli import cli

    issue_id = closed_issue(whistle, config)
    env = {cfg.REDIS_URL: config[cfg.REDIS_URL], cfg.KEY_PREFIX: config[cfg.KEY_PREFIX],
           cfg.DATABASE_URL: config[cfg.DATABASE_URL]}
    refused = CliRunner().invoke(cli, ["privacy", "erase", issue_id], env=env)
    assert refused.exit_code == 1 and "not archived yet" in refused.output
    # The relays of its messages are forgotten with the issue (archived or erased): the
    # record of what the desk relayed grew for ever.
    waiting = [loads(raw)["notification_id"] for raw in
               store.redis.lrange(store.keys.desk_outbox, 0, -1)
               if loads(raw)["issue_id"] == issue_id]
    unscoped = issue_token("desk", "d-001", config[cfg.SECRET])
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        rpc.notify.mark_relayed(unscoped, waiting[0])
        assert store.relays(waiting[:1])
        moved = CliRunner().invoke(cli, ["archive", "--retention", "0"], env=env)
        assert moved.exit_code == 0 and "archived 1;" in moved.output
        assert not store.relays(waiting[:1])
        rpc.notify.mark_relayed(unscoped, waiting[1])  # relayed once archived
        assert store.relays(waiting[1:2])
    # The desk's outbox (its relay page) holds the contact in full, for the desk to call.
    outbox = store.redis.lrange(store.keys.desk_outbox, 0, -1)
    assert any(issue_id in raw and "13812345678" in raw for raw in outbox)
    erased = CliRunner().invoke(cli, ["privacy", "erase", issue_id], env=env)
    assert erased.exit_code == 0, erased.output
    assert not store.relays(waiting) and not store.redis.zcard(store.keys.desk_relayed_at)
    assert archive.contact(issue_id) == {"name": "孙**", "phone": "138****5678"}
    outbox = store.redis.lrange(store.keys.desk_outbox, 0, -1)
    assert not any(issue_id in raw or "13812345678" in raw for raw in outbox)
    assert "taken off the desk's outbox" in erased.output
    unknown = CliRunner().invoke(cli, ["privacy", "erase", "WH-20200101-0001"], env=env)
    assert unknown.exit_code == 1 and "no archived issue" in unknown.output


@pytest.mark.parametrize("args", [("archive", "--retention", "0"),
                                  ("privacy", "erase", "WH-20200101-0001")])
def test_archive_and_erase_on_a_database_never_migrated_say_to_upgrade_it(whistle, config,
                                                                          args):
    """They wrote to, or erased in, tables that were not there: a psycopg UndefinedTable
    traceback. The services refuse such a database with one line; so do the commands."""
    from click.testing import CliRunner

    from whistle.cli import cli

    issue_id = closed_issue(whistle, config)
    name = f"whistle_test_bare_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    try:
        env = {cfg.REDIS_URL: config[cfg.REDIS_URL], cfg.KEY_PREFIX: config[cfg.KEY_PREFIX],
               cfg.DATABASE_URL: url}
        result = CliRunner().invoke(cli, list(args), env=env)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), result.exception
        assert result.output.startswith(f"Error: the database at {url} is behind this code")
        assert "run `whistle db upgrade`" in result.output
        assert desk(config).get(f"{whistle}/issues/{issue_id}").json()["status"] == "closed"
    finally:
        drop_database(name)


def test_archive_command_with_the_database_out_of_reach_says_which_and_where(whistle, config):
    from click.testing import CliRunner

    from whistle.cli import cli

    issue_id = closed_issue(whistle, config)
    env = {cfg.REDIS_URL: config[cfg.REDIS_URL], cfg.KEY_PREFIX: config[cfg.KEY_PREFIX],
           cfg.DATABASE_URL: "postgresql://whistle:hunter2@127.0.0.1:1/whistle"}
    result = CliRunner().invoke(cli, ["archive", "--retention", "0"], env=env)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == ("Error: cannot reach the database at "
                                     "postgresql://whistle@127.0.0.1:1/whistle "
                                     "(archive unavailable: PoolTimeout)")
    assert desk(config).get(f"{whistle}/issues/{issue_id}").json()["status"] == "closed"


def test_listing_pages_through_hot_and_archived_issues_with_a_cursor(whistle, config, store,
                                                                     archive):
    ids = [closed_issue(whistle, config, phone=f"1390000{i:04d}", address=f"丽德花园{i}号楼")
           for i in range(3)]
    Archiver(store, archive, 0, batch=2).run_once(9e9)  # the two oldest move
    assert archive.count() == 2
    for i in range(2):  # and two more, hot and open
        desk(config).post(f"{whistle}/issues", json={
            "description": "楼道灯不亮", "location": {"community": "缤泰社区",
                                                 "address": f"丽德花园{10 + i}号楼"}}, timeout=5)
    seen, cursor = [], None
    while True:
        page = desk(config).get(f"{whistle}/issues", params={"limit": 2, **(
            {"cursor": cursor} if cursor else {})}, timeout=5).json()
        seen += [e["issue_id"] for e in page["issues"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and len(set(seen)) == 5
    assert seen[2:] == ids[::-1]  # newest first, across both stores
    closed = desk(config).get(f"{whistle}/issues", params={"status": "closed"}, timeout=5).json()
    assert [e["issue_id"] for e in closed["issues"]] == ids[::-1]
    bad = desk(config).get(f"{whistle}/issues", params={"cursor": "bogus"}, timeout=5)
    assert bad.status_code == 422 and "cursor" in bad.text

    # The agency's own finished work pages the same way (it used to stop at 500 issues).
    power = {"Authorization": f"Bearer {issue_token('power', 'p-007', config[cfg.SECRET])}"}
    worked, cursor = [], None
    while True:
        page = requests.get(f"{whistle}/agencies/power/assignments", headers=power, timeout=5,
                            params={"status": "resolved", "limit": 1,
                                    **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        worked += [a["issue_id"] for a in page.json()["assignments"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert worked == ids[::-1]
    for params, field in (({"cursor": "bogus", "status": "all"}, "cursor"),
                          ({"limit": 0, "status": "all"}, "limit"),
                          ([("status", "all"), ("status", "open")], "status"),
                          # a well-formed cursor, but the open list is one page
                          ({"cursor": encode_cursor(utcnow(), ids[0])}, "cursor")):
        refused = requests.get(f"{whistle}/agencies/power/assignments", headers=power,
                               params=params, timeout=5)
        assert refused.status_code == 422, (params, refused.text)
        assert [e["field"] for e in refused.json()["error"]["fields"]] == [field], refused.text


def test_migrations_apply_to_an_empty_database_and_services_check_them():
    import uuid

    name = f"whistle_empty_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    try:
        every = ["0001_archive", "0002_stats_summary", "0003_stats_rating_copies",
                 "0004_stats_rating_agency", "0005_stats_rating_by_desk",
                 "0006_community_spelling", "0007_archived_withdrawal"]
        assert pending_migrations(url) == every
        with pytest.raises(SchemaBehind, match="whistle db upgrade"):
            check_schema(url)
        assert upgrade(url) == every
        assert upgrade(url) == []
        check_schema(url)
        archive = Archive(url)
        try:
            with archive.connection() as conn:
                tables = {r[0] for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
                ours = sorted(t for t in tables if "yoyo" not in t)
                sizes = dict(conn.execute(
                    "SELECT t, pg_total_relation_size(quote_ident(t)) FROM unnest(%s::text[]) t",
                    (ours,)).fetchall())
            # What bench.scale reports: every table of ours, those triggers fill included
            # (it once left out stat_rating_agency and archived_withdrawal).
            assert archive.size_bytes() == sum(sizes.values())
            assert sizes["archived_withdrawal"] > 0 and sizes["stat_rating_agency"] > 0
        finally:
            archive.close()
        assert {"archived_issue", "issue_contact", "issue_event", "issue_note",
                "issue_notification", "stat_assignment", "stat_rating",
                "stat_rating_agency", "stat_escalation", "community_spelling",
                "archived_withdrawal"} <= tables
    finally:
        drop_database(name)
    check_schema("postgresql://postgres@127.0.0.1:1/nowhere")  # down: not an error


def test_erasure_leaves_no_name_in_clear_where_the_resident_wrote_it(whistle, config, store,
                                                                     archive):
    """The resident's name in their own description was masked on the public Open311 read
    by the contact's name; once the contact was erased, the same read showed it in clear
    (我叫吴桂芳 instead of 我叫吴**), and the database kept it in the record and journal."""
    receipt = desk(config).post(f"{whistle}/issues", json={
        "description": "我叫吴桂芳，电话13822223333，楼道灯坏了，吴桂芳家门口一片黑",
        "location": {"community": "和平里社区", "address": "和平里9号楼"},
        "contact": {"name": "吴桂芳", "phone": "13822223333"}}, timeout=5)
    assert receipt.status_code == 201, receipt.text
    issue_id = receipt.json()["issue_id"]
    wait_until(lambda: store.get(issue_id).status.value == "dispatched")
    resolve_and_rate_satisfied(whistle, config, store, issue_id)
    assert Archiver(store, archive, 0).run_until_idle(9e9).archived == [issue_id]

    def public():
        response = requests.get(f"{whistle}/open311/v2/requests/{issue_id}.json", timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    before = public()
    assert before[0]["description"] == "我叫吴**，电话138****3333，楼道灯坏了，吴**家门口一片黑"
    assert archive.erase_contact(issue_id) is True
    assert public() == before
    with archive.connection() as conn:
        dump = conn.execute(
            "SELECT string_agg(t, '') FROM (SELECT record::text t FROM archived_issue "
            "UNION ALL SELECT entry::text FROM issue_event UNION ALL SELECT entry::text "
            "FROM issue_note UNION ALL SELECT coalesce(contact::text, '') FROM issue_contact) "
            "u").fetchone()[0]
    assert "吴桂芳" not in dump and "13822223333" not in dump
    seen = desk(config).get(f"{whistle}/issues/{issue_id}", timeout=5).json()
    assert seen["description"] == "我叫吴**，电话138****3333，楼道灯坏了，吴**家门口一片黑"
    assert seen["contact"]["name"] == "吴**" and seen["contact"]["phone"] == "138****3333"
    assert archive.erase_contact(issue_id) is False

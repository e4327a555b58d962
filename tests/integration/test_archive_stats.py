"""GET /stats from SQL equals compute_stats on the same journals, however the issues are
split between Redis (hot) and PostgreSQL (archived)."""

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from bench.scale import synthetic_issue
from services.intake.stats import LOOKBACK, compute_stats
from shared import archive as archive_module
from shared.archive import Archive, Bundle, _backend_and_migrations, upgrade
from shared.archive_stats import stats_over
from shared.contracts import Channel, Language, Location
from shared.issue import receive
from shared.jsoncodec import dumps, loads
from tests.conftest import create_database, drop_database
from tests.unit.test_stats import EXPECTED_AGENCIES, EXPECTED_OVERALL, known_history

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def archive(fresh_database_url):
    archive = Archive(fresh_database_url)
    yield archive
    archive.close()


def bundle_of(issue_id: str, journal: list[dict], community: str = "缤泰社区") -> Bundle:
    """An issue as the archiver would copy it: its record (received at its first event)
    and its journal."""
    received_at = min(datetime.fromisoformat(e["occurred_at"]) for e in journal)
    record = receive(issue_id, f"trace-{issue_id}", "楼道灯不亮", None,
                     Location(community=community, address="3号楼"), Channel.desk,
                     Language.zh, received_at)
    return Bundle(record.model_dump_json(), journal=[dumps(e) for e in journal])


def reference(journals: dict[str, list[dict]], since, until, now) -> dict:
    """compute_stats as intake ran it: the issues received in [since - 60 days, until],
    in the order they were received."""
    def received(journal):
        return min(datetime.fromisoformat(e["occurred_at"]) for e in journal)

    picked = sorted((received(j), i) for i, j in journals.items()
                    if since - LOOKBACK <= received(j) <= until)
    return compute_stats([journals[i] for _, i in picked], since, until, now)


def split(archive, journals, archived_ids):
    archive.store_bundles(bundle_of(i, journals[i]) for i in archived_ids)
    return {i: j for i, j in journals.items() if i not in archived_ids}


@pytest.mark.parametrize("archived", ["none", "some", "all"])
def test_the_known_history_gives_the_known_figures(archive, archived):
    since = NOW - timedelta(days=10)
    until = since + timedelta(days=7)
    journals = known_history(since)
    ids = sorted(journals)
    archived_ids = {"none": [], "some": ids[::2], "all": ids}[archived]
    hot = split(archive, journals, archived_ids)
    report = stats_over(archive, hot, since, until, NOW)
    assert report == reference(journals, since, until, NOW)
    assert report["overall"] == EXPECTED_OVERALL
    assert report["agencies"] == EXPECTED_AGENCIES


def with_call_backs(journals: dict[str, list[dict]], every: int = 3) -> dict[str, list[dict]]:
    """``journals`` with every ``every``-th rating recorded by the desk on a call-back
    (电话回访: ``recorded_by`` and ``method`` on the event), for ``rated_by``."""
    ratings = sorted({e["event_id"] for journal in journals.values() for e in journal
                      if e["event_type"] == "issue.rated"})
    by_desk = set(ratings[::every])  # each copy of a rating alike (a merged report's too)
    for journal in journals.values():
        for event in journal:
            if event.get("event_id") in by_desk:
                event.update(recorded_by="d-1", method="phone")
    return journals


def test_many_varied_issues_over_many_windows_match_compute_stats(archive):
    rng = random.Random(7)
    journals = {}
    for n in range(600):
        bundle = synthetic_issue(n, NOW - timedelta(days=rng.uniform(0, 120)), rng)
        journals[loads(bundle.record)["issue_id"]] = [loads(e) for e in bundle.journal]
    with_call_backs(journals)
    ids = sorted(journals)
    archived_ids = set(rng.sample(ids, 400))
    hot = split(archive, journals, archived_ids)
    windows = [(NOW - timedelta(days=30), NOW), (NOW - timedelta(days=90), NOW - timedelta(days=60)),
               (NOW - timedelta(days=7, hours=5), NOW - timedelta(days=2, minutes=13)),
               (NOW - timedelta(days=45), NOW + timedelta(days=3))]
    for since, until in windows:
        in_range = {i: j for i, j in hot.items()
                    if since - LOOKBACK <= min(datetime.fromisoformat(e["occurred_at"])
                                               for e in j) <= until}
        report = stats_over(archive, in_range, since, until, NOW)
        assert report == reference(journals, since, until, NOW), (since, until)
        assert report["overall"]["assigned"] > 0
    assert report["overall"]["rated_by"]["desk"]["rated"] > 0


def test_archiving_again_or_while_still_hot_counts_each_issue_once(archive):
    """The window's issue count sums whole days from stat_issue_day: an issue archived a
    second time is not added again, and one read from Redis that is archived too is
    counted once. Windows whose partial days at either end differ, and one desk's scope."""
    rng = random.Random(11)
    journals = {}
    for n in range(300):
        bundle = synthetic_issue(n, NOW - timedelta(days=rng.uniform(0, 100)), rng)
        issue_id = loads(bundle.record)["issue_id"]
        journals[issue_id] = [loads(e) for e in bundle.journal]
    ids = sorted(journals)
    split(archive, journals, ids)
    split(archive, journals, ids[::3])  # a crash after the commit, and a rerun
    still_hot = set(ids[::5])  # archived, not yet removed from Redis
    windows = [(NOW - timedelta(days=30), NOW),
               (NOW - timedelta(days=1, hours=2), NOW - timedelta(hours=20)),
               (NOW - timedelta(hours=30), NOW - timedelta(hours=29))]
    for since, until in windows:
        def in_range(i, since=since, until=until):
            return since - LOOKBACK <= min(datetime.fromisoformat(e["occurred_at"])
                                           for e in journals[i]) <= until
        hot = {i: journals[i] for i in still_hot if in_range(i)}
        report = stats_over(archive, hot, since, until, NOW)
        assert report == reference(journals, since, until, NOW), (since, until)
        # bundle_of files every issue under 缤泰社区: a desk of it reads them all.
        desk = stats_over(archive, hot, since, until, NOW, frozenset({"缤泰社区"}))
        assert desk["window"]["issues"] == report["window"]["issues"] > 0
        other = stats_over(archive, {}, since, until, NOW, frozenset({"丽德社区"}))
        assert other["window"]["issues"] == 0
    with archive.connection() as conn:
        assert conn.execute("SELECT sum(issues) FROM stat_issue_day").fetchone()[0] == 300


def test_a_desk_counts_its_archived_issues_however_their_community_was_written(archive):
    """Every statement narrows by the scope's folded names: a desk of 缤泰社区 (or of
    缤泰社區, or of both) counts the issues archived under either spelling, and no other
    community's, as compute_stats counts its issues' journals."""
    journals = with_call_backs(varied_journals(23, 300, 40))
    ids = sorted(journals)
    ours, theirs = ids[::2], ids[1::2]
    spellings = ("缤泰社區", "缤泰社区")
    archive.store_bundles(bundle_of(issue_id, journals[issue_id], spellings[n % 2])
                          for n, issue_id in enumerate(ours))
    archive.store_bundles(bundle_of(issue_id, journals[issue_id], "和平里社区")
                          for issue_id in theirs)
    since = NOW - timedelta(days=30)
    expected = reference({i: journals[i] for i in ours}, since, NOW, NOW)
    assert expected["overall"]["assigned"] and expected["overall"]["rated"]
    assert expected["overall"]["escalated"]
    for scope in ({"缤泰社区"}, {"缤泰社區"}, {"缤泰社区", "缤泰社區"}):
        assert stats_over(archive, {}, since, NOW, NOW, frozenset(scope)) == expected, scope
    assert stats_over(archive, {}, since, NOW, NOW, frozenset({"和平里社区"})) == reference(
        {i: journals[i] for i in theirs}, since, NOW, NOW)
    with archive.connection() as conn:  # each spelling once, with its folded form
        assert sorted(conn.execute("SELECT community, community_key FROM community_spelling")
                      .fetchall()) == [("和平里社区", "和平里社区"), ("缤泰社区", "缤泰社区"),
                                       ("缤泰社區", "缤泰社区")]


def test_migration_0006_knows_the_spellings_of_issues_archived_before_it():
    """The spellings of issues archived before 0006 are added by the migration (from
    Python: SQL cannot fold), and added once however often it runs."""
    with archive_before("0006") as (url, archive):
        journals = varied_journals(29, 120, 40)
        ids = sorted(journals)
        with code_before_0005():  # no spellings, no community_spelling to write to
            archive.store_bundles(bundle_of(i, journals[i], "缤泰社區") for i in ids[::2])
            archive.store_bundles(bundle_of(i, journals[i], "和平里社区") for i in ids[1::2])
        assert upgrade(url) == ["0006_community_spelling", "0007_archived_withdrawal"]
        since = NOW - timedelta(days=30)
        expected = reference({i: journals[i] for i in ids[::2]}, since, NOW, NOW)
        assert stats_over(archive, {}, since, NOW, NOW, frozenset({"缤泰社区"})) == expected
        assert expected["window"]["issues"] > 0
        listed = archive.summaries(None, None, "缤泰社区", None, 500)
        assert sorted(e["issue_id"] for e in listed) == ids[::2]
        assert {e["community"] for e in listed} == {"缤泰社區"}  # shown as written
        # Applied again (its mark removed): the same rows, nothing doubled.
        backend, migrations = _backend_and_migrations(url)
        try:
            backend.unmark_migrations(migrations.filter(
                lambda m: m.id == "0006_community_spelling"))
        finally:
            backend.connection.close()
        assert upgrade(url) == ["0006_community_spelling"]
        with archive.connection() as conn:
            assert sorted(conn.execute("SELECT * FROM community_spelling").fetchall()) == [
                ("和平里社区", "和平里社区"), ("缤泰社區", "缤泰社区")]


def varied_journals(seed: int, count: int, days: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    journals = {}
    for n in range(count):
        bundle = synthetic_issue(n, NOW - timedelta(days=rng.uniform(0, days)), rng)
        journals[loads(bundle.record)["issue_id"]] = [loads(e) for e in bundle.journal]
    return journals


def test_two_archivers_writing_the_same_issues_at_once_count_their_ratings_once(archive):
    """stat_rating_agency follows the ratings each INSERT really inserted: the second
    archiver waits on the first's rows, then skips them."""
    journals = varied_journals(13, 200, 40)
    ids = sorted(journals)
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: split(archive, journals, ids), range(2)))
    since = NOW - timedelta(days=30)
    assert stats_over(archive, {}, since, NOW, NOW) == reference(journals, since, NOW, NOW)
    with archive.connection() as conn:
        pairs = conn.execute("SELECT count(*) FROM stat_rating r, unnest(r.agencies) "
                             "WHERE r.subject = r.issue_id").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM stat_rating_agency").fetchone()[0] == pairs > 0


def migrated_before(url: str, migration: str) -> None:
    """The schema as it was before ``migration``."""
    backend, migrations = _backend_and_migrations(url)
    try:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations).filter(
                lambda m: m.id < migration))
    finally:
        backend.connection.close()


@contextmanager
def archive_before(migration: str):
    """A database of its own with the schema as it was before ``migration``, and its
    archive: (url, archive)."""
    name = f"whistle_before_{migration}_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    try:
        migrated_before(url, migration)
        archive = Archive(url)
        try:
            yield url, archive
        finally:
            archive.close()
    finally:
        drop_database(name)


@contextmanager
def code_before_0005():
    """The archiver as it was before 0005: its ratings' rows have no ``by_desk`` (nor
    does it know the spellings of communities, 0006)."""
    columns, conflict = archive_module._TABLES["stat_rating"]
    rows_of = archive_module._bundle_rows

    def old_rows(bundle):
        rows = rows_of(bundle)
        rows["stat_rating"] = [row[:-1] for row in rows["stat_rating"]]
        return rows

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(archive_module._TABLES, "stat_rating",
                      (columns.removesuffix(", by_desk"), conflict))
        patch.setattr(archive_module, "_bundle_rows", old_rows)
        patch.setattr(archive_module, "add_spellings", lambda cursor, communities: None)
        yield


def test_migration_0004_fills_the_ratings_per_agency_of_issues_archived_before_it():
    with archive_before("0004") as (url, archive):
        journals = varied_journals(17, 200, 40)
        with code_before_0005():  # archived by code before 0004
            split(archive, journals, sorted(journals))
        assert upgrade(url) == ["0004_stats_rating_agency", "0005_stats_rating_by_desk",
                                "0006_community_spelling", "0007_archived_withdrawal"]
        since = NOW - timedelta(days=30)
        report = stats_over(archive, {}, since, NOW, NOW)
        assert report == reference(journals, since, NOW, NOW)
        assert sum(b["rated"] for b in report["agencies"].values()) > 0


def test_migration_0005_tells_the_desks_ratings_apart_archived_before_it_or_by_older_code():
    """The ratings the desk recorded on a call-back, archived before 0005 and, after it, by
    an archiver of older code still running: each is counted in rated_by's "desk", as
    compute_stats counts it from the journal."""
    with archive_before("0005") as (url, archive):
        journals = with_call_backs(varied_journals(19, 300, 40))
        ids = sorted(journals)
        with code_before_0005():
            split(archive, journals, ids[::2])
            assert upgrade(url) == ["0005_stats_rating_by_desk", "0006_community_spelling",
                                    "0007_archived_withdrawal"]
            split(archive, journals, ids[1::2])  # older code, after the upgrade
        since = NOW - timedelta(days=30)
        report = stats_over(archive, {}, since, NOW, NOW)
        assert report == reference(journals, since, NOW, NOW)
        by = report["overall"]["rated_by"]
        assert by["desk"]["rated"] > 0 and by["resident"]["rated"] > 0
        assert by["desk"]["rated"] + by["resident"]["rated"] == report["overall"]["rated"]
        assert sum(b["rated_by"]["desk"]["rated"] for b in report["agencies"].values()) > 0

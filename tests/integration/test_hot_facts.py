"""/stats replays an issue's journal only when it has grown (services.intake.hot_facts)."""

from datetime import UTC, datetime, timedelta

import pytest
import redis

from services.intake import hot_facts as hot_facts_module
from services.intake.hot_facts import HotFacts, hot_facts_for
from services.intake.stats import issue_facts
from shared import config as cfg
from shared.store import IssueStore, dumps
from tests.integration.test_stats import journaled
from tests.unit.test_stats import acked, known_history

pytestmark = pytest.mark.integration

SINCE = (datetime.now(UTC) - timedelta(days=10)).replace(microsecond=0)


@pytest.fixture
def hot(whistle_config):
    """The store, and the known history's issues journaled in it (id -> journal)."""
    client = redis.Redis.from_url(whistle_config[cfg.REDIS_URL], decode_responses=True)
    store, journals = IssueStore(client, whistle_config[cfg.KEY_PREFIX]), known_history(SINCE)
    for issue_id, journal in journals.items():
        journaled(store, issue_id, journal)
    yield store, journals
    client.close()


@pytest.fixture
def replays(monkeypatch):
    """The journals replayed, in order."""
    seen: list[int] = []

    def counting(journal):
        seen.append(len(journal))
        return issue_facts(journal)

    monkeypatch.setattr(hot_facts_module, "issue_facts", counting)
    return seen


def test_the_facts_are_those_of_the_journals(hot):
    store, history = hot
    ids = sorted(history)
    facts = HotFacts().facts(store, ids)
    assert list(facts) == ids
    assert facts == {issue_id: issue_facts(history[issue_id]) for issue_id in ids}


def test_only_a_journal_that_grew_is_read_again(hot, replays):
    store, history = hot
    ids, cache = sorted(history), HotFacts()
    first = cache.facts(store, ids)
    assert len(replays) == len(ids)
    replays.clear()
    assert cache.facts(store, ids) == first and replays == []

    grown = ids[0]
    late = acked(grown, "gas", SINCE + timedelta(days=8), on_time=False)
    store.redis.rpush(store.keys.journal(grown), dumps(late))
    again = cache.facts(store, ids)
    assert replays == [len(history[grown]) + 1]
    assert again[grown] == issue_facts([*history[grown], late])
    assert all(again[i] is first[i] for i in ids[1:])  # kept, not replayed


def test_an_archived_issue_has_no_facts_left(hot):
    store, history = hot
    ids, cache = sorted(history), HotFacts()
    cache.facts(store, ids)
    store.redis.delete(store.keys.journal(ids[0]))  # what the archiver does, among the rest
    assert cache.facts(store, ids)[ids[0]] == issue_facts([])


def test_a_desks_share_keeps_the_rest_and_the_whole_window_forgets_what_left_it(hot, replays):
    store, history = hot
    ids, cache = sorted(history), HotFacts()
    cache.facts(store, ids)
    cache.facts(store, ids[:1], everything=False)  # a desk scoped to some communities
    replays.clear()
    cache.facts(store, ids)
    assert replays == []
    cache.facts(store, ids[1:])  # the window moved on: ids[0] is forgotten
    cache.facts(store, ids)
    assert replays == [len(history[ids[0]])]


def test_one_cache_per_key_prefix(hot):
    store, _ = hot
    assert hot_facts_for(store) is hot_facts_for(store)
    other = IssueStore(store.redis, store.keys.prefix + "-other")
    assert hot_facts_for(other) is not hot_facts_for(store)

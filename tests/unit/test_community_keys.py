"""The community index and the archive compare a community folded, as a desk token's
scope does (``shared.authz.in_communities``): one key and one key of the archive's per
community, however a report wrote it. Pure: nothing here reaches Redis or PostgreSQL."""

from datetime import UTC, datetime

import pytest
import redis

from shared.archive import community_keys, in_scope
from shared.contracts import Channel, Language, Location
from shared.issue import receive
from shared.store import IssueStore, Keys, glob_escaped

KEYS = Keys("whistle")


@pytest.mark.parametrize("written", ["缤泰社區", "缤泰社区"])
def test_every_spelling_of_a_community_is_one_index_set(written):
    assert KEYS.by_community(written) == "whistle:idx:community:缤泰社区"


def test_full_width_and_capitals_fold_into_the_same_set_and_other_communities_do_not():
    assert KEYS.by_community("ＡＢＣ社區") == KEYS.by_community("abc社区")
    assert KEYS.by_community("和平里社区") != KEYS.by_community("缤泰社区")
    assert KEYS.by_community("缤泰社区东区") != KEYS.by_community("缤泰社区")


def test_a_record_is_indexed_under_its_folded_community_and_keeps_its_own_spelling():
    store = IssueStore(redis.Redis(), "whistle")  # no command is sent
    record = receive("WH-20261207-0001", "trace", "楼道灯不亮", None,
                     Location(community="缤泰社區", address="3号楼"), Channel.desk, Language.zh,
                     datetime(2026, 12, 7, 9, tzinfo=UTC))
    assert "whistle:idx:community:缤泰社区" in store.index_sets(record)
    assert record.location.community == "缤泰社區"


def test_a_scope_is_compared_in_the_archive_by_its_folded_names():
    assert community_keys(["缤泰社區", "缤泰社区", "和平里社区"]) == ["和平里社区", "缤泰社区"]
    sql = in_scope("s.community", "%(communities)s::text[]")
    assert sql == ("s.community = ANY(ARRAY(SELECT community FROM community_spelling "
                   "WHERE community_key = ANY(%(communities)s::text[])))")


def test_a_key_prefix_is_matched_literally_when_scanning():
    assert glob_escaped("whistle:idx:community:") == "whistle:idx:community:"
    assert glob_escaped("t*[1]?\\") == "t\\*\\[1\\]\\?\\\\"

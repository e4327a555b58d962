"""Every spelling of a community the archive holds, with its folded form.

A desk token's communities compare folded (shared.folding: NFKC, casefolded,
traditional characters as simplified, so 缤泰社區 is 缤泰社区). GET /stats and the
archived half of GET /issues narrow by community in SQL, which cannot fold: they look
the scope's folded names up here and compare the spellings found with the tables'
``community`` as before, through the same indexes (shared.archive.in_scope). The
archiver adds the spellings of the issues it archives (shared.archive.add_spellings);
this migration adds those of the issues archived before it, from Python, since the
folding is Python's.

Idempotent: a spelling already here is left as it is, so running the backfill again
(or after a crash part way, which rolls the whole migration back) adds only what is
missing.
"""

from yoyo import step

from shared.archive import add_spellings

__depends__ = {"0005_stats_rating_by_desk"}

# Spellings written per statement: a community is a few characters, and there are few
# (one per name a report gave), but an archive of many cities would hold thousands.
BATCH = 1000


def add_archived_spellings(conn) -> None:
    """The spellings of every archived issue's community, in batches of :data:`BATCH`."""
    with conn.cursor() as cursor:
        # An archiver still running older code waits at this lock until the commit, so
        # none archives an issue between the read below and the spellings' commit.
        # (New code's services do not start before the migration is applied.)
        cursor.execute("LOCK TABLE archived_issue IN SHARE MODE")
        cursor.execute("SELECT DISTINCT community FROM archived_issue ORDER BY 1")
        communities = [community for (community,) in cursor.fetchall()]
        for start in range(0, len(communities), BATCH):
            add_spellings(cursor, communities[start:start + BATCH])


steps = [
    step("""
CREATE TABLE IF NOT EXISTS community_spelling (
    community      text PRIMARY KEY,  -- as residents and the desk wrote it
    community_key  text NOT NULL      -- shared.folding.folded(community)
)"""),
    step("CREATE INDEX IF NOT EXISTS community_spelling_key "
         "ON community_spelling (community_key) INCLUDE (community)"),
    step(add_archived_spellings),
]

"""The facts of the issues still in Redis, for ``/stats``, replayed only when they change.

``/stats`` counts the issues still in Redis from their journals (``shared.archive_stats``).
Replaying every one on every request made the page's cost grow with the issues open at
once: reading each journal and replaying it was most of 2.8 s with 20,000 of them
(docs/benchmarks.md, "/stats with issues still in Redis"). A journal only grows (the
store appends to it in the same atomic write as each change) until the archiver deletes
it, so its length says whether facts replayed from it still hold: each request reads
the lengths in one round trip, and reads and replays only the journals that grew.
"""

from __future__ import annotations

from services.intake.stats import IssueFacts, issue_facts
from shared.store import IssueStore


class HotFacts:
    """One process's replayed facts, by issue: ``(journal length, facts)``."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, IssueFacts]] = {}

    def facts(self, store: IssueStore, issue_ids: list[str],
              everything: bool = True) -> dict[str, IssueFacts]:
        """The facts of each of ``issue_ids``' journals as they are now.

        ``everything``: these are all the issues a window reads (not a desk's share of
        them), so what is known of any other issue is forgotten: it has left the window
        or Redis, and the memory stays that of one window's issues."""
        lengths = store.journal_lengths(issue_ids)
        found: dict[str, IssueFacts] = {}
        grown = []
        for issue_id, length in zip(issue_ids, lengths, strict=True):
            known = self._known.get(issue_id)
            if known is not None and known[0] == length:
                found[issue_id] = known[1]
            else:
                grown.append(issue_id)
        # Another request may run meanwhile (a green thread, while this one waits on
        # Redis) and replay or forget the same issues: this one answers from its own.
        for issue_id, journal in zip(grown, store.journals(grown), strict=True):
            found[issue_id] = issue_facts(journal)
            self._known[issue_id] = (len(journal), found[issue_id])
        if everything:
            self._known = {issue_id: self._known[issue_id] for issue_id in issue_ids
                           if issue_id in self._known}
        return {issue_id: found[issue_id] for issue_id in issue_ids}


_by_prefix: dict[str, HotFacts] = {}


def hot_facts_for(store: IssueStore) -> HotFacts:
    """The process's facts for the issues under ``store``'s key prefix."""
    return _by_prefix.setdefault(store.keys.prefix, HotFacts())

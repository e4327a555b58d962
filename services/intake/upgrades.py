"""Redis keys of an earlier release brought up to date when intake starts.

Intake is the one service that writes the community index (a new issue goes in it) and
reads it (the desk's lists, board and ``/stats``), so it moves an earlier release's
index to the folded names (``shared.store.IssueStore.fold_community_index``) in its
set-up, before it serves anything. It also fills the withdrawn index with the parts a
reroute withdrew before that index existed (``IssueStore.fill_withdrawn_index``), and
takes the messages an earlier release left in the desk's outbox once relayed off it
(``IssueStore.desk_outbox_pending_only``: intake's archiver forgets relays, which would
otherwise bring those back onto the desk's list); intake is the one service always
deployed. Redis being out of reach then does not stop intake from starting: its timer
tries again until every move is done.
"""

from __future__ import annotations

import time
from logging import getLogger

from shared.errors import Unavailable
from shared.store import IssueStore, RedisProvider

_log = getLogger(__name__)


class KeyUpgrades(RedisProvider):
    """Runs the key migrations once per process, from set-up, retried by :meth:`run`.

    Usage::

        class IntakeService:
            upgrades = KeyUpgrades()

            @timer(interval=UPGRADE_RETRY_S)
            def upgrade_keys(self):
                self.upgrades.run()
    """

    def setup(self):
        super().setup()
        self.store = IssueStore(self.client, self.prefix)
        self.done = False
        self.run()

    def get_dependency(self, worker_ctx):
        return self

    def run(self) -> None:
        """Do what is left to do (nothing, once done)."""
        if self.done:
            return
        try:
            merged = self.store.fold_community_index()
            indexed = self.store.fill_withdrawn_index()
            relayed = self.store.desk_outbox_pending_only(time.time())
        except Unavailable as exc:
            _log.warning("Redis keys of an earlier release not yet upgraded, retrying: %s", exc)
            return
        self.done = True
        if merged:
            _log.info("community index: %d set(s) of names as written merged into their "
                      "folded names", merged)
        if indexed:
            _log.info("withdrawn index: %d issue(s) withdrawn from an agency before it "
                      "existed added", indexed)
        if relayed:
            _log.info("desk outbox: %d message(s) relayed already taken off it", relayed)

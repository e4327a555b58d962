"""One PostgreSQL pool a process, however many services set up side by side, closed at the end."""

from __future__ import annotations

import eventlet
import pytest

from shared import store as store_module
from shared.store import archive_for, close_archives

pytestmark = pytest.mark.integration


def test_services_setting_up_together_share_one_pool_and_it_closes(database_url,
                                                                   monkeypatch):
    monkeypatch.setattr(store_module, "_archives", {})
    # As ``whistle up`` sets its services up: side by side, each asking for the archive
    # while the others wait on the schema check.
    archives = [thread.wait() for thread in
                [eventlet.spawn(archive_for, database_url) for _ in range(4)]]
    assert len({id(archive) for archive in archives}) == 1
    assert list(store_module._archives.values()) == [archives[0]]

    close_archives()
    assert archives[0].pool.closed and store_module._archives == {}

"""The lean Redis pool against the real Redis: what it skips, and what it still catches."""

import eventlet
import pytest
import redis

from shared import redis_pool
from shared.store import connect
from tests.conftest import REDIS_URL


@pytest.fixture
def client():
    client = connect(REDIS_URL)
    yield client
    client.close()


def _only_connection(client):
    (connection,) = client.connection_pool._available_connections
    return connection


def test_a_connection_used_moments_ago_is_handed_out_without_another_read(client, monkeypatch):
    client.ping()
    connection = _only_connection(client)
    reads = []
    monkeypatch.setattr(connection, "can_read", lambda *a, **k: reads.append(1) or False)

    for _ in range(5):
        assert client.ping()

    assert reads == []
    assert _only_connection(client) is connection


def test_an_idle_connection_is_checked_as_redis_py_checks_it(client, monkeypatch):
    client.ping()
    connection = _only_connection(client)
    reads = []
    monkeypatch.setattr(connection, "can_read", lambda *a, **k: reads.append(1) or False)
    connection.released_at -= redis_pool.RECHECK_IDLE_S

    assert client.ping()

    assert reads == [1]


def test_a_connection_the_server_closed_while_idle_is_replaced(client, redis_prefix):
    key = f"{redis_prefix}:n"
    client.incr(key)
    connection = _only_connection(client)
    killer = redis.Redis.from_url(REDIS_URL)
    try:
        pooled_id = connection.retry.call_with_retry(
            lambda: (connection.send_command("CLIENT", "ID"), connection.read_response())[1],
            lambda _error: None)
        assert killer.client_kill_filter(_id=pooled_id) == 1
    finally:
        killer.close()
    connection.released_at -= redis_pool.RECHECK_IDLE_S  # as after a restart, which takes time

    assert client.incr(key) == 2  # no ConnectionError: the dead socket was noticed and replaced


def test_os_threads_never_share_a_connection(client, redis_prefix):
    threading = eventlet.patcher.original("threading")
    errors = []

    def count(n: int) -> None:
        key = f"{redis_prefix}:thread:{n}"
        try:
            for expected in range(1, 301):
                got = client.incr(key)
                if got != expected:  # a reply meant for another caller
                    errors.append((n, expected, got))
                    return
        except Exception as exc:  # noqa: BLE001 - reported below, with the thread
            errors.append((n, repr(exc)))

    threads = [threading.Thread(target=count, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    pool = client.connection_pool
    assert not pool._in_use_connections
    assert len(pool._available_connections) == pool._created_connections


def test_close_disconnects_the_pool(client):
    client.ping()
    connection = _only_connection(client)

    client.close()

    assert connection._sock is None

"""Scripts from green threads waiting at once share round trips, against the real Redis
(``shared.round_trips`` through ``shared.store.run_script``)."""

import eventlet
import pytest
import redis
from redis.client import NEVER_DECODE

from shared.round_trips import execute
from shared.store import REDIS_ERRORS, connect, run_script
from tests.conftest import REDIS_URL, free_port
from tests.support.waiting import wait_until


def together(work, count: int) -> list:
    """``work(i)`` from ``count`` green threads at once; each one's result or exception."""

    def one(i):
        try:
            return work(i)
        except Exception as exc:
            return exc

    threads = [eventlet.spawn(one, i) for i in range(count)]
    return [thread.wait() for thread in threads]


@pytest.fixture
def shared_client():
    client = connect(REDIS_URL, share_round_trips=True)
    yield client
    client.close()


def counted(client) -> list[int]:
    """The size of every batch the process's round trips for this server send from now on."""
    trips = client.round_trips
    sizes = []
    send = trips._send

    def counting(batch):
        sizes.append(len(batch))
        return send(batch)

    trips._send = counting
    return sizes


def gathered(shared_client, redis_prefix: str, work, count: int) -> list:
    """``work(i)`` from ``count`` green threads, all of them gathered behind one round trip
    held on the wire, then sent on together; each one's result or exception.

    Held, because on a loaded machine a round trip's answer can be back before its caller
    reads the socket: it never waits, nobody gathers behind it, and a test of sharing saw
    nothing shared (``sizes == []``, once in CI, with another pytest process beside it).
    The round trip held is a BLPOP on a key of this test's, answered once every caller
    waits."""
    trips = shared_client.round_trips
    gate = f"{redis_prefix}:gate"
    held = eventlet.spawn(execute, shared_client, "BLPOP", gate, 10)
    wait_until(lambda: trips._busy, timeout=10, interval=0.001)
    callers = [eventlet.spawn(together, lambda _, i=i: work(i), 1) for i in range(count)]
    wait_until(lambda: len(trips._gathered) == count, timeout=10, interval=0.001)
    opener = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        opener.rpush(gate, "open")
    finally:
        opener.close()
    assert list(held.wait()) == [gate, "open"]
    return [caller.wait()[0] for caller in callers]


def test_scripts_waiting_at_once_share_round_trips_and_each_gets_its_own_answer(
        shared_client, redis_prefix):
    script = shared_client.register_script(
        "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1]) .. '!'")
    shared_client.script_load(script.script)  # else each first asks again (NOSCRIPT)
    sizes = counted(shared_client)
    try:
        answers = gathered(shared_client, redis_prefix, lambda i: run_script(
            script, [f"{redis_prefix}:k{i}"], [str(i)]), 40)
    finally:
        del shared_client.round_trips._send

    assert answers == [f"{i}!" for i in range(40)]
    assert sizes == [40]  # the forty in one round trip
    assert [shared_client.get(f"{redis_prefix}:k{i}") for i in range(40)] == [
        str(i) for i in range(40)]


def test_options_and_errors_stay_each_callers_own_in_a_shared_round_trip(
        shared_client, redis_prefix):
    echo = shared_client.register_script("return ARGV[1]")
    broken = shared_client.register_script("return redis.error_reply('no ' .. ARGV[1])")

    def one(i):
        if i % 3 == 0:
            return run_script(broken, [], [str(i)])
        if i % 3 == 1:
            return run_script(echo, [], ["水"], **{NEVER_DECODE: True})
        return run_script(echo, [], [str(i)])

    answers = gathered(shared_client, redis_prefix, one, 30)

    for i, answer in enumerate(answers):
        if i % 3 == 0:
            assert isinstance(answer, redis.ResponseError) and str(answer) == f"no {i}"
        elif i % 3 == 1:
            assert answer == "水".encode()
        else:
            assert answer == str(i)


def test_scripts_redis_forgot_are_loaded_again_for_every_caller_in_a_shared_round_trip(
        shared_client, redis_client, redis_prefix):
    script = shared_client.register_script("return 'fresh ' .. ARGV[1]")
    run_script(script, [], ["0"])
    redis_client.script_flush()  # as after a Redis restart

    assert gathered(shared_client, redis_prefix, lambda i: run_script(script, [], [str(i)]),
                    20) == [
        f"fresh {i}" for i in range(20)]


def test_with_redis_down_every_caller_hears_of_the_outage_and_nobody_waits_for_ever():
    client = connect(f"redis://127.0.0.1:{free_port()}/0", share_round_trips=True)
    script = client.register_script("return 1")
    try:
        answers = together(lambda i: run_script(script, [], []), 10)
        assert all(isinstance(answer, REDIS_ERRORS) for answer in answers)
        assert not client.round_trips._busy and not client.round_trips._gathered
    finally:
        client.close()

"""Fault scenario 3: Redis SIGKILLed in the middle of a load, restarted on its AOF.

A Redis of the test's own (AOF, ``appendfsync everysec``, no RDB snapshots; the
machine's Redis on 6379 is never touched) is SIGKILLed mid-load and restarted on
the same directory. While it is down intake answers 503 with ``Retry-After`` and
never 201; everything accepted before is there after the restart and is routed.
"""

import time

import pytest

from shared import config as cfg
from tests.faults.harness import ACCEPTED, UNAVAILABLE, Load, audit, start_apart
from tests.faults.infra import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

N, RATE = 200, 20.0
OUTAGE_S = 3.0


@pytest.fixture
def dedicated_redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def whistle_env(whistle_env, dedicated_redis):
    """Every process of this module talks to the dedicated Redis, never to 6379.

    Retries back off as shipped (1 s, doubling), not the 0.1 s of the other e2e
    tests. Events in flight when Redis dies wait for it without spending attempts
    (scenario 9, test_redis_outage.py, shows that with a tiny retry budget).
    """
    return {**whistle_env, cfg.REDIS_URL: dedicated_redis.url,
            cfg.RETRY_DELAY_MS: str(cfg.DEFAULTS[cfg.RETRY_DELAY_MS])}


def test_redis_sigkilled_mid_load_answers_503_and_keeps_everything_accepted(
        whistle_processes, whistle_env, dedicated_redis, redis_prefix, scenario):
    run = scenario("3. Redis (AOF everysec) SIGKILLed mid-load, restarted")
    intake = start_apart(whistle_processes)["intake"][0]
    load = Load([intake.url], n=N, rate=RATE).start()
    load.wait_sent(60)

    assert load.running, "the load ended before Redis went down"
    dedicated_redis.kill()
    down_at = time.monotonic()
    time.sleep(OUTAGE_S)
    up_at = time.monotonic()
    dedicated_redis.start()  # same port, same directory: the AOF is replayed
    load.wait()

    during = [a for a in load.attempts if down_at <= a.started and a.ended <= up_at]
    unavailable = [a for a in load.attempts if a.outcome == UNAVAILABLE]
    client = dedicated_redis.client()
    accepted = load.accepted_ids
    try:
        run.conclude(
            lambda: audit(client, redis_prefix, accepted), accepted, whistle_env[cfg.AMQP_URI],
            timeout=90, accepted_during_outage=sum(a.outcome == ACCEPTED for a in during),
            downtime_s=round(up_at - down_at, 1), **load.figures())
    finally:
        client.close()
    assert during and all(a.outcome == UNAVAILABLE for a in during), load.outcomes()
    assert all(a.retry_after for a in unavailable)

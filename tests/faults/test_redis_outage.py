"""Fault scenario 9: Redis down far longer than the retry budget.

The services run with a retry budget of a fraction of a second
(``WHISTLE_RETRY_DELAY_MS=50``, ``WHISTLE_MAX_ATTEMPTS=3``: 0.05 + 0.1 s before the
third attempt dead-letters). Mid-load the consumers (routing, agency, notify) are
paused for a moment (SIGSTOP), so that events are queued, then the test's own Redis
(scenario 3's, AOF) is SIGKILLed, the consumers resume (SIGCONT) into the outage,
and Redis stays down for ``OUTAGE_S``, dozens of times the budget.

An outage of our own store is not the event's fault: every event waits through its
delay queue without spending an attempt (``shared.messaging.plan_failure``), nothing
is dead-lettered, and every accepted issue completes once Redis is back.
"""

import os
import signal
import time

import pytest

from shared import config as cfg
from shared.topology import SUBSCRIPTIONS
from tests.faults.harness import ACCEPTED, Load, audit, queue_depth, start_apart
from tests.faults.test_redis_restart import dedicated_redis  # noqa: F401 - fixture

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

N, RATE = 260, 20.0
PAUSE_S = 1.0  # consumers stopped: about 20 issues' events queue up
PREFETCH = 4  # MAX_WORKERS, and so the messages each consumer holds unacked
OUTAGE_S = 6.0
MAX_ATTEMPTS, RETRY_DELAY_MS = 3, 50
BUDGET_S = sum(RETRY_DELAY_MS * 2 ** n for n in range(MAX_ATTEMPTS - 1)) / 1000
CONSUMERS = ("routing", "agency", "notify")
EVENT_QUEUES = [name for sub in SUBSCRIPTIONS
                for name in (sub.queue_name, f"{sub.queue_name}.retry")]


@pytest.fixture
def whistle_env(whistle_env, dedicated_redis):  # noqa: F811 - the fixture imported above
    """The dedicated Redis, and a retry budget far shorter than the outage (notify must
    give a message up before its event would be dead-lettered: 2 < 3). Few workers, so
    few prefetched: the paused consumers' events wait in the queues, where the test
    sees them, rather than in the consumers' prefetch windows."""
    return {**whistle_env, cfg.REDIS_URL: dedicated_redis.url,
            cfg.RETRY_DELAY_MS: str(RETRY_DELAY_MS), cfg.MAX_ATTEMPTS: str(MAX_ATTEMPTS),
            cfg.NOTIFY_MAX_ATTEMPTS: str(MAX_ATTEMPTS - 1), "MAX_WORKERS": str(PREFETCH)}


def parked(amqp_uri: str) -> int:
    """Events ready in the subscription queues and their delay queues: waiting, not
    being handled (a consumer's unacked messages are not counted)."""
    return sum(queue_depth(amqp_uri, name) for name in EVENT_QUEUES)


def signal_all(processes, signum: int) -> None:
    for process in processes:
        os.kill(process.pid, signum)


def test_events_wait_out_a_redis_outage_far_longer_than_the_retry_budget(
        whistle_processes, whistle_env, dedicated_redis, redis_prefix, scenario):  # noqa: F811
    run = scenario("9. Redis down far longer than the retry budget")
    amqp_uri = whistle_env[cfg.AMQP_URI]
    services = start_apart(whistle_processes)
    consumers = [services[name][0] for name in CONSUMERS]
    load = Load([services["intake"][0].url], n=N, rate=RATE).start()
    load.wait_sent(40)

    signal_all(consumers, signal.SIGSTOP)
    try:
        time.sleep(PAUSE_S)
        queued = parked(amqp_uri)
        dedicated_redis.kill()
        down_at = time.monotonic()
    finally:
        signal_all(consumers, signal.SIGCONT)
    waiting = []  # events parked in the queues, sampled through the outage
    while time.monotonic() - down_at < OUTAGE_S:
        waiting.append(parked(amqp_uri))
        time.sleep(0.5)
    dead_during_outage = queue_depth(amqp_uri)
    up_at = time.monotonic()
    dedicated_redis.start()  # same port, same directory: the AOF is replayed
    assert load.running, "the load ended before Redis came back"
    load.wait()

    client = dedicated_redis.client()
    accepted = load.accepted_ids
    try:
        run.conclude(
            lambda: audit(client, redis_prefix, accepted), accepted, amqp_uri, timeout=90,
            accepted_during_outage=load.accepted_between(down_at, up_at),
            downtime_s=round(up_at - down_at, 1),
            detail=f"retry budget {BUDGET_S:.2f} s; events queued when Redis died: {queued}, "
                   f"waiting during the outage: up to {max(waiting)}", **load.figures())
    finally:
        client.close()
    assert queued > 0, "no event was queued when Redis died: nothing tested"
    assert dead_during_outage == 0
    assert all(a.outcome != ACCEPTED for a in load.attempts
               if down_at <= a.started and a.ended <= up_at)

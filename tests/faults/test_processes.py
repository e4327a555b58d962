"""Fault scenarios 1 and 7: real ``whistle up`` processes SIGKILLed, restarted, doubled.

1. While distinct issues are submitted (~20/s), each service (in its own process)
   is SIGKILLed in turn and restarted; intake comes back on the same address.
   Each kill waits for 20 more answers after the previous restart, and the load
   ends 20 answers after the last one, so every kill is mid-load however long a
   restart takes on a slow machine.  Everything accepted reaches its agencies,
   every resident is told once.
7. Two processes of each service side by side under the same load: every issue is
   handled once.
"""

import time

import pytest

from shared import config as cfg
from tests.faults.harness import SERVICES, Load, audit, start_apart

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

N, RATE = 200, 20.0
BETWEEN_KILLS = 20  # answers after a restart before the next kill (and before the end)
CEILING = 2000  # submissions the open-ended load of scenario 1 never reaches


def test_each_service_sigkilled_in_turn_mid_load_loses_and_duplicates_nothing(
        whistle_processes, whistle_env, redis_client, redis_prefix, scenario):
    run = scenario("1. each service SIGKILLed in turn and restarted")
    processes = {name: found[0] for name, found in start_apart(whistle_processes).items()}
    load = Load([processes["intake"].url], n=CEILING, rate=RATE).start()

    downtime = {}
    for name in SERVICES:
        load.wait_sent(len(load.attempts) + BETWEEN_KILLS)
        assert load.running, f"the load ended before {name} was killed"
        killed_at = time.monotonic()
        processes[name].kill()  # mid-load: whatever it was handling goes back to the broker
        time.sleep(0.5)
        processes[name].start()  # same address: the desk's URL does not change
        downtime[name] = round(time.monotonic() - killed_at, 1)
    load.wait_sent(len(load.attempts) + BETWEEN_KILLS)
    assert load.running, "the load ended before the last restart was under load"
    load.stop()

    accepted = load.accepted_ids
    run.conclude(lambda: audit(redis_client, redis_prefix, accepted), accepted,
                 whistle_env[cfg.AMQP_URI], downtime_s=downtime, **load.figures())


def test_two_processes_of_each_service_handle_every_issue_once(
        whistle_processes, whistle_env, redis_client, redis_prefix, scenario):
    run = scenario("7. two processes of each service (8) under load")
    processes = start_apart(whistle_processes, copies=2)
    load = Load([p.url for p in processes["intake"]], n=N, rate=RATE).start().wait()

    accepted = load.accepted_ids
    figures = run.conclude(lambda: audit(redis_client, redis_prefix, accepted), accepted,
                           whistle_env[cfg.AMQP_URI], **load.figures())
    assert figures["accepted"] == N

"""Fault scenario 2: RabbitMQ restarted in the middle of a load.

RabbitMQ's application is stopped (``rabbitmqctl stop_app``) for ~3 s and started
again while issues pour in. intake keeps accepting (each issue and its event are
in Redis, in intake's outbox; the relay publishes them once the broker is back),
the services reconnect on their own, nothing accepted is lost and no resident is
told twice. This disturbs every other user of the machine's broker: the suite runs
sequentially, and the application is always started again.
"""

import time

import pytest

from shared import config as cfg
from tests.faults.harness import Load, audit, start_apart
from tests.faults.infra import broker_outage

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

N, RATE = 300, 20.0  # 15 s: stop_app alone takes ~5 s with the services connected
OUTAGE_S = 3.0


def quiet_vhost_pipeline(pipeline, timeout: float = 10.0) -> None:
    """Let nameko's vhost pipeline (which creates and deletes test vhosts through the
    management API in the background) finish its work, so the outage cannot fail it."""
    deadline = time.monotonic() + timeout
    while pipeline.ready.qsize() < pipeline.size or pipeline.trash.qsize():
        assert time.monotonic() < deadline, "nameko's vhost pipeline is still busy"
        time.sleep(0.1)
    time.sleep(0.5)  # a vhost taken off the trash may still be being deleted


def test_broker_restarted_mid_load_intake_keeps_accepting_and_nothing_is_lost(
        whistle_processes, whistle_env, redis_client, redis_prefix, scenario, vhost_pipeline):
    run = scenario("2. RabbitMQ stop_app / start_app mid-load")
    amqp_uri = whistle_env[cfg.AMQP_URI]
    quiet_vhost_pipeline(vhost_pipeline)
    intake = start_apart(whistle_processes)["intake"][0]
    load = Load([intake.url], n=N, rate=RATE).start()
    load.wait_sent(40)

    with broker_outage(amqp_uri) as outage:
        assert load.running, "the load ended before the broker went down"
        time.sleep(OUTAGE_S)
    load.wait()

    accepted = load.accepted_ids
    figures = run.conclude(
        lambda: audit(redis_client, redis_prefix, accepted), accepted, amqp_uri, timeout=90,
        accepted_during_outage=load.accepted_between(outage["down_at"], outage["up_at"]),
        downtime_s=round(outage["ready_at"] - outage["down_at"], 1), **load.figures())
    assert figures["accepted"] == N, figures["outcomes"]  # Redis was up: nothing refused
    assert figures["accepted_during_outage"] >= OUTAGE_S * RATE * 0.5

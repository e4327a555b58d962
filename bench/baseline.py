"""The broker's own limit for Whistle's shape of work: four hops of confirmed, persistent JSON.

Messages the size of an ``issue.received`` body go through four durable queues in
sequence. Each hop is its own process (plain kombu, no nameko, no eventlet) that
consumes a message, republishes it to the next queue with publisher confirms
(persistent, delivery mode 2), waits for the confirm, then acks, one message at a
time. The last hop publishes to a sink queue the benchmark drains.

The first queue is filled before the hops start (downstream hops first, the first
hop last), so what is measured is the pipeline's rate with work always waiting, not
how fast the benchmark can publish. The figure is the steady rate at the sink
(:func:`bench.stats.steady_rate`).

Run one hop by hand: ``python -m bench.baseline AMQP_URI SOURCE_QUEUE TARGET_QUEUE``.
This module must not import ``whistle`` (which monkey-patches eventlet), so a hop
is a plain kombu process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from kombu import Connection, Queue

from bench.signals import uninterrupted
from bench.stats import overall_rate, steady_rate
from bench.system import cpu_seconds, infrastructure_pids

HOPS = 4
PREFETCH = 10
READY = "ready"


# Who does a hop: plain kombu (the broker's limit), or nameko (bench.nameko_hop: the
# framework's floor). Each is a module run as ``python -m MODULE AMQP_URI SOURCE TARGET``.
KOMBU_HOP, NAMEKO_HOP = "bench.baseline", "bench.nameko_hop"


def queue_names(hops: int = HOPS, prefix: str = "bench") -> list[str]:
    return [f"{prefix}.hop{i}" for i in range(1, hops + 1)] + [f"{prefix}.sink"]


def hop_queue_arguments() -> dict | None:
    """The hops' queues are of the run's queue type (``python -m bench --queue-type``,
    which sets ``WHISTLE_QUEUE_TYPE`` for the whole run, hop processes included), so
    the baseline is the broker's own limit for the queues Whistle runs on."""
    return {"x-queue-type": "quorum"} if os.environ.get("WHISTLE_QUEUE_TYPE") == "quorum" \
        else None


def _queue(name: str) -> Queue:
    return Queue(name, routing_key=name, durable=True, queue_arguments=hop_queue_arguments())


def body_of_size(seq: int, size: int) -> dict:
    """A JSON object whose kombu encoding is ``size`` bytes (or just above, if tiny)."""
    body = {"seq": seq, "pad": ""}
    body["pad"] = "x" * max(0, size - len(json.dumps(body)))
    return body


def hop(amqp_uri: str, source: str, target: str) -> None:
    """Consume ``source``; for each message: publish to ``target``, wait for the confirm, ack."""
    consume = Connection(amqp_uri)
    publish = Connection(amqp_uri, transport_options={"confirm_publish": True})
    producer = publish.Producer(serializer="json")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def forward(body, message):
        producer.publish(body, exchange="", routing_key=target, delivery_mode=2)
        message.ack()

    with consume.Consumer(_queue(source), callbacks=[forward], accept=["json"],
                          prefetch_count=PREFETCH):
        print(READY, flush=True)
        while True:
            consume.drain_events()


def _start_hop(amqp_uri: str, source: str, target: str, module: str) -> subprocess.Popen:
    proc = None
    try:
        with uninterrupted():  # a signal must not land before ``proc`` is set
            # A process group of its own: a terminal's Ctrl-C goes to the benchmark's
            # group, and the benchmark stops its hops itself (SIGTERM), instead of each
            # hop printing a KeyboardInterrupt traceback, however early it lands.
            proc = subprocess.Popen([sys.executable, "-m", module, amqp_uri, source, target],
                                    stdout=subprocess.PIPE, text=True, process_group=0)
        line = proc.stdout.readline().strip()
    except BaseException:  # stopped while it starts
        if proc is not None:
            proc.kill()
            proc.wait()
        raise
    if line != READY:
        proc.kill()
        raise RuntimeError(f"baseline hop {source} -> {target} did not start")
    return proc


def run_baseline(amqp_uri: str, messages: int, size: int, hops: int = HOPS,
                 timeout_s: float = 120.0, hop_module: str = KOMBU_HOP) -> dict:
    """Push ``messages`` through ``hops`` hops; the sink's rate, in messages per second.

    ``hop_module``: :data:`KOMBU_HOP` for the broker's limit, :data:`NAMEKO_HOP` for
    the same chain through nameko with nothing in its handlers.
    """
    names = queue_names(hops, prefix="bench" if hop_module == KOMBU_HOP else "bench.nameko")
    with Connection(amqp_uri) as conn:
        channel = conn.channel()
        for name in names:
            _queue(name).bind(channel).declare()
        producer = conn.Producer(channel, serializer="json")
        for seq in range(messages):
            producer.publish(body_of_size(seq, size), exchange="", routing_key=names[0],
                             delivery_mode=2)
        while _queue(names[0]).bind(channel).queue_declare(passive=True).message_count < messages:
            time.sleep(0.05)

    procs: list[subprocess.Popen] = []
    arrivals: list[float] = []
    broker = infrastructure_pids()["rabbitmq"]
    broker_before = sum(cpu_seconds(pid) or 0.0 for pid in broker)
    try:
        # Downstream first, so the first hop's start is the pipeline's start.
        for source, target in reversed(list(zip(names, names[1:], strict=False))):
            procs.append(_start_hop(amqp_uri, source, target, hop_module))
        started = time.monotonic()
        with Connection(amqp_uri) as conn:
            def arrived(body, message):
                arrivals.append(time.monotonic())

            with conn.Consumer(_queue(names[-1]), callbacks=[arrived], accept=["json"],
                               no_ack=True):
                deadline = started + timeout_s
                while len(arrivals) < messages and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=1)
                    except TimeoutError:
                        continue
        cpu = {"hops": sum(cpu_seconds(p.pid) or 0.0 for p in procs),
               "rabbitmq": sum(cpu_seconds(pid) or 0.0 for pid in broker) - broker_before}
    finally:
        with uninterrupted():
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return {
        "hops": hops, "messages": messages, "size_bytes": size,
        "delivered": len(arrivals),
        "duration_s": round(arrivals[-1] - started, 3) if arrivals else None,
        "throughput_msg_s": _round(steady_rate(arrivals)),
        "overall_msg_s": _round(overall_rate(arrivals, start=started)),
        "cpu_ms_per_message": {k: round(v * 1000 / max(len(arrivals), 1), 2)
                               for k, v in cpu.items()},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


if __name__ == "__main__":
    hop(*sys.argv[1:4])

"""The baseline's hop, done by nameko: what the framework costs before any of our code.

The same shape as ``bench.baseline``'s hop (consume a message, republish it to the
next queue, persistent, with a publisher confirm, then ack), written the way the
nameko docs write it: a ``@consume`` entrypoint and a ``Publisher`` dependency,
both with nameko's defaults (confirms on, ten workers, so ten messages in flight
like the kombu hop's prefetch). Four of these in a row, with no work in them, are
the most any nameko service chain of this shape could carry on this machine: the
*framework floor*. ``python -m bench`` reports it beside the baseline.

Run one hop by hand: ``python -m bench.nameko_hop AMQP_URI SOURCE_QUEUE TARGET_QUEUE``.
"""

from __future__ import annotations

import whistle  # noqa: F401, I001 - eventlet's monkey-patching first, as `nameko run` does

# isort: split

import signal
import sys

import eventlet
from kombu import Queue
from nameko.messaging import Publisher, consume
from nameko.runners import ServiceRunner

from bench.baseline import hop_queue_arguments

READY = "ready"  # the same handshake as bench.baseline's hops


def hop_service(source: str, target: str) -> type:
    class Hop:
        name = f"hop-{source}"
        forward = Publisher()  # the default exchange: the routing key is the queue

        @consume(Queue(source, routing_key=source, durable=True,
                       queue_arguments=hop_queue_arguments()))
        def handle(self, body):
            self.forward(body, routing_key=target)

    return Hop


def main(amqp_uri: str, source: str, target: str) -> None:
    runner = ServiceRunner({"AMQP_URI": amqp_uri})
    runner.add_service(hop_service(source, target))
    # A signal handler runs in eventlet's hub, which cannot wait: stop from a green thread.
    signal.signal(signal.SIGTERM, lambda *_: eventlet.spawn_n(runner.kill))
    runner.start()
    print(READY, flush=True)
    runner.wait()


if __name__ == "__main__":
    main(*sys.argv[1:4])

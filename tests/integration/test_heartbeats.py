"""A consumer that only receives keeps its connection under a steady stream
(shared.heartbeats): the broker hears its heartbeats although it never goes idle."""

import threading
import time
import uuid

from kombu import Connection, Queue

from shared import config as cfg
from shared.heartbeats import drain

HEARTBEAT_S = 2  # RabbitMQ closes a silent client's connection after about two of these
STREAM = 500  # messages, one each 20 ms: 10 s of stream, never idle for drain's timeout


def test_a_no_ack_consumer_survives_a_stream_longer_than_the_heartbeat_timeout(whistle_config):
    uri = whistle_config[cfg.AMQP_URI]
    queue = Queue(f"test.heartbeats.{uuid.uuid4().hex[:8]}", durable=False, auto_delete=True)
    got = []

    def publish():
        with Connection(uri) as connection:
            producer = connection.Producer(serializer="json")
            for n in range(STREAM):
                producer.publish({"n": n}, exchange="", routing_key=queue.name)
                time.sleep(0.02)

    with (Connection(uri, heartbeat=HEARTBEAT_S) as connection,
          connection.Consumer(queue, callbacks=[lambda body, m: got.append(body["n"])],
                              accept=["json"], no_ack=True)):
        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        while len(got) < STREAM:  # before shared.heartbeats: "missed heartbeats", reset
            drain(connection, timeout=1)
        publisher.join()
    assert got == list(range(STREAM))

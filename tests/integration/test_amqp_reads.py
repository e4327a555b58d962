"""Frames read ahead (shared.amqp_reads) arrive whole, in order, with fewer system calls."""

import socket

import pytest
from kombu import Connection, Queue

from shared import amqp_reads
from shared import config as cfg

QUEUE = Queue("test.read-ahead", routing_key="test.read-ahead", durable=False)


@pytest.fixture
def amqp_uri(whistle_config):
    amqp_reads.read_ahead()
    return whistle_config[cfg.AMQP_URI]


def publish(uri: str, count: int) -> None:
    with Connection(uri) as connection:
        producer = connection.Producer(serializer="json")
        for n in range(count):
            producer.publish({"n": n, "text": "楼道灯不亮" * (n % 7)}, exchange="",
                             routing_key=QUEUE.routing_key, declare=[QUEUE])


def consume(uri: str, count: int) -> tuple[list[int], int]:
    """The ``n`` of each message received, and how many ``recv`` calls it took."""
    got, calls = [], 0
    with Connection(uri) as connection:
        transport = connection.connection.transport
        recv = transport._quick_recv

        def counted(size):
            nonlocal calls
            calls += 1
            return recv(size)

        transport._quick_recv = counted
        with connection.Consumer(QUEUE, callbacks=[lambda body, m: (got.append(body["n"]),
                                                                    m.ack())],
                                 prefetch_count=count):
            while len(got) < count:
                connection.drain_events(timeout=5)
            with pytest.raises(socket.timeout):  # nothing left: a timeout, not a bad frame
                connection.drain_events(timeout=0.2)
    return got, calls


def test_a_burst_of_messages_takes_far_fewer_reads_than_frames(amqp_uri):
    publish(amqp_uri, 200)
    got, calls = consume(amqp_uri, 200)
    assert got == list(range(200))
    assert calls < 200  # py-amqp's exact reads take about nine per message


def test_frames_split_across_reads_at_odd_places_still_arrive_whole(amqp_uri, monkeypatch):
    monkeypatch.setattr(amqp_reads, "READ_AHEAD_BYTES", 13)  # shorter than most frames
    publish(amqp_uri, 50)
    got, _ = consume(amqp_uri, 50)
    assert got == list(range(50))

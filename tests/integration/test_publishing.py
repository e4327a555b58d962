"""Batched, confirmed publishing (shared.publishing) against the real RabbitMQ."""

import pytest
from kombu import Connection, Queue

from shared import config as cfg
from shared.publishing import BatchPublisher, PublishedEvent
from shared.topology import EVENTS_EXCHANGE, declare_topology
from tests.support.waiting import wait_until


@pytest.fixture
def amqp_uri(whistle_config):
    uri = whistle_config[cfg.AMQP_URI]
    with Connection(uri) as connection:
        declare_topology(connection)
    return uri


@pytest.fixture
def publisher(amqp_uri):
    publisher = BatchPublisher(amqp_uri, EVENTS_EXCHANGE.name)
    yield publisher
    publisher.close()


def event(n: int, routing_key: str = "issue.received", mandatory: bool = True):
    return PublishedEvent(f"m-{n}", routing_key, {"n": n, "text": "楼道灯不亮"},
                          {"x-whistle-event-type": routing_key}, mandatory=mandatory)


def drain(amqp_uri, queue_name):
    with Connection(amqp_uri) as connection:
        queue = Queue(queue_name, durable=True).bind(connection.channel())
        found = []
        while (message := queue.get(no_ack=True)) is not None:
            found.append(message)
        return found


def test_a_batch_is_confirmed_and_arrives_whole_in_order_as_json(publisher, amqp_uri):
    result = publisher.publish([event(n) for n in range(50)])

    assert result.confirmed == [f"m-{n}" for n in range(50)] and result.failed == {}
    got = drain(amqp_uri, "whistle.routing.route_issue")
    assert [m.decode()["n"] for m in got] == list(range(50))
    first = got[0]
    assert first.decode()["text"] == "楼道灯不亮"
    assert first.properties["message_id"] == "m-0"
    assert first.properties["delivery_mode"] == 2
    assert first.headers["x-whistle-event-type"] == "issue.received"


def test_an_unroutable_mandatory_event_fails_and_the_rest_of_its_batch_is_confirmed(publisher):
    result = publisher.publish([event(1), event(2, "no.such.type"), event(3)])

    assert result.confirmed == ["m-1", "m-3"]
    assert result.failed == {"m-2": "unroutable: no queue is bound for it"}


def test_an_event_nobody_consumes_is_confirmed_when_not_mandatory(publisher):
    result = publisher.publish([event(1, "issue.rated", mandatory=False)])

    assert result.confirmed == ["m-1"]


def test_batches_keep_counting_confirms_on_the_same_channel(publisher):
    for batch in range(5):
        result = publisher.publish([event(batch * 10 + n) for n in range(10)])
        assert len(result.confirmed) == 10 and not result.failed


def test_a_connection_closed_by_the_broker_is_reopened_for_the_next_batch(
        publisher, amqp_uri, rabbit_manager, whistle_config):
    assert publisher.publish([event(1)]).confirmed == ["m-1"]
    # The broker drops the publisher's connection (as a restart would). The management
    # API lists a new connection after a stats interval: wait for it.
    vhost = Connection(amqp_uri).virtual_host
    ours = wait_until(lambda: [c["name"] for c in rabbit_manager.get_connections() or []
                               if c.get("vhost") == vhost], timeout=15)
    for name in ours:
        rabbit_manager.delete_connection(name)

    with pytest.raises(Exception):  # noqa: B017 - whichever error the dead socket gives
        publisher.publish([event(2)])
    assert publisher.publish([event(3)]).confirmed == ["m-3"]


def test_a_batch_goes_to_the_broker_in_one_write(publisher):
    publisher.publish([event(0)])  # connects
    transport = publisher._connection.connection.transport
    writes = []
    send = transport._write
    transport._write = lambda data: (writes.append(len(data)), send(data))
    try:
        result = publisher.publish([event(n) for n in range(1, 11)])
    finally:
        transport._write = send
    assert len(result.confirmed) == 10
    assert len(writes) == 1 and writes[0] > 10 * 100  # ten messages' frames, one sendall

"""A queue consumer whose connection was found lost by another green thread's write
reconnects its consumers instead of draining a bare replacement (shared.consuming)."""

from types import SimpleNamespace

import amqp
import pytest

from shared.consuming import ConsumersLost, FailoverQueueConsumer, check_still_connected

CONNECTION_ERRORS = amqp.Connection.connection_errors


def consuming_on(connected: bool) -> FailoverQueueConsumer:
    consumer = FailoverQueueConsumer()
    consumer._consumers = {"provider": "consumer"}  # one registered consumer
    consumer._registered_on = SimpleNamespace(connected=connected)
    return consumer


def test_a_live_connection_passes():
    check_still_connected(SimpleNamespace(connected=True))
    check_still_connected(None)  # nothing registered yet


def test_a_lost_connection_is_a_connection_error_kombu_reconnects_on():
    with pytest.raises(ConsumersLost) as raised:
        check_still_connected(SimpleNamespace(connected=False))
    assert isinstance(raised.value, CONNECTION_ERRORS)  # what ConsumerMixin.run catches


def test_each_iteration_checks_the_connection_the_consumers_were_registered_on():
    consuming_on(connected=True).on_iteration()
    with pytest.raises(ConsumersLost):
        consuming_on(connected=False).on_iteration()


def test_a_consumer_that_is_stopping_is_not_sent_back_to_reconnect():
    stopping = consuming_on(connected=False)
    stopping._consumers = {}  # the last provider unregistered: nameko stops the loop
    stopping.on_iteration()
    assert stopping.should_stop


def test_registering_consumers_remembers_their_connection(monkeypatch):
    consumer = FailoverQueueConsumer()
    monkeypatch.setattr("nameko.messaging.QueueConsumer.get_consumers",
                        lambda self, cls, channel: ["registered"])
    connection = SimpleNamespace(connected=True)
    assert consumer.get_consumers(None, SimpleNamespace(connection=connection)) == ["registered"]
    assert consumer._registered_on is connection


def test_the_loop_looks_whether_to_stop_every_quarter_second(monkeypatch):
    """kombu's drain waits 1 s by default, and a stopping service waited that long in each
    consumer; ours wait DRAIN_WAIT_S, unless a caller asks for another interval."""
    from contextlib import contextmanager

    from shared.consuming import DRAIN_WAIT_S

    waits = []

    class Connection:
        def drain_events(self, timeout):
            waits.append(timeout)
            consumer.should_stop = True  # one look, then stop, as a stopping service does
            raise TimeoutError

        def heartbeat_check(self):
            pass

    @contextmanager
    def context(**kwargs):
        yield Connection(), None, []

    consumer = consuming_on(connected=True)
    monkeypatch.setattr(consumer, "consumer_context", context)
    list(consumer.consume())
    consumer.should_stop = False
    list(consumer.consume(safety_interval=2))
    assert waits == [DRAIN_WAIT_S, 2] and DRAIN_WAIT_S < 1

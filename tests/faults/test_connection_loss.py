"""The unit behind scenario 2: a message whose connection died is left to the broker.

Acking (or requeueing) a message after the broker went away fails at the socket.
nameko lets that error escape from the worker's thread, which kills the whole
service container: the process stays up and never consumes again. Seen with
``rabbitmqctl stop_app`` under load (scenario 2); fixed in
``shared.messaging.DeadLetteringQueueConsumer``.
"""

from types import SimpleNamespace

import pytest

from shared.messaging import DeadLetteringQueueConsumer

pytestmark = pytest.mark.faults


class DeadSocketMessage:
    """A delivered message whose connection the broker has just closed."""

    def __init__(self, error: OSError, delivery_tag: int = 1):
        def fail(*_args, **_kwargs):
            raise error

        self.channel = SimpleNamespace(connection=object(), basic_ack=fail)
        self.delivery_tag = delivery_tag
        self.ack = self.requeue = fail


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"),
                                   BrokenPipeError(32, "Broken pipe")])
@pytest.mark.parametrize("action", ["ack_message", "requeue_message"])
def test_ack_or_requeue_on_a_dead_connection_does_not_raise(action, error):
    consumer = DeadLetteringQueueConsumer()
    first, second = DeadSocketMessage(error, 1), DeadSocketMessage(error, 2)
    second.channel = first.channel
    consumer.adopt_channel(first.channel)
    getattr(consumer, action)(first)
    getattr(consumer, action)(second)
    consumer.flush_acks()  # acks go out in batches: the socket error surfaces here

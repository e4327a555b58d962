"""A nameko queue consumer that does not go on draining a connection it lost.

nameko's ``QueueConsumer`` runs kombu's ``ConsumerMixin``: it sets up its consumers
on a connection, then calls ``drain_events`` on it in a loop, and sets them up
again only when that raises a connection error. Acks are written from other green
threads (the workers', and our batched acks in ``shared.messaging``). When the
broker node dies, such a write can be the first to fail. py-amqp then marks the
connection's transport as disconnected, and on the consumer's next
``drain_events``, kombu's ``Connection.connection`` sees that and quietly makes a
*new* connection (to the next address ``AMQP_URI`` lists), without channels,
without consumers, and without raising. The loop then drains that bare connection
for ever: the service looks healthy, its queue shows no consumer, and its messages
pile up. That is how scenario 10 once stalled notify (docs/faults.md).

:class:`FailoverQueueConsumer` checks, before each wait, that the connection its
consumers were set up on is still connected. If not, it raises a connection error,
so kombu's loop reconnects the nameko way: a new connection, queues declared,
consumers registered.
"""

from __future__ import annotations

from amqp.exceptions import RecoverableConnectionError
from nameko.messaging import QueueConsumer

# How long the consume loop waits for a message before it looks again whether it is to
# stop (kombu's ``safety_interval``, 1 s by default). A stopping service waits for this in
# every consumer: at 1 s, stopping took 1.6 s of a process's shutdown, and a rolling restart
# or a test's teardown waited for it. An idle consumer wakes four times a second instead of
# once (a timed-out read and a heartbeat check); a busy one returns as messages come.
DRAIN_WAIT_S = 0.25


class ConsumersLost(RecoverableConnectionError):
    """The connection the consumers were registered on is gone."""


def check_still_connected(connection) -> None:
    """Raise :class:`ConsumersLost` unless ``connection`` (py-amqp's, the one the
    consumers were registered on) is still connected. Nothing to check before the
    first registration."""
    if connection is not None and not connection.connected:
        raise ConsumersLost("the connection the consumers were registered on was lost; "
                            "registering them again")


class FailoverQueueConsumer(QueueConsumer):
    """nameko's ``QueueConsumer``, reconnecting its consumers when a write from another
    green thread was the first to find the connection lost (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._registered_on = None  # py-amqp connection of the current consumers

    def get_consumers(self, consumer_cls, channel):
        self._registered_on = channel.connection  # called on every (re)connection
        return super().get_consumers(consumer_cls, channel)

    def consume(self, *args, **kwargs):
        kwargs.setdefault("safety_interval", DRAIN_WAIT_S)
        return super().consume(*args, **kwargs)

    def on_iteration(self):
        # kombu calls this right before each drain_events, with no green thread switch
        # in between: a connection found lost here is never quietly replaced there.
        super().on_iteration()
        if not self.should_stop:
            check_still_connected(self._registered_on)

"""A consumer whose connection another green thread found lost (a failed ack write,
as when its broker node is SIGKILLed) registers itself again and goes on consuming
(shared.consuming). nameko's own QueueConsumer drained kombu's quietly made
replacement connection, which has no consumer, for ever: scenario 10's stall."""

from kombu import Connection, Queue
from nameko.messaging import Consumer

from shared.consuming import FailoverQueueConsumer
from tests.support.waiting import wait_until

QUEUE = Queue("test.consumer-failover", durable=False, auto_delete=True)
received = []


class FailoverConsumer(Consumer):
    queue_consumer = FailoverQueueConsumer()


class ConsumingService:
    name = "consumer_failover_test"

    @FailoverConsumer.decorator(queue=QUEUE)
    def take(self, body):
        received.append(body)


def publish(uri: str, n: int) -> None:
    with Connection(uri) as connection:
        connection.Producer(serializer="json").publish(
            {"n": n}, exchange="", routing_key=QUEUE.name, declare=[QUEUE])


def test_a_connection_found_lost_by_a_write_gets_its_consumer_registered_again(
        container_factory, rabbit_config):
    received.clear()
    container = container_factory(ConsumingService, rabbit_config)
    container.start()
    uri = rabbit_config["AMQP_URI"]
    publish(uri, 1)
    wait_until(lambda: received == [{"n": 1}], timeout=30)

    queue_consumer = next(ext for ext in container.subextensions
                          if isinstance(ext, FailoverQueueConsumer))
    lost = queue_consumer._registered_on
    # What py-amqp leaves behind when a write (an ack, from a worker's green thread)
    # fails with ECONNRESET: the transport marked disconnected, nothing raised in the
    # consumer's own loop.
    lost.transport.connected = False
    # nameko's QueueConsumer never registers again: it drains kombu's bare replacement.
    wait_until(lambda: queue_consumer._registered_on is not lost, timeout=30)
    lost.collect()  # the old socket closes, as a dead node's had: nothing left on it

    publish(uri, 2)
    wait_until(lambda: {"n": 2} in received, timeout=30)

"""What the event consumer does with a message before its worker runs
(shared.messaging): the body decoded once from its bytes."""

from types import SimpleNamespace

from kombu.exceptions import DecodeError
from kombu.message import Message

from shared.jsoncodec import use_for_kombu
from shared.messaging import DeadLetteringQueueConsumer


def registered(monkeypatch):
    """A consumer with one provider registered on a channel; what reached it."""
    consumer, kombu_consumer = DeadLetteringQueueConsumer(), SimpleNamespace()

    def nameko_registers(self, consumer_cls, channel):
        self._consumers = {"provider": kombu_consumer}
        return [kombu_consumer]

    monkeypatch.setattr("nameko.messaging.QueueConsumer.get_consumers", nameko_registers)
    channel = SimpleNamespace(connection=SimpleNamespace(connected=True), auto_decode=True)
    consumer.get_consumers(None, channel)
    reached = []
    monkeypatch.setattr(consumer, "handle_message",
                        lambda provider, body, message: reached.append(("handled", body)))
    monkeypatch.setattr(consumer, "_on_decode_error",
                        lambda provider, message, exc: reached.append(("undecodable", exc)))
    return channel, kombu_consumer, reached


def json_message(body: bytes) -> Message:
    return Message(body=body, content_type="application/json", content_encoding="utf-8",
                   accept={"application/json"})


def test_bodies_stay_bytes_and_are_decoded_once_by_the_consumer(monkeypatch):
    use_for_kombu()
    channel, kombu_consumer, reached = registered(monkeypatch)
    assert channel.auto_decode is False  # py-amqp leaves the body as the broker sent it
    kombu_consumer.on_message(json_message('{"issue_id":"WH-20261121-0001","a":"楼道"}'
                                           .encode()))
    assert reached == [("handled", {"issue_id": "WH-20261121-0001", "a": "楼道"})]


def test_an_undecodable_body_goes_where_kombu_sends_it(monkeypatch):
    use_for_kombu()
    _, kombu_consumer, reached = registered(monkeypatch)
    kombu_consumer.on_message(json_message(b"\xff\xfe{not json"))
    ((what, exc),) = reached
    assert what == "undecodable" and isinstance(exc, DecodeError)

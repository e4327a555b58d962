"""What the event consumer does with a message before its worker runs
(shared.messaging): the body decoded once from its bytes, the headers unpacked as
nameko unpacks them."""

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from kombu.exceptions import DecodeError
from kombu.message import Message
from nameko.messaging import HeaderDecoder

from shared.jsoncodec import use_for_kombu
from shared.messaging import DeadLetteringQueueConsumer, EventSubscriber


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


headers = st.dictionaries(
    st.sampled_from(["nameko.trace_id", "nameko.call_id_stack", "nameko.", "nameko",
                     "x-whistle-source", "x-whistle-event-type", "x-whistle-attempts",
                     "namekox.y", "nameko.nameko.a"]) | st.text(max_size=12),
    st.text(max_size=8) | st.lists(st.text(max_size=8), max_size=3) | st.integers())


@given(headers)
def test_headers_are_unpacked_as_nameko_unpacks_them(found):
    message = SimpleNamespace(headers=found)
    subscriber = EventSubscriber.__new__(EventSubscriber)  # unpacking reads no state
    assert subscriber.unpack_message_headers(message) == HeaderDecoder().unpack_message_headers(
        message)

"""orjson on the hot path must give what the standard library gave."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import serialization
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.message import Message
from pydantic import BaseModel

from shared.jsoncodec import (
    dumps,
    dumps_bytes,
    loads,
    read_message_body,
    use_for_kombu,
    utc_moment,
    utc_text,
)

# What our messages and records hold: string keys; str, int (64-bit), float, bool, None.
# (Text as it arrives in UTF-8: no lone surrogates.)
text = st.text(st.characters(blacklist_categories=("Cs",)))
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text
floats = st.floats(allow_nan=False, allow_infinity=False)


def documents(leaves):
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(text, inner, max_size=4), max_leaves=20)


@given(documents(scalars))
def test_dumps_is_the_standard_librarys_compact_utf8_output(value):
    assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@given(documents(scalars | floats))
def test_floats_may_be_spelled_differently_but_read_back_the_same(value):
    # orjson writes 1e-8 where json writes 1e-08: the same number.
    assert loads(dumps(value)) == json.loads(json.dumps(value)) == value


def test_chinese_text_is_kept_as_it_is():
    assert dumps({"description": "楼道灯坏了"}) == '{"description":"楼道灯坏了"}'


def kombu_loads(body: bytes):
    return serialization.loads(body, "application/json", "utf-8")


def test_kombu_decodes_plain_messages_and_its_own_typed_values():
    use_for_kombu()
    assert kombu_loads(b'{"issue_id":"WH-20261121-0001","n":[1,2.5,null]}') == {
        "issue_id": "WH-20261121-0001", "n": [1, 2.5, None]}
    # nameko's RPC payloads go through kombu's encoder, which marks datetimes.
    when = datetime(2026, 11, 21, 13, 0, tzinfo=UTC)
    _, _, body = serialization.dumps({"at": when}, "json")
    assert kombu_loads(body.encode() if isinstance(body, str) else body) == {"at": when}
    assert kombu_loads(memoryview(b'{"a":1}')) == {"a": 1}
    # What the standard library writes for floats JSON has no word for still reads.
    nan = kombu_loads(b'{"a": NaN, "b": Infinity, "c": 1e400}')
    assert nan["a"] != nan["a"] and nan["b"] == nan["c"] == float("inf")


@pytest.mark.parametrize("body", [b'{"a":', b"\xff\xfe not utf-8", b"{'a': 1}"])
def test_a_body_that_is_not_json_is_still_kombus_decode_error(body):
    use_for_kombu()
    with pytest.raises(DecodeError):
        kombu_loads(body)


JSON = {"application/json"}


def consumed(body, content_type="application/json", content_encoding="utf-8", accept=JSON):
    """A message as a consumer gets it: the body as the broker sent it (bytes)."""
    return Message(body=body, content_type=content_type, content_encoding=content_encoding,
                   accept=accept)


@given(documents(scalars | floats))
def test_a_consumed_body_reads_as_kombu_decodes_it(value):
    use_for_kombu()
    body = dumps_bytes(value)
    assert read_message_body(consumed(body)) == consumed(body).decode() == value


def outcome(read, message):
    try:
        return repr(read(message))  # repr: NaN is not equal to itself
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize("body, kind", [
    (b'{"a": NaN, "b": 1e400}', {}),  # the standard library's, which orjson refuses
    (b"", {}),  # empty: kombu hands it on as it is, for validation to refuse
    (b'{"a":', {}), (b"\xff\xfe not utf-8", {}), (b"{'a': 1}", {}),  # not JSON
    ('{"a":"é"}'.encode("latin-1"), {"content_encoding": "latin-1"}),
    (b'{"a":1}', {"content_encoding": None}),
    (b"plain", {"content_type": "text/plain", "accept": {"text/plain"}}),
    (b'{"a":1}', {"accept": {"application/x-python-serialize"}}),  # not accepted
])
def test_anything_but_our_plain_json_takes_kombus_road(body, kind):
    use_for_kombu()
    assert outcome(read_message_body, consumed(body, **kind)) == outcome(
        Message.decode, consumed(body, **kind))


def test_kombus_typed_values_take_its_road_and_come_back_typed():
    use_for_kombu()
    when = datetime(2026, 11, 21, 13, 0, tzinfo=UTC)
    _, _, body = serialization.dumps({"at": when}, "json")
    assert read_message_body(consumed(body.encode())) == {"at": when}


@pytest.mark.parametrize("body", [b'{"a":', b"\xff\xfe not utf-8", b"{'a': 1}"])
def test_an_undecodable_body_is_still_kombus_decode_error(body):
    use_for_kombu()
    with pytest.raises(DecodeError):
        read_message_body(consumed(body))


def test_content_the_consumer_does_not_accept_is_still_refused():
    use_for_kombu()
    with pytest.raises(ContentDisallowed):
        read_message_body(consumed(b'{"a":1}', accept={"application/x-python-serialize"}))


def test_a_utc_moment_is_spelled_with_z_as_pydantic_spells_it():
    class Moment(BaseModel):
        at: datetime

    for when in (datetime(2026, 12, 6, 13, 0, tzinfo=UTC),
                 datetime(2026, 12, 6, 13, 0, 0, 500, tzinfo=UTC)):
        pydantics = loads(Moment(at=when).model_dump_json())["at"]
        assert utc_moment(when) == loads(dumps({"at": when}))["at"] == pydantics
        assert loads(dumps_bytes([when])) == [pydantics]
        assert pydantics.endswith("Z") and datetime.fromisoformat(pydantics) == when
    assert utc_moment(datetime(2026, 12, 6, 13, 0, tzinfo=UTC)) == "2026-12-06T13:00:00Z"
    # Another offset is kept, as pydantic keeps it.
    beijing = datetime(2026, 12, 6, 21, 0, tzinfo=timezone(timedelta(hours=8)))
    assert utc_moment(beijing) == "2026-12-06T21:00:00+08:00"


def test_a_moment_stored_with_plus_zero_is_respelled_and_others_are_kept():
    assert utc_text("2026-12-06T13:00:00.306581+00:00") == "2026-12-06T13:00:00.306581Z"
    assert utc_text("2026-12-06T13:00:00Z") == "2026-12-06T13:00:00Z"
    assert utc_text("2026-12-06T21:00:00+08:00") == "2026-12-06T21:00:00+08:00"

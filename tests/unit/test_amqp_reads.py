"""Frames read ahead (shared.amqp_reads) come out exactly as py-amqp's exact reads give
them, however the socket splits the stream, and a timeout mid-frame loses nothing."""

import struct
import types

from amqp.transport import TCPTransport
from hypothesis import given
from hypothesis import strategies as st

from shared import amqp_reads


def transport_over(chunks: list[bytes], timeout_after: int | None = None) -> TCPTransport:
    """A TCP transport whose socket hands out ``chunks`` one ``recv`` at a time (each
    ``recv`` gets at most what it asks for), raising ``socket.timeout`` once after
    ``timeout_after`` of them; with our ``_read`` bound to it, as ``read_ahead()`` does."""
    pending = [bytearray(chunk) for chunk in chunks if chunk]
    calls = 0

    def recv(size: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls - 1 == timeout_after:
            raise TimeoutError()
        if not pending:
            return b""  # the peer closed
        chunk = pending[0]
        taken = bytes(chunk[:size])
        del chunk[:size]
        if not chunk:
            pending.pop(0)
        return taken

    transport = TCPTransport.__new__(TCPTransport)
    transport._read_buffer = b""
    transport._quick_recv = recv
    transport.raise_on_initial_eintr = True
    transport.connected = True
    transport._read = types.MethodType(amqp_reads._read_ahead, transport)
    return transport


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in zip(points, points[1:], strict=False)]


stream = st.binary(min_size=1, max_size=300)


@given(stream, st.lists(st.integers(0, 300), max_size=8), st.lists(st.integers(1, 40)),
       st.integers(1, 64))
def test_reads_give_the_stream_in_order_however_it_arrives(data, cuts, sizes, ahead):
    amqp_reads.READ_AHEAD_BYTES, kept = ahead, amqp_reads.READ_AHEAD_BYTES
    try:
        transport = transport_over(split(data, cuts))
        got, at = [], 0
        for n in sizes:
            if at + n > len(data):
                break
            piece = transport._read(n)
            assert type(piece) is bytes and len(piece) == n
            got.append(piece)
            at += n
        assert b"".join(got) == data[:at]
        rest = len(data) - at
        assert (transport._read(rest) if rest else b"") == data[at:]
    finally:
        amqp_reads.READ_AHEAD_BYTES = kept


def frame(payload: bytes, channel: int = 1, kind: int = 1) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


@given(st.lists(st.binary(max_size=50), min_size=1, max_size=6),
       st.lists(st.integers(0, 400), max_size=6), st.integers(0, 6))
def test_a_timeout_in_the_middle_of_a_frame_loses_nothing(payloads, cuts, timeout_after):
    # read_frame puts back what it read of the frame before the timeout
    # (read_frame_buffer + _read_buffer): the next read_frame starts the frame again.
    data = b"".join(frame(p) for p in payloads)
    transport = transport_over(split(data, cuts), timeout_after=timeout_after)
    got, timeouts = [], 0
    while len(got) < len(payloads):
        try:
            got.append(transport.read_frame()[2])
        except TimeoutError:
            timeouts += 1
    assert [bytes(p) for p in got] == payloads
    assert timeouts <= 1


def test_what_a_read_leaves_is_not_copied_again():
    # 64 KiB read ahead, taken seven bytes at a time: the buffer is a view of the recv,
    # not a fresh copy of the rest after every read.
    data = bytes(range(256)) * 256
    transport = transport_over([data])
    assert transport._read(7) == data[:7]
    received = transport._read_buffer.obj  # the bytes the recv returned
    assert len(received) == len(data)
    for at in range(7, 7 * 100, 7):
        assert transport._read(7) == data[at:at + 7]
        assert transport._read_buffer.obj is received

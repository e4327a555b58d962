"""AMQP frames read from a buffer, not three system calls each.

py-amqp's TCP transport reads exactly the bytes it needs next: a frame's 7-byte
header, then its payload, then its end byte, each with its own ``recv``. A
delivered message is three frames, so taking one message off the broker cost
about nine ``recv`` calls, each a system call and, under eventlet, a trip through
the green socket's wrapper. :func:`read_ahead` makes the transport ask for up to
:data:`READ_AHEAD_BYTES` at a time and keep what it did not need yet in the
buffer it already has for that purpose (``_read_buffer``), so a burst of frames
costs one ``recv``.

Why py-amqp reads exactly (celery/py-amqp#33, for celery/celery#1847): an event
loop that waits for the *socket* to become readable before reading stalls when
the next frames already sit in a user-space buffer. Nothing in a Whistle process
does that: nameko's consumers, its RPC proxies and our publisher all read through
``drain_events``, which looks at the buffer first and only then at the socket.
Do not call this in a process that drives kombu from a readiness-based event loop
(celery's worker hub).
"""

from __future__ import annotations

import errno

from amqp.transport import TCPTransport

READ_AHEAD_BYTES = 64 * 1024


def _read_ahead(self, n, initial=False, _errnos=(errno.EAGAIN, errno.EINTR)):
    """py-amqp's ``TCPTransport._read``, asking the socket for more than ``n``.

    What was read ahead waits in ``_read_buffer`` as a ``memoryview`` of the ``recv``
    that brought it, so taking ``n`` bytes off it copies those ``n`` bytes only. Sliced
    as ``bytes``, every read copied the whole rest of the buffer: with a backlog, each
    of a message's nine reads copied up to 64 KiB, a sixth of the instructions of a
    delivery (``python -m bench.costs delivery-noop``), and a count that moved with how
    full the buffer happened to be.
    ``read_frame`` may put back what it read of a frame (``bytes + memoryview`` is
    ``bytes``): a buffer of either kind is read here."""
    rbuf = self._read_buffer
    if len(rbuf) < n:
        recv = self._quick_recv
        rbuf = bytes(rbuf)  # the short rest, joined with what comes next
        try:
            while len(rbuf) < n:
                try:
                    s = recv(max(n - len(rbuf), READ_AHEAD_BYTES))
                except OSError as exc:
                    if exc.errno in _errnos:
                        if initial and self.raise_on_initial_eintr:
                            raise TimeoutError() from exc
                        continue
                    raise
                if not s:
                    raise OSError("Server unexpectedly closed connection")
                rbuf += s
        except:  # noqa: E722 - py-amqp's own contract: keep what was read, whatever happened
            self._read_buffer = rbuf
            raise
    view = rbuf if type(rbuf) is memoryview else memoryview(rbuf)
    self._read_buffer = view[n:]
    return bytes(view[:n])


def read_ahead() -> None:
    """Read AMQP frames ahead in this process (idempotent)."""
    TCPTransport._read = _read_ahead

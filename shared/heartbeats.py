"""Heartbeats on a connection that only receives.

A consumer with ``no_ack=True`` (``whistle tail``, the pages' live view, the
benchmark's observer) sends the broker nothing while messages flow. RabbitMQ counts
only what it *receives* as a sign of life, and closes a connection that sent nothing
for about two heartbeat intervals ("missed heartbeats from client"). The usual loop,
``drain_events(timeout=…)`` and ``heartbeat_check()`` only when it times out, never
times out under a steady stream, so it never sends a heartbeat: a busy stream longer
than a minute (heartbeat 30 s) lost its connection. :func:`drain` checks after every
wait, busy or idle. py-amqp's check sends a heartbeat only when one is due, so calling
it often costs a clock read.
"""

from __future__ import annotations

import contextlib


def drain(connection, timeout: float) -> None:
    """Handle what arrives within ``timeout`` seconds, then send a heartbeat if one is
    due. Raises the connection's errors (a lost connection, or the broker's heartbeats
    missed) for the caller to reconnect or give up."""
    with contextlib.suppress(TimeoutError):
        connection.drain_events(timeout=timeout)
    connection.heartbeat_check()

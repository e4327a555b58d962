"""A Redis connection pool that does, on every command, only the work Whistle needs.

For every command, redis-py's ``ConnectionPool`` takes its lock twice, reads the
socket once more before handing a connection out (``can_read``: was a reply left
on it, or did the server close it?), and dispatches a "connection released" event
to its listeners. Under eventlet that came to about 10 µs of CPU on a 57 µs
command (``docs/benchmarks.md``), and a Whistle issue takes ten or so round trips.

:class:`LeanConnectionPool` hands out a connection released moments ago as it is:

- **No lock on that road.** Services run on green threads, which switch only when
  they wait for I/O, and nothing between taking a connection off the list and
  marking it in use waits. With OS threads (the CLI, tests), ``list.pop`` and
  ``set.add`` are each atomic under the GIL, and a popped connection goes to one
  caller only.
- **No extra read.** A reply cannot be left on a pooled connection: redis-py
  disconnects a connection whenever sending or reading is interrupted, by any
  exception (``GreenletExit`` included), so it comes back read to the end or closed.
  What the read still catches is a server that closed the connection while it sat
  in the pool (a Redis restart, the server's idle timeout). That takes time, so a
  connection idle for :data:`RECHECK_IDLE_S` or more, or never used, goes through
  redis-py's own ``get_connection`` with its checks, as before.
- **No release event.** Its only listener re-authenticates connections for
  token-based credential providers, which Whistle does not use.
"""

from __future__ import annotations

import time

import redis

RECHECK_IDLE_S = 1.0


class LeanConnectionPool(redis.ConnectionPool):
    """``redis.ConnectionPool``, minus per-command work (see the module docstring)."""

    def get_connection(self, *args, **kwargs) -> redis.Connection:
        self._checkpid()
        try:
            # The most recently released connection is last: LIFO keeps the busy few warm.
            connection = self._available_connections.pop()
        except IndexError:
            return super().get_connection(*args, **kwargs)  # makes one
        if time.monotonic() - connection.released_at < RECHECK_IDLE_S:
            self._in_use_connections.add(connection)
            return connection
        # Idle a while: redis-py's road takes it (or another) and checks it.
        self._available_connections.append(connection)
        return super().get_connection(*args, **kwargs)

    def release(self, connection: redis.Connection) -> None:
        connection.released_at = time.monotonic()
        self._checkpid()
        try:
            self._in_use_connections.remove(connection)
        except KeyError:
            return  # not ours, or released twice: redis-py ignores it too
        if self.owns_connection(connection):
            self._available_connections.append(connection)
        else:
            connection.disconnect()  # made before a fork: never share its socket


def lean_client(url: str, **kwargs) -> redis.Redis:
    """``redis.Redis.from_url(url, **kwargs)``, on a :class:`LeanConnectionPool`."""
    client = redis.Redis(connection_pool=LeanConnectionPool.from_url(url, **kwargs))
    client.auto_close_connection_pool = True  # close() disconnects it, as from_url's does
    return client

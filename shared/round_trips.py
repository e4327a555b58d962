"""Redis round trips shared by the green threads of one process that wait at the same moment.

Under load a service runs many workers at once (up to ``max_workers``), and each
of them makes its own round trips to Redis: notify's 32 workers each read a record
and deliver a message, intake's requests each check the door and create an issue.
A round trip costs the client far more than the command costs Redis: under eventlet,
a ``send``, a ``recv`` that would block, the hub's ``epoll`` registration and two
switches, 60 to 95 µs of CPU on the VMs measured, and Redis 30 to 40 µs more for
reading and answering one small request. Ten round trips an issue made that a tenth of
an issue's CPU or more.

:class:`RoundTrips` sends a command at once when it is the only one (no extra
latency, nothing gathered, when the load is light), and while one is on the wire it
gathers the commands other green threads ask for. When the one on the wire returns,
the gathered ones go together, as one pipeline (``transaction=False``: each is its own
command, as it would have been alone), and each caller gets its own reply or its own
error, exactly as ``execute_command`` would have given it:

- a reply that is an error (a script's error, ``NOSCRIPT``) is raised to its caller
  alone, so :func:`shared.store.run_script` reloads a flushed script as before;
- a connection error, a timeout or anything else that fails the pipeline as a whole is
  raised to every caller in it, as it would have been to each of them on their own
  (redis-py retries a pipeline on a connection error as it retries a command);
- nobody waits forever: a batch whose sending was stopped (its green thread killed)
  fails every caller in it, and the next caller finds the way clear.

Commands still run one at a time on the server and each one whole, in the order they
were asked for; only commands from different green threads that were waiting at the
same moment share a round trip, and their relative order was never fixed before.

``python -m bench.round_trips`` measures it: with 16 green threads each calling a small
script, about 95 µs of client CPU and 40 µs of Redis's a call when each makes its own
round trip, 37 and 16 shared (``docs/benchmarks.md``, session 19).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import eventlet
import redis
from eventlet.event import Event

# A batch's replies come back together: bound it, so no caller waits behind hundreds.
MOST_IN_ONE_BATCH = 64


class _Call:
    """One caller's command, and the event it waits on for its reply (or :data:`_ALONE`)."""

    __slots__ = ("args", "options", "reply")

    def __init__(self, args: tuple, options: dict):
        self.args, self.options, self.reply = args, options, Event()

    def answer(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            self.reply.send_exception(reply)
        else:
            self.reply.send(reply)


# What a caller gathered alone is told: nothing to share a round trip with, send it
# yourself (on a connection of its own, beside whatever is on the wire by then).
_ALONE = object()


class RoundTrips:
    """``execute_command`` for the green threads of one process, sharing round trips
    when several wait at once (module docstring). One per client.

    A caller who finds nothing on the wire sends its command at once. Callers who come
    while it is on the wire gather; when it returns, its caller sends the gathering as
    one pipeline before it goes on, and whatever gathered meanwhile goes from a green
    thread of its own (so no caller is held for more than one more round trip). A
    caller gathered alone is woken to send its own command, as it would have.
    """

    def __init__(self, client):
        self._client = client
        self._gathered: list[_Call] = []
        self._busy = False  # a command, or a batch of them, is on the wire

    def execute(self, *args: Any, **options: Any) -> Any:
        if self._busy:
            call = _Call(args, options)
            self._gathered.append(call)
            try:
                reply = call.reply.wait()
            except BaseException:
                if call in self._gathered:  # its caller was killed while it waited
                    self._gathered.remove(call)
                raise
            if reply is _ALONE:
                return self._client.execute_command(*args, **options)
            return reply
        self._busy = True
        try:
            return self._client.execute_command(*args, **options)
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        """After a round trip: the gathering goes in one more, or the way is clear."""
        if len(self._gathered) < 2:
            self._release()
            return
        try:
            self._send(self._take())
        finally:
            if len(self._gathered) > 1:
                eventlet.spawn_n(self._send_gathered)
            else:
                self._release()

    def _release(self) -> None:
        self._busy = False
        if self._gathered:  # one alone: it sends its own
            self._gathered.pop().reply.send(_ALONE)

    def _send_gathered(self) -> None:
        try:
            while len(self._gathered) > 1:
                self._send(self._take())
        finally:
            self._release()

    def _take(self) -> list[_Call]:
        batch = self._gathered[:MOST_IN_ONE_BATCH]
        del self._gathered[:MOST_IN_ONE_BATCH]
        return batch

    def _send(self, batch: list[_Call]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for call in batch:
                pipe.execute_command(*call.args, **call.options)
            # A command's error comes back in its place, for its caller alone.
            replies = pipe.execute(raise_on_error=False)
        except BaseException as exc:
            # The round trip failed as a whole (the connection, a timeout), or this
            # green thread was killed: every caller in it hears so, as each would have
            # alone.
            failure = exc if isinstance(exc, Exception) else redis.ConnectionError(
                "the process is stopping: the command may or may not have run")
            for call in batch:
                call.answer(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for call, reply in zip(batch, replies, strict=True):
            call.answer(reply)


_by_server: dict[str, RoundTrips] = {}


def share_round_trips(client, server: str, make_client: Callable[[], Any]) -> None:
    """Have :func:`execute` send ``client``'s commands through the process's
    :class:`RoundTrips` for ``server`` (a Redis URL), made on first use with a client
    of its own (``make_client``): every service client of a process for the same Redis
    shares them, the store's, the door's and notify's alike, so a worker's script and
    another's of a different provider share a round trip too."""
    trips = _by_server.get(server)
    if trips is None:
        trips = _by_server[server] = RoundTrips(make_client())
    client.round_trips = trips


def execute(client, *args: Any, **options: Any) -> Any:
    """``client.execute_command(*args, **options)``, sharing round trips when the
    client does (:func:`share_round_trips`)."""
    trips = getattr(client, "round_trips", None)
    if trips is None:
        return client.execute_command(*args, **options)
    return trips.execute(*args, **options)

"""Stopping a benchmark with a signal: SIGINT (Ctrl-C), SIGTERM or SIGHUP.

Each one stops the run the same way: the main green thread gets :class:`Stopped`
where it waits, so every ``with`` and ``finally`` on the way out runs. The services
are stopped, the vhost deleted and the Redis keys removed, and the command exits
with 128 + the signal's number (143 for SIGTERM, as shells do).

- **Where the signal lands.** Under eventlet a Python signal handler runs in
  whichever green thread happens to be running, which may be one of the
  benchmark's own (a submitter, the observer). An exception there would end that
  thread and nothing else. So the handler raises nothing: the signal number goes
  through a wakeup socket (``signal.set_wakeup_fd``), which wakes the hub even
  while it sleeps in ``epoll``, to a watcher green thread; the watcher has the hub
  throw :class:`Stopped` into the main green thread, the way ``eventlet.Timeout``
  does.
- **Cleanup is never cut short.** Once stopping, further signals are reported
  ("cleanup in progress") and otherwise ignored. Code that must not be interrupted
  (stopping the services, deleting the vhost, starting a process that must be
  tracked) runs in :func:`uninterrupted`: a first signal arriving there is held
  until the block ends.

Outside :class:`StopOnSignals` (a bench used as a library, or in tests),
:func:`uninterrupted` does nothing. eventlet is imported only on entering it, so the
baseline's hop processes (plain kombu, no eventlet) can import this module.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import greenlet

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(SystemExit):
    """The run was stopped by a signal; the exit status is 128 + its number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def _write(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class StopOnSignals:
    """Context manager: while inside, SIGINT, SIGTERM and SIGHUP stop the run cleanly.

    ``announce`` gets the line to print when the first signal arrives and for each
    later one. Enter it in the main green thread.
    """

    def __init__(self, announce: Callable[[str], None] = _write):
        self.announce = announce
        self.signum: int | None = None
        self._shields = 0
        self._held = False  # a signal arrived inside uninterrupted(): raise at its end
        self._main: greenlet.greenlet | None = None
        self._previous: dict[int, object] = {}
        self._previous_fd = -1
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._watcher = None
        self._hub = None

    def __enter__(self) -> StopOnSignals:
        global _current
        import eventlet
        from eventlet.hubs import get_hub

        self._main, self._hub = greenlet.getcurrent(), get_hub()
        reader, writer = socket.socketpair()  # green: the watcher waits on the hub
        writer.setblocking(False)
        self._sockets = (reader, writer)
        self._watcher = eventlet.spawn(self._watch, reader)
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, _ignore)
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        _current = self
        return self

    def __exit__(self, *exc_info) -> None:
        global _current
        _current = None
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._watcher is not None:
            self._watcher.kill()
        for sock in self._sockets or ():
            sock.close()

    @property
    def stopped(self) -> bool:
        return self.signum is not None

    def _watch(self, reader: socket.socket) -> None:
        while True:
            data = reader.recv(64)
            if not data:
                return
            for signum in data:
                if signum in SIGNALS:
                    self._received(signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            self.announce(f"bench: {name} received: cleanup in progress, please wait")
            return
        self.signum = signum
        self.announce(f"bench: {name} received: stopping; cleaning up (services, vhost, "
                      f"Redis keys)")
        # From the hub, not from this green thread: a throw from here would leave the
        # watcher suspended for good, and later signals unanswered.
        self._hub.schedule_call_global(0, self._interrupt)

    def _interrupt(self) -> None:
        if _current is not self:
            return  # the run is over: the command reports the signal as it exits
        if self._shields:
            self._held = True
        else:
            self._main.throw(Stopped(self.signum))

    @contextmanager
    def _shielded(self) -> Iterator[None]:
        self._shields += 1
        try:
            yield
        finally:
            self._shields -= 1
        if not self._shields and self._held:
            self._held = False
            raise Stopped(self.signum)


_current: StopOnSignals | None = None


def _ignore(signum, frame) -> None:
    """The Python-level handler: the work is done by the watcher (see the module doc)."""


@contextmanager
def uninterrupted() -> Iterator[None]:
    """A block a stopping signal must not cut short; a signal in it is acted on after it.

    Only the main green thread's blocks count (signals are thrown into it alone).
    """
    stopper = _current
    if stopper is None or greenlet.getcurrent() is not stopper._main:
        yield
        return
    with stopper._shielded():
        yield

"""A stop signal's handler whose exception may be lost, so it notes the signal too.

The handler raises in the main thread, wherever it happens to be. In a weakref callback
or a ``__del__`` (importlib's module locks, a connection pool's finalizer), Python prints
the exception ("Exception ignored in ...") and carries on, as if no signal had come.
Whoever installs a :class:`NotedStop` calls :meth:`NotedStop.raise_if_asked` where it can
still stop cleanly, and so stops even then."""

from __future__ import annotations

from collections.abc import Callable


class NotedStop:
    """A signal handler: notes the signal, then raises ``stop()``."""

    def __init__(self, stop: Callable[[], BaseException]) -> None:
        self._stop = stop
        self.asked: list[int] = []  # the signals that came, in order

    def __call__(self, signum, frame) -> None:
        self.asked.append(signum)
        raise self._stop()

    def raise_if_asked(self) -> None:
        """Raise ``stop()`` again if a signal came (its first exception may be lost)."""
        if self.asked:
            raise self._stop()

"""A service for ``nameko run`` next to a real one (tests/integration/test_stderr_scrubbing.py):
once logging is configured in its process, a green thread of its own raises with a phone
number and a resident's link in its message, and eventlet's hub prints the traceback to
stderr. The probe sets nothing up itself (no WorkerLogger): whatever scrubs that text is
the other service's doing. :func:`arm` starts the same green thread in a ``whistle up``
process, which takes no extra service."""

import eventlet
from nameko.extensions import DependencyProvider

from shared import logging as whistle_logging

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJXSC0xIn0.c2lnbmF0dXJl"
MESSAGE = f"call 13912345678 about http://x/issues/1?token={TOKEN}"


def _raise_once_logging_is_configured() -> None:
    while whistle_logging._configured_format is None:
        eventlet.sleep(0.05)
    raise ValueError(MESSAGE)


class _RaiseInAGreenThread(DependencyProvider):
    def start(self):
        eventlet.spawn_n(_raise_once_logging_is_configured)


class StderrProbe:
    name = "stderr_probe"
    probe = _RaiseInAGreenThread()


def arm() -> None:
    """The same green thread, in a process that runs no probe service (``whistle up``):
    spawned before the command runs, it raises once the command has configured logging."""
    eventlet.spawn_n(_raise_once_logging_is_configured)

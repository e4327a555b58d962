"""Structured logging, configured once per process.

Every line is an event name plus key/value pairs, JSON by default or readable
console output (``LOG_FORMAT=console``). Records from nameko, kombu and the
standard library go through the same processors, so the privacy scrubber
(phone numbers, resident names) applies to every line, exception text included.

Our own lines (:func:`get_logger`, :class:`WorkerLogger`) are rendered by structlog
and written straight to stderr; only other libraries' records take the standard
library's road (a ``LogRecord``, the handler's lock, ``ProcessorFormatter``). That
road cost more than the rest of a line put together: with orjson rendering the
JSON, a worker's line costs half the instructions it did
(``python -m bench.costs log-line``; docs/benchmarks.md has the counts). The scrubber
then checks a line's text values together, once, rather than each value on its own,
and the timestamp formats its date and time once a second: from about 172k
instructions a line to 66k-84k. Since session 18 the unit averages 1,000 workers' lines
with seeded ids (a quarter of them hold a run of digits that takes the slow road), and
its phone pre-check rules out ASCII lines by a byte translation: 101k before that
change, 88k after.

Services get a per-worker logger from :class:`WorkerLogger`, already bound with
service, entrypoint, nameko ``call_id`` and ``trace_id``.

What reaches a service process's stderr outside the log lines (the tracebacks eventlet's
hub prints for an exception escaping a green thread, Python's for an uncaught one) is
scrubbed too, line by line: :class:`ScrubbedStderr`, installed by
:func:`configure_logging`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import nameko.containers
import orjson
import structlog
from nameko.extensions import DependencyProvider

from shared.gc_tuning import tune_gc_for_service
from shared.privacy import scrub_fields, scrub_text

_configured_format: str | None = None


def _scrub_event(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Mask personal data in every value, including rendered exceptions."""
    return scrub_fields(event_dict, exempt="timestamp")


def _json(_logger: Any, _name: str, event_dict: dict[str, Any]) -> str:
    # Non-ASCII stays as it is (Chinese text readable in the log), like
    # json.dumps(ensure_ascii=False); a value orjson has no JSON for becomes its str().
    try:
        return orjson.dumps(event_dict, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits: a log line must never raise
        return json.dumps(event_dict, default=str, ensure_ascii=False)


class _UtcTimestamp:
    """structlog's ``TimeStamper(fmt="iso", utc=True)``, the same text
    (``2026-11-21T08:30:05.123456Z``, no fraction on a whole second), for a seventh of
    the instructions: the date and time of day are formatted once a second."""

    def __init__(self) -> None:
        self._second, self._prefix = -1, ""

    def __call__(self, _logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        # datetime.now() reads the same clock and rounds down to the microsecond too
        second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).isoformat().removesuffix("+00:00")
            self._second = second
        microseconds = nanoseconds // 1000
        event_dict["timestamp"] = (f"{self._prefix}.{microseconds:06d}Z" if microseconds
                                   else f"{self._prefix}Z")
        return event_dict


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class ScrubbedStderr:
    """A service process's ``sys.stderr``: what is written to it outside the log lines,
    scrubbed line by line (:func:`shared.privacy.scrub_text`).

    eventlet's hub prints an exception that escapes a green thread or a hub callback with
    ``traceback.print_exception`` to ``sys.stderr``, as Python does an uncaught one
    (``sys.excepthook``, ``threading.excepthook``, "Exception ignored in ..."), and an
    exception's text can quote a resident (a pydantic error's ``input_value='139…'``, a
    link's token in a URL error). Those tracebacks stay, masked as a log line is.

    Text is held until its line ends, so a phone written in two pieces is still masked;
    ``flush()`` and ``close()`` write what is held (Python flushes ``sys.stderr`` at
    exit), as does a line longer than ``HELD_AT_MOST``. Our own log lines, scrubbed
    already, are written to the wrapped stream itself (:func:`_log_stream`), not searched
    twice: a line held unfinished comes out after them. Anything else (``fileno``,
    ``isatty``, ``encoding``, ``buffer``) is the wrapped stream's: a write to its
    ``buffer`` or its file descriptor is not scrubbed.
    """

    HELD_AT_MOST = 65536

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._held = ""

    def write(self, text: str) -> int:
        if text.__class__ is not str:
            return self.stream.write(text)  # the wrapped stream's own error for bytes
        held = self._held + text
        end = held.rfind("\n") + 1
        if len(held) - end > self.HELD_AT_MOST:
            end = len(held)
        self._held = held[end:]
        if end:
            self.stream.write(scrub_text(held[:end]))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._held:
            self._write_held()
        self.stream.flush()

    def close(self) -> None:
        self.flush()
        self.stream.close()

    def _write_held(self) -> None:
        held, self._held = self._held, ""
        self.stream.write(scrub_text(held))

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer, ...
        if name == "stream":  # not set yet (a copy being made): no endless lookup
            raise AttributeError(name)
        return getattr(self.stream, name)


def scrub_stderr() -> None:
    """Make this process's ``sys.stderr`` a :class:`ScrubbedStderr`, once.

    Only the process's own stderr is wrapped: a stream put there by someone else
    (pytest's capture, a benchmark's /dev/null) is theirs. Called by
    :func:`configure_logging`, which every service process runs (``whistle up``,
    ``nameko run`` through :class:`WorkerLogger`)."""
    if sys.stderr is not None and sys.stderr is sys.__stderr__:
        sys.stderr = ScrubbedStderr(sys.stderr)


def _log_stream() -> Any:
    """Where the log lines go: in a service process, the stream :class:`ScrubbedStderr`
    wraps (a line is scrubbed already; searching it again cost as much as the scrubber's
    cheap checks), else whatever ``sys.stderr`` is at the time of writing."""
    return sys.stderr.stream if isinstance(sys.stderr, ScrubbedStderr) else _Stderr()


def configure_logging(fmt: str = "json", level: int | str = logging.INFO) -> None:
    """Configure structlog and the stdlib root logger, and scrub what else reaches
    stderr (:func:`scrub_stderr`). Safe to call more than once."""
    global _configured_format
    scrub_stderr()
    if _configured_format == fmt:
        return
    _configured_format = fmt
    level_no = logging.getLevelName(level) if isinstance(level, str) else level

    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = _json
    # The same fields, masking and rendering on both roads.
    last_processors = [structlog.processors.format_exc_info, _scrub_event, renderer]
    timestamp = _UtcTimestamp()

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamp,
            *last_processors,
        ],
        logger_factory=structlog.WriteLoggerFactory(_log_stream()),
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamp,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *last_processors],
    )
    # No line shows the caller, thread or process fields: don't work them out for
    # every record (the logging HOWTO's "Optimization"; under eventlet the thread
    # is a green-thread lookup, and the caller a walk up the stack).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(_log_stream())
    handler.setFormatter(formatter)
    handler._whistle = True  # replace only our own handler; leave others' (e.g. pytest's)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_whistle", False)]
    root.addHandler(handler)
    root.setLevel(level)
    # kombu logs undecodable message bodies verbatim at WARNING/ERROR; they go
    # through the scrubber like everything else, but keep its chatter down.
    logging.getLogger("kombu").setLevel(logging.WARNING)
    logging.getLogger("amqp").setLevel(logging.WARNING)
    logging.getLogger("nameko.containers").addFilter(_EXPECTED_WITHOUT_TRACEBACK)


class _ExpectedErrorWithoutTraceback(logging.Filter):
    """nameko logs each expected exception of a worker (a 401, a 404, a deferred event,
    the store being down) at WARNING with its whole traceback: two dozen lines for a
    wrong token. The line stays, with the exception's type and text; the traceback
    goes, as it shows only the framework's path to a result the code chose."""

    PREFIX = "(expected) error handling worker"

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self.PREFIX):
            if record.exc_info and record.exc_info[0] is not None and record.args:
                exc = record.exc_info[1]
                record.args = (*record.args[:-1], f"{type(exc).__name__}: {exc}")
            record.exc_info, record.exc_text = None, None
        return True


_EXPECTED_WITHOUT_TRACEBACK = _ExpectedErrorWithoutTraceback()


_nameko_log_time = nameko.containers._log_time
# One for every untimed step: a nullcontext holds nothing of the worker, and building
# one for each of a worker's four steps cost about 5k instructions a message.
_NOT_TIMED = contextlib.nullcontext()


def _log_time_when_debugging(msg: str, *args: Any) -> Any:
    """nameko's worker timing, only when its DEBUG lines are wanted (see below)."""
    if nameko.containers._log.isEnabledFor(logging.DEBUG):
        return _nameko_log_time(msg, *args)
    return _NOT_TIMED


def time_workers_only_when_debugging() -> None:
    """Stop nameko timing every worker for DEBUG lines nobody reads.

    nameko's container times four steps of every worker ("ran worker", "ran handler",
    "handled result", "tore down worker") with a generator-based context manager
    that formats its message and hands it to ``logging`` at DEBUG, whether or not
    DEBUG is on. Here the container looks at its logger's level first, at every
    worker, so turning DEBUG on at run time brings the lines back. Part of making
    a delivery lighter (docs/benchmarks.md, session 5).
    """
    nameko.containers._log_time = _log_time_when_debugging


def get_logger(name: str) -> Any:
    """Our own structured logger; ``name`` is the line's ``logger`` field."""
    return structlog.get_logger().bind(logger=name)


class WorkerLogger(DependencyProvider):
    """A structlog logger bound to the current worker.

    Usage::

        class RoutingService:
            name = "routing"
            log = WorkerLogger()

            @subscribe(IssueReceived)
            def route_issue(self, event):
                self.log.info("issue_routed", issue_id=event.issue_id)
    """

    def setup(self):
        # Every way of running a service (whistle up, nameko run, tests) ends up here.
        from shared import config as cfg

        # `nameko run --config config.yaml` (docker compose) builds the config without
        # config_from_env: checked here, so that it too refuses a malformed value and,
        # with WHISTLE_ENV=production, the development defaults (before any worker runs).
        cfg.normalise(self.container.config)
        configure_logging(cfg.get(self.container.config, cfg.LOG_FORMAT))
        time_workers_only_when_debugging()
        tune_gc_for_service()  # here for the same reason: every service process comes by
        # One logger per container, bound per worker: building it afresh for every
        # worker (structlog's lazy proxy, then the bind) cost as much as a log line.
        self.base = get_logger(f"whistle.{self.container.service_name}").bind(
            service=self.container.service_name)

    def get_dependency(self, worker_ctx):
        data = worker_ctx.data or {}
        return self.base.bind(
            entrypoint=worker_ctx.entrypoint.method_name,
            call_id=worker_ctx.call_id,
            trace_id=data.get("trace_id"),
        )

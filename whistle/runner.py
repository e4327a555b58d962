"""``whistle up``: every service (or some) in one process, on one HTTP address."""

from __future__ import annotations

import errno
import signal
import socket
import time
from logging import getLogger

import eventlet
import eventlet.event
from kombu import Connection
from nameko.runners import ServiceRunner

from shared import config as cfg
from shared.logging import configure_logging
from shared.store import close_archives
from whistle.noted_stop import NotedStop

_log = getLogger("whistle.up")

SERVICE_NAMES = ("intake", "routing", "agency", "notify", "web")


def service_classes(names: tuple[str, ...]) -> list[type]:
    from services.agency.service import AgencyService
    from services.intake.service import IntakeService
    from services.notify.service import NotifyService
    from services.routing.service import RoutingService
    from services.web.service import WebService

    by_name = {cls.name: cls for cls in (IntakeService, RoutingService, AgencyService,
                                         NotifyService, WebService)}
    return [by_name[n] for n in names]


def wait_for_broker(amqp_uri: str, timeout_s: float) -> None:
    """nameko refuses to start while the broker is down; wait for it instead."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with Connection(amqp_uri, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
            return
        except Exception as exc:
            from whistle.ops import short_reason  # "Connection refused", not OperationalError

            if time.monotonic() > deadline:
                where = ", ".join(uri.split("@")[-1] for uri in cfg.broker_uris(amqp_uri))
                raise SystemExit(f"whistle: cannot reach RabbitMQ at {where} "
                                 f"({short_reason(exc)}) after {timeout_s:g} s") from None
            _log.warning("waiting for RabbitMQ (%s)", short_reason(exc))
            exit_if_stopped_before_start()  # up to a minute here: not until its end
            time.sleep(1)


def check_queue_types(amqp_uri: str, queue_type: str) -> None:
    """Refuse to start on queues of the other type (a half-done `whistle queues migrate`,
    a WHISTLE_QUEUE_TYPE not set like the deployment's), with one line saying what to do.

    Every service declares the topology as it starts and would refuse anyway, but from
    inside nameko's start: in tracebacks, or in a consumer's reconnection loop."""
    from shared.topology import QueueTypeMismatch, declare_topology

    with Connection(amqp_uri, connect_timeout=5) as connection:
        try:
            declare_topology(connection, queue_type)
        except QueueTypeMismatch as exc:
            raise SystemExit(f"whistle: not starting: {exc}") from None


def check_rules(config: dict) -> None:
    """Refuse to start routing on a bad rules file, with every error and its line."""
    from services.routing.rules import RulesError, load_rules

    try:
        load_rules(config.get(cfg.RULES_FILE) or None)
    except (RulesError, OSError) as exc:
        raise SystemExit(f"whistle: routing rules are invalid, not starting:\n{exc}") from None


def check_address_free(address: str) -> None:
    """Refuse to start on an address something else listens on, with one clear line.

    The web server listens without ``SO_REUSEPORT`` (``shared.web``), so it would fail
    anyway, but part-way through starting and with a traceback."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as eventlet.listen
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise SystemExit(f"whistle: {address} is already in use (another `whistle up`?); "
                             "choose another with --address") from None


def reload_rules_on_sighup(signum, frame) -> None:
    """SIGHUP: reload every routing rules file in this process, like most daemons do.

    Off the signal handler, in a green thread (it reads files). A reload only swaps
    a reference, so consumption is untouched: no message is dropped or redelivered.
    A bad file leaves the old rules in force; the outcome is logged either way.
    """
    eventlet.spawn_n(_reload_rules)


def _reload_rules() -> None:
    from services.routing.rules_provider import reload_all

    outcomes = reload_all()
    for service, outcome in outcomes:
        if outcome == "ok":
            _log.info("SIGHUP: %s rules reloaded", service)
        else:
            _log.error("SIGHUP: %s rules NOT reloaded, old rules kept: %s", service, outcome)
    if not outcomes:
        _log.info("SIGHUP: no reloadable rules in this process")


class StoppedBeforeStart(SystemExit):
    """SIGTERM before any service started: nothing to stop, the process ends at once, 0.

    A SystemExit, so that eventlet's hub passes it on to the main green thread whichever
    green thread the signal interrupted (it swallows other exceptions, in its timers)."""


# SIGTERM before any service started: ends start-up, noted in case its exception is lost.
_stopped_before_start = NotedStop(lambda: StoppedBeforeStart(0))


def exit_if_stopped_before_start() -> None:
    """Stop now if a SIGTERM came before the services started and its exception was lost.

    Seen under load: the handler raised in importlib's module-lock weakref callback while
    the services' modules were imported, Python printed it and carried on, start-up went
    on to run the services, and docker's SIGKILL ended them 10 s later. Called at the last
    moment start-up can still stop without stopping a service."""
    _stopped_before_start.raise_if_asked()


def stop_on_sigterm_before_start() -> None:
    """Until :func:`run` installs its graceful stop, SIGTERM ends the process at once.

    Left at Python's default, a SIGTERM ends a process, but not the first process of a
    container: the kernel drops a signal PID 1 has no handler for. `docker stop` while
    `whistle up` waited for the broker (up to 60 s) or migrated then waited out docker's
    10 s and SIGKILLed it."""
    signal.signal(signal.SIGTERM, _stopped_before_start)


def run(names: tuple[str, ...], config: dict, on_started=None) -> None:
    """Run the services until SIGINT or SIGTERM, then stop them gracefully.

    A SIGTERM while they are still starting stops them once they have started: nameko
    2.14 cannot stop a half-started container (its Timer.stop waits on a thread that
    Timer.start has not spawned yet: AttributeError, and the process never exits), and
    that is why docker-compose.yml runs each service with `whistle up`, not `nameko run`.
    """
    configure_logging(config[cfg.LOG_FORMAT])
    if "routing" in names:
        check_rules(config)
    check_address_free(config[cfg.WEB_SERVER_ADDRESS])
    wait_for_broker(config[cfg.AMQP_URI], timeout_s=60)
    check_queue_types(config[cfg.AMQP_URI], config[cfg.QUEUE_TYPE])
    # again: waiting for the broker can take a minute, in which another process (a second
    # `whistle up`, waiting for the same broker) may have taken the address
    check_address_free(config[cfg.WEB_SERVER_ADDRESS])
    runner = ServiceRunner(config)
    for cls in service_classes(names):
        runner.add_service(cls)

    started = eventlet.event.Event()
    stopping: list[int] = []

    def stop_when_started():
        started.wait()  # stopping a half-started runner can hang it
        runner.stop()

    def shutdown(signum, frame):
        # Act on the first signal only (nameko cannot stop twice), and from a green
        # thread: signal handlers must not block the hub.
        if stopping:
            return
        stopping.append(signum)
        eventlet.spawn_n(stop_when_started)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGHUP, reload_rules_on_sighup)
    # After the graceful handler is in place: a SIGTERM from now on reaches `shutdown`,
    # and one before it either ended start-up already or is caught here.
    exit_if_stopped_before_start()
    runner.start()
    started.send()
    if on_started:
        on_started()
    try:
        runner.wait()
    except Exception as exc:
        # A container died on an error nameko could not contain (in a worker's setup or
        # teardown, or a managed thread): nameko logged it and stopped the others. The
        # process ends, non-zero, so that whatever supervises it starts it again.
        raise ServiceDied(f"a service stopped on an error it could not contain "
                          f"({type(exc).__name__}); the others were stopped") from None
    finally:
        close_archives()


class ServiceDied(Exception):  # noqa: N818 - what happened, as the operator reads it
    """One of the process's services died; ``whistle up`` exits 1."""

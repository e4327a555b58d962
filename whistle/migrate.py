"""``whistle queues migrate --to quorum|classic``: move a deployment's queues to the other type.

A queue's type cannot change in place, and a queue's name is what publishers and the
retry queues' dead-lettering point at. So each queue moves in two phases through a
temporary queue of the new type, ``<name>.migrating``:

A. *Park.* Declare the temporary queue (and, for a subscription, its temporary retry
   queue, dead-lettering into it), bind it like the old queue, *then* unbind the old
   one. Move the old retry queue's messages, then the old queue's, into the
   temporaries; delete the old queues.
B. *Return.* Declare the queue again under its own name with the new type (and its
   retry queue), bind it, *then* unbind the temporary. Move the temporary retry
   queue's messages, then the temporary queue's, back; delete the temporaries.

Bindings are added before they are removed, so at every moment some queue takes each
event: nothing published during the switch is refused or dropped (one published in
the instant both are bound is queued twice, and consumers are idempotent by event id).
A retry queue is emptied before the queue it dead-letters into, so a delay ending
mid-migration lands in a queue that still exists. Moving a message is: take it
(unacknowledged), publish it to the target with its properties and headers,
persistent, confirmed and mandatory, and only then acknowledge it at the source: a
crash at any point leaves it in the source, or in both (a duplicate, never a loss).
A message moved out of a retry queue waits its whole delay again.

**Re-runnable.** What to do next is read from what exists (the queue, its temporary,
their types), so running the command again after a crash part way finishes the job.

**Consumers must be stopped first.** A queue with a consumer is left alone and named
in the report (exit status 1); stop that service and run the command again. The
event queues' consumers are routing, agency and notify; intake has only its RPC
queue, so it can keep accepting issues while their queues move, and is stopped for a
last run that moves ``rpc-intake``. Then start every service with the new
``WHISTLE_QUEUE_TYPE`` (docs/cluster.md, "Migrating").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import amqp
from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Connection, Exchange

from shared.config import broker_uris
from shared.topology import (
    CLASSIC,
    DEAD_LETTER_QUEUE_NAME,
    EVENTS_EXCHANGE,
    QUORUM,
    SERVICES,
    SUBSCRIPTIONS,
    check_queue_type,
    type_arguments,
)

TEMPORARY_SUFFIX = ".migrating"
RPC_EXCHANGE_NAME = "nameko-rpc"  # nameko.rpc.get_rpc_exchange's default
# What a moved message keeps of its properties (besides body, headers and persistence).
KEPT_PROPERTIES = ("content_type", "content_encoding", "message_id", "correlation_id",
                   "reply_to", "priority", "timestamp", "type", "app_id", "user_id")


class MigrationInterrupted(RuntimeError):
    """A step failed; what was done so far is safe, and running again goes on from there."""

    def __init__(self, step: str, reason: str):
        super().__init__(f"stopped at {step!r}: {reason}")
        self.step, self.reason = step, reason


@dataclass(frozen=True)
class QueueSpec:
    """One queue to move: its name, role (``shared.topology.type_arguments``), bindings."""

    name: str
    role: str
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)

    @property
    def temporary(self) -> str:
        return self.name + TEMPORARY_SUFFIX


@dataclass(frozen=True)
class Unit:
    """A queue and, for a subscription, the retry queue that dead-letters into it."""

    main: QueueSpec
    retry: QueueSpec | None = None
    service: str | None = None  # who consumes it: the one to stop

    def queues(self) -> tuple[QueueSpec, ...]:
        return (self.main,) if self.retry is None else (self.main, self.retry)


def units(rpc_exchange: str = RPC_EXCHANGE_NAME) -> list[Unit]:
    """Everything Whistle declares, in the order it moves: the dead-letter queue, each
    subscription with its retry queue, each service's RPC queue (intake's last)."""
    found = [Unit(QueueSpec(DEAD_LETTER_QUEUE_NAME, "dead-letter"))]
    for sub in SUBSCRIPTIONS:
        found.append(Unit(
            QueueSpec(sub.queue_name, "subscription",
                      tuple((EVENTS_EXCHANGE.name, key) for key in sub.binding_keys)),
            QueueSpec(sub.retry_queue_name, "retry"), sub.service))
    for service in sorted(SERVICES, key=lambda s: s == "intake"):
        found.append(Unit(QueueSpec(f"rpc-{service}", "rpc",
                                    ((rpc_exchange, f"{service}.*"),)), None, service))
    return found


@dataclass
class Outcome:
    """What one run did, queue by queue."""

    to: str
    moved: dict[str, int] = field(default_factory=dict)  # queue -> messages moved (counted once)
    already: list[str] = field(default_factory=list)  # of the target type before the run
    skipped: dict[str, str] = field(default_factory=dict)  # queue -> why

    @property
    def complete(self) -> bool:
        return not self.skipped


class _Broker:
    """The few AMQP operations a migration needs; a fresh channel after each refusal."""

    def __init__(self, connection: Connection, target: str):
        self.connection = connection
        self.target = target
        self.source = QUORUM if target == CLASSIC else CLASSIC  # the type queues move from
        self.channel = connection.channel()
        self.publisher = connection.channel()

    def _fresh(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()
        self.channel = self.connection.channel()

    def depth(self, name: str) -> tuple[int, int] | None:
        """(messages ready, consumers), or None if there is no such queue."""
        try:
            declared = self.channel.queue_declare(name, passive=True)
        except NotFound:
            self._fresh()
            return None
        return declared.message_count, declared.consumer_count

    def arguments(self, spec: QueueSpec, into: str | None = None) -> dict:
        return type_arguments(self.target, spec.role, into)

    def is_target(self, name: str, arguments: dict) -> bool:
        """Whether the existing queue ``name`` is of the target type (declared as such)."""
        try:
            self.channel.queue_declare(name, durable=True, auto_delete=False,
                                       arguments=arguments)
        except PreconditionFailed:
            self._fresh()
            return False
        return True

    def declare(self, name: str, arguments: dict) -> None:
        self.channel.queue_declare(name, durable=True, auto_delete=False,
                                       arguments=arguments)

    def bind(self, name: str, bindings) -> None:
        for exchange, key in bindings:
            self.channel.queue_bind(name, exchange, key)

    def unbind(self, name: str, bindings) -> None:
        for exchange, key in bindings:
            self.channel.queue_unbind(name, exchange, key)

    def delete(self, name: str, queue_type: str) -> None:
        """Delete an emptied queue, and refuse if a message came in meanwhile.

        A classic queue is deleted "if empty" by the broker itself. Quorum queues do not
        support that (NOT_IMPLEMENTED, which closes the whole connection): look, then
        delete. Nothing routes into it any more by then (unbound, its retry queue gone
        first), so a message could only come from a publisher naming the queue, and
        the services were stopped.
        """
        if queue_type == CLASSIC:
            self.channel.queue_delete(name, if_empty=True)
            return
        found = self.depth(name)
        if found and found[0]:
            raise PreconditionFailed(f"{name} received {found[0]} message(s) while emptied")
        self.channel.queue_delete(name)

    def move(self, source: str, target: str) -> int:
        """Every message of ``source`` into ``target``, each acknowledged at the source
        only once the broker confirmed it at the target; how many."""
        moved = 0
        while (message := self.channel.basic_get(source, no_ack=False)) is not None:
            properties = {k: message.properties[k] for k in KEPT_PROPERTIES
                          if message.properties.get(k) is not None}
            if message.properties.get("expiration"):
                properties["expiration"] = message.properties["expiration"]
            copy = amqp.Message(message.body, delivery_mode=2,
                                application_headers=dict(message.headers or {}), **properties)
            # Waits for the broker's confirm; an unroutable copy (basic.return) raises.
            self.publisher.basic_publish_confirm(copy, exchange="", routing_key=target,
                                                 mandatory=True)
            self.channel.basic_ack(message.delivery_tag)
            moved += 1
        return moved

    def close(self) -> None:
        for channel in (self.channel, self.publisher):
            with contextlib.suppress(Exception):
                channel.close()


def migrate(amqp_uri: str, to: str, rpc_exchange: str = RPC_EXCHANGE_NAME,
            say: Callable[[str], None] = lambda line: None,
            after_step: Callable[[str], None] = lambda step: None) -> Outcome:
    """Move every queue Whistle declares to type ``to`` (see the module's docstring).

    ``after_step`` is called with the name of each step once it is done (tests use it
    to stop a run part way, as a crash would).
    """
    check_queue_type(to)
    outcome = Outcome(to)
    with Connection(amqp_uri, connect_timeout=5) as connection:
        # each try goes on to the next address a cluster's AMQP_URI lists
        connection.ensure_connection(max_retries=len(broker_uris(amqp_uri)), interval_start=0,
                                     interval_step=0.5, interval_max=1)
        broker = _Broker(connection, to)
        try:
            for exchange in (EVENTS_EXCHANGE, Exchange(rpc_exchange, type="topic",
                                                       durable=True)):
                exchange.bind(broker.channel).declare()
            for unit in units(rpc_exchange):
                _migrate_unit(broker, unit, outcome, say, after_step)
        finally:
            broker.close()
    return outcome


def _steps(broker: _Broker, unit: Unit) -> Iterator[tuple[str, Callable[[], int | None]]]:
    """The steps still to do for ``unit``, as (name, action), read from what exists."""
    main, retry = unit.main, unit.retry
    main_args = broker.arguments(main)
    retry_args = broker.arguments(retry, main.name) if retry else None
    main_depth = broker.depth(main.name)
    retry_depth = broker.depth(retry.name) if retry else None
    old_main = main_depth is not None and not broker.is_target(main.name, main_args)
    old_retry = retry_depth is not None and not broker.is_target(retry.name, retry_args)
    if old_main or old_retry:  # phase A: park in the temporaries
        yield f"{main.name}: declare {main.temporary}", lambda: _declare_temporaries(broker, unit)
        yield f"{main.name}: bind {main.temporary}", lambda: broker.bind(main.temporary,
                                                                         main.bindings)
        if old_main:
            yield f"{main.name}: unbind", lambda: broker.unbind(main.name, main.bindings)
        if old_retry:
            yield f"{retry.name}: move to {retry.temporary}", lambda: _park(
                broker, retry.name, retry.temporary)
            yield f"{retry.name}: delete", lambda: broker.delete(retry.name, broker.source)
        if old_main:
            yield f"{main.name}: move to {main.temporary}", lambda: _park(
                broker, main.name, main.temporary)
            yield f"{main.name}: delete", lambda: broker.delete(main.name, broker.source)
    # phase B: back under their own names, of the target type
    yield f"{main.name}: declare", lambda: _declare_finals(broker, unit, main_args, retry_args)
    yield f"{main.name}: bind", lambda: broker.bind(main.name, main.bindings)
    yield f"{main.name}: unbind {main.temporary}", lambda: _unbind_if_exists(
        broker, main.temporary, main.bindings)
    for spec in (retry, main) if retry else (main,):
        yield f"{spec.name}: move back from {spec.temporary}", lambda spec=spec: _move_back(
            broker, spec)


def _park(broker: _Broker, source: str, temporary: str) -> None:
    """Phase A's move, not counted: the same messages are counted once, as they return
    (``_move_back``), so "N message(s) moved" is what the queues held, not twice that."""
    broker.move(source, temporary)


def _declare_temporaries(broker: _Broker, unit: Unit) -> None:
    broker.declare(unit.main.temporary, broker.arguments(unit.main))
    if unit.retry:  # its delays end in the temporary main queue
        broker.declare(unit.retry.temporary,
                       broker.arguments(unit.retry, unit.main.temporary))


def _declare_finals(broker: _Broker, unit: Unit, main_args: dict, retry_args: dict | None):
    broker.declare(unit.main.name, main_args)
    if unit.retry:
        broker.declare(unit.retry.name, retry_args)


def _unbind_if_exists(broker: _Broker, name: str, bindings) -> None:
    if broker.depth(name) is not None:
        broker.unbind(name, bindings)


def _move_back(broker: _Broker, spec: QueueSpec) -> int:
    if broker.depth(spec.temporary) is None:
        return 0
    moved = broker.move(spec.temporary, spec.name)
    broker.delete(spec.temporary, broker.target)
    return moved


def _already_target(broker: _Broker, unit: Unit) -> bool:
    """Whether every queue of ``unit`` exists with the target type and no temporary is
    left: nothing to move, so its consumers may run."""
    for spec in unit.queues():
        if broker.depth(spec.temporary) is not None or broker.depth(spec.name) is None:
            return False
        into = unit.main.name if spec is unit.retry else None
        if not broker.is_target(spec.name, broker.arguments(spec, into)):
            return False
    return True


def _migrate_unit(broker: _Broker, unit: Unit, outcome: Outcome, say, after_step) -> None:
    name = unit.main.name
    # Before the consumers are looked at: a run to check, or a last run for rpc-intake
    # with the services already back on the new type, must not ask to stop them.
    if _already_target(broker, unit):
        outcome.moved[name] = 0
        outcome.already.append(name)
        say(f"{name}: already {outcome.to}")
        return
    for spec in unit.queues():
        for queue in (spec.name, spec.temporary):
            found = broker.depth(queue)
            if found and found[1]:
                who = f"stop {unit.service}" if unit.service else "stop its consumers"
                outcome.skipped[name] = f"{queue} has {found[1]} consumer(s): {who}, " \
                                        "then run the command again"
                say(f"{name}: skipped, {outcome.skipped[name]}")
                return
    was_target = (broker.depth(unit.main.temporary) is None
                  and broker.depth(unit.main.name) is not None
                  and broker.is_target(unit.main.name, broker.arguments(unit.main))
                  and (unit.retry is None or broker.depth(unit.retry.temporary) is None))
    moved = 0
    for step, action in list(_steps(broker, unit)):
        try:
            result = action()
        except Exception as exc:
            raise MigrationInterrupted(step, f"{type(exc).__name__}: {exc}") from exc
        if isinstance(result, int):
            moved += result
        after_step(step)
    outcome.moved[name] = moved
    if was_target and not moved:
        outcome.already.append(name)
        say(f"{name}: already {outcome.to}")
    else:
        say(f"{name}: now {outcome.to}" + (f", {moved} message(s) moved" if moved else ""))

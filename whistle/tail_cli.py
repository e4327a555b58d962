"""``whistle tail``: a live view of the message flow, for operators.

It binds its own exclusive, auto-deleting queue to ``whistle.events`` and to
nameko's RPC exchange, so it sees a copy of every event, RPC request and reply
and never takes a message from a service. One line per message: time, source
service, message type, issue, agency, and the time since the issue was
received. Residents' data is never printed: only the fields below are shown,
and free text is scrubbed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import re
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import click
from amqp.exceptions import AMQPError
from kombu import Connection, Exchange, Queue
from kombu.exceptions import OperationalError as KombuOperationalError

from shared import config as cfg
from shared.heartbeats import drain
from shared.privacy import quoted_values_withheld, scrub_text
from shared.topology import EVENTS_EXCHANGE, MESSAGE_NAME, SERVICES, WHISTLE_ID

RPC_EXCHANGE = Exchange("nameko-rpc", type="topic", durable=True)
ISSUE_ID_FIELDS = ("issue_id", "into_issue_id")


# What a line may print of a message's own fields: an issue id, an agency's code and the
# ids of events and traces, each only when it has that shape. A malformed message (the
# poison a service dead-letters) can carry anything under those keys, a resident's name
# and number included, and must neither be echoed nor stop the tail.
# (shared.contracts.ISSUE_ID's shape, not imported: every command imports this module,
# and contracts brings pydantic)
ISSUE_ID = re.compile(r"WH-\d{8}-\d{4,}")
_AGENCY = re.compile(r"[a-z][a-z0-9_]{1,39}")
# So are the names a message's envelope gives: its routing key (an event's type, an RPC's
# service.method: MESSAGE_NAME), its sender's header, its caller's call id, an error's
# class (one from elsewhere, which may have digits, is shown masked).
_TYPE = MESSAGE_NAME
_ERROR_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MALFORMED = "(malformed)"


def _shaped(value: Any, pattern: re.Pattern) -> str | None:
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def _id_of(value: Any) -> str | None:
    """An event's or a trace's id as a line shows it: only one shaped as Whistle's own
    (``WHISTLE_ID``), ``(malformed)`` for anything else given, ``None`` for none. Any
    1-128 letters, digits and ``_.:-`` were shown: a phone number among them."""
    if value is None:
        return None
    return _shaped(value, WHISTLE_ID) or MALFORMED


def agency_of(body: dict[str, Any]) -> str | None:
    """The agency an event is about, whichever field carries it; for a dispatch or a
    reopening, every agency it assigns, comma-separated."""
    agency = body.get("agency")
    if isinstance(agency, dict):
        return _shaped(agency.get("agency"), _AGENCY)
    if isinstance(agency, str):
        return _shaped(agency, _AGENCY)
    assignment = body.get("assignment")
    if isinstance(assignment, dict):
        return _shaped(assignment.get("agency"), _AGENCY)
    assignments = body.get("assignments")
    if isinstance(assignments, list):
        agencies = [_shaped(a.get("agency"), _AGENCY) for a in assignments
                    if isinstance(a, dict)]
        return ",".join(a for a in agencies if a) or None
    return None


# nameko names a standalone proxy's calls (an operator's script, `whistle routing
# reload`) "standalone_rpc_proxy.call.<id>": a client, like a call with no caller, and
# 20 characters that pushed every column of its line out of place.
_CLIENTS = {"standalone_rpc_proxy"}


def _service_of(call_id: Any) -> str | None:
    """The service a call id names; a client for a standalone proxy; None for a name that
    is none of Whistle's (whatever it says, it is not printed)."""
    service = call_id.split(".", 1)[0] if isinstance(call_id, str) else None
    return "client" if service in _CLIENTS else _known_sender(service)


def _known_sender(service: Any) -> str | None:
    return service if service in SENDERS else None


def describe(body: Any, headers: dict[str, Any], routing_key: str, exchange: str,
             now: datetime, reply_to: str | None = None) -> dict[str, Any]:
    """What one line says about a message. Pure; never includes personal data."""
    headers = headers or {}
    stack = headers.get("nameko.call_id_stack") or []
    caller = stack[-1] if stack else None
    line: dict[str, Any] = {"time": now.isoformat(timespec="milliseconds"), "issue": None,
                            "agency": None,
                            "trace_id": _id_of(headers.get("nameko.trace_id"))}
    if exchange == EVENTS_EXCHANGE.name:
        data = body if isinstance(body, dict) else {}
        line.update(kind="event", type=_shaped(headers.get("x-whistle-event-type"), _TYPE)
                    or _shaped(routing_key, _TYPE) or MALFORMED,
                    service=_known_sender(headers.get("x-whistle-source")) or _service_of(caller),
                    issue=_shaped(data.get("issue_id"), ISSUE_ID), agency=agency_of(data),
                    trace_id=_id_of(data.get("trace_id")) if "trace_id" in data
                    else line["trace_id"],
                    event_id=_id_of(data.get("event_id")),
                    causation_id=_id_of(data.get("causation_id")))
    elif reply_to and "." in routing_key:  # an RPC request expects its reply somewhere
        args = body.get("args", []) if isinstance(body, dict) else []
        args = args if isinstance(args, list) else []
        issue = next((a for a in args if _shaped(a, ISSUE_ID)), None)
        agency = args[1] if routing_key.startswith("agency.") and len(args) > 1 else None
        line.update(kind="rpc", type=f"rpc {_shaped(routing_key, _TYPE) or MALFORMED}",
                    service=_service_of(caller) or "client",
                    issue=issue, agency=_shaped(agency, _AGENCY))
    else:
        error = body.get("error") if isinstance(body, dict) else None
        error_class = scrub_text(_shaped(error.get("exc_type"), _ERROR_CLASS) or MALFORMED) \
            if isinstance(error, dict) else None
        line.update(kind="reply", type="rpc reply" + (
            f" (error: {error_class})" if error_class else ""),
            service=_service_of(caller))
        if isinstance(error, dict):
            # a value the error quotes, a name among them, only when shaped as a thing's
            line["detail"] = quoted_values_withheld(scrub_text(str(error.get("value", ""))))[:200]
    return line


def matches(line: dict[str, Any], issue: str | None, agency: str | None, kind: str | None,
            service: str | None) -> bool:
    return ((issue is None or line.get("issue") == issue)
            and (agency is None or agency in (line.get("agency") or "").split(","))
            and (kind is None or fnmatch.fnmatch(line.get("type") or "", kind))
            and (service is None or line.get("service") == service))


class ReceivedTimes:
    """When each issue was received: learned from issue.received, else read from Redis."""

    def __init__(self, redis_client, prefix: str):
        self.redis, self.prefix, self.known = redis_client, prefix, {}

    def learn(self, line: dict[str, Any], body: Any) -> None:
        if line.get("type") != "issue.received" or not line.get("issue") \
                or not isinstance(body, dict) or not isinstance(body.get("occurred_at"), str):
            return  # a malformed one (no id, no time) teaches nothing
        with contextlib.suppress(ValueError):
            self.known[line["issue"]] = datetime.fromisoformat(body["occurred_at"])

    def elapsed(self, issue: str | None, now: datetime) -> float | None:
        if not issue:
            return None
        if issue not in self.known and self.redis is not None:
            try:
                raw = self.redis.get(f"{self.prefix}:issue:{issue}")
                if raw:
                    self.known[issue] = datetime.fromisoformat(json.loads(raw)["received_at"])
            except Exception:  # Redis down: the column stays empty, the tail goes on
                self.redis = None
        received = self.known.get(issue)
        return (now - received).total_seconds() if received else None


AGENCY_WIDTH = 17
# The type column fits the longest line type Whistle sends, an RPC reply naming its error
# (``rpc reply (error: InvalidTransition)``). A longer one (an error from outside
# Whistle: nameko's ``IncorrectSignature``) is cut to fit, by ``type_cell``.
TYPE_WIDTH = 36
HEADER = (f"{'time (UTC)':<12}  {'service':<8} {'type':<{TYPE_WIDTH}} {'issue':<17} "
          f"{'agency':<{AGENCY_WIDTH}} {'since received':>11}")


def agency_cell(agency: str | None) -> str:
    """The agency column: a dispatch to several agencies that do not fit shows the first
    and how many more (``--json`` and ``--agency`` see them all)."""
    if not agency:
        return "-"
    agencies = agency.split(",")
    if len(agency) <= AGENCY_WIDTH or len(agencies) == 1:
        return agency
    more = f" +{len(agencies) - 1}"
    return agencies[0][:AGENCY_WIDTH - len(more)] + more


def type_cell(kind: str | None) -> str:
    """The type column: a type too long for it is cut, with ``…`` where it was cut, inside
    the brackets of an error's class (``rpc reply (error: IncorrectSignatu…)``), so that
    the columns after it stay in place (``--json`` gives it whole)."""
    if not kind:
        return "-"
    if len(kind) <= TYPE_WIDTH:
        return kind
    closing = ")" if kind.endswith(")") else ""
    return kind[:TYPE_WIDTH - 1 - len(closing)] + "…" + closing


def render(line: dict[str, Any]) -> str:
    elapsed = line.get("since_received_s")
    since = f"+{elapsed:.3f}s" if elapsed is not None else ""
    text = (f"{line['time'][11:23]}  {(line.get('service') or '-'):<8} "
            f"{type_cell(line.get('type')):<{TYPE_WIDTH}} {(line.get('issue') or '-'):<17} "
            f"{agency_cell(line.get('agency')):<{AGENCY_WIDTH}} {since:>11}")
    return text + (f"  {line['detail']}" if line.get("detail") else "")


# Who a line can say sent a message: a service, or a client (a script, another command).
SENDERS = (*SERVICES, "web", "client")


def _an_issue_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A mistyped filter would match nothing and the tail would stay silent for ever, like
    a quiet system: refuse it at once (exit 2)."""
    from whistle.web_client import check_issue_id

    return None if value is None else check_issue_id(ctx, param, value)


def _a_known_agency(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """As ``--issue``: an agency the rules do not know is refused, naming those they do.
    Rules that cannot be read do not hold up the tail: it follows, unchecked."""
    from services.routing.rules import RulesError
    from whistle.cli import _known_agencies

    if value is None:
        return None
    try:
        known = _known_agencies(cfg.config_from_env())
    except (RulesError, OSError):
        return value
    if value not in known:
        raise click.BadParameter(f"unknown agency {value!r}; known: {', '.join(known)}")
    return value


@click.command()
@click.option("--issue", default=None, callback=_an_issue_id, help="Only this issue (WH-…).")
@click.option("--agency", default=None, callback=_a_known_agency,
              help="Only messages about this agency.")
@click.option("--type", "kind", default=None, help="Only this message type (glob: 'table.*').")
@click.option("--service", default=None, type=click.Choice(SENDERS),
              help="Only messages sent by this service (or 'client').")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def tail(issue, agency, kind, service, as_json) -> None:
    """Follow every message between Whistle's services, live (Ctrl-C to stop)."""
    from shared.store import connect

    # Ctrl-C (or SIGTERM) asks the loop to stop, instead of raising KeyboardInterrupt
    # wherever the process happens to be: usually inside eventlet's hub, waiting, after
    # which cancelling the consumer and closing the connection wait for the broker
    # through that same hub. Once, in CI, tail did not exit within 10 s of a Ctrl-C.
    # This way out is the same every time: the loop ends within a second, then the
    # consumer and connection close normally.
    stopping: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, _frame: stopping.append(received))

    config = cfg.config_from_env()
    redis_client = connect(config[cfg.REDIS_URL])
    times = ReceivedTimes(redis_client, config[cfg.KEY_PREFIX])

    def on_message(body, message, undecodable: BaseException | None = None):
        try:
            show(body, message, undecodable)
        except BrokenPipeError:
            raise
        except Exception as exc:  # noqa: BLE001 - one odd message must not end the tail
            key = _shaped(message.delivery_info.get("routing_key"), _TYPE) or MALFORMED
            click.echo(f"whistle tail: a message on {key!r} could not be shown "
                       f"({type(exc).__name__})", err=True)

    def show(body, message, undecodable: BaseException | None = None):
        now = datetime.now(UTC)
        line = describe(body, message.headers, message.delivery_info.get("routing_key", ""),
                        message.delivery_info.get("exchange", ""), now,
                        reply_to=message.properties.get("reply_to"))
        if undecodable is not None:  # named as `whistle dlq` names it; the body is not shown
            line["detail"] = f"undecodable message: {type(undecodable).__name__}"
        times.learn(line, body)
        line["since_received_s"] = times.elapsed(line.get("issue"), now)
        if matches(line, issue, agency, kind, service):
            click.echo(json.dumps(line, ensure_ascii=False) if as_json else render(line))
            sys.stdout.flush()

    follow = Follower(config[cfg.AMQP_URI], on_message, stopping)
    try:
        follow.connect()  # the first time, a broker out of reach is an error at once
        click.echo("whistle tail: following whistle.events and RPC (Ctrl-C to stop)", err=True)
        if not as_json:
            click.echo(HEADER)
        follow.run(on_reconnect=lambda where, gap: click.echo(
            f"whistle tail: connection lost; following again on {where} "
            f"(messages in the last {gap:.1f} s were not seen)", err=True))
        click.echo("whistle tail: stopped", err=True)
    except KeyboardInterrupt:
        click.echo("whistle tail: stopped", err=True)
    except BrokerLost as exc:
        raise click.ClickException(str(exc)) from None
    except BrokenPipeError:  # the reader went away (| head): click's own quiet exit
        raise
    # kombu wraps a refused connection; py-amqp raises the broker's refusal of the login
    # or the vhost itself
    except (OSError, KombuOperationalError, AMQPError) as exc:
        from whistle.ops import short_reason, where

        raise click.ClickException(f"cannot reach RabbitMQ at {where(config[cfg.AMQP_URI])} "
                                   f"({short_reason(exc)})") from None
    finally:
        follow.close()


class BrokerLost(Exception):
    """No node of ``AMQP_URI`` could be reached for ``Follower.GIVE_UP_S``."""


class Follower:
    """The tail's own queue on the broker, consumed until asked to stop.

    When the connection is lost (the node died, or paused in a partition), it connects
    again, to any node ``AMQP_URI`` lists (kombu's failover: ``amqp://a;amqp://b``),
    and binds a new queue: the old one was exclusive to the dead connection. What was
    published in between is not seen, and the operator is told so.
    """

    GIVE_UP_S = 60.0
    HEARTBEAT_S = 30

    def __init__(self, amqp_uri: str, on_message, stopping: list):
        self.amqp_uri, self.on_message, self.stopping = amqp_uri, on_message, stopping
        self.connection: Connection | None = None
        self.consumer = None

    def connect(self) -> None:
        connection = Connection(self.amqp_uri, heartbeat=self.HEARTBEAT_S, connect_timeout=5)
        try:
            connection.ensure_connection(max_retries=len(cfg.broker_uris(self.amqp_uri)))
            channel = connection.channel()
            queue = Queue(f"whistle.tail.{uuid.uuid4().hex[:8]}", exclusive=True,
                          auto_delete=True, durable=False, bindings=None).bind(channel)
            queue.declare()
            for exchange in (EVENTS_EXCHANGE, RPC_EXCHANGE):
                exchange.bind(channel).declare()
                queue.bind_to(exchange=exchange.name, routing_key="#")
            # A body that is not JSON is shown as a line of its own, not raised out of
            # the drain: the poison a service dead-letters must not stop the tail
            consumer = connection.Consumer(
                queue, callbacks=[self.on_message], accept=["json"], no_ack=True,
                on_decode_error=lambda message, exc: self.on_message(None, message, exc))
            consumer.consume()
        except BaseException:
            with contextlib.suppress(Exception):
                connection.release()
            raise
        self.connection, self.consumer = connection, consumer

    @property
    def where(self) -> str:
        info = self.connection.info() if self.connection else {}
        return f"{info.get('hostname', '?')}:{info.get('port', '?')}"

    def run(self, on_reconnect) -> None:
        while not self.stopping:
            try:
                drain(self.connection, timeout=1)
            except BrokenPipeError:  # our reader's pipe, not the broker's connection
                raise
            except self.connection.connection_errors + (OSError,):
                self._reconnect(on_reconnect)

    def _reconnect(self, on_reconnect) -> None:
        lost_at = time.monotonic()
        self.close()
        while not self.stopping:
            try:
                self.connect()
                on_reconnect(self.where, time.monotonic() - lost_at)
                return
            except (OSError, KombuOperationalError, *Connection(self.amqp_uri).connection_errors):
                if time.monotonic() - lost_at > self.GIVE_UP_S:
                    raise BrokerLost(f"lost RabbitMQ and could not reach it again in "
                                     f"{self.GIVE_UP_S:.0f} s") from None
                time.sleep(1)

    def close(self) -> None:
        connection, self.connection, self.consumer = self.connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # a dead connection cannot close cleanly
                connection.release()

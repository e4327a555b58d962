"""The operator's live message flow: ``whistle tail``, kept in memory for the page.

:class:`FlowTap` binds its own exclusive, auto-deleting queue to ``whistle.events``
(as ``whistle tail`` does) and keeps the last :data:`KEEP` lines, each described by
``whistle.tail_cli.describe``: the same fields, the same masking (no resident's data
is ever in a line). The page polls ``/ops/flow.json?after=<seq>`` for new lines.
Events only: the pages' own RPC calls (the board polls every second) would drown
the flow.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections import deque
from datetime import UTC, datetime
from logging import getLogger

import eventlet
from kombu import Connection, Queue
from nameko.extensions import DependencyProvider

from shared import config as cfg
from shared.heartbeats import drain
from shared.store import connect
from shared.topology import EVENTS_EXCHANGE
from whistle.tail_cli import ReceivedTimes, describe

_log = getLogger(__name__)

KEEP = 500
RECONNECT_S = 2.0


class Flow:
    """The last lines, numbered, for pollers to ask what came after what they have."""

    def __init__(self, keep: int = KEEP):
        self.lines: deque[tuple[int, dict]] = deque(maxlen=keep)
        self._seq = itertools.count(1)

    def add(self, line: dict) -> None:
        self.lines.append((next(self._seq), line))

    def after(self, seq: int, limit: int = 200) -> list[dict]:
        return [{"seq": n, **line} for n, line in self.lines if n > seq][-limit:]


class FlowTap(DependencyProvider):
    def setup(self):
        config = self.container.config
        self.amqp_uri = cfg.get(config, cfg.AMQP_URI)
        self.redis = connect(cfg.get(config, cfg.REDIS_URL))
        self.times = ReceivedTimes(self.redis, cfg.get(config, cfg.KEY_PREFIX))
        self.flow = Flow()
        self._running = False
        self._gt = None

    def start(self):
        self._running = True
        self._gt = self.container.spawn_managed_thread(self._follow)

    def stop(self):
        self._running = False
        if self._gt is not None:
            with contextlib.suppress(Exception):
                self._gt.wait()
        self.redis.close()

    def kill(self):
        self._running = False
        if self._gt is not None:
            with contextlib.suppress(Exception):
                self._gt.kill()

    def get_dependency(self, worker_ctx):
        return self.flow

    def _follow(self):
        while self._running:
            try:
                self._consume()
            except Exception as exc:  # the broker went away: the page keeps what it had
                _log.warning("ops flow tap reconnecting: %s", type(exc).__name__)
                eventlet.sleep(RECONNECT_S)

    def _consume(self):
        queue = Queue(f"whistle.web.flow.{uuid.uuid4().hex[:8]}", exclusive=True,
                      auto_delete=True, durable=False, exchange=EVENTS_EXCHANGE,
                      routing_key="#")

        def on_message(body, message, undecodable: BaseException | None = None):
            # As `whistle tail`: the poison a service dead-letters is a line of its own (its
            # text never shown), and one odd message does not end the consumer. It did: the
            # tap bound a new queue 2 s later, and what came meanwhile was never shown.
            try:
                now = datetime.now(UTC)
                line = describe(body, message.headers,
                                message.delivery_info.get("routing_key", ""),
                                message.delivery_info.get("exchange", ""), now)
                if undecodable is not None:
                    line["detail"] = f"undecodable message: {type(undecodable).__name__}"
                self.times.learn(line, body)
                line["since_received_s"] = self.times.elapsed(line.get("issue"), now)
                self.flow.add(line)
            except Exception as exc:  # noqa: BLE001
                _log.warning("ops flow: a message could not be shown: %s", type(exc).__name__)

        with Connection(self.amqp_uri, heartbeat=30) as connection, connection.Consumer(
                queue, callbacks=[on_message], accept=["json"], no_ack=True,
                on_decode_error=lambda message, exc: on_message(None, message, exc)):
            while self._running:
                drain(connection, timeout=1)

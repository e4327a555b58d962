"""A real SMTP server on 127.0.0.1 for tests: aiosmtpd, collecting what it receives.

aiosmtpd's ``Controller`` runs an asyncio loop in a thread. Under
``eventlet.monkey_patch()`` (the tests' conftest) that thread is a green thread
and the loop's selector is green too, so the server and a green smtplib client
in the same process take turns without blocking each other.

Usage::

    with smtp_server() as smtp:
        EmailChannel("127.0.0.1", smtp.port, "whistle@localhost").deliver(message)
        [mail] = smtp.wait_for(1)
        assert mail.message["Subject"] == "…"
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Mail:
    envelope_from: str
    envelope_to: list[str]
    message: EmailMessage


@dataclass
class SmtpServer:
    """The handler: keeps every accepted message; refuses when told to.

    ``refuse_with`` answers DATA with that reply (e.g. ``"451 try later"``);
    ``refuse_recipients_with`` answers RCPT with it.
    """

    port: int = 0
    received: list[Mail] = field(default_factory=list)
    refuse_with: str | None = None
    refuse_recipients_with: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.refuse_recipients_with:
            return self.refuse_recipients_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.refuse_with:
            return self.refuse_with
        raw = envelope.original_content or envelope.content
        self.received.append(Mail(envelope.mail_from, list(envelope.rcpt_tos),
                                  message_from_bytes(raw, policy=policy.default)))
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        """At least ``count`` messages, waiting up to ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} email(s), got {len(self.received)}")
            time.sleep(0.05)
        return list(self.received)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def smtp_server() -> Iterator[SmtpServer]:
    handler = SmtpServer()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    handler.port = controller.port
    try:
        yield handler
    finally:
        controller.stop()

"""Upgrading the topology on the real RabbitMQ: retired queues go, unless they hold messages."""

from pathlib import Path

import pytest
from kombu import Connection, Exchange, Producer, Queue

from shared import config as cfg
from shared.topology import EVENTS_EXCHANGE, declare_topology

OLD_JOURNAL = "whistle.intake.record_event"  # bound to "#" by the previous release
OLD_NOTIFY = "whistle.notify.on_issue_received"


@pytest.fixture
def amqp(whistle_config):
    with Connection(whistle_config[cfg.AMQP_URI]) as connection:
        yield connection


def declare_old(connection, name, key):
    Queue(name, exchange=EVENTS_EXCHANGE, routing_key=key, durable=True).bind(
        connection.channel()).declare()


def exists(connection, name) -> bool:
    try:
        Queue(name, durable=True).bind(connection.channel()).queue_declare(passive=True)
    except Exception:  # noqa: BLE001 - NOT_FOUND
        return False
    return True


def depth(connection, name) -> int:
    return Queue(name, durable=True).bind(connection.channel()).queue_declare(
        passive=True).message_count


def test_an_empty_retired_queue_is_deleted_and_one_with_messages_is_kept_unbound(amqp, caplog):
    declare_old(amqp, OLD_JOURNAL, "#")
    declare_old(amqp, OLD_NOTIFY, "issue.received")
    Producer(amqp.channel()).publish({"old": True}, exchange=Exchange(""), routing_key=OLD_NOTIFY)

    declare_topology(amqp)  # what every service does at start-up

    assert not exists(amqp, OLD_JOURNAL)
    assert exists(amqp, OLD_NOTIFY) and depth(amqp, OLD_NOTIFY) == 1  # nothing lost unseen
    assert "whistle.notify.on_issue_received still holds messages" in caplog.text
    # It points where the steps are: README has no "Upgrading" (the warning said it had).
    assert "see docs/operations.md, Upgrading" in caplog.text
    guide = Path(__file__).parents[2] / "docs" / "operations.md"
    assert "\n## Upgrading\n" in guide.read_text(encoding="utf-8")
    # Unbound: a new event reaches the current queues only.
    Producer(amqp.channel()).publish({"new": True}, exchange=EVENTS_EXCHANGE,
                                     routing_key="issue.received")
    assert depth(amqp, OLD_NOTIFY) == 1
    assert depth(amqp, "whistle.notify.on_event") == 1


def test_a_retired_queue_is_kept_while_its_retry_queue_holds_messages(amqp):
    # Those messages go back to the main queue when their delay ends: it must still exist.
    declare_old(amqp, OLD_NOTIFY, "issue.received")
    retry = Queue(f"{OLD_NOTIFY}.retry", exchange=Exchange(""), routing_key=f"{OLD_NOTIFY}.retry",
                  durable=True, queue_arguments={"x-dead-letter-exchange": "",
                                                 "x-dead-letter-routing-key": OLD_NOTIFY})
    retry.bind(amqp.channel()).declare()
    Producer(amqp.channel()).publish({"waiting": True}, exchange=Exchange(""),
                                     routing_key=f"{OLD_NOTIFY}.retry", expiration=60)

    declare_topology(amqp)

    assert exists(amqp, OLD_NOTIFY) and depth(amqp, f"{OLD_NOTIFY}.retry") == 1


def test_declaring_twice_is_harmless(amqp):
    declare_topology(amqp)
    declare_topology(amqp)
    assert exists(amqp, "whistle.notify.on_event") and not exists(amqp, OLD_JOURNAL)

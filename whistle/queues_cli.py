"""``whistle queues migrate``: move a deployment's queues to classic or quorum queues."""

from __future__ import annotations

import sys

import click

from shared import config as cfg
from shared.topology import QUEUE_TYPES


@click.group()
def queues() -> None:
    """The deployment's RabbitMQ queues."""


@queues.command()
@click.option("--to", "to", type=click.Choice(QUEUE_TYPES), default=None,
              help="The queue type to move every Whistle queue to (required).")
def migrate(to: str | None) -> None:
    """Move every queue Whistle declares to TO, without losing a message.

    Stop the services that consume a queue before it can move (routing, agency and
    notify; intake may run until a last run moves its RPC queue): a queue with a
    consumer is left as it is and named (exit 1). Safe to run again after a crash
    part way: it goes on from where it stopped. Then start every service with
    WHISTLE_QUEUE_TYPE set to TO.
    """
    from amqp.exceptions import AMQPError
    from kombu.exceptions import OperationalError

    if to is None:  # click's own "Missing option" lists the choices on lines of their own
        raise click.UsageError(f"Missing option '--to': {' or '.join(QUEUE_TYPES)}")
    from whistle.migrate import MigrationInterrupted
    from whistle.migrate import migrate as run

    amqp_uri = cfg.config_from_env()[cfg.AMQP_URI]
    try:
        outcome = run(amqp_uri, to, say=lambda line: click.echo(f"  {line}"))
    except MigrationInterrupted as exc:
        raise click.ClickException(f"migration {exc}; nothing is lost: run the command "
                                   "again to go on") from None
    except BrokenPipeError:  # the reader went away (| head): click's own quiet exit
        raise
    except (OSError, OperationalError, AMQPError) as exc:  # AMQPError: login, vhost refused
        from whistle.ops import cannot_reach

        raise cannot_reach("RabbitMQ", amqp_uri, exc) from None
    moved = sum(outcome.moved.values())
    if outcome.complete:
        click.echo(f"every Whistle queue is {to} ({moved} message(s) moved); start the "
                   f"services with WHISTLE_QUEUE_TYPE={to}")
        return
    click.echo(f"{len(outcome.skipped)} queue(s) not moved (their consumers run); "
               f"{moved} message(s) moved so far", err=True)
    sys.exit(1)

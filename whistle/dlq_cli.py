"""``whistle dlq``: what is in ``whistle.dead-letter`` and why, and sending it back.

``dlq list`` looks without taking: the management API hands the first N
messages over and the broker puts each back where it was (``ack_requeue_true``).
Positions count from the head of the queue, from 1, in the queue's order: the order
the broker took them in, not their failure times (two services dead-lettering within
milliseconds of each other can arrive either way round). It is the order ``--index``
counts in, so the list is not re-sorted; each shows when it failed.

``dlq replay --index N`` (or ``--all``) sends dead letters back to the queue
they failed in, with a fresh set of attempts, and removes them from the DLQ only
once the broker confirmed the republished copy. It takes the messages in one
pass, so ``--index`` means the same message ``dlq list`` showed at that
position, as long as nobody else replayed or purged in between (new dead
letters join at the tail and do not move the others). See
:func:`whistle.ops.replay_dead_letters`.

``dlq drop --index N (--save FILE | --discard)`` takes out for good the ones that can
never succeed, in the same kind of pass; with ``--save``, each is written whole to
the file before it leaves the queue (:func:`whistle.ops.set_aside_dead_letters`).

Bodies are never shown as they are: a preview keeps only what is safe by its shape, no
free text (:func:`whistle.ops.known_safe`); reasons are scrubbed of phone numbers, email
addresses and the names of the issue's residents.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from shared import config as cfg


def _console() -> Console:
    return Console(soft_wrap=True, highlight=False)


def _fail(message: str) -> None:
    click.echo(f"whistle dlq: {message}", err=True)
    sys.exit(1)


def _broker_failed(amqp_uri: str, exc: BaseException) -> None:
    """The broker out of reach, or reached and refusing (no such vhost, or no
    ``whistle.dead-letter`` in it: no service has run there yet). The second was told as
    "RabbitMQ unreachable", sending the operator to look for a broker that was up."""
    from whistle.ops import _causes, short_reason, where

    reason = short_reason(exc)
    refused = any(getattr(cause, "reply_text", None) for cause in _causes(exc))
    _fail(f"RabbitMQ at {where(amqp_uri)} refused: {reason}" if refused
          else f"RabbitMQ unreachable at {where(amqp_uri)} ({reason})")


@click.group()
def dlq() -> None:
    """The dead-letter queue: what failed and why (list), sending it back (replay), and
    taking out for good what can never succeed (drop)."""


@dlq.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="Show at most this many, from the head of the queue.")
@click.option("--json", "as_json", is_flag=True, help="Print the dead letters as JSON.")
def dlq_list(limit: int, as_json: bool) -> None:
    """Show the dead letters in queue order (as --index counts them; each with the time
    it failed), without removing any."""
    from shared.topology import DEAD_LETTER_QUEUE_NAME
    from whistle.ops import (
        ManagementApi,
        Unreachable,
        names_in,
        peek_dead_letters,
        residents_names,
        vhost_of,
    )

    config = cfg.config_from_env()
    api = ManagementApi(config[cfg.RABBIT_API_URL], vhost_of(config[cfg.AMQP_URI]))
    try:
        found, in_queue = peek_dead_letters(api, limit)
    except Unreachable as exc:
        _fail(str(exc))
    known = residents_names(config[cfg.REDIS_URL], config[cfg.KEY_PREFIX], found,
                            config[cfg.DATABASE_URL])
    letters = [letter.describe(names_in(letter, known)) for letter in found]
    if as_json:
        click.echo(json.dumps({"queue": DEAD_LETTER_QUEUE_NAME, "vhost": api.vhost,
                               "in_queue": in_queue, "shown": len(letters),
                               "messages": letters}, ensure_ascii=False, indent=2))
        return
    console = _console()
    console.print(f"[bold]{DEAD_LETTER_QUEUE_NAME}[/bold] (vhost {escape(api.vhost)}): "
                  f"{in_queue} dead letter(s), showing {len(letters)}")
    for letter in letters:
        console.print("")
        for line in render_letter(letter):
            console.print(line)
    if letters:
        console.print("\n[dim]Nothing was removed. Send back with `whistle dlq replay "
                      "--index N` (positions as above) or `--all`; take out for good what "
                      "can never succeed with `whistle dlq drop --index N --save FILE`.[/dim]")


def render_letter(letter: dict[str, Any]) -> list[str]:
    """One dead letter as rich-markup lines; every field is already scrubbed."""
    def show(value: Any) -> str:
        return escape(str(value)) if value not in (None, "") else "-"

    attempts = f"attempts {letter['attempts']}" if letter["attempts"] is not None else ""
    return [
        f"  [bold]#{letter['position']}[/bold]  {show(letter['failed_at'])}  "
        f"{show(letter['queue'])}  {show(letter['event_type'])}  {attempts}",
        f"      reason  [red]{show(letter['reason'])}[/red]",
        f"      issue   {show(letter['issue_id'])}",
        f"      body    {show(letter['preview'])}  "
        f"[dim]({letter['body_format']}, {letter['bytes']} bytes)[/dim]",
    ]


@dlq.command("replay")
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter (see --limit).")
@click.option("--index", "indexes", type=click.IntRange(min=1), multiple=True,
              help="Position as shown by `whistle dlq list`; repeat for several.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="With --all: replay at most the first N.")
@click.option("--json", "as_json", is_flag=True, help="Print what was replayed as JSON.")
def dlq_replay(replay_all: bool, indexes: tuple[int, ...], limit: int | None,
               as_json: bool) -> None:
    """Send dead letters back to the queue they failed in, with fresh attempts, and
    remove them from the DLQ once the broker confirmed them. Others stay in place."""
    from whistle.ops import replay_dead_letters

    if replay_all == bool(indexes):
        raise click.UsageError("give either --all or --index N (one or more)")
    if limit is not None and not replay_all:
        raise click.UsageError("--limit goes with --all")
    config = cfg.config_from_env()
    amqp_uri = config[cfg.AMQP_URI]
    try:
        outcome = replay_dead_letters(amqp_uri, set(indexes) if indexes else None, limit,
                                      _names(config))
    except LookupError as exc:
        _fail(str(exc))
    except Exception as exc:  # broker down, refused, no such vhost or queue
        _broker_failed(amqp_uri, exc)
    if as_json:
        click.echo(json.dumps({"in_queue": outcome.in_queue, "replayed": outcome.done,
                               "failed": outcome.failed,
                               "left_in_place": outcome.left_in_place},
                              ensure_ascii=False, indent=2))
    else:
        console = _console()
        console.print(f"Replayed {len(outcome.done)} of {outcome.in_queue} dead letter(s).")
        for letter in outcome.done:
            console.print(f"  #{letter['position']}  {escape(str(letter['event_type'] or '-'))}  "
                          f"{escape(str(letter['issue_id'] or '-'))}  → {escape(letter['to'])}")
        for letter in outcome.failed:
            console.print(f"  [red]#{letter['position']}  not replayed: "
                          f"{escape(letter['error'])}[/red]")
        remaining = outcome.in_queue - len(outcome.done)
        console.print(f"{remaining} left in the dead-letter queue.")
    if outcome.failed:
        sys.exit(1)


@dlq.command("drop")
@click.option("--index", "indexes", type=click.IntRange(min=1), multiple=True, required=True,
              help="Position as shown by `whistle dlq list`; repeat for several.")
@click.option("--save", "save_to", type=click.Path(dir_okay=False, writable=True),
              help="Append each one, whole, to this file (JSON lines, owner-only) before "
                   "it leaves the queue.")
@click.option("--discard", is_flag=True, help="Take them out without keeping them anywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print what was taken out as JSON.")
def dlq_drop(indexes: tuple[int, ...], save_to: str | None, discard: bool,
             as_json: bool) -> None:
    """Take dead letters out of the DLQ for good: ones that can never succeed (an
    undecodable body, an event about an issue that does not exist), which a replay
    would only send round again. Say where they go: --save FILE or --discard."""
    from pathlib import Path

    from whistle.ops import set_aside_dead_letters

    if bool(save_to) == discard:
        raise click.UsageError("give either --save FILE (kept, whole) or --discard")
    config = cfg.config_from_env()
    amqp_uri = config[cfg.AMQP_URI]
    try:
        outcome = set_aside_dead_letters(amqp_uri, set(indexes),
                                         Path(save_to) if save_to else None, _names(config))
    except LookupError as exc:
        _fail(str(exc))
    except OSError as exc:
        if save_to and exc.filename == save_to:
            _fail(f"cannot write {save_to} ({exc.strerror}); nothing was taken out")
        _broker_failed(amqp_uri, exc)
    except Exception as exc:  # broker down, refused, no such vhost or queue
        _broker_failed(amqp_uri, exc)
    if as_json:
        click.echo(json.dumps({"in_queue": outcome.in_queue, "dropped": outcome.done,
                               "saved_to": save_to, "left_in_place": outcome.left_in_place},
                              ensure_ascii=False, indent=2))
        return
    console = _console()
    where_to = f"saved to {escape(save_to)}" if save_to else "discarded"
    console.print(f"Took {len(outcome.done)} of {outcome.in_queue} dead letter(s) out, "
                  f"{where_to}.")
    for letter in outcome.done:
        console.print(f"  #{letter['position']}  {escape(str(letter['event_type'] or '-'))}  "
                      f"{escape(str(letter['issue_id'] or '-'))}  "
                      f"{escape(str(letter['reason'] or '-'))}")
    console.print(f"{outcome.in_queue - len(outcome.done)} left in the dead-letter queue.")


def _names(config: dict):
    """The residents' names to mask in what replay and drop print (``ops.residents_names``)."""
    from whistle.ops import residents_names

    return lambda taken: residents_names(config[cfg.REDIS_URL], config[cfg.KEY_PREFIX], taken,
                                         config[cfg.DATABASE_URL])

"""``whistle status``: one screen of operational state, from RabbitMQ and Redis.

RabbitMQ is read through its management API (``WHISTLE_RABBIT_API``, on
``AMQP_URI``'s vhost), Redis directly (``REDIS_URL``, ``WHISTLE_KEY_PREFIX``).
A backend that does not answer is named with its address and the reason; the
other is still shown, and the exit code is 1. ``--json`` prints the same facts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from shared import config as cfg


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def status(as_json: bool) -> None:
    """Queues per service, retries, dead letters, Redis and issue counts (exit 1 if a
    backend is unreachable)."""
    report = gather(cfg.config_from_env())  # a malformed variable: one line naming it
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        console = Console(soft_wrap=True, highlight=False)
        for line in render(report):
            console.print(line)
    sys.exit(0 if report["ok"] else 1)


def _probe(facts: dict[str, Any], read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from whistle.ops import Unreachable

    try:
        facts.update(ok=True, error=None, **read())
    except Unreachable as exc:
        facts.update(ok=False, error=str(exc))
    return facts


def gather(config: Mapping[str, Any]) -> dict[str, Any]:
    """Everything ``whistle status`` shows, as plain data, on a checked config (the
    command's, or web's own for ``/ops``)."""
    from whistle.ops import ManagementApi, rabbit_status, redis_status, vhost_of, where

    api = ManagementApi(cfg.get(config, cfg.RABBIT_API_URL),
                        vhost_of(cfg.get(config, cfg.AMQP_URI)))
    rabbit = _probe({"api": api.location, "vhost": api.vhost}, lambda: rabbit_status(api))
    rabbit["api"] = api.location  # of a cluster's APIs, the one that answered
    redis_url, prefix = cfg.get(config, cfg.REDIS_URL), cfg.get(config, cfg.KEY_PREFIX)
    redis = _probe({"address": where(redis_url), "prefix": prefix},
                   lambda: redis_status(redis_url, prefix))
    return {"ok": rabbit["ok"] and redis["ok"], "rabbitmq": rabbit, "redis": redis}


# ------------------------------------------------------------------ rendering


def _uptime(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _queue_row(service: str, queue: dict[str, Any], width: int) -> str:
    """One queue's line; ``service`` is its first cell, 8 characters wide, maybe markup."""
    name = f"{escape(queue['queue']):<{width}}"
    if not queue["exists"]:
        return f"  {service} {name}  [yellow]not declared[/yellow]"
    figures = (f"{_num(queue['consumers']):>9}  {_num(queue['ready']):>5}  "
               f"{_num(queue['unacked']):>7}  {_num(queue.get('retrying')):>8}")
    if queue["ready"] and not queue["consumers"]:
        figures = f"[yellow]{figures}  waiting, no consumer[/yellow]"
    elif queue.get("retrying"):
        figures = f"[yellow]{figures}[/yellow]"
    return f"  {service} {name}  {figures}"


def _rabbit_lines(rabbit: dict[str, Any]) -> list[str]:
    head = (f"[bold]RabbitMQ[/bold]  management API {escape(rabbit['api'])}, "
            f"vhost {escape(rabbit['vhost'])}")
    if not rabbit["ok"]:
        return [head, f"  [bold red]✗ {escape(rabbit['error'])}[/bold red]"]
    services = rabbit["services"]
    width = max(len(q["queue"]) for s in services.values() for q in [s["rpc"], *s["queues"]])
    lines = [head, f"  [dim]{'service':<8} {'queue':<{width}}  consumers  ready  unacked  "
                   "retrying[/dim]"]
    for service, facts in services.items():
        instances = facts["instances"]
        colour = "green" if instances else "yellow"
        running = f"{instances} running" if instances else "not running"
        lines.append(f"{_queue_row(f'[{colour}]{service:<8}[/{colour}]', facts['rpc'], width)}"
                     f"  [{colour}]{running}[/{colour}]")
        lines += [_queue_row(" " * 8, queue, width) for queue in facts["queues"]]
    dead = rabbit["dead_letter"]
    count = dead["messages"]
    if not dead["exists"]:
        lines.append(f"  dead letters  [yellow]{dead['queue']} not declared[/yellow]")
    elif count:
        lines.append(f"  [bold red]dead letters  {count} in {dead['queue']}[/bold red]  "
                     "see `whistle dlq list`")
    else:
        lines.append(f"  dead letters  [green]0[/green] in {dead['queue']}")
    return lines


def _redis_lines(redis: dict[str, Any]) -> list[str]:
    head = f"[bold]Redis[/bold]  {escape(redis['address'])}, prefix {escape(redis['prefix'])}"
    if not redis["ok"]:
        return [head, f"  [bold red]✗ {escape(redis['error'])}[/bold red]"]
    aof = "[green]on[/green]" if redis["aof_enabled"] else "[yellow]off[/yellow]"
    pairs = "  ".join
    return [
        f"{head}  [green]ok[/green]  (redis {escape(str(redis['version']))}, "
        f"up {_uptime(redis['uptime_s'])}, memory {escape(str(redis['used_memory_human']))}, "
        f"aof {aof})",
        "  issues     " + pairs(f"{k} {v}" for k, v in redis["issues"].items()),
        "  outbox     " + pairs(f"{k} {v}" for k, v in redis["outbox"].items())
        + "  [dim](events not yet confirmed by the broker)[/dim]",
        f"  deadlines  {redis['deadlines']} watched",
        f"  desk       {redis['to_relay']} messages to relay"
        + "  [dim](residents the desk still has to tell: /desk/relay)[/dim]",
    ]


def render(report: dict[str, Any]) -> list[str]:
    """The report as rich-markup lines, readable as plain text with markup stripped."""
    return [*_rabbit_lines(report["rabbitmq"]), "", *_redis_lines(report["redis"])]

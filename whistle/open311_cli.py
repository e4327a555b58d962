"""``whistle open311 key add|revoke|list``: API keys for Open311 clients (docs/open311.md)."""

from __future__ import annotations

import json

import click

from shared import config as cfg


def _with_clients(action):
    """``action(clients)`` against this deployment's Redis; its errors as CLI errors."""
    from services.intake.open311.clients import Open311Clients
    from shared.errors import Unavailable, WhistleError
    from shared.store import connect
    from whistle.ops import cannot_reach

    config = cfg.config_from_env()
    try:
        return action(Open311Clients(connect(config[cfg.REDIS_URL]), config[cfg.KEY_PREFIX]))
    except Unavailable as exc:
        raise cannot_reach("Redis", config[cfg.REDIS_URL], exc) from None
    except WhistleError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def open311() -> None:
    """Open311 GeoReport v2 (/open311/v2/): client API keys."""


@open311.group()
def key() -> None:
    """API keys: one per client (a FixMyStreet site, an app, an SMS gateway)."""


def _a_client_name(ctx: click.Context, param: click.Parameter, name: str) -> str:
    """Bad input is a usage error (exit 2), before Redis is asked: for ``revoke`` too,
    where a name no client can have was answered "no client" (exit 1), as if looked up."""
    from services.intake.open311.clients import CLIENT_NAME

    if not CLIENT_NAME.fullmatch(name):
        raise click.BadParameter(f"{name!r}: a client name is 1-64 letters, digits, '.', "
                                 "'_' or '-'")
    return name


@key.command("add")
@click.argument("name", callback=_a_client_name)
def key_add(name: str) -> None:
    """Issue a key for client NAME and print it (only once: only its hash is stored)."""
    click.echo(_with_clients(lambda clients: clients.add(name)))


@key.command("revoke")
@click.argument("name", callback=_a_client_name)
def key_revoke(name: str) -> None:
    """Revoke client NAME's key at once (its requests stay)."""
    if not _with_clients(lambda clients: clients.revoke(name)):
        raise click.ClickException(f"no client {name!r}")
    click.echo(f"revoked the key of {name}")


@key.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the clients as JSON.")
def key_list(as_json: bool) -> None:
    """The clients that hold a key, and when it was issued (never the keys)."""
    rows = _with_clients(lambda clients: clients.list())
    if as_json:
        click.echo(json.dumps([{"name": r.name, "created_at": r.created_at} for r in rows]))
        return
    for row in rows:
        click.echo(f"{row.name}\t{row.created_at}")
    if not rows:  # said, on stderr: silence read as "it did not run", or hid a wrong prefix
        prefix = cfg.config_from_env()[cfg.KEY_PREFIX]
        click.echo(f"no Open311 client holds a key (Redis prefix {prefix})", err=True)

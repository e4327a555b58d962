"""``whistle db``, ``whistle archive`` and ``whistle privacy``: the archive in PostgreSQL.

See docs/archive.md for retention, archiving, erasure and backups.
"""

from __future__ import annotations

import signal
import sys
import time

import click

from shared import config as cfg
from whistle.noted_stop import NotedStop
from whistle.web_client import check_issue_id


def _config() -> dict:
    try:
        return cfg.config_from_env()
    except cfg.ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def db() -> None:
    """The archive's database (WHISTLE_DATABASE_URL)."""


def _on_database(action):
    """``action(url)`` on the configured database; a clear error when it is unreachable."""
    import psycopg

    from shared.archive import redact

    url = _config()[cfg.DATABASE_URL]
    try:
        return url, action(url)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach the database at {redact(url)}: "
                                   f"{str(exc).strip().splitlines()[0]}") from None


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations the database lacks (shared/migrations)."""
    from shared.archive import redact, upgrade

    url, applied = _on_database(upgrade)
    click.echo(f"database {redact(url)}: " + (f"applied {', '.join(applied)}" if applied
                                             else "up to date"))


@db.command("status")
def db_status() -> None:
    """Say which migrations are pending (exit 1 if any)."""
    from shared.archive import pending_migrations, redact

    url, pending = _on_database(pending_migrations)
    if pending:
        click.echo(f"database {redact(url)}: pending {', '.join(pending)}")
        sys.exit(1)
    click.echo(f"database {redact(url)}: up to date")


def _store(config: dict):
    import logging

    from shared.archive import Archive, SchemaBehind, check_schema
    from shared.store import IssueStore, connect

    # The pool logs every failed connection attempt (a dozen lines before it gives up);
    # the command says it once, in its own one-line error.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    # As the services refuse to start on a schema that is behind: writing to (or erasing
    # in) tables that are not there was a psycopg UndefinedTable traceback. A database
    # out of reach passes here, and is said at its first use.
    try:
        check_schema(config[cfg.DATABASE_URL])
    except SchemaBehind as exc:
        raise click.ClickException(str(exc)) from None

    return IssueStore(connect(config[cfg.REDIS_URL]), config[cfg.KEY_PREFIX],
                      Archive(config[cfg.DATABASE_URL]))


def _unreachable(config: dict, exc: Exception) -> click.ClickException:
    """The one line for a store out of reach (``Unavailable`` from either): which, where
    and why."""
    from shared.archive import DB_ERRORS, redact
    from whistle.ops import cannot_reach

    if isinstance(exc.__cause__, DB_ERRORS):
        return click.ClickException(f"cannot reach the database at "
                                    f"{redact(config[cfg.DATABASE_URL])} ({exc})")
    return cannot_reach("Redis", config[cfg.REDIS_URL], exc.__cause__ or exc)


@click.command()
@click.option("--retention", default=None,
              help="How long an issue stays closed in Redis first (default: "
                   "$WHISTLE_HOT_RETENTION or 1d); 0 archives every closed issue.")
# --batch 0 would claim nothing and report "archived 0" while issues wait; --lease 0 is
# an expiry Redis refuses: both are usage errors, not silent no-ops.
@click.option("--batch", default=200, show_default=True, type=click.IntRange(1, 10_000),
              help="Issues per transaction (1-10000).")
@click.option("--lease", "lease_s", default=60, show_default=True, type=click.IntRange(1, 86_400),
              help="Seconds an issue stays claimed by this run (a killed run's claims expire).")
@click.option("--every", "every_s", type=click.FloatRange(0, min_open=True), default=None,
              help="Keep running, a pass every this many seconds (default: one pass).")
def archive(retention: str | None, batch: int, lease_s: int, every_s: float | None) -> None:
    """Move issues closed for the retention period from Redis to PostgreSQL.

    Intake does this by itself every WHISTLE_ARCHIVE_INTERVAL_S; this command is for
    catching up, and for hosts that run no intake.
    """
    from services.intake.archiver import Archiver
    from shared.errors import Unavailable

    config = _config()
    try:
        retention_s = cfg.duration_s(retention if retention is not None
                                     else config[cfg.HOT_RETENTION])
    except cfg.ConfigurationError as exc:
        if retention is None:
            raise click.ClickException(f"WHISTLE_HOT_RETENTION: {exc}") from None
        raise click.BadParameter(str(exc), param_hint="'--retention'") from None
    store = _store(config)
    archiver = Archiver(store, store.archive, retention_s, batch=batch, lease_s=lease_s)
    if every_s is not None:  # SIGTERM stops it as Ctrl-C does (a pass cut short: its claims expire)
        _archive_stop.asked.clear()
        on_term = signal.signal(signal.SIGTERM, _archive_stop)
    try:  # the pool closed on every way out: left to the interpreter, it printed a traceback
        while True:
            try:
                done = archiver.run_until_idle(time.time())
                click.echo(f"archived {len(done.archived)}; changed meanwhile "
                           f"{len(done.changed)}; held by another archiver {done.busy}")
            except Unavailable as exc:
                if every_s is None:
                    raise _unreachable(config, exc) from None
                click.echo(f"archive pass failed, retrying: {_unreachable(config, exc).message}",
                           err=True)
            if every_s is None:
                break
            _archive_stop.raise_if_asked()  # a SIGTERM whose KeyboardInterrupt was lost
            time.sleep(every_s)
    except KeyboardInterrupt:  # how --every stops: not click's "Aborted!", exit 1
        if every_s is None:
            raise
        click.echo("whistle archive: stopped", err=True)
    finally:
        store.archive.close()
        if every_s is not None:
            signal.signal(signal.SIGTERM, on_term)


# SIGTERM stops `archive --every` as Ctrl-C does, after the pass at the latest: the loop
# checks for one whose exception was lost in a finalizer (the pool's, psycopg's).
_archive_stop = NotedStop(KeyboardInterrupt)


@click.group()
def privacy() -> None:
    """Residents' personal data."""


@privacy.command("erase")
@click.argument("issue_id", callback=check_issue_id)
def privacy_erase(issue_id: str) -> None:
    """Erase the resident's contact on an archived issue, keeping only its masked form,
    and take its messages off the desk's outbox (they carry the contact in full).

    A hot issue (still in Redis) is refused: its resident is still being told of
    progress. It can be erased once archived (`whistle archive --retention 0`).
    """
    from shared.errors import NotFound, Unavailable
    from shared.store import REDIS_ERRORS
    from whistle.ops import cannot_reach

    config = _config()
    store = _store(config)
    try:
        if store.redis.exists(store.keys.issue(issue_id)):
            raise click.ClickException(f"{issue_id} is not archived yet (its resident is still "
                                       "being told of progress); erase it once it is")
        erased = store.archive.erase_contact(issue_id)
        # Its messages still to relay hold the contact in full: the desk no longer calls;
        # and the relays of its messages are forgotten (archiving forgot those before it).
        dropped = store.forget_desk_messages(issue_id, store.archive.notifications(issue_id))
    except REDIS_ERRORS as exc:
        raise cannot_reach("Redis", config[cfg.REDIS_URL], exc) from None
    except NotFound:
        raise click.ClickException(f"no archived issue {issue_id}") from None
    except Unavailable as exc:
        raise _unreachable(config, exc) from None
    finally:
        store.archive.close()
    click.echo((f"{issue_id}: contact erased, masked form kept" if erased
                else f"{issue_id}: contact was already erased")
               + (f"; {dropped} message(s) taken off the desk's outbox" if dropped else ""))

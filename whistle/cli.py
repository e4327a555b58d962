"""``whistle``: the command line for the desk, agency staff and operators."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console

from bench.cli import bench
from shared import config as cfg
from whistle.db_cli import archive, db, privacy
from whistle.dlq_cli import dlq
from whistle.open311_cli import open311
from whistle.queues_cli import queues
from whistle.route_cli import route
from whistle.routing_cli import routing
from whistle.stats_cli import stats
from whistle.status_cli import status
from whistle.tail_cli import tail
from whistle.trace_cli import trace
from whistle.web_client import check_issue_id

console = Console()


class _Whistle(click.Group):
    """Every command reads the environment (``config_from_env``); a variable it refuses
    (``MAX_WORKERS=x``, ``WHISTLE_QUEUE_TYPE=fast``) is one line naming it, exit 1,
    whichever command met it, instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except cfg.ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Whistle)
def cli() -> None:
    """Whistle: route residents' problems to agencies and close the loop (吹哨报到, 接诉即办)."""


@cli.command()
@click.option("--services", "only", default=",".join(("intake", "routing", "agency", "notify", "web")),
              show_default=True, help="Comma-separated services to run in this process.")
@click.option("--address", default=None, help="HTTP bind address [host:]port "
              "(default: $WEB_SERVER_ADDRESS or 127.0.0.1:8000).")
@click.option("--log-format", type=click.Choice(["json", "console"]), default=None,
              help="Log format (default: $LOG_FORMAT or json).")
def up(only: str, address: str | None, log_format: str | None) -> None:
    """Run Whistle's services in one process against the local RabbitMQ and Redis."""
    from whistle.runner import StoppedBeforeStart, stop_on_sigterm_before_start

    stop_on_sigterm_before_start()
    try:
        _up(only, address, log_format)
    except StoppedBeforeStart:
        click.echo("whistle: stopped (SIGTERM) before the services started", err=True)


def _up(only: str, address: str | None, log_format: str | None) -> None:
    from whistle.runner import SERVICE_NAMES, ServiceDied, run

    # each once: a service named twice ran twice in one process, and stopped in tracebacks
    names = tuple(dict.fromkeys(n.strip() for n in only.split(",") if n.strip()))
    unknown = set(names) - set(SERVICE_NAMES)
    if unknown or not names:  # none named: it ran none, and said so as if running, exit 0
        what = f"unknown service(s): {', '.join(sorted(unknown))}" if unknown else "no service"
        raise click.BadParameter(f"{what}; known: {', '.join(SERVICE_NAMES)}",
                                 param_hint="'--services'")
    overrides = {}
    if address:
        try:
            overrides[cfg.WEB_SERVER_ADDRESS] = cfg.web_address(address)
        except cfg.ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="'--address'") from None
    if log_format:
        overrides[cfg.LOG_FORMAT] = log_format
    try:
        config = cfg.config_from_env(**overrides)
    except cfg.ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    if config[cfg.SECRET] == cfg.DEV_SECRET:
        click.echo("whistle: using the DEVELOPMENT signing secret; set WHISTLE_SECRET "
                   "for anything real", err=True)
    migrate_or_warn(config[cfg.DATABASE_URL])

    def started() -> None:
        click.echo(f"whistle: {', '.join(names)} running; HTTP on "
                   f"http://{config[cfg.WEB_SERVER_ADDRESS]} (Ctrl-C to stop)", err=True)

    try:
        run(names, config, on_started=started)
    except ServiceDied as exc:
        raise click.ClickException(f"{exc}; see the log above, and start it again") from None


def migrate_or_warn(url: str) -> None:
    """`whistle up` brings the archive's schema up to date. A database that is down
    does not stop Whistle: closed issues wait in Redis until it is back."""
    import psycopg

    from shared.archive import redact, upgrade

    try:
        applied = upgrade(url)
    except psycopg.OperationalError as exc:
        click.echo(f"whistle: PostgreSQL is not reachable at {redact(url)} "
                   f"({str(exc).strip().splitlines()[0]}); finished issues stay in Redis "
                   "until it is", err=True)
        return
    if applied:
        click.echo(f"whistle: database migrated ({', '.join(applied)})", err=True)


class _IssueByDefault(click.Group):
    """``whistle token AGENCY`` is short for ``whistle token issue AGENCY``."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["issue", *args]
        return super().resolve_command(ctx, args)


@cli.group(cls=_IssueByDefault)
def token() -> None:
    """Staff tokens: issue (the default), revoke. See docs/security.md."""


STAFF_ID_MAX = 64


def _staff_id_shaped_or_exit(staff_id: str) -> None:
    """A staff id is shown on the issue's timeline and in `whistle audit`, one line an
    entry, and rides in every request the token makes: a line break would split those
    lines, a long one weigh on every request. Such a token would be signed and taken."""
    if len(staff_id) > STAFF_ID_MAX or staff_id != staff_id.strip() \
            or not staff_id.isprintable():
        raise click.BadParameter(f"a staff id is 1 to {STAFF_ID_MAX} printable characters, "
                                 "with no space at either end (like gd-017)",
                                 param_hint="'--staff'")


@token.command("issue")
@click.argument("agency")
@click.option("--staff", "staff_id", default="staff-001", show_default=True,
              help="Staff id recorded on every action taken with the token.")
@click.option("--ttl", "ttl_s", type=int, default=None,
              help="Lifetime in seconds (default: $WHISTLE_TOKEN_TTL or 10 h, a shift).")
@click.option("--community", "communities", multiple=True,
              help="Desk tokens only: the communities it may see (repeat; default: all).")
def token_issue(agency: str, staff_id: str, ttl_s: int | None,
                communities: tuple[str, ...]) -> None:
    """Print a bearer token for AGENCY's staff (desk: community desk staff), signed with
    $WHISTLE_SECRET. Its id (jti), for `whistle token revoke`, goes to stderr."""
    from shared.auth import DESK, verify_token
    from shared.auth import issue_token as sign

    config = cfg.config_from_env()
    _known_agency_or_exit(agency, config)
    # a token without a staff id (or scoped to a nameless community) would be signed but
    # refused by every door, the CLI's own check included: refuse it before signing
    if not staff_id.strip():
        raise click.BadParameter("a staff id is needed: it is who acts, in the audit log",
                                 param_hint="'--staff'")
    _staff_id_shaped_or_exit(staff_id)
    if any(not c.strip() for c in communities):
        raise click.BadParameter("a community has a name", param_hint="'--community'")
    if communities and agency != DESK:
        raise click.BadParameter(f"only desk tokens are scoped to communities, not {agency}'s",
                                 param_hint="'--community'")
    try:
        signed = sign(agency, staff_id, config[cfg.SECRET],
                      config[cfg.TOKEN_TTL] if ttl_s is None else ttl_s,
                      communities=communities or None)
    except ValueError as exc:  # a lifetime out of range
        raise click.BadParameter(str(exc), param_hint="'--ttl'") from None
    principal = verify_token(signed, config[cfg.SECRET])
    click.echo(signed)
    click.echo(f"whistle: token {principal.jti} for {agency}/{staff_id}, expires "
               f"{_when(principal.expires_at)}", err=True)


@token.command("revoke")
@click.argument("jti", required=False)
@click.option("--staff", "staff", default=None, metavar="AGENCY:STAFF_ID",
              help="Revoke every token issued so far to this staff member instead.")
def token_revoke(jti: str | None, staff: str | None) -> None:
    """Revoke a token by its id (JTI), or all of one staff member's: refused from the
    next request on, by every instance."""
    import time

    from shared.auth import looks_like_jti
    from shared.guard import revoke, revoke_staff
    from shared.store import connect

    if jti is None and staff is None:
        raise click.UsageError("give a token id (JTI) or --staff AGENCY:STAFF_ID")
    if jti is not None and staff is not None:
        raise click.UsageError("give a token id (JTI) or --staff AGENCY:STAFF_ID, not both")
    if jti is not None and not looks_like_jti(jti):
        raise click.BadParameter(f"{jti!r} is not a token id: `whistle token` prints one "
                                 "(32 hex digits) on stderr when it issues a token",
                                 param_hint="'JTI'")
    config = cfg.config_from_env()
    if staff is not None:
        agency, _, staff_id = staff.partition(":")
        if not agency or not staff_id:
            raise click.BadParameter(f"{staff!r} is not AGENCY:STAFF_ID (like power:li-09)",
                                     param_hint="'--staff'")
        _revocable_agency_or_refuse(agency, config)
    client = connect(config[cfg.REDIS_URL])
    try:
        if jti:
            revoke(client, config[cfg.KEY_PREFIX], jti)
            click.echo(f"revoked token {jti}")
        else:
            now = time.time()
            revoke_staff(client, config[cfg.KEY_PREFIX], agency, staff_id, now)
            # A token says when it was issued in whole seconds, and the cut-off refuses
            # every token of this second: one issued for the same person right after
            # (a lost phone, replaced) would be refused for its whole life. Return only
            # once this second is over, so that a token issued afterwards is good.
            time.sleep(max(0.0, int(now) + 1 - time.time()))
            click.echo(f"revoked every token issued so far to {agency}:{staff_id}")
    except Exception as exc:  # Redis unreachable: say so, no traceback
        if isinstance(exc, click.ClickException):
            raise
        from whistle.ops import cannot_reach

        raise cannot_reach("Redis", config[cfg.REDIS_URL], exc) from None
    finally:
        client.close()


def _revocable_agency_or_refuse(agency: str, config: dict) -> None:
    """A mistyped agency (``powr:li-09``) would revoke nobody's tokens and say it had, while
    the leaver's stay good: refuse it as a usage error, naming the agencies there are.
    Rules that cannot be read do not hold up a revocation: it goes ahead, with a note."""
    from services.routing.rules import RulesError

    try:
        known = _known_agencies(config)
    except (RulesError, OSError) as exc:
        click.echo(f"whistle token revoke: could not check {agency!r} against the rules' "
                   f"agencies ({exc}); revoking anyway", err=True)
        return
    if agency not in known:
        raise click.BadParameter(f"unknown agency {agency!r}; known: {', '.join(known)}",
                                 param_hint="'--staff'")


@cli.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000),
              help="Newest entries to show (1-100000).")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON lines.")
def audit(limit: int, as_json: bool) -> None:
    """The audit log: every write, who made it (role, staff id, token id) and its outcome."""
    from shared.guard import audit_entries
    from shared.store import connect

    config = cfg.config_from_env()
    client = connect(config[cfg.REDIS_URL])
    try:
        entries = audit_entries(client, config[cfg.KEY_PREFIX], limit)
    except Exception as exc:
        from whistle.ops import cannot_reach

        raise cannot_reach("Redis", config[cfg.REDIS_URL], exc) from None
    finally:
        client.close()
    for entry in entries:
        if as_json:
            click.echo(json.dumps(audit_entry_as_json(entry), ensure_ascii=False))
        else:
            who = entry.get("staff_id") and f"{entry.get('agency')}/{entry['staff_id']}" \
                or entry.get("reporter_issue_id") \
                or entry.get("client") and f"open311:{entry['client']}" or entry.get("role")
            click.echo(f"{entry['at']}  {entry['status']:>3}  {entry['action']:<24} "
                       f"{entry.get('issue_id', '-'):<18} {who}  {entry.get('jti', '')}")


def audit_entry_as_json(entry: dict[str, str]) -> dict[str, object]:
    """An audit entry as ``--json`` prints it: its HTTP status a number, as every other
    JSON of Whistle's gives one (Redis keeps each field as text: ``"400"``). Pure."""
    status = entry.get("status")
    return {**entry, "status": int(status)} if isinstance(status, str) and status.isdigit() \
        else entry


@cli.group("rating-link")
def rating_link() -> None:
    """Residents' rating links (民事民评)."""


@rating_link.command("resend")
@click.argument("issue_id", callback=check_issue_id)
@click.option("--url", default=None, help="Whistle's HTTP address (default: from "
              "$WEB_SERVER_ADDRESS).")
def rating_link_resend(issue_id: str, url: str | None) -> None:
    """Send ISSUE_ID's resident a fresh rating link, straight to their phone or email.

    As desk staff ($WHISTLE_TOKEN, or one signed with $WHISTLE_SECRET). You learn where it
    went and whether it was accepted; the link itself is never shown to you.
    """
    from whistle.credentials import desk_call
    from whistle.web_client import base_url

    body = desk_call("POST", base_url(url), f"/issues/{issue_id}/rating-link", ok=(202,))
    click.echo(f"rating link for {body['issue_id']}: {body['status']} via {body['channel']}"
               + (f" ({body['detail']})" if body.get("detail") else ""))


def _known_agencies(config: dict) -> list[str]:
    """The agencies a staff token may be for: the desk and the rules' ($RULES_FILE, else
    the shipped rules); RulesError or OSError when the rules cannot be read."""
    from services.routing.rules import load_rules
    from shared.auth import DESK

    return [DESK, *sorted(load_rules(cfg.get(config, cfg.RULES_FILE) or None).agencies)]


def _known_agency_or_exit(agency: str, config: dict) -> None:
    """A token for an agency the rules do not know would open no door but look valid:
    refuse it (exit 2), naming the agencies there are ($RULES_FILE, else the shipped rules)."""
    from services.routing.rules import RulesError
    from shared.auth import DESK

    if agency == DESK:
        return
    try:
        known = _known_agencies(config)
    except (RulesError, OSError) as exc:
        click.echo(f"whistle token: cannot read the rules' agencies: {exc}", err=True)
        sys.exit(2)
    if agency not in known:
        click.echo(f"whistle token: unknown agency {agency!r}; known: {', '.join(known)}",
                   err=True)
        sys.exit(2)


def _when(epoch: int | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch or 0, UTC).isoformat(timespec="seconds")


@cli.command()
@click.option("--url", default=None, help="Whistle's HTTP address (default: from $WEB_SERVER_ADDRESS).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def demo(url: str | None, as_json: bool) -> None:
    """Drive realistic problems through a running Whistle and show what residents were told."""
    from whistle.demo import run_demo
    from whistle.web_client import Refused, base_url

    config = cfg.config_from_env()
    base = base_url(url)
    try:
        results = run_demo(base, config[cfg.SECRET], console=None if as_json else console)
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    except Refused as exc:
        if exc.status != 401:
            raise
        # the demo signs its own tokens: a 401 means another secret than Whistle's
        raise click.ClickException(f"{exc.message} (the demo signs its tokens with "
                                   "WHISTLE_SECRET: set it to the one Whistle runs with)") from None
    if as_json:
        click.echo(json.dumps(results, ensure_ascii=False, indent=2))
    if any(r["status"] != "resolved" for r in results):
        sys.exit(1)


@cli.group()
def rules() -> None:
    """Routing rules."""


@rules.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def rules_check(path: str) -> None:
    """Validate a rules file; list every error with its line."""
    from services.routing.rules import RulesError, load_rules

    try:
        ruleset = load_rules(path)
    except (RulesError, OSError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"{path}: OK ({len(ruleset.rules)} rules, {len(ruleset.agencies)} agencies)")


cli.add_command(route)
cli.add_command(routing)
cli.add_command(status)
cli.add_command(dlq)
cli.add_command(queues)
cli.add_command(stats)
cli.add_command(open311)
cli.add_command(db)
cli.add_command(archive)
cli.add_command(privacy)


cli.add_command(tail)
cli.add_command(trace)
cli.add_command(bench)


def main() -> None:  # pragma: no cover - console entry point
    cli(prog_name=os.path.basename(sys.argv[0]))

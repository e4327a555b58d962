"""``whistle stats``: the three rates (三率) of a running Whistle, over HTTP.

Fetches ``GET /stats`` and prints one row overall and one per agency: assignments,
response, resolution and satisfaction rates, median and p90 times to acknowledge
and to resolve, open, overdue and escalated, then the satisfaction of the ratings
given through the residents' links and of those the desk recorded on a call-back
(电话回访), last so the columns before keep their places. ``--json`` prints the
answer as is.
Dates given without a zone are read in ``$WHISTLE_TZ``. The definitions are in
``services/intake/stats.py``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@click.command()
@click.option("--since", default=None, metavar="ISO",
              help="Start of the window (default: 30 days before --until).")
@click.option("--days", type=click.IntRange(1, 366), default=None,
              help="The window is the N days before --until (instead of --since).")
@click.option("--until", default=None, metavar="ISO", help="End of the window (default: now).")
@click.option("--url", default=None, help="Whistle's HTTP address (default: from $WEB_SERVER_ADDRESS).")
@click.option("--json", "as_json", is_flag=True, help="Print GET /stats's answer as JSON.")
def stats(since: str | None, days: int | None, until: str | None, url: str | None,
          as_json: bool) -> None:
    """Show the three rates (三率): response, resolution and satisfaction, per agency."""
    from whistle.route_cli import _display_tz
    from whistle.web_client import base_url

    if since and days:
        raise click.UsageError("give --since or --days, not both")
    tz = _display_tz()
    params = {}
    end = _parse(until, "--until", tz) if until else None
    if days:
        end = end or datetime.now(tz)
        params["since"] = _in_utc(end - timedelta(days=days))
    elif since:
        params["since"] = _in_utc(_parse(since, "--since", tz))
    if end:
        params["until"] = _in_utc(end)
    if since and _parse(since, "--since", tz) >= (end or datetime.now(tz)):
        raise click.UsageError(f"--since {since} must be earlier than --until "
                               f"{until or '(default: now)'}")
    report = fetch_stats(base_url(url), params)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    # Piped output (logs, README samples) gets room for every column instead of 80.
    width = None if sys.stdout.isatty() else 132
    Console(highlight=False, width=width).print(render(report, tz))


def _parse(value: str, option: str, tz: tzinfo) -> datetime:
    """``value`` as a moment (read in ``tz`` when it names no zone), within the years the
    API's window takes (``StatsWindow``): one usage line otherwise, where turning year 1
    into UTC overflowed or the API answered about the zone's offset instead."""
    from services.intake.stats import EARLIEST, LATEST

    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or datetime",
                                 param_hint=option) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=tz)
    try:
        inside = EARLIEST <= moment.astimezone(UTC) < LATEST
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        inside = False
    if not inside:
        raise click.BadParameter(f"{value!r} is outside the years Whistle's stats cover "
                                 f"({EARLIEST.year} to {LATEST.year - 1}, in UTC)", param_hint=option)
    return moment


def _in_utc(moment: datetime) -> str:
    """``moment`` as ``GET /stats`` takes it. Sent in UTC, not in the display zone's
    offset: before a zone kept standard time its offset was local mean time, to the
    second (Asia/Shanghai's +08:05:43 until 1901, Africa/Monrovia's -00:44:30 until
    1972), which ISO 8601 cannot write and the API refused."""
    return moment.astimezone(UTC).isoformat()


def fetch_stats(base: str, params: dict[str, str]) -> dict[str, Any]:
    from whistle.credentials import desk_call

    return desk_call("GET", base, "/stats", params=params)


# -------------------------------------------------------------------- rendering


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def duration(seconds: float | None) -> str:
    """``3h05m``: at most the two largest units, for people."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count or parts:
            parts.append((count, unit))
    return "".join(f"{count}{unit}" for count, unit in parts[:2] if count)


def _times(block: dict, key: str) -> str:
    figures = block[key]
    return f"{duration(figures['median'])}/{duration(figures['p90'])}"


def _satisfaction(figures: dict) -> str:
    return f"{percent(figures['satisfaction_rate'])} ({figures['satisfied']}/{figures['rated']})"


def _row(name: str, block: dict) -> list[str]:
    return [
        escape(name),  # data, not rich markup
        str(block["assigned"]),
        percent(block["response_rate"]),
        percent(block["resolution_rate"]),
        _satisfaction(block),
        _times(block, "time_to_acknowledge_s"),
        _times(block, "time_to_resolve_s"),
        str(block["open"]),
        str(block["overdue"]),
        str(block["escalated"]),
        # Added after the columns scripts already read, as GET /stats added rated_by.
        _satisfaction(block["rated_by"]["resident"]),
        _satisfaction(block["rated_by"]["desk"]),
    ]


def render(report: dict, tz: tzinfo) -> Table:
    """The report as a rich table: overall first, then each agency."""
    window = report["window"]

    def local(iso: str) -> str:
        return datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title=f"三率 / the three rates, {local(window['since'])} → "
                        f"{local(window['until'])}",
                  caption=f"as of {local(window['as_of'])}; {window['issues']} issues read; "
                          "response: acknowledged on time; "
                          "satisfaction: satisfied/rated; p50/p90: median and 90th percentile "
                          "(nearest rank); by link: rated by the resident through their link; "
                          "by desk: recorded by the desk on a call-back (电话回访)")
    for header in ("agency", "assigned", "response", "resolution", "satisfaction",
                   "ack\np50/p90", "resolve\np50/p90", "open", "overdue", "escalated",
                   "by link", "by desk"):
        table.add_column(header, justify="left" if header == "agency" else "right",
                         no_wrap=header == "agency")
    table.add_row(*_row("overall", report["overall"]), style="bold", end_section=True)
    for agency, block in report["agencies"].items():
        table.add_row(*_row(agency, block))
    return table

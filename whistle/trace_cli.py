"""``whistle trace <issue>``: the path of one issue across the services.

Built from the issue's journal (every event, with the call id of the worker
that produced it) and its delivery records. Each step is classified:

- *processing*: machine work caused by an earlier message (its ``causation_id``
  is in the journal): the time shown is from that cause to this step;
- *waiting (people)*: a step started by someone (the desk, agency staff, the
  resident) over HTTP or RPC: the time since the previous step is time spent
  waiting for them;
- *waiting (deadline)*: a step started by a deadline passing (escalation,
  closing unrated): time spent waiting for the clock.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from whistle.tail_cli import AGENCY_WIDTH, agency_cell, agency_of
from whistle.web_client import check_issue_id

DEADLINE_EVENTS = {"issue.escalated", "issue.closed"}


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _split_call_id(call_id: str | None) -> tuple[str | None, str | None]:
    if not call_id:
        return None, None
    parts = call_id.split(".")
    return parts[0], parts[1] if len(parts) > 2 else None




def build_trace(issue: dict[str, Any], events: list[dict[str, Any]],
                notifications: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps in time order with their classification and durations. Pure."""
    by_id = {e["event_id"]: e for e in events}
    steps: list[dict[str, Any]] = []
    for entry in events:
        service, entrypoint = _split_call_id(entry.get("call_id"))
        cause = by_id.get(entry.get("causation_id") or "")
        at = _parse(entry["occurred_at"])
        if cause is not None:
            kind, started = "processing", _parse(cause["occurred_at"])
        elif entry["event_type"] in DEADLINE_EVENTS and entrypoint == "watch_deadlines":
            kind, started = "waiting (deadline)", None
        elif entry["event_type"] == "issue.received":
            kind, started = "start", at
        else:
            kind, started = "waiting (people)", None
        steps.append({"at": at, "service": service, "entrypoint": entrypoint,
                      "call_id": entry.get("call_id"), "type": entry["event_type"],
                      "agency": agency_of(entry), "kind": kind, "started": started,
                      "event_id": entry["event_id"]})
    for note in notifications:
        sent = note.get("sent_at") or note.get("last_attempt_at") or note["created_at"]
        steps.append({"at": _parse(sent), "service": "notify", "entrypoint": None,
                      "call_id": None, "type": f"notified {note['kind']} ({note['status']})",
                      "agency": None, "kind": "processing", "started": None,
                      "audience": note.get("audience", "resident"), "channel": note.get("channel")})
    steps.sort(key=lambda s: s["at"])
    origin = steps[0]["at"] if steps else None
    totals = {"processing": 0.0, "waiting (people)": 0.0, "waiting (deadline)": 0.0}
    # Waiting is measured from the previous *event*: a notification sent meanwhile
    # does not shorten the time the issue spent waiting for people or deadlines.
    previous_event = origin
    for step in steps:
        is_event = step["service"] != "notify"
        if step["started"] is not None:
            duration = (step["at"] - step["started"]).total_seconds()
        else:
            duration = (step["at"] - previous_event).total_seconds() if previous_event else 0.0
        if is_event and step["kind"] in totals:
            totals[step["kind"]] += max(duration, 0.0)
        step.update(since_start_s=(step["at"] - origin).total_seconds(), duration_s=duration)
        if is_event:
            previous_event = max(previous_event, step["at"])
    return {
        "issue_id": issue["issue_id"], "trace_id": issue["trace_id"], "status": issue["status"],
        "category": issue.get("category"), "priority": issue.get("priority"),
        "steps": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in s.items()}
                  for s in steps],
        "totals_s": {k: round(v, 3) for k, v in totals.items()},
    }


def human(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def short_call_id(call_id: str | None) -> str:
    """``routing.route_issue.8aac…``: service and entrypoint, the worker's id cut to four
    characters (``--json`` has it whole)."""
    if not call_id:
        return "-"
    head, _, worker = call_id.rpartition(".")
    if not head or len(worker) <= 5:
        return call_id
    return f"{head}.{worker[:4]}…"


def render(trace: dict[str, Any]) -> str:
    lines = [f"{trace['issue_id']}  trace {trace['trace_id']}  {trace['status']}  "
             f"({trace['category']}, {trace['priority']})", ""]
    lines.append(f"  {'at':>9}  {'step took':>9}  {'kind':<19} {'service':<8} "
                 f"{'entrypoint':<26} {'type':<34} {'agency':<17} call id")
    for s in trace["steps"]:
        lines.append(
            f"  {'+' + human(s['since_start_s']):>9}  {human(s['duration_s']):>9}  {s['kind']:<19} "
            f"{(s['service'] or '-'):<8} {(s['entrypoint'] or '-'):<26} {s['type']:<34} "
            f"{agency_cell(s['agency']):<{AGENCY_WIDTH}} {short_call_id(s['call_id'])}")
    t = trace["totals_s"]
    # Notifications are sent alongside the events' processing: their rows show when
    # they went out, and are not added to the total (it would count that time twice).
    lines += ["", f"  processing {human(t['processing'])} (events, not notifications), "
                  f"waiting for people "
                  f"{human(t['waiting (people)'])}, waiting for deadlines "
                  f"{human(t['waiting (deadline)'])}"]
    return "\n".join(lines)


@click.command()
@click.argument("issue_id", callback=check_issue_id)
@click.option("--url", default=None, help="Whistle's HTTP address (default: from $WEB_SERVER_ADDRESS).")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def trace(issue_id: str, url: str | None, as_json: bool) -> None:
    """Show the path of one issue across the services, step by step."""
    from whistle.credentials import desk_call
    from whistle.web_client import Refused, base_url

    base = base_url(url)

    def get(path: str) -> dict[str, Any]:
        try:  # the desk's view: the journal and messages are the desk's
            return desk_call("GET", base, path, timeout=10)
        except Refused as exc:
            # (another server's 404 is not Whistle's word that there is no such issue)
            if exc.status == 404 and exc.whistles and path == f"/issues/{issue_id}":
                raise click.ClickException(f"no issue {issue_id}") from None
            raise

    issue = get(f"/issues/{issue_id}")
    events = get(f"/issues/{issue_id}/events")
    notes = get(f"/issues/{issue_id}/notifications")
    try:
        result = build_trace(issue, events["events"], notes["notifications"])
    except (KeyError, TypeError, ValueError) as exc:
        raise click.ClickException(f"Whistle at {base} answered in an unexpected form "
                                   f"({type(exc).__name__}: {exc})") from None
    click.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else render(result))

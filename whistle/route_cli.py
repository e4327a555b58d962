"""``whistle route``: where would routing send this text? Offline, from a rules file.

Like Alertmanager's ``amtool config routes test``: it runs the routing domain on
the rules file you name (default ``$RULES_FILE``, else the shipped rules) without
a broker or Redis, so a rules change can be tried before routing reloads it.
It classifies with the configured model (``$WHISTLE_ROUTING_MODEL``, else the bundled
one, else the keywords). ``--json`` prints exactly what ``rpc.routing.explain_route``
answers: the top categories with probabilities, the weighing terms, the rules that
fired, the urgency decision and why, and whether the report would go to triage.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, tzinfo

import click
from rich.console import Console
from rich.markup import escape

from shared import config as cfg

_REASON_RULE = re.compile(r"of rule (\S+)$")
_OPTION = {"text": "TEXT", "category": "--category", "community": "--community"}


@click.command()
@click.argument("text")
@click.option("--community", default=None,
              help="The resident's community; echoed (routing does not use it yet).")
@click.option("--category", default=None,
              help="The desk's category, if it gave one (one of the rules'; general lets "
                   "routing decide); it wins over the model and the keywords.")
@click.option("--rules", "rules_file", default=None, type=click.Path(dir_okay=False),
              help="Rules file (default: $RULES_FILE or the shipped rules).")
@click.option("--json", "as_json", is_flag=True, help="Print routing's explanation as JSON.")
def route(text: str, community: str | None, category: str | None, rules_file: str | None,
          as_json: bool) -> None:
    """Show where routing would send TEXT: category, priority, agencies, deadlines and why."""
    from services.routing.classifier import ModelLoadError, load_classifier
    from services.routing.desk import require_known_category
    from services.routing.domain import route_issue
    from services.routing.explain import explanation, read_for_explain
    from services.routing.rules import RulesError
    from services.routing.rules_provider import read_rules
    from shared.contracts import ExplainRoute, utcnow
    from shared.errors import InvalidPayload
    from shared.web import validate

    try:
        request = validate(ExplainRoute, {"text": text, "category": category,
                                          "community": community})
    except InvalidPayload as exc:
        # the field's own reason (too long, a control character), under the name the
        # user typed: TEXT is the argument, the others are options
        raise click.UsageError("; ".join(
            f"{_OPTION.get(f['field'], f['field'])}: {f['message']}" for f in exc.errors)
            or str(exc)) from None
    tz = _display_tz()
    try:
        loaded = read_rules(rules_file or cfg.get(os.environ, cfg.RULES_FILE) or None)
    except RulesError as exc:
        click.echo(f"whistle route: the rules file is invalid:\n{exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"whistle route: cannot read the rules file: {exc}", err=True)
        sys.exit(2)
    rules = loaded.rules
    if request.category is not None:  # refused as POST /routing/explain refuses it (422)
        try:
            require_known_category(request.category, rules)
        except InvalidPayload as exc:
            raise click.UsageError(f"--category: {exc}; {exc.errors[0]['message']}") from None

    threshold = cfg.triage_threshold(os.environ)  # a refused value: one line, exit 1
    try:
        model = load_classifier(cfg.get(os.environ, cfg.ROUTING_MODEL) or None)
    except ModelLoadError as exc:
        click.echo(f"whistle route: {exc}", err=True)
        sys.exit(2)
    now = utcnow()
    classification = read_for_explain(model, request.text) if model is not None else None
    decision = route_issue(request.text, request.category, rules, now, classification, threshold)
    explained = explanation(decision, rules, threshold)
    if as_json:
        click.echo(json.dumps(explained, ensure_ascii=False, indent=2))
        return
    console = Console(soft_wrap=True, highlight=False)
    for line in render(explained, rules, request.text, request.community, loaded.source,
                       now, tz):
        console.print(line)


def _reading(explained: dict) -> list[str]:
    """The classifier's reading, the urgency decision and the triage call."""
    lines = []
    model = explained["classifier"]
    if model is not None:
        top = ", ".join(f"{t['category']} {t['probability']:.0%}" for t in model["top"]) or "none"
        lines.append(f"  classifier {escape(model['model_version'])}: {escape(top)}"
                     f"{'' if model['confident'] else '  (not sure)'}")
        if model["evidence"]:
            terms = ", ".join(f"{e['term']} ({e['weight']:g})" for e in model["evidence"][:8])
            lines.append(f"  evidence   {escape(terms)}")
    urgency = explained["urgency"]
    why = "; ".join(urgency["reasons"]) or "no sign of an urgent hazard"
    lines.append(f"  urgent     {'yes' if urgency['urgent'] else 'no'}: {escape(why)}")
    triage = explained["triage"]
    if triage["would_triage"]:
        what = ("waits for the desk (needs_triage)" if triage["held"]
                else "dispatched at once to the best guess and flagged for the desk")
        shown = ", ".join(f"{t['category']} {t['probability']:.0%}"
                          for t in triage["suggestions"]) or "none"
        lines.append(f"  triage     {what}: {escape(triage['reason'])}; suggestions {escape(shown)}")
    else:
        lines.append("  triage     no")
    return lines


def _display_tz() -> tzinfo:
    from zoneinfo import ZoneInfo

    name = cfg.get(os.environ, cfg.DISPLAY_TZ)
    cfg.check_time_zone(name)  # refused as every command refuses it: one line, exit 1
    return ZoneInfo(str(name).strip())


def render(explained: dict, rules, text: str, community: str | None, source: str,
           now: datetime, tz: tzinfo) -> list[str]:
    """The explanation as rich-markup lines; readable as plain text with markup stripped."""
    from services.routing.rules import format_duration

    def when(iso: str) -> str:
        moment = datetime.fromisoformat(iso)
        local = moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
        return f"in {format_duration(moment - now)}  ({local})"

    origin = {"given": "given by the desk", "keywords": "from keywords",
              "model": "from the model", "forced": "forced by a rule",
              "fallback": "fallback: no rule matched"}
    matched = {m["category"]: m["keywords"] for m in explained["matched"]}

    def decided_by(reason: str) -> str:
        found = _REASON_RULE.search(reason)
        rule = found.group(1) if found else None
        if rule is None:
            return escape(reason)
        keywords = matched.get(rule)
        if keywords:
            why = f"keywords: {', '.join(keywords)}"
        elif explained["category_source"] == "model" and rule == explained["category"]:
            top = (explained["classifier"] or {}).get("top") or [{"probability": 0}]
            why = f"the model's top category ({top[0]['probability']:.0%})"
        else:
            why = "category given by the desk"
        return f"{escape(reason)}; {escape(why)}"

    category = explained["category"]
    title = category
    if rules.has_rule(category):
        rule = rules.rule(category)
        title = f"{category}  {rule.name} / {rule.name_en}"
    window = rules.window(explained["priority"])
    keywords = ", ".join(explained["keywords"]) or "none"
    lines = [
        f"[bold]{escape(text)}[/bold]",
        f"  community  {escape(community) if community else '-'}  (not used by routing yet)",
        f"  category   [bold]{escape(title)}[/bold]  ({origin.get(explained['category_source'], explained['category_source'])})",
        f"  priority   [bold]{explained['priority']}[/bold]  (acknowledge within "
        f"{format_duration(window.acknowledge)}, resolve within "
        f"{format_duration(window.resolve)})",
        f"  rule       {escape(explained['rule'])}  keywords: {escape(keywords)}",
        "",
    ]
    for a in explained["assignments"]:
        colour = "green" if a["role"] == "lead" else "cyan"
        lines += [
            f"  [{colour}]{a['role']:<8}[/{colour}] [bold]{escape(a['agency'])}[/bold]  "
            f"{escape(a['agency_name'])} / {escape(a['agency_name_en'])}  "
            f"sector {a['sector']}",
            f"           acknowledge  {when(a['acknowledge_by'])}",
            f"           resolve      {when(a['resolve_by'])}",
            f"           why          {decided_by(a['reason'])}",
        ]
    lines.append("")
    lines += [f"  matched    {escape(m['category'])} ({m['priority']}): "
              f"{escape(', '.join(m['keywords']))}{'  [bold]forced[/bold]' if m['forced'] else ''}"
              for m in explained["matched"]]
    lines += [f"  denied     {escape(n['keyword'])} ({escape(n['category'])}), "
              f"negated by {escape(n['negated_by'])}" for n in explained["negated"]]
    if not explained["matched"]:
        lines.append("  matched    no rule")
    lines += _reading(explained)
    lines.append(f"  rules      {escape(source)} ({len(rules.rules)} rules)")
    return lines

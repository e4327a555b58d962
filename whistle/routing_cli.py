"""``whistle routing``: the router's data: the desk's corrections (and, from the model
work, ``train`` and ``evaluate``, added to this same group).

``whistle routing corrections --export FILE`` writes every report the desk triaged or
rerouted, one example per report (the desk's latest word), in the corpus format
(``corpus/README.md``). Put the file in ``corpus/corrections/`` and retrain: the
trainer folds those files in (``services.routing.corrections.load_corrections``).
Reads Redis directly (``REDIS_URL``, ``WHISTLE_KEY_PREFIX``); needs no broker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from shared import config as cfg


@click.group()
def routing() -> None:
    """The router's data: corrections from the desk, training and evaluation."""


@routing.command("corrections")
@click.option("--export", "export", default=None, is_flag=False, flag_value="-",
              metavar="[FILE]",
              help="Write them in the corpus format to FILE (no FILE: standard output).")
@click.option("--all", "every", is_flag=True,
              help="Every decision, not just the latest per report (a review, not a corpus).")
def corrections(export: str | None, every: bool) -> None:
    """List the desk's corrections (triage decisions and reroutes), or export them."""
    from services.routing.corrections import latest_per_issue, to_corpus, write_jsonl
    from services.routing.corrections_store import RedisCorrections
    from shared.errors import Unavailable
    from shared.store import connect

    store = RedisCorrections(connect(cfg.get(os.environ, cfg.REDIS_URL)),
                             cfg.get(os.environ, cfg.KEY_PREFIX))
    try:
        found = store.all()
    except Unavailable as exc:
        click.echo(f"whistle routing corrections: {exc}", err=True)
        sys.exit(2)
    chosen = (sorted(found, key=lambda c: (c.at, c.correction_id)) if every
              else latest_per_issue(found))
    if export is None:
        for c in chosen:
            was = c.previous_category or "(triage)"
            click.echo(f"{c.at:%Y-%m-%d %H:%M}  {c.issue_id}  {c.source:<7}  {was} -> "
                       f"{c.category}{'  urgent' if c.urgent else ''}  by {c.by}"
                       f"{f'  ({c.reason})' if c.reason else ''}")
        click.echo(f"{len(chosen)} correction(s)" + ("" if every else " (latest per report)"))
        return
    examples = [to_corpus(c) for c in chosen]
    if export == "-":
        write_jsonl(examples, sys.stdout)
        return
    path = Path(export)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        count = write_jsonl(examples, out)
    click.echo(f"wrote {count} example(s) to {path}", err=True)

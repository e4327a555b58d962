"""Render the fault suite's figures (JSON lines) as a Markdown table.

Usage::

    python -m tests.faults.report /tmp/faults.jsonl

Each line is one run of one scenario (see ``tests.faults.harness.Scenario``); rows
are grouped by scenario number. A figure a scenario does not have is shown as ``-``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

COLUMNS = (
    ("scenario", "scenario"),
    ("submitted", "submitted"),
    ("accepted", "accepted (201)"),
    ("accepted_during_outage", "accepted during outage"),
    ("refused", "refused"),
    ("lost", "lost"),
    ("duplicated_issues", "duplicated issues"),
    ("duplicates", "duplicates"),
    ("duration_s", "duration (s)"),
    ("notes", "notes"),
)
# Shown in the notes column when present and not zero.
NOTES = ("outcomes", "twice_handled", "orphans", "untold_dispatched", "outbox_left",
         "dead_lettered", "stored",
         "deliveries", "downtime_s", "detail")


def notes(row: dict) -> str:
    parts = []
    for key in NOTES:
        value = row.get(key)
        if value in (None, 0, {}, ""):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


def cell(value) -> str:
    return "-" if value is None else str(value).replace("|", "\\|")


def render(lines: Iterable[str]) -> str:
    # Grouped by scenario (they are numbered), runs of one scenario in their order.
    rows = sorted((json.loads(line) for line in lines if line.strip()),
                  key=lambda row: _number(row["scenario"]))
    out = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
           "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    for row in rows:
        row = {**row, "notes": notes(row)}
        out.append("| " + " | ".join(cell(row.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(out)


def _number(scenario: str) -> tuple[int, str]:
    head = scenario.split(".", 1)[0]
    return (int(head), scenario) if head.isdigit() else (1 << 30, scenario)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.faults.report FILE.jsonl", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as report:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

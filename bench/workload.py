"""What the benchmark submits: the demo's four cases from the field, each made unique.

Every issue gets its own address, so no report is merged into another (共性问题统筹
would otherwise fold repeats of the same case into one open issue) and each one
goes the whole way: received, routed, dispatched to its agencies, resident told.
The mix is 1, 4, 1 and 2 agencies (flying wire, cracked balcony, radiator, leak): two
assignments an issue on average.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from statistics import mean

from services.intake.domain import accept_issue
from shared.contracts import SubmitIssue
from whistle.demo import DEMO_CASES

CASES = [{k: v for k, v in case.items() if k != "title"} for case in DEMO_CASES]


def payload(run_id: str, n: int) -> dict:
    """The ``n``-th submission of run ``run_id``: a demo case at an address of its own."""
    case = CASES[n % len(CASES)]
    location = dict(case["location"], address=f"{case['location']['address']} #{run_id}-{n}")
    return dict(case, location=location)


def encoded(run_id: str, n: int) -> bytes:
    return json.dumps(payload(run_id, n), ensure_ascii=False).encode()


def issue_event_size() -> int:
    """Mean size in bytes of an ``issue.received`` body for this mix, as intake publishes it.

    The broker baseline sends messages of this size, so both carry the same bytes.
    """
    now = datetime.now(UTC)
    sizes = []
    for n in range(len(CASES)):
        submission = SubmitIssue.model_validate(payload("baseline", n))
        _, _, event = accept_issue(submission, f"WH-20260101-{n + 1:04d}", "0" * 32, now)
        sizes.append(len(json.dumps(event.model_dump(mode="json")).encode()))
    return round(mean(sizes))

"""The fault suite's instruments: a load of distinct issues, and an audit of what became of them.

:class:`Load` submits issues over HTTP at a steady rate from a background thread and
records every attempt (answered 201, 503, something else, refused at connect, or
unanswered). It never retries: a refused submission is the desk's to send again, and
a retry after an unanswered request could report the same problem twice.

:func:`audit` reads Redis (the key scheme in ``shared.store``) and says, for every
issue, what is still missing, and counts what happened twice:

- *complete*: status ``dispatched``, at least one assignment, every assigned agency's
  ``assignment_delivered`` step on the timeline (agency consumed the
  ``issue.dispatched`` carrying them all), and the resident's ``received`` message sent; an issue
  accepted (201) and not complete in the end is *lost*. A complete issue whose
  resident was not told it was dispatched is counted apart (``untold_dispatched``);
- *duplicates* (a resident told twice): desk-outbox entries per notification id
  beyond the first, plus ``received`` delivery records beyond the first per issue;
- *twice handled*: ``dispatched`` steps, or one agency's ``assignment_delivered``
  steps, beyond the first on a timeline.

:func:`settle` polls the audit until everything accepted is complete and every
service outbox is empty, then keeps watching a little longer for late duplicates.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
from kombu import Connection
from urllib3.exceptions import NewConnectionError

from shared import config as cfg
from shared.contracts import IssueReceived
from shared.store import Keys
from shared.topology import DEAD_LETTER_QUEUE_NAME
from tests.e2e.conftest import WHISTLE
from tests.e2e.test_faults import TEXTS
from tests.support.auth import DESK

ACCEPTED, UNAVAILABLE, REFUSED, UNANSWERED = "201", "503", "refused", "unanswered"


def issue_payload(i: int) -> dict:
    """Problem number ``i``: its own home and phone, so it never merges with another."""
    return {"description": TEXTS[i % len(TEXTS)],
            "location": {"community": "缤泰社区", "address": f"丽德花园{i % 9 + 1}号楼{i}"},
            "contact": {"phone": f"1391234{i:04d}"}}


@dataclass
class Attempt:
    index: int
    started: float
    ended: float
    outcome: str  # ACCEPTED, UNAVAILABLE, REFUSED, UNANSWERED or another HTTP status
    issue_id: str | None = None
    retry_after: str | None = None


class Load:
    """``n`` distinct issues POSTed at ``rate`` per second, round-robin over ``urls``.

    ``urls`` may be a callable returning the current list (an intake restarted on
    another address). Times are ``time.monotonic()``.
    """

    def __init__(self, urls: Sequence[str] | Callable[[], Sequence[str]], n: int = 200,
                 rate: float = 20.0, first: int = 0, timeout: float = 10.0):
        self._urls = urls if callable(urls) else (lambda: urls)
        self.n, self.rate, self.first, self.timeout = n, rate, first, timeout
        self.attempts: list[Attempt] = []
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)
        self._stopping = threading.Event()
        self.started_at = self.finished_at = None

    def start(self) -> Load:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def wait(self, timeout: float = 120.0) -> Load:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load did not finish in time"
        return self

    def stop(self, timeout: float = 30.0) -> Load:
        """End the load early (a fault that takes as long as it takes); waits for it."""
        self._stopping.set()
        return self.wait(timeout)

    def wait_sent(self, count: int, timeout: float = 60.0) -> int:
        """Until ``count`` submissions were answered (or the load ended); how many were."""
        deadline = time.monotonic() + timeout
        while len(self.attempts) < count and self._thread.is_alive():
            assert time.monotonic() < deadline, f"only {len(self.attempts)} sent"
            time.sleep(0.02)
        return len(self.attempts)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        session = requests.Session()
        session.headers.update(DESK)  # the desk's hotline system submits
        for k in range(self.n):
            if self._stopping.is_set():
                break
            due = self.started_at + k / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            urls = self._urls()
            self.attempts.append(self._submit(session, urls[k % len(urls)], self.first + k))
        self.finished_at = time.monotonic()

    def _submit(self, session: requests.Session, url: str, i: int) -> Attempt:
        started = time.monotonic()
        try:
            response = session.post(f"{url}/issues", json=issue_payload(i), timeout=self.timeout)
        except requests.ConnectionError as exc:
            # Refused at connect: nothing was sent, so nothing can have been stored.
            refused = isinstance(getattr(exc.args[0], "reason", None), NewConnectionError)
            return Attempt(i, started, time.monotonic(), REFUSED if refused else UNANSWERED)
        except requests.RequestException:
            return Attempt(i, started, time.monotonic(), UNANSWERED)
        issue_id = response.json().get("issue_id") if response.status_code == 201 else None
        return Attempt(i, started, time.monotonic(), str(response.status_code), issue_id,
                       response.headers.get("Retry-After"))

    # ------------------------------------------------------------- figures

    @property
    def accepted_ids(self) -> list[str]:
        return [a.issue_id for a in self.attempts if a.outcome == ACCEPTED]

    def outcomes(self) -> Counter:
        return Counter(a.outcome for a in self.attempts)

    def accepted_between(self, start: float, end: float) -> int:
        """Accepted by requests sent and answered wholly inside ``[start, end]``."""
        return sum(a.outcome == ACCEPTED and start <= a.started and a.ended <= end
                   for a in self.attempts)

    def figures(self) -> dict:
        counts = self.outcomes()
        return {"submitted": len(self.attempts), "accepted": counts[ACCEPTED],
                "refused": sum(n for outcome, n in counts.items() if outcome != ACCEPTED),
                "outcomes": dict(sorted(counts.items()))}


# ------------------------------------------------------------------ audit


@dataclass
class Audit:
    stored: int = 0
    pending: dict[str, str] = field(default_factory=dict)  # issue id -> what is missing
    untold_dispatched: list[str] = field(default_factory=list)  # routed, resident not told
    duplicates: int = 0
    duplicate_detail: list[str] = field(default_factory=list)
    twice_handled: int = 0
    outbox_left: int = 0

    def lost(self, accepted: Sequence[str]) -> list[str]:
        return [i for i in accepted if i in self.pending]

    def orphans(self, accepted: Sequence[str]) -> list[str]:
        """Stored without a 201 (intake killed mid-request, say) and not complete."""
        wanted = set(accepted)
        return [i for i in self.pending if i not in wanted]

    @property
    def settled(self) -> bool:
        return not self.pending and not self.untold_dispatched and self.outbox_left == 0


def audit(client: redis.Redis, prefix: str, accepted: Sequence[str] = ()) -> Audit:
    """What became of every stored issue (and every accepted one, stored or not)."""
    keys = Keys(prefix)
    ids = sorted(set(client.zrange(keys.all_issues, 0, -1)) | set(accepted))
    pipe = client.pipeline(transaction=False)
    for issue_id in ids:
        pipe.get(keys.issue(issue_id))
        pipe.hvals(keys.notifications(issue_id))
        pipe.hvals(keys.notes(issue_id))
    raws = pipe.execute()
    result = Audit(stored=sum(raw is not None for raw in raws[::3]))
    for issue_id, raw, notes, timeline_notes in zip(ids, raws[::3], raws[1::3], raws[2::3],
                                                    strict=True):
        told = [json.loads(n) for n in notes]
        missing, extra_steps = _missing(raw, told, [json.loads(n) for n in timeline_notes])
        if missing:
            result.pending[issue_id] = "; ".join(missing)
        elif not any(n["kind"] == "dispatched" and n["status"] == "sent" for n in told):
            result.untold_dispatched.append(issue_id)
        received = sum(n["kind"] == "received" for n in told)
        if received > 1:
            result.duplicates += received - 1
            result.duplicate_detail.append(f"{issue_id}: {received} received records")
        result.twice_handled += extra_steps
    desk = Counter(json.loads(entry)["notification_id"]
                   for entry in client.lrange(keys.desk_outbox, 0, -1))
    for notification_id, count in desk.items():
        if count > 1:
            result.duplicates += count - 1
            result.duplicate_detail.append(f"desk outbox: {notification_id} x{count}")
    result.outbox_left = sum(client.hlen(key) for key in client.scan_iter(f"{prefix}:outbox:*"))
    return result


def _missing(raw: str | None, notifications: list[dict],
             notes: list[dict]) -> tuple[list[str], int]:
    """What an issue still lacks, and how many of its steps happened twice (the
    timeline is the record's steps and the notes beside it)."""
    if raw is None:
        return ["not stored"], 0
    record = json.loads(raw)
    missing = [] if record["status"] == "dispatched" else [f"status {record['status']}"]
    steps = Counter((s["step"], s.get("agency")) for s in [*record["timeline"], *notes])
    extra = sum(n - 1 for (step, _), n in steps.items()
                if step in ("dispatched", "assignment_delivered") and n > 1)
    if not record["assignments"]:
        missing.append("no assignments")
    missing += [f"{a['agency']} never got it" for a in record["assignments"]
                if not steps[("assignment_delivered", a["agency"])]]
    if not any(n["kind"] == "received" and n["status"] == "sent" for n in notifications):
        missing.append("resident not told it was received")
    return missing, extra


def settle(probe: Callable[[], Audit], timeout: float = 60.0, quiet: float = 2.0) -> Audit:
    """Poll until everything is complete and every outbox empty (or ``timeout``), then
    watch ``quiet`` seconds more so late redeliveries show up as duplicates."""
    deadline = time.monotonic() + timeout
    result = probe()
    while not result.settled and time.monotonic() < deadline:
        time.sleep(0.5)
        result = probe()
    time.sleep(quiet)
    return probe()


def received_events(client: redis.Redis, prefix: str, issue_ids: Sequence[str],
                    timeout: float = 10.0) -> list[IssueReceived]:
    """Each issue's ``issue.received`` as intake published it, from intake's journal."""
    keys, deadline = Keys(prefix), time.monotonic() + timeout
    while not all(journals := [client.lrange(keys.journal(i), 0, 0) for i in issue_ids]):
        assert time.monotonic() < deadline, "intake did not journal every issue.received"
        time.sleep(0.1)
    fields = IssueReceived.model_fields
    return [IssueReceived.model_validate({k: v for k, v in json.loads(j[0]).items()
                                          if k in fields}) for j in journals]


def queue_depth(amqp_uri: str, queue: str = DEAD_LETTER_QUEUE_NAME) -> int:
    """Messages ready in ``queue`` (exact, unlike the management API's sampled figures)."""
    with Connection(amqp_uri, connect_timeout=5) as connection:
        channel = connection.channel()
        try:
            return channel.queue_declare(queue=queue, passive=True).message_count
        finally:
            channel.close()


# ---------------------------------------------------------------- figures


def dead_letters(amqp_uri: str, limit: int = 100) -> list[dict]:
    """What ``whistle dlq list --json`` shows for ``amqp_uri``'s vhost (nothing removed)."""
    done = subprocess.run([WHISTLE, "dlq", "list", "--json", "--limit", str(limit)],
                          env={**os.environ, cfg.AMQP_URI: amqp_uri}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["messages"]


class Scenario:
    """One scenario's figures, appended as a JSON line to the fault report."""

    def __init__(self, name: str, report: Path, test: str):
        self.name, self.report, self.test = name, report, test
        self.started = time.monotonic()
        self.figures: dict | None = None

    def record(self, **figures) -> dict:
        self.figures = {"scenario": self.name, **figures,
                        "duration_s": round(time.monotonic() - self.started, 1),
                        "test": self.test}
        with self.report.open("a", encoding="utf-8") as report:
            report.write(json.dumps(self.figures, ensure_ascii=False) + "\n")
        return self.figures

    def conclude(self, probe: Callable[[], Audit], accepted_ids: Sequence[str], amqp_uri: str,
                 timeout: float = 60.0, dead_letters_expected: int = 0, **figures) -> dict:
        """Settle, record the figures, then assert nothing was lost or done twice, and
        that the dead-letter queue holds what was expected (nothing, unless poisoned)."""
        result = settle(probe, timeout)
        lost, orphans = result.lost(accepted_ids), result.orphans(accepted_ids)
        recorded = self.record(**figures, lost=len(lost), duplicates=result.duplicates,
                               twice_handled=result.twice_handled, stored=result.stored,
                               orphans=len(orphans), outbox_left=result.outbox_left,
                               untold_dispatched=len(result.untold_dispatched),
                               dead_lettered=queue_depth(amqp_uri))
        assert len(set(accepted_ids)) == len(accepted_ids), "intake gave one id twice"
        assert not lost, {i: result.pending[i] for i in lost[:10]}
        assert result.duplicates == 0, result.duplicate_detail[:10]
        assert result.twice_handled == 0
        assert not orphans, {i: result.pending[i] for i in orphans[:10]}
        assert not result.untold_dispatched, result.untold_dispatched[:10]
        assert result.outbox_left == 0
        if recorded["dead_lettered"] != dead_letters_expected:
            letters = [(m["queue"], m["event_type"], m["attempts"], m["reason"], m["issue_id"])
                       for m in dead_letters(amqp_uri)]
            raise AssertionError(f"{recorded['dead_lettered']} dead-lettered "
                                 f"({dead_letters_expected} expected): {letters}")
        return recorded


SERVICES = ("intake", "routing", "agency", "notify")


def start_apart(start: Callable[..., object], services: Sequence[str] = SERVICES,
                copies: int = 1) -> dict[str, list]:
    """Each service in its own ``whistle up`` process (``copies`` of each), launched at
    once and then waited for; ``start`` is the ``whistle_processes`` factory."""
    launched = [(name, start(name, wait=False)) for _ in range(copies) for name in services]
    by_service: dict[str, list] = {}
    for name, process in launched:
        by_service.setdefault(name, []).append(process.wait_ready())
    return by_service

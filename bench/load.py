"""Offering load: ``POST /issues`` over keep-alive HTTP/1.1 connections.

Two ways to offer it:

- **at a fixed rate** (open loop): submission ``i`` is due at ``t0 + i / rate``,
  whatever happened to the ones before, and a pool of submitters takes them in
  turn. If every submitter is busy a submission goes late; its lateness is
  recorded (``lag``), so a generator that could not keep up shows in the report
  instead of quietly offering less.
- **flat out** (closed loop): ``concurrency`` submitters each send the next
  submission as soon as their previous one was answered.

Each submitter keeps one connection per intake instance and spreads its
submissions over the instances in turn. Latencies are measured from the moment a
request is sent (wall clock, comparable with the services' own timestamps).
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.workload import encoded

HEADERS = {"Content-Type": "application/json", "Connection": "keep-alive"}
HTTP_TIMEOUT_S = 30.0


@dataclass
class Submission:
    n: int
    due: float | None  # fixed rate: when it should have been sent (epoch s)
    sent: float = 0.0
    answered: float = 0.0
    status: int | None = None
    issue_id: str | None = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 201 and self.issue_id is not None


class KeepAliveClient:
    """One HTTP/1.1 connection per base URL, reopened after a failure."""

    def __init__(self, headers: dict[str, str] | None = None):
        self.connections: dict[str, http.client.HTTPConnection] = {}
        self.headers = {**HEADERS, **(headers or {})}

    def post(self, url: str, path: str, body: bytes) -> tuple[int, bytes]:
        conn = self.connections.get(url)
        if conn is None:
            parts = urlsplit(url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT_S)
            self.connections[url] = conn
        try:
            conn.request("POST", path, body, self.headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            del self.connections[url]
            raise

    def close(self) -> None:
        for conn in self.connections.values():
            conn.close()
        self.connections.clear()


def offer(urls: list[str], run_id: str, first: int, count: int, rate: float | None,
          concurrency: int, on_accepted: Callable[[Submission], None],
          headers: dict[str, str] | None = None) -> list[Submission]:
    """Submit issues ``first .. first + count - 1``; at ``rate`` per second, or flat out.
    ``headers``: sent with each (the desk's ``Authorization``)."""
    submissions: list[Submission] = []
    numbers = itertools.count()
    start = time.time() + 0.05
    stopped = threading.Event()  # the benchmark was stopped: submit nothing more

    def submitter() -> None:
        client = KeepAliveClient(headers)
        try:
            while not stopped.is_set() and (i := next(numbers)) < count:
                due = start + i / rate if rate else None
                if due is not None and (wait := due - time.time()) > 0:
                    time.sleep(wait)
                    if stopped.is_set():
                        break
                submissions.append(submit(client, urls[i % len(urls)], run_id, first + i, due,
                                          on_accepted))
        finally:
            client.close()

    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(concurrency)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stopped.set()
    return sorted(submissions, key=lambda s: s.n)


def submit(client: KeepAliveClient, url: str, run_id: str, n: int, due: float | None,
           on_accepted: Callable[[Submission], None]) -> Submission:
    body = encoded(run_id, n)
    submission = Submission(n=n, due=due, sent=time.time())
    try:
        status, data = client.post(url, "/issues", body)
    except (OSError, http.client.HTTPException) as exc:
        submission.answered, submission.error = time.time(), type(exc).__name__
        return submission
    submission.answered, submission.status = time.time(), status
    if status == 201:
        submission.issue_id = json.loads(data)["issue_id"]
        on_accepted(submission)
    else:
        submission.error = f"HTTP {status}"
    return submission

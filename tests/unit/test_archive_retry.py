"""A batch's transaction that PostgreSQL broke off as a deadlock is written again, a few
times at most; other failures are not retried (shared.archive.Archive.store_rows)."""

import psycopg
import pytest

from shared.archive import WRITE_ATTEMPTS, Archive
from shared.errors import Unavailable


def archive_failing(monkeypatch, failures: list[Exception]) -> tuple[Archive, list[int]]:
    archive = Archive.__new__(Archive)  # no pool: the write itself is replaced
    calls = []

    def once(rows):
        calls.append(1)
        if failures:
            failure = failures.pop(0)
            raise Unavailable(f"archive unavailable: {type(failure).__name__}") from failure

    monkeypatch.setattr(archive, "_store_rows_once", once)
    return archive, calls


def test_a_deadlocked_batch_is_written_again(monkeypatch):
    archive, calls = archive_failing(monkeypatch, [psycopg.errors.DeadlockDetected()])
    archive.store_rows({})
    assert len(calls) == 2


def test_a_batch_that_keeps_deadlocking_is_given_up_after_the_limit(monkeypatch):
    failures = [psycopg.errors.DeadlockDetected() for _ in range(WRITE_ATTEMPTS)]
    archive, calls = archive_failing(monkeypatch, failures)
    with pytest.raises(Unavailable):
        archive.store_rows({})
    assert len(calls) == WRITE_ATTEMPTS


def test_a_database_out_of_reach_is_not_retried_here(monkeypatch):
    archive, calls = archive_failing(monkeypatch, [psycopg.OperationalError("gone")])
    with pytest.raises(Unavailable):
        archive.store_rows({})
    assert len(calls) == 1

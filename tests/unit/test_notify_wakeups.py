"""notify's ordering waits: a waiter wakes when its issue's message is recorded, not on a timer."""

from __future__ import annotations

import threading
import time

from services.notify.delivery import Wakeups


def waiter(wakeups: Wakeups, key: str, timeout: float, results: list) -> threading.Thread:
    def wait():
        started = time.monotonic()
        results.append((wakeups.wait(key, timeout), time.monotonic() - started))

    thread = threading.Thread(target=wait)
    thread.start()
    return thread


def settle(wakeups: Wakeups, waiting: int) -> None:
    """Until ``waiting`` waiters are registered (they register before they block)."""
    deadline = time.monotonic() + 5
    while wakeups.waiters() < waiting:
        assert time.monotonic() < deadline, "the waiters never registered"
        time.sleep(0.001)


def test_a_wake_releases_every_waiter_of_that_key_and_no_other():
    wakeups, woken, other = Wakeups(), [], []
    threads = [waiter(wakeups, "WH-1", 30, woken) for _ in range(3)]
    threads.append(waiter(wakeups, "WH-2", 0.3, other))
    settle(wakeups, 4)
    wakeups.wake("WH-1")
    for thread in threads:
        thread.join(10)
    assert [was_woken for was_woken, _ in woken] == [True, True, True]
    assert other[0][0] is False  # its own timeout ran out: WH-1's news was not for it
    assert wakeups.waiters() == 0  # nothing kept for keys nobody waits on


def test_a_wait_that_times_out_leaves_nothing_behind():
    wakeups = Wakeups()
    assert wakeups.wait("WH-3", 0.01) is False
    assert wakeups.waiters() == 0
    wakeups.wake("WH-3")  # nobody waiting: nothing to do, nothing kept
    assert wakeups.waiters() == 0


def test_a_wake_before_anyone_waits_is_not_remembered():
    """Waiters check Redis before they wait: a wake with no waiter has nothing to carry."""
    wakeups = Wakeups()
    wakeups.wake("WH-4")
    assert wakeups.wait("WH-4", 0.01) is False

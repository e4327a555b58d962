"""``shared.round_trips``: commands of green threads waiting at once share a round trip.

A fake client stands in for Redis: each round trip (a command alone, or a pipeline)
takes a moment of the hub's time, as a socket would, and is recorded, so the tests
see how many round trips carried which commands.
"""

import eventlet
import pytest
import redis

from shared.round_trips import MOST_IN_ONE_BATCH, RoundTrips, execute, share_round_trips


class FakeClient:
    """Answers ``ECHO x`` with ``x`` and ``FAIL`` with a reply error, one round trip
    at a time, each a short sleep; ``broken`` fails every round trip as a whole."""

    def __init__(self, delay_s: float = 0.005):
        self.delay_s = delay_s
        self.sent: list[list[tuple]] = []
        self.broken: Exception | None = None
        self.hang = False

    def _answer(self, args: tuple):
        if args[0] == "FAIL":
            return redis.ResponseError(f"bad {args[1]}")
        return args[1]

    def _travel(self, commands: list[tuple]) -> None:
        self.sent.append(commands)
        eventlet.sleep(3600 if self.hang else self.delay_s)
        if self.broken is not None:
            raise self.broken

    def execute_command(self, *args, **options):
        self._travel([args])
        reply = self._answer(args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def pipeline(self, transaction=True):
        assert transaction is False  # each command its own, as it would be alone
        client = self

        class Pipe:
            def __init__(self):
                self.commands = []

            def execute_command(self, *args, **options):
                self.commands.append(args)

            def execute(self, raise_on_error=True):
                assert raise_on_error is False
                client._travel(self.commands)
                return [client._answer(args) for args in self.commands]

        return Pipe()


def run_together(trips: RoundTrips, commands: list[tuple]) -> list:
    """Each command from a green thread of its own, all started at once; each one's
    reply, or the exception it raised."""

    threads = [eventlet.spawn(_caught, trips, args) for args in commands]
    return [thread.wait() for thread in threads]


def test_a_command_alone_goes_at_once_as_a_plain_command():
    client = FakeClient()
    trips = RoundTrips(client)

    assert trips.execute("ECHO", "a") == "a"
    assert trips.execute("ECHO", "b") == "b"
    assert client.sent == [[("ECHO", "a")], [("ECHO", "b")]]


def test_commands_waiting_at_once_share_a_round_trip_and_each_gets_its_own_reply():
    client = FakeClient()
    trips = RoundTrips(client)

    replies = run_together(trips, [("ECHO", str(i)) for i in range(20)])

    assert replies == [str(i) for i in range(20)]
    # The first goes alone; the 19 that came while it was on the wire go in one more.
    assert [len(batch) for batch in client.sent] == [1, 19]
    assert sorted(args for batch in client.sent for args in batch) == sorted(
        ("ECHO", str(i)) for i in range(20))


def test_a_gathering_is_sent_in_batches_of_a_bounded_size():
    client = FakeClient()
    trips = RoundTrips(client)

    replies = run_together(trips, [("ECHO", str(i)) for i in range(2 * MOST_IN_ONE_BATCH + 1)])

    assert replies == [str(i) for i in range(2 * MOST_IN_ONE_BATCH + 1)]
    assert max(len(batch) for batch in client.sent) == MOST_IN_ONE_BATCH
    assert sum(len(batch) for batch in client.sent) == 2 * MOST_IN_ONE_BATCH + 1


def test_one_caller_gathered_alone_sends_its_own_command():
    client = FakeClient()
    trips = RoundTrips(client)

    assert run_together(trips, [("ECHO", "a"), ("ECHO", "b")]) == ["a", "b"]
    assert client.sent == [[("ECHO", "a")], [("ECHO", "b")]]


def test_an_error_reply_is_raised_to_its_caller_alone():
    client = FakeClient()
    trips = RoundTrips(client)

    replies = run_together(trips, [("ECHO", "a"), ("ECHO", "b"), ("FAIL", "c"), ("ECHO", "d")])

    assert replies[0] == "a" and replies[1] == "b" and replies[3] == "d"
    assert isinstance(replies[2], redis.ResponseError) and str(replies[2]) == "bad c"
    assert [len(batch) for batch in client.sent] == [1, 3]  # it shared the trip


def test_a_round_trip_that_fails_as_a_whole_fails_every_caller_in_it_and_clears_the_way():
    client = FakeClient()
    trips = RoundTrips(client)
    client.broken = redis.ConnectionError("Redis went away")

    replies = run_together(trips, [("ECHO", str(i)) for i in range(5)])

    assert all(isinstance(reply, redis.ConnectionError) for reply in replies)
    client.broken = None  # Redis is back: nobody is left waiting, nothing is stuck
    assert run_together(trips, [("ECHO", "x"), ("ECHO", "y"), ("ECHO", "z")]) == ["x", "y", "z"]


def test_a_caller_killed_while_it_waits_holds_nobody_up():
    client = FakeClient(delay_s=0.05)
    trips = RoundTrips(client)
    first = eventlet.spawn(trips.execute, "ECHO", "first")
    eventlet.sleep(0)  # on the wire
    doomed = eventlet.spawn(trips.execute, "ECHO", "doomed")
    others = [eventlet.spawn(trips.execute, "ECHO", str(i)) for i in range(3)]
    eventlet.sleep(0)  # all gathered
    doomed.kill()

    assert first.wait() == "first"
    assert [thread.wait() for thread in others] == ["0", "1", "2"]
    assert ("ECHO", "doomed") not in [args for batch in client.sent for args in batch]
    assert trips.execute("ECHO", "after") == "after"


def test_a_batch_whose_sender_is_killed_fails_its_callers_as_an_outage():
    client = FakeClient(delay_s=0.01)
    trips = RoundTrips(client)
    first = eventlet.spawn(trips.execute, "ECHO", "first")
    eventlet.sleep(0)
    waiting = [eventlet.spawn(_caught, trips, ("ECHO", str(i))) for i in range(3)]
    eventlet.sleep(0)
    client.hang = True  # the gathering's round trip never comes back...
    eventlet.sleep(0.02)  # ...the first returned and is sending it
    first.kill()  # and its green thread is killed (the service stops)

    replies = [thread.wait() for thread in waiting]
    # The first's caller, killed, was owed nothing more; each waiting caller hears of
    # an outage (retried as one), instead of waiting for ever.
    assert all(isinstance(reply, redis.ConnectionError) for reply in replies)
    client.hang = False
    assert trips.execute("ECHO", "after") == "after"


def _caught(trips: RoundTrips, args: tuple):
    try:
        return trips.execute(*args)
    except Exception as exc:
        return exc


def test_execute_goes_straight_to_a_client_that_shares_nothing():
    client = FakeClient()
    assert execute(client, "ECHO", "a") == "a"
    with pytest.raises(redis.ResponseError):
        execute(client, "FAIL", "b")


def test_every_client_for_one_server_shares_the_processs_round_trips():
    made = []

    def make():
        made.append(FakeClient())
        return made[-1]

    server = f"redis://test-{id(made)}"
    first, second = FakeClient(), FakeClient()
    share_round_trips(first, server, make)
    share_round_trips(second, server, make)

    assert first.round_trips is second.round_trips and len(made) == 1
    assert execute(first, "ECHO", "a") == "a" and execute(second, "ECHO", "b") == "b"
    assert made[0].sent == [[("ECHO", "a")], [("ECHO", "b")]]

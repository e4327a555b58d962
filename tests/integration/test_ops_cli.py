"""``whistle status`` and ``whistle dlq`` against the real RabbitMQ (a throwaway vhost,
read through its management API) and Redis (a key prefix per test)."""

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from kombu import Connection, Producer, Queue

from shared import config as cfg
from shared import messaging as m
from shared.contracts import Channel, IssueStatus, Language, Location
from shared.issue import receive
from shared.store import IssueStore, Keys
from shared.topology import DEAD_LETTER_QUEUE, EVENTS_EXCHANGE, declare_topology
from tests.conftest import REDIS_URL, free_port
from tests.support.waiting import wait_until
from whistle.cli import cli

pytestmark = pytest.mark.integration

WHISTLE = str(Path(sys.executable).with_name("whistle"))
# The `whistle` script imports whichever checkout is first on the path: this one, not the
# one the virtualenv was installed from (a worktree's tests ran the main checkout's code).
SUBPROCESS = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
PHONE, OTHER_PHONE = "13812345678", "13987654321"
ROUTE_QUEUE, NOTIFY_QUEUE = "whistle.routing.route_issue", "whistle.notify.on_event"
EVENT = {
    "event_id": "ev-0301", "trace_id": "trace-0301", "causation_id": None,
    "occurred_at": "2026-11-21T08:00:00+00:00", "schema_version": 1,
    "issue_id": "WH-20261121-0301",
    "description": f"楼上1502漏水，滴到电线上了，急！电话{PHONE}",
    "location": {"community": "缤泰社区", "address": "丽德花园5号楼2单元801"},
    "channel": "hotline", "language": "zh", "has_contact": True,
}
GARBAGE = f"\xff\xfe{{not json, call {OTHER_PHONE}".encode("latin-1")


@pytest.fixture
def env(rabbit_config, redis_prefix, request, database_url):
    return {
        cfg.AMQP_URI: rabbit_config["AMQP_URI"],
        cfg.REDIS_URL: REDIS_URL,
        cfg.KEY_PREFIX: redis_prefix,
        cfg.RABBIT_API_URL: request.config.getoption("RABBIT_API_URI"),
        cfg.DATABASE_URL: database_url,  # a closed issue's contact is read from the archive
    }


@pytest.fixture
def amqp(env):
    with Connection(env[cfg.AMQP_URI]) as connection:
        declare_topology(connection)
        yield connection


def dead_letter(amqp, body: bytes, queue: str, reason: str, attempts: int, event_type=None):
    """Park a message in whistle.dead-letter as EventSubscriber.dead_letter does; without
    ``event_type``, as a message published with no type header (only the routing key)."""
    headers = {m.ATTEMPTS_HEADER: attempts, m.ERROR_HEADER: reason, m.QUEUE_HEADER: queue,
               m.ROUTING_KEY_HEADER: event_type or "issue.received",
               m.FAILED_AT_HEADER: datetime.now(UTC).isoformat(), "nameko.trace_id": "trace-0301"}
    if event_type:
        headers[m.EVENT_TYPE_HEADER] = event_type
    Producer(amqp.channel()).publish(body, exchange="", routing_key=DEAD_LETTER_QUEUE.name,
                                     headers=headers, content_type="application/json",
                                     content_encoding="utf-8", delivery_mode=2)


@pytest.fixture
def two_dead_letters(amqp):
    dead_letter(amqp, json.dumps(EVENT, ensure_ascii=False).encode(), ROUTE_QUEUE,
                "NotFound: no issue WH-20261121-0301", 3, "issue.received")
    dead_letter(amqp, GARBAGE, NOTIFY_QUEUE, "undecodable message: ContentDisallowed", 1)
    # Published without confirms: the CLI, on its own connection, could count the queue
    # before the broker has queued the second one (seen once in a full run).
    assert wait_until(lambda: depth(amqp, DEAD_LETTER_QUEUE.name) == 2)


def whistle(env, *args):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def depth(amqp, name):
    """Exact, unlike the management API's statistics (refreshed every few seconds)."""
    channel = amqp.channel()
    try:
        return channel.queue_declare(name, passive=True).message_count
    finally:
        channel.close()


def take(amqp, name):
    message = Queue(name).bind(amqp.channel()).get(no_ack=True)
    assert message is not None, f"nothing in {name}"
    return message


def status_until(env, probe, timeout=20.0):
    """``status --json`` until ``probe`` holds: the API's statistics lag the queues."""
    deadline = time.monotonic() + timeout
    while True:
        result = whistle(env, "status", "--json")
        report = json.loads(result.stdout)
        if probe(report) or time.monotonic() > deadline:
            return result, report
        time.sleep(0.5)


def no_personal_data(text):
    assert PHONE not in text and OTHER_PHONE not in text
    assert "Traceback" not in text


def test_dlq_list_shows_why_and_removes_nothing(env, amqp, two_dead_letters):
    result = whistle(env, "dlq", "list", "--json")
    assert result.exit_code == 0, result.output
    no_personal_data(result.output)
    listing = json.loads(result.stdout)
    assert listing["shown"] == 2 and listing["in_queue"] == 2
    event, garbage = listing["messages"]
    assert event["position"] == 1 and garbage["position"] == 2
    assert event["queue"] == ROUTE_QUEUE and event["event_type"] == "issue.received"
    assert event["attempts"] == 3 and event["reason"] == "NotFound: no issue WH-20261121-0301"
    assert event["issue_id"] == "WH-20261121-0301" and event["body_format"] == "json"
    assert event["failed_at"]
    # No free text: the residents' words, where they live, any name in them, by length
    assert '"description":"(text, ' in event["preview"] and "丽德" not in event["preview"]
    assert '"channel":"hotline"' in event["preview"]
    assert "5678" not in event["preview"] and "801" not in event["preview"]
    assert garbage["queue"] == NOTIFY_QUEUE and garbage["attempts"] == 1
    assert garbage["reason"].startswith("undecodable message")
    assert garbage["body_format"] == "undecodable" and garbage["issue_id"] is None
    assert "not shown" in garbage["preview"] and garbage["bytes"] == len(GARBAGE)

    text = whistle(env, "dlq", "list")
    assert text.exit_code == 0
    no_personal_data(text.output)
    assert "#1" in text.output and "#2" in text.output and "NotFound: no issue" in text.output

    # looked at twice, still both there, in the same order
    assert depth(amqp, DEAD_LETTER_QUEUE.name) == 2
    _, report = status_until(env, lambda r: r["rabbitmq"]["dead_letter"]["messages"] == 2)
    assert report["rabbitmq"]["dead_letter"]["messages"] == 2
    again = json.loads(whistle(env, "dlq", "list", "--json", "--limit", "1").stdout)
    assert again["in_queue"] == 2 and again["shown"] == 1
    assert again["messages"][0]["issue_id"] == "WH-20261121-0301"


def test_dlq_replay_index_sends_exactly_that_one_back_with_fresh_attempts(
        env, amqp, two_dead_letters):
    result = whistle(env, "dlq", "replay", "--index", "1")
    assert result.exit_code == 0, result.output
    no_personal_data(result.output)
    assert "Replayed 1 of 2" in result.output and f"→ {ROUTE_QUEUE}" in result.output

    assert depth(amqp, DEAD_LETTER_QUEUE.name) == 1
    assert depth(amqp, ROUTE_QUEUE) == 1 and depth(amqp, NOTIFY_QUEUE) == 0
    replayed = take(amqp, ROUTE_QUEUE)
    assert json.loads(replayed.body) == EVENT
    assert m.ATTEMPTS_HEADER not in replayed.headers and m.ERROR_HEADER not in replayed.headers
    assert replayed.headers[m.EVENT_TYPE_HEADER] == "issue.received"
    assert replayed.properties["delivery_mode"] == 2
    # the one left is the undecodable one, now first
    left = json.loads(whistle(env, "dlq", "list", "--json").stdout)
    assert left["in_queue"] == 1  # exact at once, unlike the API's queue statistics
    assert [(m["position"], m["body_format"]) for m in left["messages"]] == [(1, "undecodable")]


def test_dlq_replay_of_a_position_not_there_changes_nothing(env, amqp, two_dead_letters):
    result = whistle(env, "dlq", "replay", "--index", "2", "--index", "3")
    assert result.exit_code == 1
    assert "no dead letter at position 3 (the queue holds 2)" in result.output
    assert depth(amqp, DEAD_LETTER_QUEUE.name) == 2 and depth(amqp, ROUTE_QUEUE) == 0
    assert whistle(env, "dlq", "replay").exit_code == 2  # neither --all nor --index


def test_dlq_replay_all_sends_undecodable_bodies_back_as_raw_bytes(env, amqp, two_dead_letters):
    result = whistle(env, "dlq", "replay", "--all", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert [m["to"] for m in outcome["replayed"]] == [ROUTE_QUEUE, NOTIFY_QUEUE]
    assert outcome["left_in_place"] == 0 and outcome["failed"] == []
    assert depth(amqp, DEAD_LETTER_QUEUE.name) == 0
    raw = take(amqp, NOTIFY_QUEUE)
    assert raw.body == GARBAGE and raw.content_type == "application/json"


def test_dlq_drop_saves_a_poison_letter_whole_and_leaves_the_others(
        env, amqp, two_dead_letters, tmp_path):
    # The undecodable one can never succeed: a replay would only send it round again.
    saved = tmp_path / "set-aside.jsonl"
    result = whistle(env, "dlq", "drop", "--index", "2", "--save", str(saved), "--json")
    assert result.exit_code == 0, result.output
    no_personal_data(result.output)
    outcome = json.loads(result.stdout)
    assert [m["position"] for m in outcome["dropped"]] == [2]
    assert outcome["dropped"][0]["reason"].startswith("undecodable message")
    assert outcome["left_in_place"] == 1
    # Kept whole, for the owner only; the other dead letter is still first in the queue.
    assert saved.stat().st_mode & 0o777 == 0o600
    (line,) = saved.read_text().splitlines()
    kept = json.loads(line)
    assert base64.b64decode(kept["body_base64"]) == GARBAGE
    assert kept["headers"][m.QUEUE_HEADER] == NOTIFY_QUEUE and kept["set_aside_at"]
    assert depth(amqp, DEAD_LETTER_QUEUE.name) == 1 and depth(amqp, NOTIFY_QUEUE) == 0
    left = json.loads(whistle(env, "dlq", "list", "--json").stdout)
    assert [x["issue_id"] for x in left["messages"]] == ["WH-20261121-0301"]
    # A second drop appends; --discard keeps nothing anywhere.
    text = whistle(env, "dlq", "drop", "--index", "1", "--discard")
    assert text.exit_code == 0, text.output
    assert "Took 1 of 1 dead letter(s) out, discarded." in text.output
    no_personal_data(text.output)
    assert depth(amqp, DEAD_LETTER_QUEUE.name) == 0 and len(saved.read_text().splitlines()) == 1


def test_dlq_drop_must_be_told_where_they_go_and_changes_nothing_when_it_cannot_save(
        env, amqp, two_dead_letters, tmp_path):
    assert whistle(env, "dlq", "drop", "--index", "1").exit_code == 2
    both = whistle(env, "dlq", "drop", "--index", "1", "--discard", "--save", "x.jsonl")
    assert both.exit_code == 2
    unwritable = whistle(env, "dlq", "drop", "--index", "1",
                         "--save", str(tmp_path / "no-such-dir" / "kept.jsonl"))
    assert unwritable.exit_code == 1 and "nothing was taken out" in unwritable.output
    beyond = whistle(env, "dlq", "drop", "--index", "3", "--discard")
    assert beyond.exit_code == 1 and "no dead letter at position 3" in beyond.output
    assert depth(amqp, DEAD_LETTER_QUEUE.name) == 2


def test_status_reports_queues_dead_letters_redis_and_issue_counts(
        env, amqp, two_dead_letters, redis_client, redis_prefix):
    keys = Keys(redis_prefix)
    redis_client.sadd(keys.by_status("received"), "WH-20261121-0001", "WH-20261121-0002")
    redis_client.sadd(keys.by_status("dispatched"), "WH-20261121-0003")
    redis_client.hset(keys.outbox("routing"), "ev-1", "{}")
    redis_client.zadd(keys.deadlines, {"WH-20261121-0003|power|acknowledge": time.time() + 60})
    redis_client.lpush(keys.desk_outbox, "{}", "{}", "{}")
    Producer(amqp.channel()).publish(EVENT, exchange=EVENTS_EXCHANGE,
                                     routing_key="issue.received", delivery_mode=2)

    def settled(report):
        queues = {q["queue"]: q for q in report["rabbitmq"]["services"]["routing"]["queues"]}
        return (report["rabbitmq"]["dead_letter"]["messages"] == 2
                and queues[ROUTE_QUEUE]["ready"] == 1)

    result, report = status_until(env, settled)
    assert result.exit_code == 0, result.output
    assert report["ok"] and settled(report)
    services = report["rabbitmq"]["services"]
    assert list(services) == ["intake", "routing", "agency", "notify"]
    notify = {q["queue"]: q for q in services["notify"]["queues"]}
    assert notify[NOTIFY_QUEUE]["ready"] == 1 and notify[NOTIFY_QUEUE]["consumers"] == 0
    assert notify[NOTIFY_QUEUE]["retrying"] == 0
    assert services["routing"]["rpc"] == {"queue": "rpc-routing", "exists": False,
                                          "consumers": None, "ready": None, "unacked": None}
    assert services["routing"]["instances"] == 0
    redis = report["redis"]
    assert redis["ok"] and redis["used_memory_human"] and redis["uptime_s"] > 0
    assert redis["issues"] == {"received": 2, "needs_triage": 0, "merged": 0, "dispatched": 1,
                               "in_progress": 0, "resolved": 0, "closed": 0}
    assert redis["outbox"] == {"intake": 0, "routing": 1, "agency": 0, "notify": 0}
    assert redis["deadlines"] == 1
    assert redis["to_relay"] == 3

    text = whistle(env, "status")
    assert text.exit_code == 0
    assert "dead letters  2 in whistle.dead-letter" in text.output
    assert "received 2" in text.output and "deadlines  1 watched" in text.output
    assert "desk       3 messages to relay" in text.output


def run_status(env, *args):
    """As an operator runs it: its own process, nothing patched."""
    return subprocess.run([WHISTLE, "status", *args], capture_output=True, text=True,
                          env={**SUBPROCESS, **env}, timeout=60)


def test_status_with_redis_down_says_so_and_still_shows_rabbitmq(env, amqp):
    port = free_port()
    env[cfg.REDIS_URL] = f"redis://127.0.0.1:{port}/0"
    result = run_status(env)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert f"Redis unreachable at 127.0.0.1:{port}/0 (Connection refused)" in result.stdout
    assert ROUTE_QUEUE in result.stdout and "dead letters  0" in result.stdout

    report = json.loads(run_status(env, "--json").stdout)
    assert not report["ok"] and not report["redis"]["ok"] and report["rabbitmq"]["ok"]


def test_status_with_management_api_down_says_so_and_still_shows_redis(env, amqp):
    port = free_port()
    env[cfg.RABBIT_API_URL] = f"http://guest:secret-pw@127.0.0.1:{port}"
    result = run_status(env)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr and "secret-pw" not in result.stdout
    assert (f"RabbitMQ management API unreachable at 127.0.0.1:{port} (Connection refused)"
            in result.stdout)
    assert "Redis" in result.stdout and "received 0" in result.stdout

    listing = whistle(env, "dlq", "list")
    assert listing.exit_code == 1
    assert f"RabbitMQ management API unreachable at 127.0.0.1:{port}" in listing.output


@pytest.mark.parametrize("args", [("tail",), ("queues", "migrate", "--to", "quorum")])
def test_a_broker_that_refuses_the_vhost_or_the_login_is_one_line_with_its_reason(args):
    """The real broker answers, and refuses: the vhost is not there (nothing is created),
    or the account is unknown. py-amqp raises these itself, not as a connection error."""
    runner = CliRunner()
    for uri, reason in [
        ("amqp://guest:guest@127.0.0.1:5672/whistle-no-such-vhost", "NOT_ALLOWED - vhost "
                                                                   "whistle-no-such-vhost not found"),
        ("amqp://nobody:nothing@127.0.0.1:5672/", "ACCESS_REFUSED - Login was refused"),
    ]:
        result = runner.invoke(cli, list(args), env={"AMQP_URI": uri})
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)  # not an exception let out
        [line] = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
        assert line.startswith(f"Error: cannot reach RabbitMQ at 127.0.0.1:5672 ({reason}")


@contextlib.contextmanager
def tailing(env, tmp_path, args):
    """``whistle <args>`` following, with its output and errors in files: yields the
    process and the two paths; at the end it must still run and stop cleanly on Ctrl-C."""
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        tail = subprocess.Popen([WHISTLE, *args], stdout=stdout, stderr=stderr,
                                env={**SUBPROCESS, **env})
    try:
        assert wait_until(lambda: "following" in err.read_text(), timeout=20)
        yield tail, out, err
        assert tail.poll() is None, err.read_text()
        no_personal_data(out.read_text() + err.read_text())
        tail.send_signal(signal.SIGINT)
        assert tail.wait(10) == 0
    finally:
        if tail.poll() is None:
            tail.kill()


def test_tail_shows_an_undecodable_message_as_a_line_and_goes_on(env, amqp, tmp_path):
    """The poison a service dead-letters is what an operator tails for: a body that is not
    JSON is one line naming it (never its text), and the tail keeps following."""
    with tailing(env, tmp_path, ("tail", "--json")) as (tail, out, err):
        producer = Producer(amqp.channel())
        producer.publish(GARBAGE, exchange=EVENTS_EXCHANGE, routing_key="assignment.withdrawn",
                         content_type="application/json", content_encoding="binary")
        producer.publish(EVENT, exchange=EVENTS_EXCHANGE, routing_key="issue.received")

        def lines():
            return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]

        seen = wait_until(lambda: len(lines()) >= 2 and lines(), timeout=20)
        assert tail.poll() is None, err.read_text()
        poison, event = seen
        assert poison["type"] == "assignment.withdrawn" and poison["kind"] == "event"
        assert poison["detail"] == "undecodable message: DecodeError"
        assert event["type"] == "issue.received" and event["issue"] == EVENT["issue_id"]
        assert "detail" not in event


@pytest.mark.parametrize("args", [("tail",), ("tail", "--json")])
def test_tail_shows_a_json_message_that_is_no_event_as_a_line_and_goes_on(env, amqp, tmp_path,
                                                                        args):
    """Valid JSON that is not an event (no ``occurred_at``; a resident's name and number
    where the issue id goes): the tail died on it with a KeyError traceback."""
    with tailing(env, tmp_path, args) as (tail, out, err):
        producer = Producer(amqp.channel())
        producer.publish({"issue_id": EVENT["issue_id"], "unexpected": True},
                         exchange=EVENTS_EXCHANGE, routing_key="issue.received")
        producer.publish({"issue_id": f"欧阳娜娜 {OTHER_PHONE}"}, exchange=EVENTS_EXCHANGE,
                         routing_key="issue.received")
        producer.publish(EVENT, exchange=EVENTS_EXCHANGE, routing_key="issue.received")
        assert wait_until(lambda: out.read_text().count("issue.received") >= 3, timeout=20), \
            err.read_text()
        assert tail.poll() is None, err.read_text()
        assert "Traceback" not in err.read_text()
        assert "欧阳" not in out.read_text() + err.read_text()


@pytest.mark.parametrize("args", [("tail",), ("tail", "--json")])
def test_tail_into_a_pipe_its_reader_closed_stops_quietly(env, amqp, args):
    """``whistle tail | head -3``: once head has its lines, tail must stop. The closed
    pipe used to be taken for a lost broker: "cannot reach RabbitMQ" with the header line,
    and, once following, a reconnection to RabbitMQ after every event, for ever."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        tail = subprocess.Popen([WHISTLE, *args], stdout=write_end, stderr=subprocess.PIPE,
                                env={**SUBPROCESS, **env})
    finally:
        os.close(write_end)
    try:
        if "--json" in args:  # no header: the first event's line meets the closed pipe
            producer = Producer(amqp.channel())
            deadline = time.monotonic() + 20
            while tail.poll() is None and time.monotonic() < deadline:
                producer.publish(EVENT, exchange=EVENTS_EXCHANGE, routing_key="issue.received")
                time.sleep(0.5)
        assert tail.wait(20) == 1
        stderr = tail.stderr.read().decode()
        assert "RabbitMQ" not in stderr and "connection lost" not in stderr, stderr
        assert "Traceback" not in stderr, stderr
    finally:
        if tail.poll() is None:
            tail.kill()


def test_dlq_masks_the_residents_name_in_their_own_words(env, amqp, redis_client):
    # "我是孙建国" in a description was shown in clear: the event carries no contact, so
    # the name is read from Redis, as Open311's public reads mask it; Redis out of
    # reach, the body is not shown at all
    redis_client.hset(Keys(env[cfg.KEY_PREFIX]).contact(EVENT["issue_id"]),
                      mapping={"name": "孙建国", "phone": PHONE})
    said = {**EVENT, "description": f"楼上漏水，我是孙建国，电话{PHONE}"}
    dead_letter(amqp, json.dumps(said, ensure_ascii=False).encode(), ROUTE_QUEUE,
                "NotFound: no issue WH-20261121-0301 (孙建国)", 3, "issue.received")
    listed = whistle(env, "dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    letter = json.loads(listed.stdout)["messages"][0]
    assert '"description":"(text, ' in letter["preview"] and "(孙**)" in letter["reason"]
    assert "孙建国" not in listed.output
    blind = whistle({**env, cfg.REDIS_URL: "redis://127.0.0.1:1/0"}, "dlq", "list")
    assert blind.exit_code == 0 and "孙建国" not in blind.output
    assert "not shown: the residents' names could not be read" in blind.output
    dropped = whistle(env, "dlq", "drop", "--index", "1", "--discard", "--json")
    assert dropped.exit_code == 0 and "孙建国" not in dropped.output
    assert "(孙**)" in dropped.output


def test_dlq_masks_every_resident_of_the_merged_group(env, amqp, redis_client):
    # Only the letter's own reporter was masked: a report folded into an open issue, or
    # that issue, named its neighbours (an agency's note copied into the text, say) in clear
    store = IssueStore(redis_client, env[cfg.KEY_PREFIX])
    now, place = datetime.now(UTC), Location(community="缤泰社区", address="丽德花园5号楼")
    primary, joined, other = "WH-20261121-0300", EVENT["issue_id"], "WH-20261121-0302"
    residents = {primary: "王秀英", joined: "孙建国", other: "Margaret Okafor"}
    for issue_id, name in residents.items():
        record = receive(issue_id, f"trace-{issue_id}", "楼上漏水", None, place,
                         Channel.hotline, Language.zh, now)
        if issue_id == primary:
            record.reporters = [joined, other]
        else:
            record.status, record.merged_into = IssueStatus.merged, primary
        store.create(record, {"name": name, "phone": PHONE}, "test", {})
    said = "楼上漏水，王秀英先报的，Margaret Okafor 和 Okafor 家也漏，孙建国"
    for issue_id in (joined, primary):
        dead_letter(amqp, json.dumps({**EVENT, "issue_id": issue_id, "description": said},
                                     ensure_ascii=False).encode(), ROUTE_QUEUE,
                    f"NotFound: no issue {issue_id} (王秀英)", 3, "issue.received")
    listed = whistle(env, "dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    for letter in json.loads(listed.stdout)["messages"]:
        assert "(王**)" in letter["reason"]
    for name in (*residents.values(), "Okafor"):
        assert name not in listed.output
    dropped = whistle(env, "dlq", "drop", "--index", "1", "--index", "2", "--discard")
    assert dropped.exit_code == 0 and "王秀英" not in dropped.output


def test_dlq_masks_the_residents_name_in_a_body_too_long_to_be_read_whole(env, amqp,
                                                                          redis_client):
    # The management API hands over the first 64 KiB of a body: cut JSON does not parse,
    # so its issue id was not read, nor its resident's name, and "我是孙建国" was shown
    redis_client.hset(Keys(env[cfg.KEY_PREFIX]).contact(EVENT["issue_id"]),
                      mapping={"name": "孙建国", "phone": PHONE})
    long = {**EVENT, "description": f"楼上漏水，我是孙建国，电话{PHONE}",
            "padding": "x" * 70_000}
    dead_letter(amqp, json.dumps(long, ensure_ascii=False).encode(), ROUTE_QUEUE,
                "invalid IssueReceived: padding", 1, "issue.received")
    listed = whistle(env, "dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [letter] = json.loads(listed.stdout)["messages"]
    assert letter["body_format"] == "truncated"
    assert "孙建国" not in listed.output and "not shown" in letter["preview"], letter["preview"]
    blind = whistle({**env, cfg.REDIS_URL: "redis://127.0.0.1:1/0"}, "dlq", "list")
    assert blind.exit_code == 0 and "孙建国" not in blind.output


def test_dlq_masks_the_resident_of_an_archived_issue(env, amqp, redis_client,
                                                      fresh_database_url):
    # A dead letter can outlive its issue's days in Redis: the contact is then in the
    # archive, and was not read, so the name was shown in clear.
    from services.intake.archiver import Archiver
    from shared.archive import Archive

    env = {**env, cfg.DATABASE_URL: fresh_database_url}
    store = IssueStore(redis_client, env[cfg.KEY_PREFIX])
    issue_id = EVENT["issue_id"]
    record = receive(issue_id, "trace-archived", "楼上漏水", None,
                     Location(community="缤泰社区", address="丽德花园5号楼"), Channel.hotline,
                     Language.zh, datetime.now(UTC))
    record.status = IssueStatus.closed
    store.create(record, {"name": "欧阳秀兰", "phone": PHONE}, "test", {})
    redis_client.zadd(Keys(env[cfg.KEY_PREFIX]).closed, {issue_id: 0})
    archive = Archive(fresh_database_url)
    try:
        archived = IssueStore(redis_client, env[cfg.KEY_PREFIX], archive)
        assert Archiver(archived, archive, retention_s=0).run_until_idle(now_ts=9e9).archived \
            == [issue_id]
    finally:
        archive.close()
    assert not redis_client.exists(Keys(env[cfg.KEY_PREFIX]).contact(issue_id))
    dead_letter(amqp, json.dumps({**EVENT, "description": "欧阳秀兰家楼上漏水"},
                                 ensure_ascii=False).encode(), ROUTE_QUEUE,
                "NotFound: 欧阳秀兰", 3, "issue.received")
    listed = whistle(env, "dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [letter] = json.loads(listed.stdout)["messages"]
    assert "欧阳秀兰" not in listed.output
    assert letter["reason"] == "NotFound: 欧***", letter["reason"]


@pytest.mark.parametrize("args", [("dlq", "replay", "--all"),
                                  ("dlq", "drop", "--index", "1", "--discard")])
def test_dlq_in_a_vhost_without_the_dead_letter_queue_says_the_broker_refused(env, args):
    """No service has run in the vhost yet: the broker answered, NOT_FOUND, and replay and
    drop said "RabbitMQ unreachable", as if it were down."""
    result = whistle(env, *args)
    assert result.exit_code == 1, result.output
    assert "unreachable" not in result.output, result.output
    assert "refused: NOT_FOUND - no queue 'whistle.dead-letter'" \
        in result.output


def test_open311_key_list_says_when_no_client_holds_a_key(env):
    """It printed nothing at all: not told from a command that did not run, or from the
    wrong WHISTLE_KEY_PREFIX. Said on stderr; stdout (and --json's []) stays for scripts."""
    result = CliRunner().invoke(cli, ["open311", "key", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"no Open311 client holds a key (Redis prefix {env[cfg.KEY_PREFIX]})" in result.stderr
    assert whistle(env, "open311", "key", "list", "--json").stdout.strip() == "[]"

"""What one unit of work costs, in instructions: figures that do not drift with the machine.

``python -m bench.costs`` runs each unit under ``valgrind --tool=callgrind``, which
counts the instructions a process executes (user space only: the kernel's share of a
``send`` is not in them). Each unit runs twice, ``n`` and ``n + step`` times, in a
fresh process, and the figure is the difference divided by ``step``, so start-up and
imports cancel out. The same code, inputs and libraries give the same count to
within a per cent or so, whatever else the machine is doing; seconds on a shared VM
drift by a quarter from run to run (``docs/benchmarks.md``). Counts are not time: an
instruction that misses the cache costs more than one that does not. They are for
comparing code, one version against the next.

Units:

- ``log-line``: one worker's log line, through the configured pipeline, to /dev/null;
- ``redis-command``: one ``HSETNX`` through the store's client;
- ``request-door``: what authorization adds to one submission (``shared.guard``): the
  desk's token checked (one signature), revocation and the rate limit in one script
  call, and the audit entry written when the worker ends;
- ``issue-write-path``: one issue created, routed by the rules and applied (routing's
  transition, its outbox entries and the indexes), against the real Redis;
- ``delivery-noop``: agency consuming one ``issue.dispatched`` whose handler does
  nothing and logs nothing: nameko's, kombu's and Whistle's own cost of taking one
  message off the broker and acking it;
- ``delivery-agency``: the same with agency's real handler (one script call noting each
  of the dispatch's assignments, two on average in the mix, and one log line);
- ``submission``: one ``POST /issues`` with a desk token through intake's real HTTP
  entrypoint, in process (a nameko ``ServiceRunner``, real Redis and RabbitMQ in a
  throwaway vhost), answered 201 and its ``issue.received`` published: the door, the
  parsing, the id, the create script, the answer, the publishing thread, and the
  ``http.client`` client on one keep-alive connection (a small, constant share);
- ``notify-pair``: notify telling the resident of one issue of the mix, as intake and
  routing left it in the real Redis: its worker for ``issue.received`` and for
  ``issue.dispatched`` (each body validated into its event, a worker's logger bound,
  ``on_event``: the record, contact and history read, the message rendered, delivered
  through the desk and noted in one script, one log line), without the broker;
- ``routing-classify``: the bundled learned router reading one report of the training
  split (``services/routing/learned.py``). Its line also gives CPU milliseconds, the
  budget issue 16 sets (at most 3 ms a report on average): each stage timed alone on
  the training texts (the TF-IDF model on every report; the embedding stage, forced,
  on every report) and weighed by the share of reports the cascade sends to the
  embeddings out of fold (the model's manifest): a model classifying the texts it
  was trained on is surer of them than of new ones, so timing the cascade as it
  runs on them would undercount the embedding stage.
- ``route-one``: routing's handler (``RoutingService.route_issue``) for one
  ``issue.received`` of the benchmark's mix, from the body as the subscriber hands it
  over (validated into the event) to the log line: the bundled classifier and the
  rules, the duplicate buckets' claim, the apply with its outbox and indexes, the
  staging, against the real Redis and without the broker (the staged entries are
  handed to nothing). Intake's part, creating the issues, is done beforehand in
  another process, outside the count.

Under eventlet, ``py-spy``'s samples land on whichever frame a green thread was last
suspended in, and a wall-clock profiler counts the time other processes ran while a
``send`` woke them: neither says what a line of code costs. This does.

The two delivery units use the local RabbitMQ (a throwaway vhost through the
management API, as ``python -m bench`` does) and Redis. valgrind must be installed
(Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import whistle  # noqa: F401, I001 - eventlet's monkey-patching first, as in every service process

# isort: split

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
UNITS = ("log-line", "redis-command", "request-door", "issue-write-path", "delivery-noop",
         "delivery-agency", "routing-classify", "route-one", "submission",
         "notify-pair")
# (n, step): the work is run n and n + step times; the figure is the difference / step.
# The delivery units take 1,000 more messages: the consumer's timers do work by the
# second of wall time, which a step of 200 spread into 351k-510k a message on the same
# code; with 1,000, 454k-492k. A run takes about as long (under valgrind, start-up is
# most of it).
SIZES = {"log-line": (100, 1000), "redis-command": (100, 1000), "request-door": (100, 1000),
         "issue-write-path": (20, 200), "delivery-noop": (40, 1000),
         "delivery-agency": (40, 1000), "routing-classify": (50, 200), "route-one": (20, 200),
         "submission": (20, 200), "notify-pair": (20, 200)}
# log-line's workers: as many as its step, so that the difference is one line of each.
LOG_LINE_WORKERS = SIZES["log-line"][1]
DELIVERY_QUEUE = "whistle.agency.record_assignment"
COLLECTED = re.compile(r"Collected : ([\d,]+)")


# ------------------------------------------------------------------ the units


def _log_line(n: int) -> None:
    from shared.logging import configure_logging, get_logger

    configure_logging("json")
    # A worker's line carries its nameko call id and its issue's trace id, fresh random
    # uuids, and about a quarter of them hold a run of digits and hyphens that sends the
    # line down the scrubber's slow road. One logger with one pair of ids made the figure
    # depend on the pair drawn (66k or 150k); here each of a step's lines has its own
    # worker's logger, bound beforehand (both runs bind the same number, so the binding
    # cancels out), with ids drawn from a seeded generator: the same 1,000 pairs every run
    # (250 of them on the slow road), in the same shapes as nameko's call id and
    # ``shared.contracts.new_id``.
    draw = random.Random(20261206).getrandbits
    logs = [get_logger("whistle.agency").bind(
        service="agency", entrypoint="record_assignment",
        call_id=f"agency.record_assignment.{uuid.UUID(int=draw(128), version=4)}",
        trace_id=uuid.UUID(int=draw(128), version=4).hex) for _ in range(LOG_LINE_WORKERS)]
    for i in range(n):
        logs[i % LOG_LINE_WORKERS].info("assignment_delivered", issue_id="WH-20261121-0001",
                                        agency="gas", duplicate=False)


def _redis_command(n: int, key: str | None = None) -> None:
    from shared.store import connect

    client, key = connect(REDIS_URL), key or f"costs-{uuid.uuid4().hex}"
    try:
        for _ in range(n):
            client.hsetnx(key, "field", "value")
    finally:
        client.delete(key)


def _request_door(n: int) -> None:
    from types import SimpleNamespace

    from bench.infra import delete_prefix
    from shared import config as cfg
    from shared.auth import DESK, issue_token
    from shared.guard import SUBMIT, Guard

    prefix = f"costs-{uuid.uuid4().hex[:8]}"
    config = cfg.config_from_env({}, **{cfg.REDIS_URL: REDIS_URL, cfg.KEY_PREFIX: prefix,
                                         cfg.RATE_SUBMIT: 10_000_000})
    guard = Guard()
    guard.container = SimpleNamespace(config=config)  # what setup() reads
    guard.setup()
    request = SimpleNamespace(headers={"Authorization": "Bearer " + issue_token(
        DESK, "costs", config[cfg.SECRET])}, args={}, remote_addr="127.0.0.1")
    class Worker:  # a worker context: hashable, like nameko's
        pass

    try:
        for i in range(n):
            worker = Worker()
            access = guard.get_dependency(worker)
            access.check(request, action="issue.submit", bucket=SUBMIT, anonymous=True)
            access.on_issue(f"WH-20261121-{i:04d}")
            guard.worker_result(worker, SimpleNamespace(status_code=201))
    finally:
        guard.stop()
        delete_prefix(REDIS_URL, prefix)


def _issue_write_path(n: int, prefix: str | None = None) -> None:
    from bench.infra import delete_prefix
    from services.routing.rules import load_rules
    from shared.store import IssueStore, connect

    prefix = prefix or f"costs-{uuid.uuid4().hex[:8]}"
    store, rules = IssueStore(connect(REDIS_URL), prefix), load_rules(None)
    try:
        for i in range(n):
            _create_and_route(store, rules, i)
    finally:
        delete_prefix(REDIS_URL, prefix)


def _create_and_route(store, rules, i: int, journal_as: str | None = None) -> list:
    """Issue ``i`` of the benchmark's mix, created and routed; the events announcing it.

    ``journal_as``: put both services' events in that service's outbox, and so in the
    issue's journal, as a running Whistle does (a name no publisher drains, so they stay
    unpublished); without it only routing's are, and the issue has no ``issue.received``."""
    from bench.workload import payload
    from services.intake.domain import accept_issue
    from services.routing.domain import route_issue
    from services.routing.service import dispatch_events, plan_assignments
    from shared.contracts import SubmitIssue
    from shared.issue import Routing, dispatch
    from shared.messaging import envelope

    now = datetime.now(UTC)
    submission = SubmitIssue.model_validate({**payload("costs", i),
                                             "contact": {"phone": "13812345678"}})
    record, contact, received = accept_issue(submission, f"WH-20261121-{i + 1:04d}",
                                             uuid.uuid4().hex, now)
    store.create(record, contact, journal_as or "intake", {} if journal_as is None else {
        received.event_id: json.dumps(envelope(received, "intake", []), ensure_ascii=False)})
    decision = route_issue(record.description, record.category, rules, now)
    events = []

    def routed(current):
        new = dispatch(current, decision.category, decision.priority,
                       Routing(rule=decision.rule, keywords=list(decision.keywords),
                               category_source=decision.category_source),
                       plan_assignments(decision, rules, now), now)
        events[:] = dispatch_events(new, received, now)
        return new, {e.event_id: json.dumps(envelope(e, "routing", []), ensure_ascii=False)
                     for e in events}

    store.apply(record.issue_id, received.event_id, routed, journal_as or "routing")
    return [received, *events]


def _consume(amqp_uri: str, prefix: str, noop: bool) -> None:
    """Run agency until its queue has been empty for a while (the process under valgrind)."""
    import eventlet
    from kombu import Connection
    from nameko.runners import ServiceRunner

    from bench.cluster import free_port
    from services.agency.service import AgencyService
    from shared import config as cfg
    from shared.logging import configure_logging

    config = cfg.config_from_env({}, **{cfg.AMQP_URI: amqp_uri, cfg.REDIS_URL: REDIS_URL,
                                         cfg.KEY_PREFIX: prefix,
                                         cfg.WEB_SERVER_ADDRESS: f"127.0.0.1:{free_port()}"})
    configure_logging("json")
    if noop:
        def record_assignment(self, event):
            pass

        # The same function object keeps its nameko entrypoint; only its body goes.
        AgencyService.record_assignment.__code__ = record_assignment.__code__
    runner = ServiceRunner(config)
    runner.add_service(AgencyService)
    runner.start()
    with Connection(amqp_uri) as connection:
        channel, quiet = connection.channel(), 0
        while quiet < 3:
            _, ready, _ = channel.queue_declare(DELIVERY_QUEUE, passive=True)
            quiet = quiet + 1 if ready == 0 else 0
            eventlet.sleep(0.5)
    runner.stop()


def _serve_submissions(amqp_uri: str, prefix: str, n: int) -> None:
    """Run intake and post it ``n`` submissions, one at a time over one keep-alive
    connection, as a desk would; return once intake has published every
    ``issue.received`` (its outbox is empty). The process under valgrind."""
    import http.client

    import eventlet
    from nameko.runners import ServiceRunner

    from bench.cluster import free_port
    from bench.load import HEADERS
    from bench.workload import encoded
    from services.intake.service import IntakeService
    from shared import config as cfg
    from shared.auth import DESK, issue_token
    from shared.logging import configure_logging
    from shared.messaging import EventBus
    from shared.store import Keys, close_archives, connect

    port = free_port()
    config = cfg.config_from_env({}, **{cfg.AMQP_URI: amqp_uri, cfg.REDIS_URL: REDIS_URL,
                                         cfg.KEY_PREFIX: prefix, cfg.RATE_SUBMIT: 10_000_000,
                                         cfg.WEB_SERVER_ADDRESS: f"127.0.0.1:{port}"})
    configure_logging("json")
    class RelayAtRest(EventBus):
        RELAY_INTERVAL_S = 3600.0

    class Intake(IntakeService):
        """intake without its clock-driven work, the archiver's tick, the key upgrades'
        retry and the outbox relay's pass: they cost by the second, not by the submission,
        and a loaded machine stretches the seconds of the longer run (it measured 6 % more
        than a quiet one)."""

        bus = RelayAtRest()
        archive_closed = None
        upgrade_keys = None

    runner = ServiceRunner(config)
    runner.add_service(Intake)
    runner.start()
    headers = {**HEADERS, "Authorization": "Bearer " + issue_token(DESK, "costs",
                                                                   config[cfg.SECRET])}
    connection = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(n):
        connection.request("POST", "/issues", encoded(prefix, i), headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 201:
            raise click.ClickException(f"submission {i}: {response.status} {answer[:300]!r}")
    connection.close()
    client, outbox = connect(REDIS_URL), Keys(prefix).outbox(IntakeService.name)
    while client.hlen(outbox):
        eventlet.sleep(0.05)
    runner.stop()
    close_archives()  # while the hub runs, as `whistle up` does


def _submission_run(count: int) -> int:
    """Instructions to serve ``count`` submissions, in a fresh sandbox."""
    from bench.infra import BenchSandbox
    from shared import config as cfg

    api = os.environ.get(cfg.RABBIT_API_URL, "http://guest:guest@127.0.0.1:15672")
    with BenchSandbox(os.environ.get(cfg.AMQP_URI, cfg.DEV_AMQP_URI), REDIS_URL, api) as box:
        return _callgrind(["submission", box.amqp_uri, box.prefix, str(count)])
def _notify_pair_run(count: int) -> int:
    """Prefill ``count`` issues, each resident's contact as the benchmark submits it, and
    their two events for notify; instructions for notify to handle them."""
    from bench.infra import delete_prefix
    from bench.workload import payload
    from services.routing.rules import load_rules
    from shared.contracts import IssueDispatched, IssueReceived
    from shared.store import IssueStore, connect

    prefix = f"costs-{uuid.uuid4().hex[:8]}"
    store, rules = IssueStore(connect(REDIS_URL), prefix), load_rules(None)
    events = Path(f"/tmp/whistle-{prefix}.jsonl")
    try:
        with events.open("w", encoding="utf-8") as out:
            for i in range(count):
                told = [e for e in _create_and_route(store, rules, i)
                        if isinstance(e, IssueReceived | IssueDispatched)]
                contact = {k: v for k, v in (payload("costs", i).get("contact") or {}).items()
                           if v}
                store.redis.delete(store.keys.contact(told[0].issue_id))
                if contact:
                    store.redis.hset(store.keys.contact(told[0].issue_id), mapping=contact)
                out.writelines(json.dumps([e.event_type, e.model_dump(mode="json")],
                                          ensure_ascii=False) + "\n" for e in told)
        return _callgrind(["notify-pair", prefix, str(events)])
    finally:
        events.unlink(missing_ok=True)
        delete_prefix(REDIS_URL, prefix)


def _notify_pair(prefix: str, events_path: str) -> None:
    """Notify's worker for each prefilled event, as nameko runs it (the process under
    valgrind): the body validated into its event (``EventSubscriber``), a worker's
    logger bound (``WorkerLogger``), then ``on_event``."""
    from types import SimpleNamespace

    from services.notify.service import ANNOUNCED, Messenger, NotifyService
    from shared import config as cfg
    from shared.contracts import utcnow
    from shared.logging import WorkerLogger
    from shared.store import IssueStore, connect

    config = cfg.config_from_env({}, **{cfg.REDIS_URL: REDIS_URL, cfg.KEY_PREFIX: prefix,
                                         cfg.LOG_FORMAT: "json"})
    container = SimpleNamespace(config=config, service_name=NotifyService.name)
    service, messenger, logger = NotifyService(), Messenger(), WorkerLogger()
    for provider in (messenger, logger):
        provider.container = container
        provider.setup()
    service.store, service.messenger, service.config = (
        IssueStore(connect(REDIS_URL), prefix), messenger, config)
    classes, on_event = {c.event_type: c for c in ANNOUNCED}, SimpleNamespace(
        method_name="on_event")
    for line in Path(events_path).read_text(encoding="utf-8").splitlines():
        event_type, body = json.loads(line)
        body["occurred_at"] = utcnow().isoformat()  # as it arrives: within ordering's grace
        event = classes[event_type].model_validate(body)
        service.log = logger.get_dependency(SimpleNamespace(
            entrypoint=on_event, call_id=f"notify.on_event.{uuid.uuid4()}",
            data={"trace_id": event.trace_id}))
        service.on_event(event)


def _training_texts() -> list[str]:
    from services.routing.training import CORPUS_DIR, read_corpus

    return [e["text"] for e in read_corpus(CORPUS_DIR / "train.jsonl")]


def _routing_classify(n: int) -> None:
    from services.routing.classifier import load_classifier

    classifier, texts = load_classifier(None), _training_texts()
    for i in range(n):
        classifier.classify(texts[i % len(texts)])


def classify_milliseconds() -> dict:
    """CPU ms a report: each stage alone, and the cascade's expected average (see above)."""
    from services.routing.classifier import load_classifier
    from services.routing.learned import LearnedClassifier

    classifier, texts = load_classifier(None), _training_texts()
    if not isinstance(classifier, LearnedClassifier):
        raise click.ClickException("no learned router is bundled (whistle routing train)")

    def per_report(work) -> float:
        started = time.process_time()
        for text in texts:
            work(text)
        return 1000 * (time.process_time() - started) / len(texts)

    router = classifier.router
    cascade = router.embedding
    router.embedding = None
    tfidf = per_report(classifier.classify)
    router.embedding = cascade
    embedding = (per_report(lambda text: cascade.probabilities(cascade.embed(text)))
                 if cascade is not None else 0.0)
    share = (router.manifest.get("cross_validation", {}).get("cascade_share", 0.0)
             if cascade is not None else 0.0)
    return {"tfidf": tfidf, "embeddings": embedding, "share": share,
            "average": tfidf + share * embedding}


def _received_issues(count: int, prefix: str) -> list[dict]:
    """``count`` issues of the benchmark's mix created as intake creates them (its
    outbox and journal holding ``issue.received``); the events' bodies, as published."""
    from bench.workload import payload
    from services.intake.domain import accept_issue
    from shared.contracts import SubmitIssue
    from shared.messaging import envelope
    from shared.store import IssueStore, connect

    store, now, bodies = IssueStore(connect(REDIS_URL), prefix), datetime.now(UTC), []
    for i in range(count):
        submission = SubmitIssue.model_validate({**payload("costs", i),
                                                 "contact": {"phone": "13812345678"}})
        record, contact, received = accept_issue(submission, f"WH-20261121-{i + 1:04d}",
                                                 uuid.uuid4().hex, now)
        entry = envelope(received, "intake", [])
        store.create(record, contact, "intake", {received.event_id: json.dumps(entry)})
        bodies.append(entry["body"])
    return bodies


def _route_received(prefix: str, bodies_file: str) -> None:
    """Routing's handler for each event in ``bodies_file`` (the process under valgrind):
    the service's dependencies as its providers give them to a worker, the bus handing
    what it staged to nothing."""
    from types import SimpleNamespace

    from services.routing.classifier import load_classifier
    from services.routing.rules import load_rules
    from services.routing.service import RoutingService
    from shared import config as cfg
    from shared.contracts import IssueReceived
    from shared.jsoncodec import loads
    from shared.logging import configure_logging, get_logger
    from shared.messaging import BoundEventBus
    from shared.store import IssueStore, connect

    configure_logging("json")
    service = RoutingService()
    service.rules = load_rules(None)
    service.model = SimpleNamespace(classifier=load_classifier(None),
                                    threshold=cfg.triage_threshold(cfg.config_from_env({})))
    service.store = IssueStore(connect(REDIS_URL), prefix)
    base_log = get_logger("whistle.routing").bind(service="routing")
    nowhere = SimpleNamespace(hand_over=lambda entries: None)
    for body in loads(Path(bodies_file).read_bytes()):
        call_id = f"routing.route_issue.{uuid.uuid4()}"
        worker = SimpleNamespace(call_id_stack=[call_id], service_name="routing")
        service.bus = BoundEventBus(nowhere, worker)
        service.log = base_log.bind(entrypoint="route_issue", call_id=call_id,
                                    trace_id=body["trace_id"])
        service.route_issue(IssueReceived.model_validate(body))


def _route_one_run(count: int) -> int:
    """Create ``count`` issues (intake's part, not counted); instructions to route them."""
    from bench.infra import delete_prefix

    prefix = f"costs-{uuid.uuid4().hex[:8]}"
    bodies = Path(f"/tmp/whistle-costs-{prefix}.json")
    try:
        bodies.write_text(json.dumps(_received_issues(count, prefix), ensure_ascii=False))
        return _callgrind(["route-one", prefix, str(bodies)])
    finally:
        bodies.unlink(missing_ok=True)
        delete_prefix(REDIS_URL, prefix)


# Units whose work is prepared outside the count: count -> instructions.
PREPARED = {"route-one": _route_one_run}


IN_PROCESS = {"log-line": _log_line, "redis-command": _redis_command,
              "request-door": _request_door,
              "issue-write-path": _issue_write_path, "routing-classify": _routing_classify}


# ---------------------------------------------------------------- measuring


def _callgrind(args: list[str]) -> int:
    """Instructions executed by ``python -m bench.costs --run ...args``."""
    out = Path(f"/tmp/whistle-costs-{uuid.uuid4().hex[:8]}.callgrind")
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               sys.executable, "-m", "bench.costs", "--run", *args]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        out.unlink(missing_ok=True)
    found = COLLECTED.findall(result.stderr)
    if result.returncode != 0 or not found:
        raise click.ClickException(f"valgrind run failed ({' '.join(args)}):\n"
                                   f"{result.stderr[-1500:]}")
    return int(found[-1].replace(",", ""))


def _delivery_run(unit: str, count: int) -> int:
    """Prefill ``count`` assignments in a fresh sandbox; instructions to drain them."""
    from kombu import Connection, Producer

    from bench.infra import BenchSandbox
    from services.routing.rules import load_rules
    from shared import config as cfg
    from shared.contracts import IssueDispatched
    from shared.messaging import envelope
    from shared.store import IssueStore, connect
    from shared.topology import EVENTS_EXCHANGE, declare_topology

    api = os.environ.get(cfg.RABBIT_API_URL, "http://guest:guest@127.0.0.1:15672")
    with BenchSandbox(os.environ.get(cfg.AMQP_URI, cfg.DEV_AMQP_URI), REDIS_URL, api) as box:
        store, rules = IssueStore(connect(REDIS_URL), box.prefix), load_rules(None)
        with Connection(box.amqp_uri) as connection:
            declare_topology(connection)
            producer, published, i = Producer(connection.channel()), 0, 0
            while published < count:
                for event in _create_and_route(store, rules, i):
                    if isinstance(event, IssueDispatched):
                        entry = envelope(event, "costs", [])
                        producer.publish(entry["body"], exchange=EVENTS_EXCHANGE,
                                         routing_key=entry["routing_key"], delivery_mode=2,
                                         headers=entry["headers"])
                        published += 1
                i += 1
        return _callgrind([unit, box.amqp_uri, box.prefix])


def measure(unit: str) -> float:
    """Instructions per unit of work (see the module docstring)."""
    n, step = SIZES[unit]
    if unit in IN_PROCESS:
        low, high = _callgrind([unit, str(n)]), _callgrind([unit, str(n + step)])
    elif unit in PREPARED:
        low, high = PREPARED[unit](n), PREPARED[unit](n + step)
    elif unit == "submission":
        low, high = _submission_run(n), _submission_run(n + step)
    elif unit == "notify-pair":
        low, high = _notify_pair_run(n), _notify_pair_run(n + step)
    else:
        low, high = _delivery_run(unit, n), _delivery_run(unit, n + step)
    return (high - low) / step


@click.command()
@click.argument("units", nargs=-1, type=click.Choice(UNITS))
def costs(units: tuple[str, ...]) -> None:
    """Instructions per unit of work, counted by callgrind (all units by default)."""
    if shutil.which("valgrind") is None:
        raise click.ClickException("valgrind is not installed (Debian: apt-get install valgrind)")
    for unit in units or UNITS:
        started = time.monotonic()
        figure = measure(unit)
        click.echo(f"{unit:18s} {figure / 1000:9.0f}k instructions   "
                   f"({time.monotonic() - started:.0f} s)")
        if unit == "routing-classify":
            ms = classify_milliseconds()
            click.echo(f"{'':18s} {ms['average']:9.2f} ms CPU a report on average: TF-IDF "
                       f"{ms['tfidf']:.2f} ms, + embeddings {ms['embeddings']:.2f} ms for the "
                       f"{ms['share']:.0%} of reports the cascade sends on (budget: 3 ms)")


def _run(args: list[str]) -> None:
    """The process valgrind watches."""
    unit = args[0]
    if unit in IN_PROCESS:
        IN_PROCESS[unit](int(args[1]))
    elif unit == "route-one":
        _route_received(args[1], args[2])
    elif unit == "submission":
        _serve_submissions(args[1], args[2], int(args[3]))
    elif unit == "notify-pair":
        _notify_pair(args[1], args[2])
    else:
        _consume(args[1], args[2], noop=unit == "delivery-noop")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the services' log lines
        _run(sys.argv[2:])
    else:
        costs(prog_name="python -m bench.costs")

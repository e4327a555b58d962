"""``python -m bench.scale``: what Whistle costs as history grows (docs/benchmarks.md).

Loads 10^4, then 10^5, then 10^6 synthetic closed issues (cumulatively) into a
throwaway PostgreSQL database through the archive's own bulk path
(``Archive.store_bundles``: COPY into staging tables, INSERT ... ON CONFLICT), and at
each size reports:

- Redis bytes per open issue (issues received and dispatched through the store's own
  writes, with a delivery record and a note each, measured key by key with MEMORY USAGE);
- PostgreSQL bytes per archived issue (tables and indexes, after VACUUM ANALYZE);
- latencies over HTTP of a real intake service: ``GET /stats`` for the last 30 days,
  ``GET /issues`` (a page of 50, and a page deep in the list through its cursor) and
  ``GET /issues/{id}`` of an archived issue: median and p95 of repeated requests.

The synthetic issues are spread over the last ``--days`` days (default 365), so a
30-day window holds about 30/365 of them. Each is a whole closed case: received,
dispatched to one or two agencies, 报到 on time or late, sometimes escalated, resolved,
rated (or closed unrated), with its journal, timeline, notes, delivery records and a
contact, shaped as the services write them.

Everything lives in a database, a RabbitMQ vhost and a Redis prefix of its own, removed
at the end (``--keep`` keeps the database).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import requests

import whistle  # noqa: F401 - eventlet's monkey-patching, as in every entry point
from bench.cluster import free_port
from bench.infra import BenchSandbox, delete_prefix
from shared import config as cfg
from shared.archive import Archive, Bundle, upgrade
from shared.auth import issue_token
from shared.issue import IssueRecord
from shared.jsoncodec import dumps

SIZES = (10_000, 100_000, 1_000_000)
BATCH = 5_000
AGENCIES = [("power", "供电公司", "Power company", "power"),
            ("water", "自来水公司", "Water company", "utilities"),
            ("gas", "燃气公司", "Gas company", "utilities"),
            ("heating", "热力公司", "Heating company", "utilities"),
            ("housing", "房管所", "Housing administration", "housing"),
            ("property", "物业公司", "Property manager", "housing"),
            ("urban", "城管执法队", "Urban management", "other"),
            ("roads", "市政道路", "Municipal roads", "other")]
COMMUNITIES = ["缤泰社区", "丽德社区", "金台社区", "望京社区", "安贞社区", "和平里社区"]
TEXTS = ["楼道灯不亮，晚上上下楼很危险", "楼上漏水，天花板都湿了", "小区门口有根电线耷拉下来",
         "暖气不热，家里只有十五度", "井盖破了一个角，怕有人踩空", "电梯又坏了，老人下不了楼"]


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def synthetic_issue(n: int, received: datetime, rng: random.Random) -> Bundle:
    """Closed issue number ``n``, received at ``received``: a whole case as Redis held it."""
    day = received.strftime("%Y%m%d")
    issue_id = f"WH-{day}-{n:07d}"
    trace = f"{rng.getrandbits(128):032x}"
    community = COMMUNITIES[n % len(COMMUNITIES)]
    text = TEXTS[n % len(TEXTS)]
    picked = rng.sample(AGENCIES, 2 if rng.random() < 0.3 else 1)
    events: list[dict] = []
    timeline: list[dict] = []

    def event(kind: str, at: datetime, caused_by: str | None = None, **fields) -> str:
        event_id = f"{rng.getrandbits(128):032x}"
        events.append({"event_type": kind, "event_id": event_id, "trace_id": trace,
                       "causation_id": caused_by, "occurred_at": _iso(at), "schema_version": 1,
                       "issue_id": issue_id, **fields, "call_id": f"svc.{kind}.{event_id[:8]}",
                       "recorded_at": _iso(at)})
        return event_id

    def step(at: datetime, service: str, name: str, detail: str, agency: str | None = None):
        timeline.append({"at": _iso(at), "service": service, "step": name, "detail": detail,
                         "agency": agency})

    location = {"community": community, "address": f"{community}{n % 40 + 1}号楼{n % 6 + 1}单元",
                "grid": None, "lat": None, "lon": None}
    received_id = event("issue.received", received, description=text, category=None,
                        location=location, channel="hotline", language="zh", has_contact=True,
                        allow_merge=True)
    step(received, "intake", "received", "accepted via hotline")
    dispatched_at = received + timedelta(milliseconds=rng.randint(20, 400))
    assignments, summaries = [], []
    for k, (agency, name, name_en, sector) in enumerate(picked):
        role = "lead" if k == 0 else "support"
        ack_by, resolve_by = dispatched_at + timedelta(hours=2), dispatched_at + timedelta(days=1)
        summaries.append({"agency": agency, "agency_name": name, "agency_name_en": name_en,
                          "sector": sector, "role": role, "acknowledge_by": _iso(ack_by),
                          "resolve_by": _iso(resolve_by)})
        assignments.append({**summaries[-1], "status": "resolved",
                            "assigned_at": _iso(dispatched_at)})
    dispatch_id = event("issue.dispatched", dispatched_at, received_id, category="stair_light",
                        priority="high", assignments=summaries)
    step(dispatched_at, "routing", "dispatched",
         "category stair_light, priority high, rule stair-light: " + ", ".join(
             f"{a['agency_name']} ({a['role']})" for a in summaries))
    last = dispatched_at
    escalation = "community"
    for a in assignments:
        ack = dispatched_at + timedelta(minutes=rng.lognormvariate(3.5, 1.0))
        on_time = ack <= datetime.fromisoformat(a["acknowledge_by"])
        if not on_time and rng.random() < 0.6:
            missed = datetime.fromisoformat(a["acknowledge_by"])
            event("issue.escalated", missed, None, agency={
                "agency": a["agency"], "agency_name": a["agency_name"],
                "agency_name_en": a["agency_name_en"]}, deadline="acknowledge",
                missed=_iso(missed), level="street", supervisor="街道办", supervisor_en="Street office",
                supervisor_language="zh")
            step(missed, "routing", "escalated", f"{a['agency_name']} missed 报到", a["agency"])
            a["acknowledge_overdue"], a["missed_deadlines"], escalation = True, 1, "street"
        event("assignment.acknowledged", ack, dispatch_id, agency=a["agency"],
              agency_name=a["agency_name"], agency_name_en=a["agency_name_en"],
              staff_id="staff-007", on_time=on_time)
        step(ack, "agency", "acknowledged", f"{a['agency_name']} reported in", a["agency"])
        resolved = ack + timedelta(hours=rng.lognormvariate(1.5, 0.9))
        event("assignment.resolved", resolved, None, agency=a["agency"],
              agency_name=a["agency_name"], agency_name_en=a["agency_name_en"],
              staff_id="staff-007", note="已处理完毕", remaining_agencies=[])
        step(resolved, "agency", "assignment_resolved", f"{a['agency_name']}: 已处理完毕",
             a["agency"])
        a.update(acknowledged_at=_iso(ack), acknowledged_by="staff-007",
                 acknowledged_on_time=on_time, resolved_at=_iso(resolved),
                 resolved_by="staff-007", resolution_note="已处理完毕")
        last = max(last, resolved)
    event("issue.resolved", last, None, agencies=[a["agency"] for a in assignments])
    step(last, "agency", "resolved", "every agency has finished its part")
    ratings = []
    if rng.random() < 0.85:
        rated_at = last + timedelta(hours=rng.uniform(1, 30))
        rating = "satisfied" if rng.random() < 0.93 else "unsatisfied"
        rated_id = event("issue.rated", rated_at, None, rating=rating, comment=None,
                         reporter_issue_id=issue_id, cycle=0)
        ratings.append({"reporter_issue_id": issue_id, "cycle": 0, "rating": rating,
                        "comment": None, "at": _iso(rated_at)})
        closed_at, reason = rated_at, "satisfied"
        event("issue.closed", closed_at, rated_id, reason=reason)
    else:
        closed_at, reason = last + timedelta(days=7), "no_rating"
        event("issue.closed", closed_at, None, reason=reason)
    step(closed_at, "routing", "closed", f"closed: {reason}")
    record = {
        "issue_id": issue_id, "trace_id": trace, "status": "closed", "description": text,
        "category": "stair_light", "priority": "high", "location": location,
        "channel": "hotline", "language": "zh", "received_at": _iso(received),
        "updated_at": _iso(closed_at),
        "routing": {"rule": "stair-light", "keywords": ["楼道灯"], "category_source": "keywords"},
        "escalation_level": escalation, "merged_into": None, "reporters": [], "table": None,
        "reopen_count": 0, "feedback_due": None, "ratings": ratings, "closed_reason": reason,
        "closed_at": _iso(closed_at), "assignments": assignments, "timeline": timeline,
    }
    notes = {f"delivered:{a['agency']}": dumps({
        "at": _iso(dispatched_at), "service": "agency", "step": "assignment_delivered",
        "detail": f"{a['agency_name']} received the assignment", "agency": a["agency"]})
        for a in assignments}
    notifications = {}
    for kind, at in (("received", received), ("dispatched", dispatched_at),
                     ("resolved", last), ("closed", closed_at)):
        nid = f"{rng.getrandbits(96):024x}"
        notifications[nid] = dumps({
            "notification_id": nid, "issue_id": issue_id, "kind": kind, "language": "zh",
            "text": f"您反映的问题（{issue_id}）{kind}。", "channel": "desk",
            "audience": "resident", "recipient": {"name": "张*", "phone": "138****5678",
                                                  "email": None},
            "status": "sent", "attempts": 1, "detail": "desk outbox", "last_error": None,
            "created_at": _iso(at), "last_attempt_at": _iso(at), "sent_at": _iso(at)})
    return Bundle(dumps(record), {"name": "张三", "phone": f"138{n % 10**8:08d}"}, notes,
                  notifications, [dumps(e) for e in events])


def load_range(url: str, start: int, count: int, now: datetime, days: int, seed: int) -> None:
    """Archive issues ``start`` .. ``start + count - 1`` (one process's share)."""
    archive = Archive(url, max_size=1)
    rng = random.Random(seed + start)
    span = days * 86400
    try:
        for first in range(start, start + count, BATCH):
            batch = [synthetic_issue(n, now - timedelta(days=1, seconds=rng.uniform(0, span)),
                                     rng) for n in range(first, min(first + BATCH, start + count))]
            IssueRecord.model_validate_json(batch[0].record)  # shaped as the services write it
            archive.store_bundles(batch)
    finally:
        archive.close()


def load(url: str, start: int, count: int, now: datetime, days: int, seed: int,
         workers: int) -> float:
    """Archive ``count`` issues from number ``start`` in ``workers`` processes; seconds."""
    began = time.perf_counter()
    if workers <= 1 or count < 2 * BATCH:
        load_range(url, start, count, now, days, seed)
    else:
        # Processes of their own (eventlet and multiprocessing's pools do not mix).
        share = -(-count // workers)
        children = [subprocess.Popen([sys.executable, "-m", "bench.scale", "--load-range", url,
                                      str(first), str(min(share, start + count - first)),
                                      now.isoformat(), str(days), str(seed)])
                    for first in range(start, start + count, share)]
        failed = [child.args for child in children if child.wait() != 0]
        if failed:
            raise SystemExit(f"loading failed: {failed}")
    return time.perf_counter() - began


def redis_bytes_per_open_issue(redis_url: str, prefix: str, count: int = 1000) -> float:
    """Open issues written through the store (create, dispatch, a note, a delivery record)."""
    from shared.contracts import Channel, Language, Location, Priority, Role, Sector, utcnow
    from shared.issue import Assignment, Routing, TimelineEntry, dispatch, receive
    from shared.store import IssueStore, connect

    store = IssueStore(connect(redis_url), prefix)
    now = utcnow()
    for n in range(count):
        issue_id = store.next_issue_id(now.strftime("%Y%m%d"))
        record = receive(issue_id, uuid.uuid4().hex, TEXTS[n % len(TEXTS)], None,
                         Location(community=COMMUNITIES[n % 6], address=f"{n}号楼"),
                         Channel.hotline, Language.zh, now)
        store.create(record, {"name": "张三", "phone": "13812345678"}, "bench", {})
        agency, name, name_en, sector = AGENCIES[n % len(AGENCIES)]
        assignment = Assignment(agency=agency, agency_name=name, agency_name_en=name_en,
                                sector=Sector(sector), role=Role.lead, assigned_at=now,
                                acknowledge_by=now + timedelta(hours=2),
                                resolve_by=now + timedelta(days=1))
        store.apply(issue_id, f"dispatch-{n}", lambda r, a=assignment: (dispatch(
            r, "stair_light", Priority.high, Routing(rule="stair-light", category_source="given"),
            [a], now), {}), "bench")
        store.add_note(issue_id, f"delivered:{agency}", TimelineEntry(
            at=now, service="agency", step="assignment_delivered", detail=name, agency=agency))
        store.redis.hset(store.keys.notifications(issue_id), uuid.uuid4().hex[:24], dumps({
            "kind": "received", "status": "sent", "text": f"您反映的问题（{issue_id}）已受理。",
            "recipient": {"name": "张*", "phone": "138****5678"}, "created_at": _iso(now)}))
    total = 0
    for key in store.redis.scan_iter(f"{prefix}:*", count=1000):
        total += store.redis.memory_usage(key, samples=0) or 0
    store.redis.close()
    return total / count


def write_hot_issues(redis_url: str, prefix: str, start: int, count: int) -> None:
    """``count`` more issues received now and dispatched, still in Redis (not archived),
    each with its journal, as intake and routing write them: what ``/stats`` replays."""
    from bench.costs import _create_and_route
    from services.routing.rules import load_rules
    from shared.store import IssueStore, connect

    store, rules = IssueStore(connect(redis_url), prefix), load_rules(None)
    try:
        for i in range(start, start + count):
            _create_and_route(store, rules, i, journal_as="bench-hot")
    finally:
        store.redis.close()


def timed(fn, repeat: int) -> dict[str, float]:
    """Median and p95 of ``repeat`` calls, in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1)}


def latencies(base: str, archive: Archive, repeat: int, secret: str
              ) -> dict[str, dict[str, float]]:
    session = requests.Session()  # as the desk, which may read everything measured
    session.headers["Authorization"] = f"Bearer {issue_token('desk', 'bench', secret)}"

    def ok(path: str, **params):
        response = session.get(f"{base}{path}", params=params, timeout=60)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json()

    with archive.connection() as conn:
        some_id = conn.execute("SELECT issue_id FROM archived_issue ORDER BY received_at DESC "
                               "OFFSET 12345 % (SELECT count(*) FROM archived_issue) "
                               "LIMIT 1").fetchone()[0]
    deep = ok("/issues", limit=50)
    for _ in range(20):  # 20 pages in: a cursor well down the list
        deep = ok("/issues", limit=50, cursor=deep["next_cursor"])
    return {
        "stats_30d": timed(lambda: ok("/stats"), repeat),
        "list_page": timed(lambda: ok("/issues", limit=50), repeat),
        "list_page_21": timed(lambda: ok("/issues", limit=50, cursor=deep["next_cursor"]),
                              repeat),
        "list_agency": timed(lambda: ok("/issues", limit=50, agency="power"), repeat),
        "get_issue": timed(lambda: ok(f"/issues/{some_id}"), repeat),
    }


def pg_bytes_per_issue(archive: Archive) -> tuple[int, float]:
    with psycopg.connect(archive.url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    count = archive.count()
    return count, archive.size_bytes() / count


def start_intake(config: dict):
    from nameko.runners import ServiceRunner

    from services.intake.service import IntakeService
    from shared.logging import configure_logging

    configure_logging("console")
    runner = ServiceRunner(config)
    runner.add_service(IntakeService)
    runner.start()
    return runner


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--load-range"]:  # a loading process started by load()
        url, first, count, now, days, seed = argv[1:]
        load_range(url, int(first), int(count), datetime.fromisoformat(now), int(days), int(seed))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="cumulative numbers of archived issues to measure at")
    parser.add_argument("--days", type=int, default=365, help="days the issues are spread over")
    parser.add_argument("--repeat", type=int, default=30, help="requests per latency figure")
    parser.add_argument("--open", dest="open_issues", type=int, default=1000,
                        help="open issues written to Redis for the bytes-per-issue figure")
    parser.add_argument("--hot", default="",
                        help="after the last size: cumulative numbers of issues received in "
                             "the last 30 days and still in Redis, at which to time /stats "
                             "again (e.g. 1000,10000)")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--workers", type=int, default=2,
                        help="processes generating and loading issues")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))

    config = cfg.config_from_env()
    server = config[cfg.DATABASE_URL].rsplit("/", 1)[0]
    name = f"whistle_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{server}/{name}"
    upgrade(url)
    archive = Archive(url)
    sandbox = BenchSandbox(config[cfg.AMQP_URI], config[cfg.REDIS_URL],
                           config[cfg.RABBIT_API_URL])
    try:
        with sandbox as box:
            redis_per_open = redis_bytes_per_open_issue(box.redis_url, box.prefix + "-open",
                                                        args.open_issues)
            delete_prefix(box.redis_url, box.prefix + "-open")
            print(f"redis: {redis_per_open:,.0f} bytes per open issue "
                  f"({args.open_issues} issues, MEMORY USAGE of every key)", flush=True)
            address = f"127.0.0.1:{free_port()}"
            runner = start_intake(cfg.config_from_env(**{
                cfg.AMQP_URI: box.amqp_uri, cfg.KEY_PREFIX: box.prefix,
                cfg.DATABASE_URL: url, cfg.WEB_SERVER_ADDRESS: address,
                cfg.LOG_FORMAT: "console"}))
            try:
                measure(archive, address, sizes, args)
                measure_hot(box, address, args)
            finally:
                runner.stop()  # before the sandbox's vhost goes
    finally:
        archive.close()
        if not args.keep:
            with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept the database: {url}")
    return 0


def measure(archive: Archive, address: str, sizes: list[int], args) -> None:
    """Load up to each size in turn, and print its row of figures."""
    now, loaded = datetime.now(UTC), 0
    print("| archived issues | load s | issues/s | PG bytes/issue | /stats 30 d ms "
          "(median / p95) | list page ms | list page 21 ms | list ?agency ms | "
          "GET /issues/{id} ms |", flush=True)
    for size in sizes:
        took = load(archive.url, loaded, size - loaded, now, args.days, args.seed,
                    args.workers)
        rate = (size - loaded) / took
        loaded = size
        count, per_issue = pg_bytes_per_issue(archive)
        figures = latencies(f"http://{address}", archive, args.repeat,
                            cfg.config_from_env()[cfg.SECRET])

        def cell(key, figures=figures):
            return f"{figures[key]['median_ms']} / {figures[key]['p95_ms']}"

        print(f"| {count:,} | {took:,.0f} | {rate:,.0f} | {per_issue:,.0f} | "
              f"{cell('stats_30d')} | {cell('list_page')} | {cell('list_page_21')} | "
              f"{cell('list_agency')} | {cell('get_issue')} |", flush=True)


def measure_hot(box, address: str, args) -> None:
    """``/stats`` for the last 30 days with more and more issues still hot in Redis."""
    hot_sizes = sorted(int(s) for s in args.hot.split(",") if s.strip())
    if not hot_sizes:
        return
    secret = cfg.config_from_env()[cfg.SECRET]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {issue_token('desk', 'bench', secret)}"

    def stats():
        response = session.get(f"http://{address}/stats", timeout=120)
        assert response.status_code == 200, f"/stats: {response.status_code} {response.text}"

    # The first request after the writes replays every new journal; the repeats find
    # them unchanged (services.intake.hot_facts), as most are between two page loads.
    print("\n| hot issues in Redis | write s | /stats 30 d ms, first | /stats 30 d ms, "
          "repeated (median / p95) |", flush=True)
    written = 0
    for size in hot_sizes:
        began = time.perf_counter()
        write_hot_issues(box.redis_url, box.prefix, written, size - written)
        took, written = time.perf_counter() - began, size
        began = time.perf_counter()
        stats()
        first_ms = (time.perf_counter() - began) * 1000
        figures = timed(stats, max(3, args.repeat // 3))
        print(f"| {size:,} | {took:,.0f} | {first_ms:.1f} | {figures['median_ms']} / "
              f"{figures['p95_ms']} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
